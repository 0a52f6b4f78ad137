# Standard RainMaker devices and params (docs/protocol.md#standard-types): the names, types,
# bounds and UI hints that the phone apps know how to draw.
import sys
from micropython import const
from .node import Param, Device, READ, WRITE, TIME_SERIES, PERSIST, unload


def name(value, pname="Name"):
    return Param(pname, value, "string", "esp.param.name", READ | WRITE | PERSIST)


def power(value=False, pname="Power"):
    return Param(pname, value, "bool", "esp.param.power", READ | WRITE, ui_type="esp.ui.toggle")


def _slider(pname, ptype, value, lo, hi, step=1, ui="esp.ui.slider"):
    return Param(pname, value, "int", ptype, READ | WRITE, (lo, hi, step), ui_type=ui)


def brightness(value=100, pname="Brightness"):
    return _slider(pname, "esp.param.brightness", value, 0, 100)


def hue(value=0, pname="Hue"):
    return _slider(pname, "esp.param.hue", value, 0, 360, ui="esp.ui.hue-slider")


def saturation(value=100, pname="Saturation"):
    return _slider(pname, "esp.param.saturation", value, 0, 100)


def intensity(value=100, pname="Intensity"):
    return _slider(pname, "esp.param.intensity", value, 0, 100)


def cct(value=4000, pname="CCT"):
    return _slider(pname, "esp.param.cct", value, 2700, 6500, 100)


def speed(value=0, pname="Speed"):
    return _slider(pname, "esp.param.speed", value, 0, 5)


def direction(value=0, pname="Direction"):
    return _slider(pname, "esp.param.direction", value, 0, 1, ui="esp.ui.dropdown")


def temperature(value=0.0, pname="Temperature"):
    return Param(pname, float(value), "float", "esp.param.temperature", READ | TIME_SERIES,
                 ui_type="esp.ui.text")


def _device(dname, dtype, cb, primary, extra):
    d = Device(dname, dtype, cb, primary.name)
    d.add(name(dname))
    d.add(primary)
    for p in extra:
        d.add(p)
    return d


def switch(dname="Switch", cb=None, on=False):
    return _device(dname, "esp.device.switch", cb, power(on), ())


def lightbulb(dname="Light", cb=None, on=False, level=100, color=True):
    """Power and Brightness; with color, Hue and Saturation too."""
    extra = [brightness(level)]
    if color:
        extra += [hue(), saturation()]
    return _device(dname, "esp.device.lightbulb", cb, power(on), extra)


def fan(dname="Fan", cb=None, on=False, fan_speed=None):
    extra = [speed(fan_speed)] if fan_speed is not None else ()
    return _device(dname, "esp.device.fan", cb, power(on), extra)


def temperature_sensor(dname="Temperature Sensor", value=0.0):
    return _device(dname, "esp.device.temperature-sensor", None, temperature(value), ())


# -- services -------------------------------------------------------------------

_SYSTEM = ("Reboot", "esp.param.reboot"), ("Factory-Reset", "esp.param.factory-reset"), \
    ("Wi-Fi-Reset", "esp.param.wifi-reset")


def _system(device, values, source):
    # A write of true asks for the action; the agent carries it out 2 s
    # later, as the SDK does, so the echo of the write reaches the app first.
    for pname, _ in _SYSTEM:
        if values.get(pname) is True:
            device.request = pname
    return None


class _System(Device):
    request = None  # the param whose write of true asked for an action


def system_service(reboot=True, factory_reset=True, wifi_reset=True):
    """The System service: reboot, factory reset and Wi-Fi reset from the app.

    A factory reset forgets Wi-Fi, params (schedules and scenes among them),
    the user mapping and the local-control PoP, and keeps the node's identity
    (rainmaker.json and its certificates), so the board can be provisioned
    and added again by a new user.
    """
    d = _System("System", "esp.service.system", _system, service=True)
    for (pname, ptype), on in zip(_SYSTEM, (reboot, factory_reset, wifi_reset)):
        if on:
            d.add(Param(pname, False, "bool", ptype, READ | WRITE))
    return d


# Schedules and scenes live in rainmaker.sched (docs/protocol.md#schedules),
# which is large. By default it is loaded only while it has work: a write to
# Schedules or Scenes, a schedule falling due, a new time zone, the first poll
# after boot. The rest of the time only the Keeper below stays in the heap; the
# lists themselves are the params' values. The agent calls poll(now) of the
# object in each service's `engine`; each (payload, source) it returns goes to
# the param sync.

_DAY = const(86400)
_MAX = const(10)  # schedules, and scenes (sched.MAX)


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
            return self._run(now)
        self.last = now
        return ()

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


def _service(engine, part, dname, dtype, pname, ptype):
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


def schedule_service(engine=None, dname="Schedule"):
    """The Schedule service: param Schedules (array, persisted, at most 10).

    engine: a rainmaker.sched.Engine to keep in the heap (tests, apps with
    their own zone or clock); None loads the engine only when it has work.
    """
    return _service(engine, "schedules", dname, "esp.service.schedule",
                    "Schedules", "esp.param.schedules")


def scenes_service(engine=None, dname="Scenes", deactivation=False):
    """The Scenes service: param Scenes (array, persisted, at most 10).

    deactivation: whether "deactivate" re-applies a scene's action with source
    "Scene Deactivate" (the app offers it only when this is "yes").
    """
    if engine:
        engine.scenes.deactivation = deactivation  # (the Keeper reads the attribute below)
    d = _service(engine, "scenes", dname, "esp.service.scenes", "Scenes", "esp.param.scenes")
    d.attrs.append(("deactivation_support", "yes" if deactivation else "no"))
    return d


def local_control_service(pop, sec):
    """The "Local Control" service: through it the cloud hands the local control
    PoP and its security version (1 or 2) to the phone apps of the node's users."""
    svc = Device("Local Control", "esp.service.local_control", service=True)
    svc.add(Param("POP", pop, "string", "esp.param.local_control_pop", READ))
    svc.add(Param("Type", sec, "int", "esp.param.local_control_type", READ))
    return svc


# -- the Time service (docs/protocol.md#time-service) --------------------------


class _Posix(Param):
    # The TZ-POSIX param: only a parseable POSIX TZ string (or "", meaning
    # UTC) passes check(), and every value it takes, whether written, restored
    # from flash at boot or set locally, becomes tz.current at once.

    def check(self, v):
        err, v = Param.check(self, v)
        if err is None and v:
            from . import tz

            try:
                tz.parse(v)
            except ValueError as e:
                return str(e), None
        return err, v

    @property
    def value(self):
        return self._v

    @value.setter
    def value(self, v):
        from . import tz

        self._v = v
        old = tz.current
        if not v:
            tz.current = tz.UTC
        elif old.posix != v:  # the restored or echoed zone is often the one in effect
            tz.current = tz.parse(v)
        if tz.current is not old:
            _rezone()


def _rezone():
    # Schedules armed in the old zone fire at the wrong wall time: have them
    # re-armed at the next poll rather than at their next due time.
    if _keeper is not None:
        _keeper.rezone()


def _time_write(dev, values, source):
    # A TZ name is looked up and, if known, both params change; a TZ-POSIX
    # written in the same message wins, as the SDK applies it second.
    out = {}
    name = values.get("TZ")
    if name is not None:
        from . import tz, log

        try:
            posix = tz.lookup(name)
        except OSError as e:
            posix = None
            log.error("time", str(e))
        else:
            if posix is None:
                log.warn("time", "unknown time zone %r: give an IANA name such as Europe/Berlin, "
                         "or write TZ-POSIX" % (name,))
        if posix is not None:
            out["TZ"] = name
            out["TZ-POSIX"] = posix
    if "TZ-POSIX" in values:
        out["TZ-POSIX"] = values["TZ-POSIX"]
    return out


def time_service(default=""):
    """The "Time" service: the node's time zone, set by the phone apps after provisioning.

    TZ holds an IANA name (written by the apps: {"Time":{"TZ":"Europe/Berlin"}}),
    TZ-POSIX the POSIX rule in effect; both persist. The zone in effect is
    rainmaker.tz.current: UTC until a zone is written or restored, or the IANA
    name `default` ("Asia/Shanghai" is the C SDK's).
    """
    from . import tz

    posix = (tz.lookup(default) or "") if default else ""
    if default and not posix:
        raise ValueError("default time zone %r is not in the IANA table" % (default,))
    d = Device("Time", "esp.service.time", _time_write, service=True)
    d.add(Param("TZ", default if posix else "", "string", "esp.param.tz", READ | WRITE | PERSIST))
    d.add(_Posix("TZ-POSIX", posix, "string", "esp.param.tz_posix", READ | WRITE | PERSIST))
    return d
