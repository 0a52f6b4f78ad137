# The simulated board's hardware modules (this folder), frozen into the unix
# port's stand-in for an ESP32 by `python -m tools.firmware --port unix`.
#
# On an ESP32, machine, network and esp32 are C in flash: importing them costs
# the heap next to nothing. Run from this folder as .py, their Python stand-ins
# cost it about 40 KB (bytecode compiled on import, names, the flash model), which
# the heap bench would charge to the smallest heap the firmware needs. Frozen,
# their code stays in the binary and only their objects are on the heap, as the
# chip's drivers keep theirs. tools/sim/mpboard.py runs a binary's frozen copy
# only when the binary is newer than every file here, so an edit to the
# simulator is never hidden by an older build.
#
# Read by MicroPython's build (manifest functions module/package); the CPython
# simulator never imports it.
for _name in ("_simhw", "esp32", "machine", "mpboot", "network", "ntptime", "os"):
    module(_name + ".py")
package("simworld")
