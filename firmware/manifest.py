# Freeze the RainMaker agent into your own MicroPython build.
#
# Loaded from the filesystem, the agent's modules kept after boot (about 28 KB
# of .mpy) are read into RAM: about 42 KB of heap, measured on micropython32.
# Frozen into the firmware, their bytecode, names and messages stay in flash
# and run from there (about 9 KB of heap are left: module and class dicts,
# function objects): the example node keeps about 25 KB of heap instead of
# about 61 KB (make bench), left to the app and to TLS.
#
# Build: make firmware MICROPYTHON_SRC=<a MicroPython checkout> (tools/firmware.py;
# needs ESP-IDF), or by hand, from micropython/ports/esp32:
#   make BOARD=ESP32_GENERIC BOARD_VARIANT=OTA \
#        FROZEN_MANIFEST=/path/to/this/repo/firmware/manifest.py
# then flash the result with make flash PORT=... FIRMWARE=build-.../firmware.bin
# and deploy only the app and the bundle: make deploy PORT=... ARGS=--app-only
# (a copy of the agent in /lib would be ignored anyway: '.frozen' comes
# before '/lib' in sys.path).
#
# main.py and boot.py are not frozen on purpose: a frozen main.py would
# take precedence over the one on the filesystem, and the app would no
# longer be updatable with make deploy. This file is read by MicroPython's
# build (manifest functions metadata/include/package), never copied to a board.

# The agent's version. The two mip packages, package.json at the repository
# root (the agent) and lib/rainmaker/prov/package.json (Wi-Fi provisioning),
# carry the same version; tests/test_mip.py checks that they agree.
metadata(
    description="ESP RainMaker agent for MicroPython: node config, params over MQTT with mutual TLS, Wi-Fi provisioning",
    version="0.1.0",
    license="MIT",
)

# Everything the port freezes by default (asyncio, network helpers, ...), from
# the ESP32 ports' list. A manifest of your own that names its port's modules
# itself includes this file with port=False (tools/firmware.py does, for the
# unix port, which has no such list).
options.defaults(port=True)
if options.port:
    include("$(PORT_DIR)/boards/manifest.py")

# The agent: lib/rainmaker/*.py as the package 'rainmaker'. Only modules are
# frozen: the time zone table, lib/rainmaker/zones.txt, is read from the
# filesystem (rainmaker.zones.lookup looks for /lib/rainmaker/zones.txt when the
# module is frozen), and make deploy ARGS=--app-only copies it there.
package("rainmaker", base_path="lib")
