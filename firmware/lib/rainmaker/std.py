# Standard RainMaker devices and params (docs/protocol.md#standard-types): the names, types,
# bounds and UI hints that the phone apps know how to draw.
from .node import Param, Device, READ, WRITE, TIME_SERIES, PERSIST


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


def system_service(reboot=True, factory_reset=True, wifi_reset=True):
    """The System service: reboot, factory reset and Wi-Fi reset from the app.

    A factory reset forgets Wi-Fi, params (schedules and scenes among them),
    the user mapping and the local-control PoP, and keeps the node's identity
    (rainmaker.json and its certificates), so the board can be provisioned
    and added again by a new user.
    """
    # No callback: a param written true is the request, and the agent carries
    # it out 2 s later (rainmaker.system), after its echo.
    d = Device("System", "esp.service.system", service=True)
    for (pname, ptype), on in zip(_SYSTEM, (reboot, factory_reset, wifi_reset)):
        if on:
            d.add(Param(pname, False, "bool", ptype, READ | WRITE))
    return d


# Schedules and scenes: rainmaker.keeper builds them (docs/protocol.md#schedules).


def schedule_service(engine=None, dname="Schedule"):
    """The Schedule service: param Schedules (array, persisted, at most 10).

    engine: a rainmaker.sched.Engine to keep in the heap (tests, apps with
    their own zone or clock); None loads the engine only when it has work.
    """
    from .keeper import service

    return service(engine, "schedules", dname, "esp.service.schedule", "Schedules", "esp.param.schedules")


def scenes_service(engine=None, dname="Scenes", deactivation=False):
    """The Scenes service: param Scenes (array, persisted, at most 10).

    deactivation: whether "deactivate" re-applies a scene's action with source
    "Scene Deactivate" (the app offers it only when this is "yes").
    """
    if engine:
        engine.scenes.deactivation = deactivation  # (the Keeper reads the attribute below)
    from .keeper import service

    d = service(engine, "scenes", dname, "esp.service.scenes", "Scenes", "esp.param.scenes")
    d.attrs.append(("deactivation_support", "yes" if deactivation else "no"))
    return d


def local_control_service(pop, sec):
    """The "Local Control" service: through it the cloud hands the local control
    PoP and its security version (1 or 2) to the phone apps of the node's users."""
    svc = Device("Local Control", "esp.service.local_control", service=True)
    svc.add(Param("POP", pop, "string", "esp.param.local_control_pop", READ))
    svc.add(Param("Type", sec, "int", "esp.param.local_control_type", READ))
    return svc


def time_service(default=""):
    """The "Time" service: the node's time zone, set by the phone apps after provisioning.

    TZ holds an IANA name (written by the apps: {"Time":{"TZ":"Europe/Berlin"}}),
    TZ-POSIX the POSIX rule in effect; both persist. The zone in effect is
    rainmaker.tz.current: UTC until a zone is written or restored, or the IANA
    name `default` ("Asia/Shanghai" is the C SDK's).
    """
    # The running params' code (the TZ-POSIX param, the write callback) is
    # in tz.py, which stays loaded with the zone; the table search is loaded
    # for the default's lookup only.
    from .tz import _Posix, _time_write

    posix = ""
    if default:
        from . import zones
        from .node import unload

        try:
            posix = zones.lookup(default) or ""
        finally:
            unload("zones")
        if not posix:
            raise ValueError("default time zone %r is not in the IANA table: give a name such as "
                             "Europe/Berlin" % (default,))
    d = Device("Time", "esp.service.time", _time_write, service=True)
    d.add(Param("TZ", default if posix else "", "string", "esp.param.tz", READ | WRITE | PERSIST))
    d.add(_Posix("TZ-POSIX", posix, "string", "esp.param.tz_posix", READ | WRITE | PERSIST))
    return d
