# `machine` (esp32 port) for the MicroPython backend of the simulated board: Pin,
# Signal, PWM and freq() from the shared pin model (simworld/pins.py) over this
# board's pin files; resets end the interpreter and the launcher boots it again.
import time as _time
import _simhw
from simworld import pins as _pins
from simworld import resets as _resets

globals().update(_pins.machine_dict(_simhw.bank))

globals().update(_resets.machine_dict(_simhw.hard_reset, lambda: _simhw.reset_cause, _simhw.mac,
                                      _time.sleep_ms, _simhw.clock, _simhw.wdt))


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
