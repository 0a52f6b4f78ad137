# `machine` (esp32 port) for the MicroPython backend of the simulated board: Pin,
# Signal, PWM and freq() from the shared pin model (simworld/pins.py) over this
# board's pin files; resets end the interpreter and the launcher boots it again.
import time as _time
import _simhw
from simworld import pins as _pins

globals().update(_pins.machine_dict(_simhw.bank))

PWRON_RESET, HARD_RESET, WDT_RESET, DEEPSLEEP_RESET, SOFT_RESET = 1, 2, 3, 4, 5
PIN_WAKE, EXT0_WAKE, EXT1_WAKE, TIMER_WAKE, TOUCHPAD_WAKE, ULP_WAKE = 2, 2, 3, 4, 5, 6


def reset():
    _simhw.hard_reset("HARD_RESET")


def soft_reset():
    print("MPY: soft reboot")
    _simhw.hard_reset("SOFT_RESET")


def reset_cause():
    return _simhw.reset_cause


def unique_id():
    return bytes(_simhw.mac)


def idle():
    _time.sleep_ms(1)


def lightsleep(ms=None):
    _time.sleep_ms(ms or 0)


def deepsleep(ms=None):
    if ms is None:
        while True:
            _time.sleep(3600)
    _time.sleep_ms(ms)
    _simhw.hard_reset("DEEPSLEEP_RESET")


def wake_reason():
    return 0


def disable_irq():
    return 1


def enable_irq(state=1):
    return None


class WDT:
    def __init__(self, id=0, timeout=5000):
        if id != 0:
            raise ValueError("WDT(%d) doesn't exist" % id)
        if timeout < 1:
            raise ValueError("WDT timeout too short")
        _simhw.wdt[1] = timeout / 1000
        _simhw.wdt[0] = _simhw.clock() + _simhw.wdt[1]

    def feed(self):
        if _simhw.wdt[1] is not None:
            _simhw.wdt[0] = _simhw.clock() + _simhw.wdt[1]


class RTC:
    # The unix port's clock is the host's: datetime() reads it; setting it is accepted
    # and changes nothing (time.time() stays right).
    _inst = None

    def __new__(cls, id=0):
        if cls._inst is None:
            cls._inst = object.__new__(cls)
        return cls._inst

    def __init__(self, id=0):
        pass

    def datetime(self, *args):
        if args:
            return None
        t = _time.time_ns()
        tm = _time.gmtime(t // 1000000000)
        return (tm[0], tm[1], tm[2], tm[6], tm[3], tm[4], tm[5], (t // 1000) % 1000000)

    def init(self, dt):
        pass
