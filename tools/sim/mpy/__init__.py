# The MicroPython backend's hardware modules (network, machine, esp32, ntptime,
# _simhw, the boot driver mpboot; os.py adds the esp32 port's uname()), run by MicroPython from MICROPYPATH, never
# imported by CPython; and simworld/, the world model both backends share
# (tools/sim/README.md, "The MicroPython backend").
