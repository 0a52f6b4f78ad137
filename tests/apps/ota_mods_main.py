# Test app (deployed as main.py by tests/test_ota_idle.py): the plug of
# ota_main.py, plus one task that prints the rainmaker modules loaded when
# the test writes a sequence number into mods.req in the board's folder:
#   MODS <seq> <module,module,...>
import asyncio
import os
import sys
import rainmaker as rm
from rainmaker import std


async def probe():
    while True:
        await asyncio.sleep_ms(100)
        try:
            with open("mods.req") as f:
                seq = f.read().strip()
        except OSError:
            continue
        os.remove("mods.req")
        print("MODS %s %s" % (seq, ",".join(sorted(m[10:] for m in sys.modules if m.startswith("rainmaker.")))))


node = rm.Node("OTA Plug", "Switch", fw_version="1.0.0")
node.add(std.switch("Plug"))
rm.run(node, probe())
