"""`time` as on the esp32 port.

* ticks_ms/ticks_us/ticks_cpu wrap at 2**30 (MICROPY_PY_TIME_TICKS_PERIOD); they
  start ``--ticks-wrap`` seconds (default 60) before their first wrap.
* time(), gmtime(), localtime(), mktime() use the 2000-01-01 epoch, and time()
  returns an int, like the board. The clock is the board RTC: after a power-on
  it reads 2000-01-01 until the firmware sets it (ntptime.settime() or
  machine.RTC().datetime(...)), unless the board runs with --rtc-synced.
  This is a separate module object: CPython's own `time` is untouched.
* localtime() is UTC (no TZ on the board). Tuples have 8 fields.
"""

import calendar as _calendar
import time as _t
import types

from .runtime import EPOCH_2000

_PERIOD = 1 << 30
_MASK = _PERIOD - 1
_HALF = _PERIOD // 2


def ticks_diff(ticks1, ticks2):
    return ((ticks1 - ticks2 + _HALF) & _MASK) - _HALF


def ticks_add(ticks, delta):
    if not -_HALF < delta < _HALF:
        raise OverflowError("ticks interval overflow")
    return (ticks + delta) & _MASK


def _tuple(secs2000):
    t = _t.gmtime(int(secs2000) + EPOCH_2000)
    return (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, t.tm_wday, t.tm_yday)


def make(rt):
    clock = rt.clock
    m = types.ModuleType("time")
    m.__doc__ = "time (simulated esp32)"

    def time():
        return int(clock.now())

    def time_ns():
        return int(clock.now() * 1000000000)

    def gmtime(secs=None):
        if secs is None:
            secs = clock.now()
        return _tuple(secs)

    def mktime(t):
        if len(t) not in (8, 9):
            raise TypeError("mktime needs a tuple of length 8 or 9")
        return _calendar.timegm((t[0], t[1], t[2], t[3], t[4], t[5])) - EPOCH_2000

    def sleep(seconds):
        _t.sleep(max(0.0, seconds))

    def sleep_ms(ms):
        if ms > 0:
            _t.sleep(ms / 1000)

    def sleep_us(us):
        if us > 0:
            _t.sleep(us / 1000000)

    m.time = time
    m.time_ns = time_ns
    m.gmtime = gmtime
    m.localtime = gmtime
    m.mktime = mktime
    m.sleep = sleep
    m.sleep_ms = sleep_ms
    m.sleep_us = sleep_us
    m.ticks_ms = clock.ticks_ms
    m.ticks_us = clock.ticks_us
    m.ticks_cpu = clock.ticks_us
    m.ticks_diff = ticks_diff
    m.ticks_add = ticks_add
    if not rt.strict:
        for name in ("monotonic", "perf_counter", "strftime", "struct_time"):
            setattr(m, name, getattr(_t, name))
    return m
