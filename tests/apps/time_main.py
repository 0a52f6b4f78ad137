# Test app (deployed as main.py by tests/test_time_e2e.py): the Time service.
# Prints the zone in effect at start and whenever it changes, with the local
# time of a fixed instant, so the test sees what a schedule would see, and
# whether the IANA table search (rainmaker.zones) stayed loaded after a lookup.
import asyncio
import sys
import rainmaker as rm
from rainmaker import std, tz

_T = 1751328000  # 2025-07-01 00:00 UTC


async def watch():
    seen = None
    while True:
        z = tz.current
        if z is not seen:
            seen = z
            kept = " (zones kept)" if "rainmaker.zones" in sys.modules else ""
            print("zone %s local %02d:%02d%s" % ((z.posix,) + z.local(_T)[3:5] + (kept,)))
        await asyncio.sleep_ms(100)


node = rm.Node("Clock", "Test", fw_version="1.0.0")
node.add(std.switch("Switch"))
node.add(std.time_service())
rm.run(node, watch())
