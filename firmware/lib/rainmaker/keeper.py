# The schedule engine's resident part. Schedules and scenes live in
# rainmaker.sched (docs/protocol.md#schedules), which is large: by default it is
# loaded only while it has work (a write to Schedules or Scenes, a schedule
# falling due, a new time zone, the first poll after boot) and dropped after.
# The rest of the time only the Keeper below stays in the heap; the lists
# themselves are the params' values. The agent calls poll(now) of the object in
# each service's `engine`; each (payload, source) it returns goes to the param
# sync. This module, not std.py, holds it: std is dropped once the node is built.
import sys
from micropython import const
from .node import Param, Device, READ, WRITE, PERSIST, unload

_DAY = const(86400)
_MAX = const(10)  # schedules, and scenes (sched.MAX)
_HOLD = const(60)  # s before a poll tries the engine again after a MemoryError
_CLOCK_SET = const(1546300800)  # 2019-01-01 (sched.CLOCK_SET): an earlier clock has not been set


class Keeper:
    """The schedule engine's resident part: when it is next needed, and the
    little the params do not hold. Only plain values: nothing of rainmaker.sched
    may stay referenced, or its code would stay in the heap."""

    def __init__(self):
        self.at = 0  # Unix s at which the engine is needed; 0: at the next poll; None: no schedule armed
        self.last = None  # the last polled now; None: no poll since boot (the restored ts are unchecked)
        self.zone = None  # tz.current at the last poll (None: no tz module)
        self.moved = False  # the Time service changed the zone: re-arm at the next poll
        self.queue = []  # scene (de)activations waiting for the next poll: [(action, source)]
        self.clock = None  # set by the agent: Unix s, to arm a schedule when it is written
        self.schedules = None  # the Schedule and Scenes service devices
        self.scenes = None
        self.hold = 0  # Unix s before which polls do not try the engine again (it found no memory)

    def _run(self, now, name=None, ops=None):
        from . import sched

        try:
            return sched.serve(self, now, name, ops)
        finally:
            unload("sched")

    def poll(self, now):
        """[(params-write bytes, source)] to hand to the param sync: what fell due by now."""
        at = self.at
        last = self.last
        # The zone in effect (rainmaker.tz.current), or None: tz is not loaded.
        z = getattr(sys.modules.get("rainmaker.tz"), "current", None)
        # A clock step back of up to a day never re-arms anything (the engine
        # keeps the next occurrence so that nothing fires twice): no need to load it.
        if last is None or (at is not None and at <= now) or now < last - _DAY or z is not self.zone:
            if self.queue or self._lists() or now < _CLOCK_SET:
                if 0 < self.hold - now <= _HOLD:  # (a clock step back ends the wait)
                    return ()
                try:
                    return self._run(now)
                except MemoryError:
                    # No room to load the engine: tried again in a minute,
                    # not at every pass (the agent logs each failure).
                    self.hold = now + _HOLD
                    raise
            # No schedule and no scene: nothing the engine could arm or fire
            # (a node whose lists are empty never loads it).
            self.at = None
            self.moved = False
            self.zone = z
        self.last = now
        return ()

    def _lists(self):
        for d in (self.schedules, self.scenes):
            if d is not None and d.params[0].value:
                return True
        return False

    def write(self, device, values, source):
        """The services' param callback: the engine answers with the new list."""
        name = device.params[0].name
        return {name: self._run(None, name, values[name])}

    def rezone(self):
        """The time zone changed: re-arm every schedule at the next poll."""
        # Not while there is no clock: that is the zone restored at boot (the
        # agent sets the clock once the params are restored), the zone the
        # persisted ts were armed in. Re-arming would skip what fell due
        # during the reboot.
        if self.clock is not None:
            self.moved = True
            self.at = 0


_keeper = None


def service(engine, part, dname, dtype, pname, ptype):
    """A Schedule or Scenes service device (std.schedule_service() and
    std.scenes_service() build them through this)."""
    global _keeper
    k = engine
    if k is None:
        if _keeper is None or getattr(_keeper, part) is not None:
            _keeper = Keeper()  # one per node: a second node (tests) gets its own
        k = _keeper
    d = Device(dname, dtype, service=True)
    setattr(d, "engine", k)  # what the agent polls: the Keeper, or the app's own sched.Engine
    d.add(Param(pname, [], "array", ptype, READ | WRITE | PERSIST, (0, _MAX)))
    if engine is None:
        d.cb = k.write
        setattr(k, part, d)
    else:
        # The app's own sched.Engine, resident: a write goes to its list, which
        # answers with the new list; the param sync stores, persists and reports that.
        p = d.params[0]
        e = getattr(engine, part)
        e.param = p
        e.device = d
        e.seen = p.value
        d.cb = lambda device, values, source: {pname: e.answer(values[pname])}
    return d
