"""`machine` for the esp32 port, with pins backed by two JSON files.

* Inputs: ``pins.json`` (next to the board folder by default) maps GPIO numbers to
  levels, e.g. {"0": 0}. It is polled ~every 50 ms; a change on an input pin calls its
  irq handler (if the edge matches the trigger) through the scheduler, i.e. on the
  running asyncio loop's thread when there is one (micropython.schedule semantics).
  A pin absent from the file reads its pull: PULL_UP -> 1, otherwise 0.
* Outputs: every output level / PWM setting is written atomically to
  ``pins_out.json``: {"pins": {"2": 1}, "pwm": {"4": {"freq": 5000, "duty_u16": 0}}}.
* Valid GPIOs are the ESP32's (0-5, 12-19, 21-23, 25-27, 32-39; 6-11 are the flash);
  34-39 are input only.
* reset()/soft_reset()/deepsleep() re-exec the board process (RAM is lost, the board
  folder persists); reset_cause() reports why the board booted.
"""

import json as _json
import os as _os
import sys as _sys
import threading as _threading
import time as _t
import types

from . import runtime as _r

VALID_PINS = frozenset(list(range(0, 6)) + list(range(12, 20)) + [21, 22, 23, 25, 26, 27]
                       + list(range(32, 40)))
INPUT_ONLY = frozenset(range(34, 40))
_FREQS = (20000000, 40000000, 80000000, 160000000, 240000000)


class _PinIO:
    """Pin files: input levels from the test, output levels to the test."""

    def __init__(self, rt):
        self.rt = rt
        self.lock = _threading.RLock()
        self.levels = {}
        self.out = {"pins": {}, "pwm": {}}
        self._sig = None
        self.pins = {}
        self._read()
        rt.add_hook(self.poll)

    def _read(self):
        try:
            st = _os.stat(self.rt.pins_path)
            sig = (st.st_mtime_ns, st.st_ino, st.st_size)
        except OSError:
            sig = None
        if sig == self._sig:
            return None
        if sig is None:
            self._sig = None
            return {}
        try:
            with open(self.rt.pins_path) as f:
                data = _json.load(f)
        except (OSError, ValueError):
            return None
        self._sig = sig
        return {int(k): 1 if v else 0 for k, v in data.items()}

    def poll(self, now):
        new = self._read()
        if new is None:
            return
        fire = []
        with self.lock:
            for pid in set(new) | set(self.levels):
                pin = self.pins.get(pid)
                old_level = pin._in_level() if pin is not None else self.levels.get(pid, 0)
                if new.get(pid) is None:
                    self.levels.pop(pid, None)
                else:
                    self.levels[pid] = new[pid]
                if pin is None or pin._mode not in (None, Pin.IN):
                    continue
                lvl = pin._in_level()
                if lvl == old_level or pin._handler is None:
                    continue
                edge = Pin.IRQ_RISING if lvl else Pin.IRQ_FALLING
                if pin._trigger & edge:
                    fire.append(pin)
        for pin in fire:
            self.rt.sched.schedule(pin._handler, pin, strict_depth=False)

    def record(self, kind, pid, value):
        with self.lock:
            if value is None:
                self.out[kind].pop(str(pid), None)
            else:
                self.out[kind][str(pid)] = value
            blob = _json.dumps(self.out, sort_keys=True)
            path = self.rt.pins_out_path
            tmp = "%s.%d.tmp" % (path, _os.getpid())
            try:
                with open(tmp, "w") as f:
                    f.write(blob)
                _os.replace(tmp, path)
            except OSError as e:
                _sys.stderr.write("sim: cannot write %s: %s\n" % (path, e))


# the Pin class is defined at module level so isinstance() works across calls;
# its per-board state lives in _io (set by make()).
class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_DOWN = 1
    PULL_UP = 2
    PULL_HOLD = 4
    IRQ_RISING = 1
    IRQ_FALLING = 2
    WAKE_LOW = 4
    WAKE_HIGH = 5
    DRIVE_0, DRIVE_1, DRIVE_2, DRIVE_3 = 0, 1, 2, 3
    _io = None

    def __new__(cls, id, *args, **kw):
        if isinstance(id, Pin):
            id = id._id
        if not isinstance(id, int) or id not in VALID_PINS:
            raise ValueError("invalid pin")
        io = cls._io
        with io.lock:
            o = io.pins.get(id)
            if o is None:
                o = object.__new__(cls)
                o._id = id
                o._mode = None
                o._pull = None
                o._out = 0
                o._handler = None
                o._trigger = 0
                io.pins[id] = o
        if args or kw:
            o.init(*args, **kw)
        return o

    def __repr__(self):
        return "Pin(%d)" % self._id

    def init(self, mode=-1, pull=-1, *, value=None, drive=None, hold=None):
        if value is not None:
            self._out = 1 if value else 0
        if mode is not None and mode != -1:
            if mode not in (Pin.IN, Pin.OUT, Pin.OPEN_DRAIN):
                raise ValueError("invalid pin mode")
            if mode != Pin.IN and self._id in INPUT_ONLY:
                raise ValueError("pin can only be input")
            self._mode = mode
        if pull != -1:
            if pull not in (None, Pin.PULL_UP, Pin.PULL_DOWN, Pin.PULL_UP | Pin.PULL_DOWN):
                raise ValueError("invalid pull")
            self._pull = pull
        self._publish()

    def _in_level(self):
        lvl = self._io.levels.get(self._id)
        if lvl is not None:
            return lvl
        return 1 if self._pull == Pin.PULL_UP else 0

    def _publish(self):
        if self._mode in (Pin.OUT, Pin.OPEN_DRAIN):
            self._io.record("pins", self._id, self._out)

    def value(self, *args):
        if not args:
            if self._mode == Pin.OUT:
                return self._out
            if self._mode == Pin.OPEN_DRAIN and self._out == 0:
                return 0
            return self._in_level()
        self._out = 1 if args[0] else 0
        self._publish()
        return None

    __call__ = value

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def irq(self, handler=None, trigger=3, *, wake=None, hard=False):
        self._handler = handler
        self._trigger = trigger if handler is not None else 0
        pin = self

        class _IRQ:
            def trigger(self, *a):
                return pin._trigger

            def flags(self):
                return 0

        return _IRQ()


def make(rt):
    io = _PinIO(rt)
    rt.pin_io = io
    Pin._io = io
    m = types.ModuleType("machine")
    m.__doc__ = "machine (simulated esp32)"
    m.Pin = Pin
    for name, val in (("PWRON_RESET", _r.PWRON_RESET), ("HARD_RESET", _r.HARD_RESET),
                      ("WDT_RESET", _r.WDT_RESET), ("DEEPSLEEP_RESET", _r.DEEPSLEEP_RESET),
                      ("SOFT_RESET", _r.SOFT_RESET)):
        setattr(m, name, val)
    m.PIN_WAKE, m.EXT0_WAKE, m.EXT1_WAKE, m.TIMER_WAKE, m.TOUCHPAD_WAKE, m.ULP_WAKE = 2, 2, 3, 4, 5, 6
    state = {"freq": 240000000}

    def reset():
        rt.reexec("HARD_RESET")

    def soft_reset():
        print("MPY: soft reboot")
        rt.reexec("SOFT_RESET")

    def reset_cause():
        return rt.reset_cause

    def unique_id():
        return bytes(rt.mac)

    def freq(*args):
        if not args:
            return state["freq"]
        f = int(args[0])
        if f not in _FREQS and f * 1000000 not in _FREQS:
            raise ValueError("frequency must be 20MHz, 40MHz, 80Mhz, 160MHz or 240MHz")
        state["freq"] = f if f in _FREQS else f * 1000000
        return None

    def idle():
        _t.sleep(0.001)

    def lightsleep(ms=None):
        _t.sleep((ms or 0) / 1000)

    def deepsleep(ms=None):
        if ms is None:
            while True:
                _t.sleep(3600)
        _t.sleep(ms / 1000)
        rt.reexec("DEEPSLEEP_RESET")

    def wake_reason():
        return 0

    def disable_irq():
        return 1

    def enable_irq(state=1):
        return None

    class Signal:
        def __init__(self, pin, *args, invert=False, **kw):
            self._pin = pin if isinstance(pin, Pin) else Pin(pin, *args, **kw)
            self._inv = bool(invert)

        def value(self, *args):
            if not args:
                return self._pin.value() ^ self._inv
            self._pin.value((1 if args[0] else 0) ^ self._inv)
            return None

        __call__ = value

        def on(self):
            self.value(1)

        def off(self):
            self.value(0)

    class PWM:
        def __init__(self, dest, *, freq=None, duty=None, duty_u16=None, duty_ns=None,
                     invert=False):
            self._pin = dest if isinstance(dest, Pin) else Pin(dest)
            if self._pin._id in INPUT_ONLY:
                raise ValueError("pin can only be input")
            self._freq = 5000
            self._duty = 0
            self._active = True
            self.init(freq=freq, duty=duty, duty_u16=duty_u16, duty_ns=duty_ns, invert=invert)

        def __repr__(self):
            return "PWM(Pin(%d), freq=%d, duty_u16=%d)" % (self._pin._id, self._freq, self._duty)

        def init(self, *, freq=None, duty=None, duty_u16=None, duty_ns=None, invert=False):
            if freq is not None:
                self._setfreq(freq)
            if duty is not None:
                self._setduty(int(duty) * 65535 // 1023)
            if duty_u16 is not None:
                self._setduty(duty_u16)
            if duty_ns is not None:
                self._setduty(int(duty_ns) * self._freq * 65535 // 1000000000)
            self._active = True
            self._rec()

        def _setfreq(self, f):
            f = int(f)
            if not 1 <= f <= 40000000:
                raise ValueError("frequency must be from 1Hz to 40MHz")
            self._freq = f

        def _setduty(self, d):
            d = int(d)
            if not 0 <= d <= 65535:
                raise ValueError("duty_u16 must be from 0 to 65535")
            self._duty = d

        def _rec(self):
            rt.pin_io.record("pwm", self._pin._id,
                             {"freq": self._freq, "duty_u16": self._duty} if self._active else None)

        def freq(self, *args):
            if not args:
                return self._freq
            self._setfreq(args[0])
            self._rec()
            return None

        def duty(self, *args):
            if not args:
                return self._duty * 1023 // 65535
            self._setduty(int(args[0]) * 65535 // 1023)
            self._rec()
            return None

        def duty_u16(self, *args):
            if not args:
                return self._duty
            self._setduty(args[0])
            self._rec()
            return None

        def duty_ns(self, *args):
            if not args:
                return self._duty * 1000000000 // (65535 * self._freq)
            self._setduty(int(args[0]) * self._freq * 65535 // 1000000000)
            self._rec()
            return None

        def deinit(self):
            self._active = False
            self._rec()

    wdt = {"deadline": None, "timeout": None}

    class WDT:
        def __init__(self, id=0, timeout=5000):
            if id != 0:
                raise ValueError("WDT(%d) doesn't exist" % id)
            if timeout < 1:
                raise ValueError("WDT timeout too short")
            wdt["timeout"] = timeout / 1000
            wdt["deadline"] = _t.monotonic() + wdt["timeout"]

        def feed(self):
            if wdt["timeout"] is not None:
                wdt["deadline"] = _t.monotonic() + wdt["timeout"]

    def wdt_hook(now):
        d = wdt["deadline"]
        if d is not None and now > d:
            wdt["deadline"] = None
            up = (_t.monotonic_ns() - rt.clock.t0) // 1000000  # IDF logs ms since boot
            print("E (%d) task_wdt: Task watchdog got triggered. The following tasks/users did "
                  "not reset the watchdog in time:" % up)
            print("E (%d) task_wdt:  - mp_task (CPU 0)" % up)
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

    m.reset = reset
    m.soft_reset = soft_reset
    m.reset_cause = reset_cause
    m.unique_id = unique_id
    m.freq = freq
    m.idle = idle
    m.lightsleep = lightsleep
    m.deepsleep = deepsleep
    m.wake_reason = wake_reason
    m.disable_irq = disable_irq
    m.enable_irq = enable_irq
    m.Signal = Signal
    m.PWM = PWM
    m.WDT = WDT
    m.RTC = RTC
    return m
