# `machine.Pin`, `Signal`, `PWM` for the esp32 port, backed by two JSON files.
#
# * Inputs: pins.json maps GPIO numbers to levels, e.g. {"0": 0}. PinBank.poll()
#   (every ~50 ms) re-reads it; a change on an input pin with an irq handler whose
#   trigger matches the edge hands (handler, pin) to the backend's schedule(),
#   i.e. micropython.schedule semantics. A pin absent from the file reads its pull:
#   PULL_UP -> 1, otherwise 0.
# * Outputs: every output level / PWM setting is written atomically to pins_out.json:
#   {"pins": {"2": 1}, "pwm": {"4": {"freq": 5000, "duty_u16": 0}}}.
# * Valid GPIOs are the chip's (chip.py): on the ESP32 0-5, 12-19, 21-23, 25-27,
#   32-39 (6-11 are the flash), 34-39 input only; on the C3 0-11, 20, 21...
#
# Shared by both backends (CPython and MicroPython subset).
import json
import os
from . import chip as _chip
from . import stamp

VALID_PINS = _chip.valid_pins("esp32")  # the ESP32's; a PinBank has its chip's
INPUT_ONLY = _chip.input_only("esp32")
FREQS = (20000000, 40000000, 80000000, 160000000, 240000000)


def levels_of(text):
    """pins.json's text -> {pin: 0|1}; None if it is not JSON (half-written)."""
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return None
    out = {}
    for k in data:
        out[int(k)] = 1 if data[k] else 0
    return out


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)  # replaces: readers never see half a file


class PinBank:
    """The board's pins: input levels from the world, output levels to it."""

    def __init__(self, pins_path, out_path, lock, schedule, warn=None, chip="esp32"):
        self.valid = _chip.valid_pins(chip)
        self.input_only = _chip.input_only(chip)
        self.pins_path = pins_path
        self.out_path = out_path
        self.lock = lock
        self.schedule = schedule  # schedule(handler, pin)
        self.warn = warn
        self.levels = {}
        self.out = {"pins": {}, "pwm": {}}
        self.pins = {}
        self._text = None
        self._stamp = False  # not read yet (None: no file)
        self.poll()

    def poll(self, now=None):
        st = stamp(self.pins_path)
        if st == self._stamp:
            return
        try:
            with open(self.pins_path) as f:
                text = f.read()
        except OSError:
            text = ""
        if text == self._text:
            self._stamp = st
            return
        new = levels_of(text) if text else {}
        if new is None:
            return  # half-written: next poll
        self._text, self._stamp = text, st
        fire = []
        with self.lock:
            for pid in set(list(new) + list(self.levels)):
                pin = self.pins.get(pid)
                old_level = pin._in_level() if pin is not None else self.levels.get(pid, 0)
                if new.get(pid) is None:
                    self.levels.pop(pid, None)
                else:
                    self.levels[pid] = new[pid]
                if pin is None or pin._mode not in (None, PinBase.IN):
                    continue
                lvl = pin._in_level()
                if lvl == old_level or pin._handler is None:
                    continue
                edge = PinBase.IRQ_RISING if lvl else PinBase.IRQ_FALLING
                if pin._trigger & edge:
                    fire.append(pin)
        for pin in fire:
            self.schedule(pin._handler, pin)

    def record(self, kind, pid, value):
        with self.lock:
            if value is None:
                self.out[kind].pop(str(pid), None)
            else:
                self.out[kind][str(pid)] = value
            try:
                write_atomic(self.out_path, json.dumps(self.out))
            except OSError as e:
                if self.warn is not None:
                    self.warn("sim: cannot write %s: %s" % (self.out_path, e))


class _Level:
    """pin() / pin(v), on() and off(), as Pin and Signal both have them, over value()."""

    def __call__(self, *args):
        return self.value(*args)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


class PinBase(_Level):
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
        if isinstance(id, PinBase):
            id = id._id
        io = cls._io
        if not isinstance(id, int) or id not in io.valid:
            raise ValueError("invalid pin")
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
        return o

    def __init__(self, id, *args, **kw):
        if args or kw:
            self.init(*args, **kw)

    def __repr__(self):
        return "Pin(%d)" % self._id

    def init(self, mode=-1, pull=-1, *, value=None, drive=None, hold=None):
        if value is not None:
            self._out = 1 if value else 0
        if mode is not None and mode != -1:
            if mode not in (PinBase.IN, PinBase.OUT, PinBase.OPEN_DRAIN):
                raise ValueError("invalid pin mode")
            if mode != PinBase.IN and self._id in self._io.input_only:
                raise ValueError("pin can only be input")
            self._mode = mode
        if pull != -1:
            if pull not in (None, PinBase.PULL_UP, PinBase.PULL_DOWN, PinBase.PULL_UP | PinBase.PULL_DOWN):
                raise ValueError("invalid pull")
            self._pull = pull
        self._publish()

    def _in_level(self):
        lvl = self._io.levels.get(self._id)
        if lvl is not None:
            return lvl
        return 1 if self._pull == PinBase.PULL_UP else 0

    def _publish(self):
        if self._mode in (PinBase.OUT, PinBase.OPEN_DRAIN):
            self._io.record("pins", self._id, self._out)

    def value(self, *args):
        if not args:
            if self._mode == PinBase.OUT:
                return self._out
            if self._mode == PinBase.OPEN_DRAIN and self._out == 0:
                return 0
            return self._in_level()
        self._out = 1 if args[0] else 0
        self._publish()
        return None

    def irq(self, handler=None, trigger=3, *, wake=None, hard=False):
        self._handler = handler
        self._trigger = trigger if handler is not None else 0
        return _IRQ(self)


class _IRQ:
    def __init__(self, pin):
        self._pin = pin

    def trigger(self, *a):
        return self._pin._trigger

    def flags(self):
        return 0


class SignalBase(_Level):
    def __init__(self, pin, *args, invert=False, **kw):
        self._pin = pin if isinstance(pin, PinBase) else self._pin_class(pin, *args, **kw)
        self._inv = bool(invert)

    def value(self, *args):
        if not args:
            return self._pin.value() ^ self._inv
        self._pin.value((1 if args[0] else 0) ^ self._inv)
        return None


class PWMBase:
    def __init__(self, dest, *, freq=None, duty=None, duty_u16=None, duty_ns=None, invert=False):
        self._pin = dest if isinstance(dest, PinBase) else self._pin_class(dest)
        if self._pin._id in self._pin._io.input_only:
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
        self._pin._io.record("pwm", self._pin._id,
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


def machine_dict(bank):
    """Pin, Signal, PWM and freq() of the `machine` module for one board."""

    class Pin(PinBase):
        _io = bank

    class Signal(SignalBase):
        _pin_class = Pin

    class PWM(PWMBase):
        _pin_class = Pin

    state = [240000000]

    def freq(*args):
        if not args:
            return state[0]
        f = int(args[0])
        if f not in FREQS and f * 1000000 not in FREQS:
            raise ValueError("frequency must be 20MHz, 40MHz, 80Mhz, 160MHz or 240MHz")
        state[0] = f if f in FREQS else f * 1000000
        return None

    return {"Pin": Pin, "Signal": Signal, "PWM": PWM, "freq": freq}
