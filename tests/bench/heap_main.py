# Bench app: deployed as main.py by tests/bench/mpheap.py, with the example app
# (firmware/main.py, unmodified) beside it as example.py. It runs the example
# node exactly as main.py would, plus one task that prints the retained heap when
# the bench asks for it (it writes bench.req into the board's folder), so the
# firmware does not change to be measured.
#
#   BENCH heap <seq> used=<gc.mem_alloc()> free=<gc.mem_free()> start=<..> hw=<..>
#         writes=<params applied> state=<agent state> files=<where rainmaker came from>
#         mods=<the rainmaker modules loaded>
#
# start: the heap in use when this file begins (interpreter, the sim's boot
#        driver, boot.py, and this file's own bytecode).
# hw:    what importing the simulated hardware modules (machine, network, esp32 and
#        the world model behind them) adds; on an ESP32 those are C modules in flash.
#        It includes the flash model behind esp32.Partition (about 11 KB), which
#        the sim loads on first use: the OTA code touches it for the running
#        slot's label, and measured from there it was counted as the firmware's.
import gc

gc.collect()
_start = gc.mem_alloc()
import machine, network, esp32  # noqa: E401,F401  (the example imports them first anyway)

esp32.Partition  # noqa: B018  (loads the sim's flash model now: see hw above)

gc.collect()
_hw = gc.mem_alloc() - _start
import asyncio
import os
import sys
import rainmaker


def _files():
    out = []
    for m in ("rainmaker", "rainmaker.node", "rainmaker.agent", "rainmaker.link"):
        mod = sys.modules.get(m)
        out.append(mod.__file__ if mod else "-")
    return ",".join(out)


def _mods():
    return ",".join(sorted(m[10:] for m in sys.modules if m.startswith("rainmaker.")))


async def _probe():
    while True:
        await asyncio.sleep_ms(100)
        try:
            with open("bench.req") as f:
                seq = f.read().strip()
        except OSError:
            continue
        os.remove("bench.req")
        a = sys.modules.get("rainmaker.agent")
        a = a._agent if a else None
        gc.collect()
        used = gc.mem_alloc()
        free = gc.mem_free()
        print("BENCH heap %s used=%d free=%d start=%d hw=%d writes=%d state=%s files=%s mods=%s" % (
            seq, used, free, _start, _hw, a.sync.writes if a else -1, a.state if a else "-", _files(), _mods()))


_run = rainmaker.run


def _bench_run(node, *coros, **kw):
    _run(node, *(coros + (_probe(),)), **kw)


rainmaker.run = _bench_run
import example  # noqa: E402,F401  (firmware/main.py: builds the node and runs it, never returns)
