# Test app (deployed as main.py by tests/test_ota_idle.py): the plug of
# ota_main.py, plus one task that prints the rainmaker modules loaded when
# the test writes a sequence number into mods.req in the board's folder,
# with the heap in use after a collection (-1 where there is no gc.mem_alloc):
#   MODS <seq> <heap> <module,module,...>
import asyncio
import gc
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
        mods = ",".join(sorted(m[10:] for m in sys.modules if m.startswith("rainmaker.")))
        gc.collect()
        used = gc.mem_alloc() if hasattr(gc, "mem_alloc") else -1
        print("MODS %s %d %s" % (seq, used, mods))


node = rm.Node("OTA Plug", "Switch", fw_version="1.0.0")
node.add(std.switch("Plug"))
rm.run(node, probe())
