# Bench app: deployed as main.py by tests/bench/ota.py. The OTA test app's
# plug (tests/apps/ota_main.py) plus, when the file bench.sample exists in the
# board's folder, one task that samples the heap every 100 ms, so the firmware
# does not change to be measured. Each sample is gc.collect() then
# gc.mem_alloc() / gc.mem_free(): the live heap, not garbage waiting for a
# collection. While the agent's OTA download task runs (agent.update.task), it
# prints every reading, after the level just before the task started:
#
#   BENCH ota before=<in use at the last sample before the download> heap=<total>
#   BENCH ota used=<in use> free=<free>        (every 100 ms while it runs)
#
# The version below is rewritten by the bench for each app bundle it builds.
import gc
import os

import rainmaker as rm
from rainmaker import std

node = rm.Node("OTA Plug", "Switch", fw_version="1.0.0")
node.add(std.switch("Plug"))


async def _sample():
    import asyncio
    import sys

    before = 0
    busy = False
    while True:
        await asyncio.sleep_ms(100)
        a = sys.modules.get("rainmaker.agent")
        a = a._agent if a else None
        u = a.update if a else None
        now = u is not None and u.task is not None
        gc.collect()
        used = gc.mem_alloc()
        free = gc.mem_free()
        if now:
            if not busy:
                print("BENCH ota before=%d heap=%d" % (before, used + free))
            print("BENCH ota used=%d free=%d" % (used, free))
        else:
            before = used
        busy = now


try:
    os.stat("bench.sample")
    _on = True
except OSError:
    _on = False
rm.run(node, *((_sample(),) if _on else ()))
