"""`machine` for the esp32 port, with pins backed by two JSON files.

* Inputs: ``pins.json`` (next to the board folder by default) maps GPIO numbers to
  levels, e.g. {"0": 0}. It is polled ~every 50 ms; a change on an input pin calls its
  irq handler (if the edge matches the trigger) through the scheduler, i.e. on the
  running asyncio loop's thread when there is one (micropython.schedule semantics).
  A pin absent from the file reads its pull: PULL_UP -> 1, otherwise 0.
* Outputs: every output level / PWM setting is written atomically to
  ``pins_out.json``: {"pins": {"2": 1}, "pwm": {"4": {"freq": 5000, "duty_u16": 0}}}.
* Valid GPIOs are the chip's (``--chip``, tools/sim/mpy/simworld/chip.py); on the
  ESP32 0-5, 12-19, 21-23, 25-27, 32-39 (6-11 are the flash), 34-39 input only.
* reset()/soft_reset()/deepsleep() re-exec the board process (RAM is lost, the board
  folder persists); reset_cause() reports why the board booted.

Pin, Signal, PWM, freq() and the pin files are tools/sim/mpy/simworld/pins.py, which
the MicroPython backend (tools/sim/mpy/machine.py) runs too; the watcher thread polls
the inputs here, and IRQ handlers go through the runtime's scheduler.
"""

import sys as _sys
import threading as _threading
import time as _t
import types

from . import runtime as _r
from .mpy.simworld import pins as _pins
from .mpy.simworld import resets as _resets


def make(rt):
    def schedule(handler, pin):
        rt.sched.schedule(handler, pin, strict_depth=False)

    def warn(text):
        _sys.stderr.write(text + "\n")

    io = _pins.PinBank(rt.pins_path, rt.pins_out_path, _threading.RLock(), schedule, warn, chip=rt.chip)
    rt.pin_io = io
    rt.add_hook(io.poll)
    m = types.ModuleType("machine")
    m.__doc__ = "machine (simulated esp32)"
    hw = _pins.machine_dict(io)
    m.Pin = hw["Pin"]
    wdt = [None, None]  # deadline (monotonic s), timeout (s)
    for name, val in _resets.machine_dict(rt.reexec, lambda: rt.reset_cause, rt.mac,
                                          lambda ms: _t.sleep(ms / 1000), _t.monotonic, wdt).items():
        setattr(m, name, val)

    def wdt_hook(now):
        if _resets.expired(wdt, now):
            for line in _resets.wdt_lines((_t.monotonic_ns() - rt.clock.t0) // 1000000):  # IDF logs ms since boot
                print(line)
            rt.reexec("WDT_RESET")

    rt.add_hook(wdt_hook)

    class RTC:
        _inst = None

        def __new__(cls, id=0):
            if cls._inst is None:
                cls._inst = object.__new__(cls)
            return cls._inst

        def datetime(self, *args):
            if not args:
                t = _t.gmtime(int(rt.clock.now()) + _r.EPOCH_2000)
                us = int((rt.clock.now() % 1) * 1000000)
                return (t.tm_year, t.tm_mon, t.tm_mday, t.tm_wday, t.tm_hour, t.tm_min, t.tm_sec, us)
            self.init(args[0])
            return None

        def init(self, dt):
            import calendar

            y, mo, d = dt[0], dt[1], dt[2]
            h, mi, s = (dt[4], dt[5], dt[6]) if len(dt) > 6 else (0, 0, 0)
            us = dt[7] if len(dt) > 7 else 0
            rt.clock.set(calendar.timegm((y, mo, d, h, mi, s)) - _r.EPOCH_2000 + us / 1000000)

    m.freq = hw["freq"]
    m.Signal = hw["Signal"]
    m.PWM = hw["PWM"]
    m.RTC = RTC
    return m
