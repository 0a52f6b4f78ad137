# The Schedule and Scenes services (docs/protocol.md#schedules): every operation
# and trigger as the phone apps send them, next-fire times, firing across DST,
# reboots and clock steps, bad input for every field, and a fuzz of the parser.
# Times are checked in a test zone of our own (Central European time with the
# EU summer-time rule), written without the engine's calendar code;
# tests/test_sched_tz.py checks this zone and the engine against CPython's
# zoneinfo.
import json
import sys
from rainmaker import Node, std, log, sched
from rainmaker.sync import Sync, CONFIG, INIT, LOCAL
from util import js, MemStore, raises, report

log.level = -1

DAY = 86400
# The WASI MicroPython VM of tests/test_micropython.py has a 1 MiB heap whose
# collector must not run mid-test: fewer fuzz rounds there. All of them run on
# CPython, and on the unix port (tests/test_sched_tz.py sets ROUNDS).
ROUNDS = 40 if sys.implementation.name == "micropython" else 400


# -- a test zone: fixed offset plus EU summer time -------------------------------

def _leap(y):
    return y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)


def _mdays(y, m):
    return (31, 29 if _leap(y) else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)[m - 1]


def _days(y, m, d):
    n = 0
    yr0 = 1970
    if y >= 2000:
        n, yr0 = 10957, 2000
    for yr in range(yr0, y):
        n += 366 if _leap(yr) else 365
    for mo in range(1, m):
        n += _mdays(y, mo)
    return n + d - 1


def _civil(n):
    y = 1970
    if n >= 10957:  # from 2000-01-01: quicker on the VM
        y = 2000
        n -= 10957
    while n >= (366 if _leap(y) else 365):
        n -= 366 if _leap(y) else 365
        y += 1
    m = 1
    while n >= _mdays(y, m):
        n -= _mdays(y, m)
        m += 1
    return y, m, n + 1


def _last_sunday(y, m):
    n = _days(y, m, 31)
    return n - ((n + 3) % 7 - 6) % 7  # 1970-01-01 was a Thursday (3)


class EuZone:
    """UTC+std, one hour more from the last Sunday of March to the last of October (01:00 UTC).

    What the engine takes of a zone is what rainmaker.tz's zones have:
    local(), offset(), std_off, dst_off and dst (None: no daylight time).
    utc() is this test's own wall time -> UTC, against sched.wall().
    """

    def __init__(self, std=3600, dst=True):
        self.set(std, dst)

    def set(self, std, dst):
        self.std_off = std
        self.dst_off = std + 3600 if dst else std
        self.dst = "CEST" if dst else None

    def bounds(self, y):
        return _last_sunday(y, 3) * DAY + 3600, _last_sunday(y, 10) * DAY + 3600

    def offset(self, t):
        if self.dst is None:
            return self.std_off
        s, e = self.bounds(_civil(t // DAY)[0])
        return self.dst_off if s <= t < e else self.std_off

    def local(self, t):
        w = t + self.offset(t)
        n = w // DAY
        y, m, d = _civil(n)
        s = w % DAY
        return y, m, d, s // 3600, s // 60 % 60, s % 60, (n + 3) % 7, n - _days(y, 1, 1) + 1

    def utc(self, y, m, d, h, mi, s=0):
        w = _days(y, m, d) * DAY + h * 3600 + mi * 60 + s
        c = [t for t in (w - self.dst_off, w - self.std_off) if t + self.offset(t) == w]
        if c:
            return min(c)  # in the autumn overlap: the first occurrence
        return self.bounds(y)[0]  # in the spring gap: the instant it ends


EU = EuZone()


def at(y, m, d, h=0, mi=0):
    """A Central European wall-clock time as Unix seconds."""
    return EU.utc(y, m, d, h, mi)


T0 = 1774440000  # Wed 2026-03-25 12:00 UTC, 13:00 in Berlin (checked against zoneinfo)


class Clock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


class App:
    def __init__(self):
        self.calls = []

    def __call__(self, device, values, source):
        self.calls.append((device.name, dict(values), source))


def setup(t=T0, store=None, zone=EU, deactivation=True):
    clock = Clock(t)
    eng = sched.Engine(zone=zone, clock=clock)
    app = App()
    n = Node("N", "T")
    n.node_id = "N1"
    n.add(std.lightbulb("Light", cb=app))
    n.add(std.schedule_service(eng))
    n.add(std.scenes_service(eng, deactivation=deactivation))
    s = Sync(n, store)
    assert report(s, 0)[0] == CONFIG
    s.connected()
    assert report(s, 0)[0] == INIT
    assert report(s, 0) is None
    return n, s, eng, clock, app


def write(s, obj):
    return s.remote(json.dumps(obj).encode(), 0)


_tick = [0]


def reported(s):
    """The next params/local report, as JSON (a later tick each time: flash writes are spaced)."""
    _tick[0] += 10000
    r = report(s, _tick[0])
    if r is None:  # a local change (a schedule fired or was armed) waits out the merge window
        _tick[0] += 10000
        r = report(s, _tick[0])
    assert r is not None and r[0] == LOCAL, r
    return js(r[1])


def sched_list(n):
    return n.device("Schedule")["Schedules"]


def one(n, id):
    for e in sched_list(n):
        if e["id"] == id:
            return e
    return None


def one_report(eng, id):
    return eng.schedules.get(id).report()


def drive(eng, s, now):
    """What the agent's periodic poll does: hand due actions to the param sync."""
    out = eng.poll(now)
    for payload, source in out:
        s.remote(payload, 0, source)
    return [src for _, src in out]


EVE = {"Schedule": {"Schedules": [{"operation": "add", "id": "ab12", "name": "Eve",
                                   "triggers": [{"d": 31, "m": 1110}], "action": {"Light": {"Power": True}}}]}}


# -- the services' config --------------------------------------------------------

def test_config_is_wire_exact():
    n = Node("N", "T", platform="esp32")
    n.node_id = "N1"
    eng = sched.Engine(zone=EU)
    n.add(std.schedule_service(eng))
    n.add(std.scenes_service(eng))
    conf = json.loads(n.config())
    assert conf["devices"] == []
    svc = n.config()
    assert ('{"name":"Schedule","type":"esp.service.schedule","params":[{"name":"Schedules",'
            '"type":"esp.param.schedules","data_type":"array","properties":["read","write"],'
            '"bounds":{"max":10}}]}') in svc
    assert ('{"name":"Scenes","type":"esp.service.scenes","attributes":[{"name":"deactivation_support",'
            '"value":"no"}],"params":[{"name":"Scenes","type":"esp.param.scenes","data_type":"array",'
            '"properties":["read","write"],"bounds":{"max":10}}]}') in svc
    # No daylight_support: sunrise/sunset triggers are not offered.
    assert "daylight_support" not in svc
    assert sched_list(n) == [] and n.device("Scenes")["Scenes"] == []
    n2 = Node("N", "T")
    n2.add(std.scenes_service(sched.Engine(), deactivation=True))
    assert '"value":"yes"' in n2.config()


# -- operations ------------------------------------------------------------------

def test_add_as_the_app_sends_it():
    n, s, eng, clock, app = setup()
    assert write(s, EVE) == 1
    e = one(n, "ab12")
    # Weekdays (Mon..Fri = bits 0..4) at 18:30 local; it is Wednesday 13:00.
    assert e == {"name": "Eve", "id": "ab12", "enabled": True, "action": {"Light": {"Power": True}},
                 "triggers": [{"m": 1110, "d": 31, "ts": at(2026, 3, 25, 18, 30)}]}
    assert at(2026, 3, 25, 18, 30) == 1774459800  # the test zone agrees with zoneinfo
    if sys.implementation.name == "cpython":  # MicroPython's dict has no key order
        assert list(e.keys()) == ["name", "id", "enabled", "action", "triggers"]
    assert reported(s) == {"Schedule": {"Schedules": [e]}}
    assert eng.next_due() == at(2026, 3, 25, 18, 30)
    assert app.calls == []


def test_report_key_order_and_optional_fields():
    n, s, eng, clock, app = setup()
    write(s, {"Schedule": {"Schedules": [{"operation": "add", "id": "x", "name": "X", "info": "hi", "flags": 5,
                                          "validity": {"start": T0 - 10, "end": T0 + 30 * DAY},
                                          "triggers": [{"m": 60, "dd": 1, "mm": 4095, "yy": 0, "r": True}],
                                          "action": {"Light": {"Power": False}}}]}})
    e = one(n, "x")
    assert e["info"] == "hi" and e["flags"] == 5
    assert e["validity"] == {"start": T0 - 10, "end": T0 + 30 * DAY}
    assert e["triggers"] == [{"m": 60, "dd": 1, "mm": 4095, "yy": 0, "r": 1, "ts": at(2026, 4, 1, 1, 0)}]
    text = json.dumps(sched.Sched.report(eng.schedules.get("x")))
    if sys.implementation.name == "cpython":  # dicts keep insertion order: the SDK's key order
        assert text.index('"id"') < text.index('"enabled"') < text.index('"info"') < text.index('"flags"')
        assert text.index('"flags"') < text.index('"validity"') < text.index('"action"') < text.index('"triggers"')
    # an edit that names one bound keeps the other; 0 clears one
    eng.schedules.write([{"operation": "edit", "id": "x", "validity": {"end": T0 + 40 * DAY}}])
    assert one_report(eng, "x")["validity"] == {"start": T0 - 10, "end": T0 + 40 * DAY}
    eng.schedules.write([{"operation": "edit", "id": "x", "validity": {"start": 0}}])
    assert one_report(eng, "x")["validity"] == {"end": T0 + 40 * DAY}
    eng.schedules.write([{"operation": "edit", "id": "x", "validity": {"end": 0}, "info": ""}])
    assert "validity" not in one_report(eng, "x") and "info" not in one_report(eng, "x")


def test_edit_enable_disable_remove():
    n, s, eng, clock, app = setup()
    write(s, EVE)
    reported(s)
    # edit: a new name only keeps everything else
    write(s, {"Schedule": {"Schedules": [{"operation": "edit", "id": "ab12", "name": "Evening"}]}})
    e = one(n, "ab12")
    assert e["name"] == "Evening" and e["triggers"][0]["d"] == 31 and e["action"] == {"Light": {"Power": True}}
    # edit the trigger: re-armed to the new time
    write(s, {"Schedule": {"Schedules": [{"operation": "edit", "id": "ab12",
                                          "triggers": [{"d": 64, "m": 480}], "action": {"Light": {"Power": False}}}]}})
    e = one(n, "ab12")
    assert e["triggers"][0] == {"m": 480, "d": 64, "ts": at(2026, 3, 29, 8, 0)}  # Sunday 08:00 (summer time)
    assert e["action"] == {"Light": {"Power": False}}
    write(s, {"Schedule": {"Schedules": [{"operation": "disable", "id": "ab12"}]}})
    assert one(n, "ab12")["enabled"] is False and one(n, "ab12")["triggers"][0]["ts"] == 0
    assert eng.next_due() is None
    # edit of a disabled schedule keeps it disabled
    write(s, {"Schedule": {"Schedules": [{"operation": "edit", "id": "ab12", "name": "Sun"}]}})
    assert one(n, "ab12")["enabled"] is False
    write(s, {"Schedule": {"Schedules": [{"operation": "enable", "id": "ab12"}]}})
    assert one(n, "ab12")["enabled"] is True and one(n, "ab12")["triggers"][0]["ts"] == at(2026, 3, 29, 8, 0)
    write(s, {"Schedule": {"Schedules": [{"operation": "remove", "id": "ab12"}]}})
    assert sched_list(n) == []
    assert reported(s) == {"Schedule": {"Schedules": []}}


def test_operation_prefixes_and_sdk_rules():
    n, s, eng, clock, app = setup()
    # "edit" of an unknown id adds it
    write(s, {"Schedule": {"Schedules": [{"operation": "edit", "id": "e1", "name": "E",
                                          "triggers": [{"d": 127, "m": 0}], "action": {"Light": {"Power": True}}}]}})
    assert one(n, "e1") is not None
    # "add" of an existing id is refused, the stored one kept
    errs = eng.schedules.write([{"operation": "add", "id": "e1", "name": "Other",
                                 "triggers": [{"d": 1, "m": 1}], "action": {"Light": {"Power": False}}}])
    assert len(errs) == 1 and "already exists" in errs[0]
    assert eng.schedules.get("e1").name == "E"
    # prefixes, as the SDK compares them
    assert eng.schedules.write([{"operation": "dis", "id": "e1"}]) == []
    assert eng.schedules.get("e1").enabled is False
    assert eng.schedules.write([{"operation": "en", "id": "e1"}]) == []
    assert eng.schedules.get("e1").enabled is True
    assert eng.schedules.write([{"operation": "a", "id": "a1", "name": "A", "triggers": [{"rsec": 5}],
                                 "action": {"Light": {"Power": True}}}]) == []
    assert eng.schedules.write([{"operation": "r", "id": "a1"}]) == []
    assert eng.schedules.get("a1") is None
    for bad in ("adds", "enabled", "delete", "", "ADD", "editeditedit", 1, None, True):
        errs = eng.schedules.write([{"operation": bad, "id": "e1"}])
        assert len(errs) == 1 and "operation must be" in errs[0], (bad, errs)
    assert eng.schedules.write([{"id": "e1"}])[0].endswith("operation must be add, edit, remove, enable or disable")
    errs = eng.schedules.write([{"operation": "remove", "id": "zz"}])
    assert "no schedule with this id" in errs[0]


def test_bad_elements_are_refused_one_by_one():
    n, s, eng, clock, app = setup()
    ops = [
        {"operation": "add", "id": "ok1", "name": "A", "triggers": [{"d": 1, "m": 60}], "action": {"Light": {"Power": True}}},
        {"operation": "add", "id": "bad", "name": "B", "triggers": [{"d": 1, "m": 1440}], "action": {"Light": {"Power": True}}},
        {"operation": "add", "id": "ok2", "name": "C", "triggers": [{"rsec": 60}], "action": {"Light": {"Power": True}}},
    ]
    assert write(s, {"Schedule": {"Schedules": ops}}) == 1
    assert [e["id"] for e in sched_list(n)] == ["ok1", "ok2"]
    assert one(n, "ok2")["triggers"][0] == {"rsec": 60, "ts": T0 + 60}


def test_bad_input_for_every_field():
    n, s, eng, clock, app = setup()
    base = {"operation": "add", "id": "b1", "name": "B", "triggers": [{"d": 1, "m": 60}],
            "action": {"Light": {"Power": True}}}
    cases = [
        ("id", None, "id must be"), ("id", "", "id must be"), ("id", "123456789", "id must be"),
        ("id", 12, "id must be"), ("name", None, "name is required"), ("name", "", "name must not be empty"),
        ("name", "n" * 33, "longer than 32"), ("name", 5, "name must be a string"),
        ("info", "i" * 129, "longer than 128"), ("info", [], "info must be a string"),
        ("flags", "1", "flags must be"), ("flags", 1.5, "flags must be"), ("flags", 2 ** 40, "flags must be"),
        ("flags", True, "flags must be"),
        ("action", None, "action is required"), ("action", [], "action must be"), ("action", {}, "action must be"),
        ("action", "x", "action must be"), ("action", {"Light": {"Name": "x" * 1100}}, "more than 1024"),
        ("validity", [], "validity must be"), ("validity", {"start": "1"}, "validity start/end"),
        ("validity", {"start": -1}, "validity start/end"), ("validity", {"end": 2 ** 50}, "validity start/end"),
        ("validity", {"start": T0 + 10, "end": T0}, "ends before it starts"),
        ("triggers", None, "triggers must be"), ("triggers", [], "triggers must be"), ("triggers", {}, "triggers must be"),
        ("triggers", [{"d": 1, "m": 1}] * 9, "only 1 is used"), ("triggers", ["x"], "triggers[0] must be"),
        ("triggers", [{}], "a trigger needs"), ("triggers", [{"m": 60}], "a trigger needs"),
        ("triggers", [{"d": 1}], "m must be"), ("triggers", [{"d": 1, "m": -1}], "m must be"),
        ("triggers", [{"d": 1, "m": 1440}], "m must be"), ("triggers", [{"d": 1, "m": 60.0}], "m must be"),
        ("triggers", [{"d": 1, "m": "60"}], "m must be"), ("triggers", [{"d": 128, "m": 1}], "weekday mask"),
        ("triggers", [{"d": -1, "m": 1}], "weekday mask"), ("triggers", [{"d": True, "m": 1}], "weekday mask"),
        ("triggers", [{"rsec": 0}], "rsec must be"), ("triggers", [{"rsec": -5}], "rsec must be"),
        ("triggers", [{"rsec": "5"}], "rsec must be"), ("triggers", [{"rsec": 2 ** 31}], "rsec must be"),
        ("triggers", [{"m": 1, "dd": 32}], "dd must be"), ("triggers", [{"m": 1, "dd": "1"}], "dd must be"),
        ("triggers", [{"m": 1, "dd": 1, "mm": 4096}], "mm must be"), ("triggers", [{"m": 1, "dd": 1, "mm": -1}], "mm must be"),
        ("triggers", [{"m": 1, "dd": 1, "yy": 1969}], "yy must be"), ("triggers", [{"m": 1, "dd": 1, "yy": "2026"}], "yy must be"),
        ("triggers", [{"m": 1, "dd": 1, "r": "yes"}], "r must be"), ("triggers", [{"m": 1, "dd": 1, "r": 2}], "r must be"),
        ("triggers", [{"m": 1, "dd": 1, "d": 3}], "cannot both be set"),
        ("triggers", [{"m": 1, "dd": 0, "mm": 3}], "dd is required"),
        ("triggers", [{"m": 1, "dd": 5, "r": True}], "needs a month mask"),
        ("triggers", [{"sr": 0, "lat": 52.5, "lon": 13.4, "d": 127}], "sunrise/sunset triggers are not supported"),
        ("triggers", [{"ss": -30, "lat": 52.5, "lon": 13.4}], "sunrise/sunset triggers are not supported"),
    ]
    for key, value, why in cases:
        e = dict(base)
        if value is None:
            del e[key]
        else:
            e[key] = value
        errs = eng.schedules.write([e])
        assert len(errs) == 1 and why in errs[0], (key, value, errs)
        assert eng.schedules.list == [], (key, value)
    for bad in ("x", 5, None, {"a": 1}, [1, 2], [[]], [None]):
        errs = eng.schedules.write(bad)
        assert errs and eng.schedules.list == [], bad
    # a write of the wrong JSON type never reaches the engine (the param sync refuses it)
    assert write(s, {"Schedule": {"Schedules": {"operation": "add"}}}) == 0


def test_limits():
    n, s, eng, clock, app = setup()

    def add(i):
        return {"operation": "add", "id": "s%d" % i, "name": "S%d" % i, "triggers": [{"d": 127, "m": i}],
                "action": {"Light": {"Power": True}}}
    # the param allows 10 elements per write; more is refused whole
    assert write(s, {"Schedule": {"Schedules": [add(i) for i in range(11)]}}) == 0
    assert sched_list(n) == []
    assert write(s, {"Schedule": {"Schedules": [add(i) for i in range(10)]}}) == 1
    assert len(sched_list(n)) == 10
    errs = eng.schedules.write([add(10)])
    assert "already 10 schedules" in errs[0] and "remove one first" in errs[0]
    assert len(eng.schedules.list) == 10
    assert len(eng.schedules.write([add(i) for i in range(11)])) == 1  # the engine's own bound
    assert eng.schedules.write([{"operation": "add", "id": "12345678", "name": "n" * 32, "info": "i" * 128,
                                 "triggers": [{"rsec": 1}], "action": {"L": {"P": 1}}}])[0].find("already 10") > 0
    write(s, {"Schedule": {"Schedules": [{"operation": "remove", "id": "s0"}]}})
    assert eng.schedules.write([{"operation": "add", "id": "12345678", "name": "n" * 32, "info": "i" * 128,
                                 "triggers": [{"rsec": 1}], "action": {"L": {"P": 1}}}]) == []


# -- triggers and next-fire times ------------------------------------------------------

def ts_of(eng, trig, now=T0, validity=None):
    eng.schedules.list = []
    e = {"operation": "add", "id": "t", "name": "T", "triggers": [trig], "action": {"Light": {"Power": True}}}
    if validity:
        e["validity"] = validity
    errs = eng.schedules.write([e], now)
    assert errs == [], errs
    s = eng.schedules.get("t")
    return s.due if s.enabled else None


def test_every_trigger_form():
    eng = sched.Engine(zone=EU)
    # days of week; Wed 25 March 13:00 local
    assert ts_of(eng, {"m": 780, "d": 4}) == at(2026, 4, 1, 13, 0)  # exactly now: next week
    assert ts_of(eng, {"m": 781, "d": 4}) == at(2026, 3, 25, 13, 1)
    assert ts_of(eng, {"m": 0, "d": 1}) == at(2026, 3, 30, 0, 0)  # Monday
    assert ts_of(eng, {"m": 1439, "d": 64}) == at(2026, 3, 29, 23, 59)  # Sunday
    assert ts_of(eng, {"m": 600, "d": 4}) == at(2026, 4, 1, 10, 0)  # Wednesday, passed today
    # one-shot day trigger: today if still ahead, else tomorrow
    assert ts_of(eng, {"m": 840, "d": 0}) == at(2026, 3, 25, 14, 0)
    assert ts_of(eng, {"m": 700, "d": 0}) == at(2026, 3, 26, 11, 40)
    # dates
    assert ts_of(eng, {"m": 90, "dd": 25}) == at(2026, 4, 25, 1, 30)  # one-shot, next 25th
    assert ts_of(eng, {"m": 900, "dd": 25}) == at(2026, 3, 25, 15, 0)
    assert ts_of(eng, {"m": 0, "dd": 31, "mm": 0}) == at(2026, 3, 31)
    assert ts_of(eng, {"m": 0, "dd": 31, "mm": 0}, now=at(2026, 4, 2)) == at(2026, 5, 31)
    assert ts_of(eng, {"m": 0, "dd": 0}) == at(2026, 3, 26, 0, 0)  # all wildcards: next HH:MM
    assert ts_of(eng, {"m": 0, "dd": 31, "mm": 8 | 16, "r": True}) == at(2026, 5, 31)  # April has no 31st
    assert ts_of(eng, {"m": 0, "dd": 29, "mm": 2, "r": True}) == at(2028, 2, 29)  # next leap year
    assert ts_of(eng, {"m": 0, "dd": 1, "mm": 1 | 1024 | 2048, "yy": 0, "r": 1}) == at(2026, 11, 1)
    assert ts_of(eng, {"m": 0, "dd": 1, "mm": 1, "r": True}) == at(2027, 1, 1)
    assert ts_of(eng, {"m": 0, "dd": 1, "mm": 1, "r": False}) is None  # this year's January is over
    assert ts_of(eng, {"m": 0, "dd": 1, "mm": 1, "yy": 2028, "r": False}) == at(2028, 1, 1)
    assert ts_of(eng, {"m": 0, "dd": 1, "mm": 1, "yy": 2028, "r": True}) == at(2028, 1, 1)
    assert ts_of(eng, {"m": 0, "dd": 15, "yy": 2027}) == at(2027, 1, 15)
    assert ts_of(eng, {"m": 0, "dd": 15, "yy": 2025}) is None  # a past year: nothing left, disabled
    assert ts_of(eng, {"m": 0, "dd": 30, "mm": 2, "r": True}) is None  # never exists
    # relative
    assert ts_of(eng, {"rsec": 90}) == T0 + 90
    assert ts_of(eng, {"rsec": 90}, validity={"start": T0 + 1000}) == T0 + 1090
    assert ts_of(eng, {"rsec": 90}, validity={"end": T0 + 10}) is None
    # validity windows
    assert ts_of(eng, {"m": 600, "d": 127}, validity={"start": at(2026, 5, 1, 12)}) == at(2026, 5, 2, 10)
    assert ts_of(eng, {"m": 600, "d": 127}, validity={"end": at(2026, 3, 26, 9)}) is None
    assert ts_of(eng, {"m": 600, "d": 127}, validity={"end": at(2026, 3, 26, 10)}) == at(2026, 3, 26, 10)


def test_triggers_report_as_the_sdk():
    n, s, eng, clock, app = setup()
    ops = [
        {"operation": "add", "id": "r", "name": "R", "triggers": [{"rsec": 30}], "action": {"Light": {"Power": True}}},
        {"operation": "add", "id": "o", "name": "O", "triggers": [{"m": 0, "d": 0}], "action": {"Light": {"Power": True}}},
        {"operation": "add", "id": "t", "name": "T", "triggers": [{"m": 0, "dd": 2, "mm": 8, "yy": 2026, "r": False}],
         "action": {"Light": {"Power": True}}},
    ]
    write(s, {"Schedule": {"Schedules": ops}})
    assert [e["triggers"] for e in sched_list(n)] == [
        [{"rsec": 30, "ts": T0 + 30}],
        [{"m": 0, "d": 0, "ts": at(2026, 3, 26)}],
        [{"m": 0, "dd": 2, "mm": 8, "yy": 2026, "r": 0, "ts": at(2026, 4, 2)}],
    ]


# -- firing --------------------------------------------------------------------------

def test_nothing_fires_or_arms_before_the_clock_is_set():
    clock = Clock(1000)  # the ESP32 starts near 2000 until NTP answers
    eng = sched.Engine(zone=EU, clock=clock)
    errs = eng.schedules.write([{"operation": "add", "id": "a", "name": "A", "triggers": [{"rsec": 10}],
                                 "action": {"Light": {"Power": True}}}])
    assert errs == [] and eng.schedules.get("a").due == 0
    assert eng.schedules.report()[0]["triggers"][0]["ts"] == 0
    assert eng.next_due() == 0  # poll soon: it must be armed
    assert eng.poll(1000) == [] and eng.poll(1546300799) == []
    assert eng.schedules.get("a").due == 0
    assert eng.poll(T0) == []
    assert eng.schedules.get("a").due == T0 + 10  # armed when the clock is set
    assert eng.next_due() == T0 + 10
    assert eng.poll(T0 + 9) == []
    assert eng.poll(T0 + 10) == [(b'{"Light": {"Power": true}}', "Schedule")]


def test_firing_applies_the_action_with_source_schedule():
    n, s, eng, clock, app = setup()
    write(s, EVE)
    reported(s)
    t = at(2026, 3, 25, 18, 30)
    assert drive(eng, s, t - 1) == []
    assert drive(eng, s, t) == ["Schedule"]
    assert app.calls == [("Light", {"Power": True}, "Schedule")]
    assert n.device("Light")["Power"] is True
    assert one(n, "ab12")["triggers"][0]["ts"] == at(2026, 3, 26, 18, 30)  # re-armed: Thursday
    rep = reported(s)
    assert rep["Light"] == {"Power": True} and rep["Schedule"]["Schedules"][0]["triggers"][0]["ts"] == at(2026, 3, 26, 18, 30)
    assert drive(eng, s, t + 5) == []  # never twice
    # Thursday's is missed (off for a day): Friday's fires, then the weekend is skipped
    assert drive(eng, s, at(2026, 3, 27, 18, 31)) == ["Schedule"]
    assert one(n, "ab12")["triggers"][0]["ts"] == at(2026, 3, 30, 18, 30)


def test_one_shot_fires_once_then_is_disabled_and_reported():
    n, s, eng, clock, app = setup()
    write(s, {"Schedule": {"Schedules": [{"operation": "add", "id": "tm", "name": "Timer",
                                          "triggers": [{"rsec": 300}], "action": {"Light": {"Power": True}}}]}})
    reported(s)
    assert eng.next_due() == T0 + 300
    assert drive(eng, s, T0 + 301) == ["Schedule"]
    e = one(n, "tm")
    assert e["enabled"] is False and e["triggers"][0] == {"rsec": 300, "ts": 0}
    rep = reported(s)
    assert rep["Schedule"]["Schedules"][0]["enabled"] is False
    assert eng.next_due() is None
    assert drive(eng, s, T0 + 400) == []
    # enabling it again starts a new countdown from now
    clock.t = T0 + 1000
    write(s, {"Schedule": {"Schedules": [{"operation": "enable", "id": "tm"}]}})
    assert one(n, "tm")["triggers"][0]["ts"] == T0 + 1300


def test_wall_time_to_utc():
    # sched.wall against the test zone's own answer, around both 2026
    # transitions (the gap 02:00-03:00, the repeated 02:00-03:00) and on days
    # far from them. (Not every minute: the WASM VM's collector must not run
    # in this test, see tests/vm.py; tests/test_sched_tz.py checks many more
    # against zoneinfo.)
    for y, m, d in ((2026, 3, 29), (2026, 10, 25), (2027, 1, 1), (2028, 2, 29)):
        for h in (0, 1, 2, 3, 4, 12, 23):
            for mi in (0, 30, 59):
                assert sched.wall(EU, y, m, d, h, mi) == EU.utc(y, m, d, h, mi), (y, m, d, h, mi)
    assert sched.wall(EU, 2026, 3, 29, 2, 30) == at(2026, 3, 29, 3, 0)  # in the gap: its end
    assert sched.wall(EU, 2026, 10, 25, 2, 30) == at(2026, 10, 25, 2, 30) == 1792888200  # the first 02:30
    assert sched.wall(EU, 2026, 10, 25, 2, 30, 5) == 1792888205
    # Fields run over; no daylight time; UTC; a bad month.
    assert sched.wall(EU, 2026, 2, 29, 24, 60) == at(2026, 3, 2, 1, 0)
    assert sched.wall(EuZone(std=-3600, dst=False), 2026, 7, 1, 0, 0) == sched.wall(sched.UTC, 2026, 7, 1, 1, 0)
    assert sched.wall(sched.UTC, 2026, 3, 25, 12, 0) == T0
    for m in (0, 13, -1):
        raises(ValueError, sched.wall, EU, 2026, m, 1, 0, 0)


def test_dst_spring_forward_and_fall_back():
    eng = sched.Engine(zone=EU)
    sc = eng.schedules
    sc.write([{"operation": "add", "id": "d", "name": "D", "triggers": [{"m": 150, "d": 127}],
               "action": {"L": {"P": True}}}], at(2026, 3, 28, 12))
    # 02:30 does not exist on 29 March: it fires when the gap ends (03:00 summer time)
    assert sc.get("d").due == at(2026, 3, 29, 3, 0) == 1774746000
    fired = []
    t = at(2026, 3, 28, 12)
    end = at(2026, 4, 1)
    while t < end:
        for i, a in sc.poll(t):
            fired.append(t)
        t += 300
    assert fired == [at(2026, 3, 29, 3, 0), at(2026, 3, 30, 2, 30), at(2026, 3, 31, 2, 30)]
    assert at(2026, 3, 30, 2, 30) - at(2026, 3, 29, 3, 0) == DAY - 30 * 60
    # 02:30 happens twice on 25 October: fired once, at the first
    sc.list = []
    sc.write([{"operation": "add", "id": "d", "name": "D", "triggers": [{"m": 150, "d": 127}],
               "action": {"L": {"P": True}}}], at(2026, 10, 24, 12))
    first = 1792888200  # 00:30 UTC, 02:30 summer time (from zoneinfo)
    assert sc.get("d").due == first
    fired = []
    t = at(2026, 10, 24, 12)
    end = at(2026, 10, 27)
    while t < end:
        for i, a in sc.poll(t):
            fired.append(t)
        t += 300
    assert fired == [first, at(2026, 10, 26, 2, 30)]
    assert at(2026, 10, 26, 2, 30) - first == DAY + 3600


def test_reboot_does_not_fire_twice():
    store = MemStore()
    n, s, eng, clock, app = setup(store=store)
    write(s, EVE)
    reported(s)
    t = at(2026, 3, 25, 18, 30)
    assert drive(eng, s, t) == ["Schedule"]
    reported(s)
    assert store.data["Schedule"]["Schedules"][0]["triggers"][0]["ts"] == at(2026, 3, 26, 18, 30)
    # reboot 20 s later: the persisted report is the state
    n2, s2, eng2, clock2, app2 = setup(t + 20, store=store)
    assert one(n2, "ab12")["triggers"][0]["ts"] == at(2026, 3, 26, 18, 30)
    assert drive(eng2, s2, t + 20) == [] and drive(eng2, s2, t + 60) == []
    assert eng2.next_due() == at(2026, 3, 26, 18, 30)
    assert app2.calls == []


def test_reboot_fires_a_missed_occurrence_once():
    store = MemStore()
    n, s, eng, clock, app = setup(store=store)
    write(s, EVE)
    reported(s)
    t = at(2026, 3, 25, 18, 30)
    # powered off from 18:29 to 18:33: the 18:30 occurrence fires once on boot
    n2, s2, eng2, clock2, app2 = setup(t + 180, store=store)
    assert drive(eng2, s2, t + 180) == ["Schedule"]
    assert app2.calls == [("Light", {"Power": True}, "Schedule")]
    assert drive(eng2, s2, t + 200) == []
    reported(s2)
    # a second reboot right after does not fire it again
    n3, s3, eng3, clock3, app3 = setup(t + 210, store=store)
    assert drive(eng3, s3, t + 210) == [] and app3.calls == []
    # off for longer than the catch-up window: skipped, re-armed for the next day
    n4, s4, eng4, clock4, app4 = setup(at(2026, 3, 26, 18, 30) + sched.CATCHUP + 1, store=store)
    assert drive(eng4, s4, at(2026, 3, 26, 18, 30) + sched.CATCHUP + 1) == []
    assert one(n4, "ab12")["triggers"][0]["ts"] == at(2026, 3, 27, 18, 30)


def test_reboot_keeps_a_countdown_and_disabled_state():
    store = MemStore()
    n, s, eng, clock, app = setup(store=store)
    write(s, {"Schedule": {"Schedules": [
        {"operation": "add", "id": "c", "name": "C", "triggers": [{"rsec": 3600}], "action": {"Light": {"Power": True}}},
        {"operation": "add", "id": "x", "name": "X", "triggers": [{"m": 1, "d": 127}], "action": {"Light": {"Power": True}}},
        {"operation": "disable", "id": "x"}]}})
    reported(s)
    n2, s2, eng2, clock2, app2 = setup(T0 + 600, store=store)
    assert one(n2, "c")["triggers"][0]["ts"] == T0 + 3600  # not restarted by the reboot
    assert one(n2, "x")["enabled"] is False
    assert drive(eng2, s2, T0 + 3599) == [] and drive(eng2, s2, T0 + 3600) == ["Schedule"]
    # a one-shot that fell due long before the reboot is not fired, only disabled
    store3 = MemStore()
    n, s, eng, clock, app = setup(store=store3)
    write(s, {"Schedule": {"Schedules": [{"operation": "add", "id": "c", "name": "C", "triggers": [{"rsec": 60}],
                                          "action": {"Light": {"Power": True}}}]}})
    reported(s)
    n3, s3, eng3, clock3, app3 = setup(T0 + 3600, store=store3)
    assert drive(eng3, s3, T0 + 3600) == []
    assert one(n3, "c")["enabled"] is False


def test_stored_garbage_is_skipped_not_fatal():
    good = {"name": "G", "id": "g", "enabled": True, "action": {"Light": {"Power": True}},
            "triggers": [{"m": 60, "d": 127, "ts": 0}]}
    store = MemStore({"Schedule": {"Schedules": [{"id": 5}, "x", good, {"id": "b", "name": "B"}, good]}})
    n, s, eng, clock, app = setup(store=store)
    assert eng.next_due() == 0  # restored but not armed: poll now
    eng.poll(T0)
    assert [e["id"] for e in sched_list(n)] == ["g"]
    assert one(n, "g")["triggers"][0]["ts"] == at(2026, 3, 26, 1, 0)


def test_clock_steps():
    eng = sched.Engine(zone=EU)
    sc = eng.schedules
    sc.write([{"operation": "add", "id": "d", "name": "D", "triggers": [{"m": 1080, "d": 127}],
               "action": {"L": {"P": True}}}], T0)
    t = at(2026, 3, 25, 18, 0)
    assert sc.poll(t - 60) == []
    # a short step forward over the occurrence: fired once
    assert sc.poll(t + 200) == [("d", {"L": {"P": True}})]
    assert sc.poll(t + 260) == []
    # a step back over it: not fired again
    assert sc.poll(t - 30) == [] and sc.poll(t + 1) == [] and sc.poll(t + 300) == []
    assert sc.get("d").due == at(2026, 3, 26, 18, 0)
    # a long step forward: the missed occurrences are skipped, the next is kept
    assert sc.poll(at(2026, 3, 28, 19, 0)) == []
    assert sc.get("d").due == at(2026, 3, 29, 18, 0)
    # ... unless the latest is within the catch-up window
    assert sc.poll(at(2026, 4, 2, 18, 5)) == [("d", {"L": {"P": True}})]
    assert sc.get("d").due == at(2026, 4, 3, 18, 0)
    # a step back of hours, as a wrong NTP answer might give: nothing fires twice
    assert sc.poll(at(2026, 4, 2, 12, 0)) == [] and sc.poll(at(2026, 4, 2, 18, 0)) == []
    assert sc.get("d").due == at(2026, 4, 3, 18, 0)
    # a step back of a month: the due date came from a clock that ran ahead; re-armed
    assert sc.poll(at(2026, 3, 1, 12, 0)) == []
    assert sc.get("d").due == at(2026, 3, 1, 18, 0)


def test_time_zone_change_re_arms():
    eng = sched.Engine(zone=EU)
    sc = eng.schedules
    sc.write([{"operation": "add", "id": "d", "name": "D", "triggers": [{"m": 480, "d": 127}],
               "action": {"L": {"P": True}}}], T0)
    assert eng.poll(T0) == []
    assert sc.get("d").due == at(2026, 3, 26, 8, 0)
    eng.zone = sched.UTC
    assert eng.poll(T0 + 1) == []
    assert sc.get("d").due == 1774512000  # 2026-03-26 08:00 UTC
    assert sched.UTC.local(1774512000)[:6] == (2026, 3, 26, 8, 0, 0)
    # a zone object changed in place: the driver says so
    z = EuZone()
    eng.zone = z
    eng.poll(T0 + 2)
    assert sc.get("d").due == at(2026, 3, 26, 8, 0)
    z.set(0, False)
    eng.rezone()
    assert eng.next_due() == 0
    assert eng.poll(T0 + 3) == []
    assert sc.get("d").due == 1774512000


def test_driver_next_due():
    n, s, eng, clock, app = setup()
    assert eng.next_due() is None
    write(s, EVE)
    assert eng.next_due() == at(2026, 3, 25, 18, 30)
    write(s, {"Scenes": {"Scenes": [{"operation": "add", "id": "sc", "name": "S", "action": {"Light": {"Power": True}}}]}})
    write(s, {"Scenes": {"Scenes": [{"operation": "activate", "id": "sc"}]}})
    assert eng.next_due() == 0  # a scene waits
    assert drive(eng, s, T0) == ["Scene Activate"]
    assert eng.next_due() == at(2026, 3, 25, 18, 30)


# -- scenes ------------------------------------------------------------------------

def test_scenes():
    n, s, eng, clock, app = setup()
    write(s, {"Scenes": {"Scenes": [{"operation": "add", "id": "sc1", "name": "Movie", "info": "dim",
                                     "action": {"Light": {"Power": True, "Brightness": 10}}}]}})
    rep = reported(s)
    assert rep == {"Scenes": {"Scenes": [{"name": "Movie", "id": "sc1", "info": "dim",
                                          "action": {"Light": {"Power": True, "Brightness": 10}}}]}}
    write(s, {"Scenes": {"Scenes": [{"operation": "activate", "id": "sc1"}]}})
    assert app.calls == []  # applied by the driver, not inside the write
    assert drive(eng, s, T0) == ["Scene Activate"]
    assert app.calls == [("Light", {"Power": True, "Brightness": 10}, "Scene Activate")]
    write(s, {"Scenes": {"Scenes": [{"operation": "deactivate", "id": "sc1"}]}})
    assert drive(eng, s, T0) == ["Scene Deactivate"]
    assert app.calls[-1][2] == "Scene Deactivate"
    write(s, {"Scenes": {"Scenes": [{"operation": "edit", "id": "sc1", "name": "Film", "flags": 3}]}})
    assert n.device("Scenes")["Scenes"] == [{"name": "Film", "id": "sc1", "info": "dim", "flags": 3,
                                            "action": {"Light": {"Power": True, "Brightness": 10}}}]
    write(s, {"Scenes": {"Scenes": [{"operation": "edit", "id": "sc2", "name": "New", "action": {"Light": {"Power": False}}}]}})
    assert [e["id"] for e in n.device("Scenes")["Scenes"]] == ["sc1", "sc2"]
    write(s, {"Scenes": {"Scenes": [{"operation": "re", "id": "sc1"}]}})
    assert [e["id"] for e in n.device("Scenes")["Scenes"]] == ["sc2"]


def test_scenes_bad_input_and_limits():
    n, s, eng, clock, app = setup(deactivation=False)
    sc = eng.scenes
    assert sc.write([{"operation": "add", "id": "a", "name": "A", "action": {"Light": {"Power": True}}}]) == []
    assert "does not support deactivating" in sc.write([{"operation": "deactivate", "id": "a"}])[0]
    assert "no scene with this id" in sc.write([{"operation": "activate", "id": "zz"}])[0]
    assert "already exists" in sc.write([{"operation": "add", "id": "a", "name": "A", "action": {"L": {"P": 1}}}])[0]
    assert "longer than 100" in sc.write([{"operation": "add", "id": "b", "name": "B", "info": "i" * 101,
                                           "action": {"L": {"P": 1}}}])[0]
    assert sc.write([{"operation": "add", "id": "b", "name": "B", "info": "i" * 100, "action": {"L": {"P": 1}}}]) == []
    assert "longer than 32" in sc.write([{"operation": "add", "id": "c", "name": "n" * 33, "action": {"L": {"P": 1}}}])[0]
    assert "id must be" in sc.write([{"operation": "add", "id": "123456789", "name": "C", "action": {"L": {"P": 1}}}])[0]
    assert "action is required" in sc.write([{"operation": "add", "id": "c", "name": "C"}])[0]
    assert "operation must be" in sc.write([{"operation": "enable", "id": "a"}])[0]
    for i in range(8):
        assert sc.write([{"operation": "add", "id": "s%d" % i, "name": "S", "action": {"L": {"P": 1}}}]) == []
    assert "already 10 scenes" in sc.write([{"operation": "add", "id": "s9", "name": "S", "action": {"L": {"P": 1}}}])[0]
    for i in range(10):
        assert sc.write([{"operation": "activate", "id": "a"}]) == []
    assert "too many" in sc.write([{"operation": "activate", "id": "a"}])[0]
    assert len(eng.poll(T0)) == 10 and eng.poll(T0) == []


def test_scenes_persist():
    store = MemStore()
    n, s, eng, clock, app = setup(store=store)
    write(s, {"Scenes": {"Scenes": [{"operation": "add", "id": "a", "name": "A", "action": {"Light": {"Power": True}}}]}})
    reported(s)
    n2, s2, eng2, clock2, app2 = setup(store=store)
    write(s2, {"Scenes": {"Scenes": [{"operation": "activate", "id": "a"}]}})
    assert drive(eng2, s2, T0) == ["Scene Activate"]
    assert app2.calls == [("Light", {"Power": True}, "Scene Activate")]


# -- fuzz ----------------------------------------------------------------------------

class Rnd:
    """A small seeded generator (the WASI MicroPython has no random module)."""

    def __init__(self, seed):
        self.x = seed & 0xFFFFFFFF or 1

    def next(self):
        x = self.x  # xorshift32
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.x = x
        return x

    def randint(self, a, b):
        return a + self.next() % (b - a + 1)

    def choice(self, seq):
        return seq[self.next() % len(seq)]

    def random(self):
        return self.next() / 4294967296


_KEYS = ("operation", "id", "name", "info", "flags", "validity", "action", "triggers", "enabled",
         "m", "d", "dd", "mm", "yy", "r", "rsec", "ts", "start", "end", "sr", "ss", "lat", "lon")
_OPS = ("add", "edit", "remove", "enable", "disable", "activate", "deactivate", "a", "e", "d", "x", "")


def _value(rnd, depth):
    k = rnd.randint(0, 11 if depth < 3 else 6)
    if k == 0:
        return None
    if k == 1:
        return rnd.randint(0, 1) == 1
    if k == 2:
        return rnd.randint(-3, 3000)
    if k == 3:
        return rnd.choice((0, 1, 127, 1439, 1440, 4095, -1, 2 ** 31, 2 ** 33, 1774440000, 2 ** 40))
    if k == 4:
        return rnd.random() * 100
    if k == 5:
        return rnd.choice(_OPS + ("ab12", "x" * 9, "n" * 40))
    if k == 6:
        return "".join(rnd.choice("abc\"\\\u00e9 ") for _ in range(rnd.randint(0, 12)))
    if k <= 8:
        return [_value(rnd, depth + 1) for _ in range(rnd.randint(0, 3))]
    o = {}
    for _ in range(rnd.randint(0, 6)):
        o[rnd.choice(_KEYS)] = _value(rnd, depth + 1)
    return o


def _element(rnd):
    e = {"operation": rnd.choice(_OPS), "id": rnd.choice(("a", "b", "c", "12345678", "123456789"))}
    if rnd.randint(0, 1):
        e["name"] = rnd.choice(("N", "", "n" * 33))
    if rnd.randint(0, 1):
        e["action"] = rnd.choice(({"Light": {"Power": True}}, {}, [], "x"))
    if rnd.randint(0, 1):
        t = {}
        for _ in range(rnd.randint(0, 5)):
            t[rnd.choice(_KEYS[9:])] = _value(rnd, 2)
        e["triggers"] = rnd.choice(([t], [t, t], [], t))
    for _ in range(rnd.randint(0, 3)):
        e[rnd.choice(_KEYS)] = _value(rnd, 1)
    return e


def test_fuzz_operations_never_raise():
    rnd = Rnd(1234)
    eng = sched.Engine(zone=EU)
    now = T0
    for i in range(ROUNDS):
        if rnd.randint(0, 3) == 0:
            ops = _value(rnd, 0)
        else:
            ops = [_element(rnd) for _ in range(rnd.randint(0, 4))]
        errs = eng.schedules.write(ops, now)
        assert isinstance(errs, list)
        errs = eng.scenes.write(ops)
        assert isinstance(errs, list)
        now += rnd.randint(-3600, 3 * DAY)
        eng.poll(now)
        assert len(eng.schedules.list) <= 10 and len(eng.scenes.list) <= 10
        rep = eng.schedules.report()
        # the report is always something the engine itself takes back (a reboot)
        e2 = sched.Engine(zone=EU)
        assert e2.schedules.apply(json.loads(json.dumps(rep)), None, True) == []
        assert [x["id"] for x in e2.schedules.report()] == [x["id"] for x in rep]
        json.dumps(eng.scenes.report())


def test_fuzz_through_the_param_sync():
    rnd = Rnd(99)
    n, s, eng, clock, app = setup()
    for i in range(ROUNDS * 3 // 8):
        body = {"Schedule": {"Schedules": [_element(rnd) for _ in range(rnd.randint(0, 3))]},
                "Scenes": {"Scenes": _value(rnd, 0)}}
        s.remote(json.dumps(body).encode(), 0)
        clock.t += rnd.randint(0, DAY)
        drive(eng, s, clock.t)
        report(s, 10 ** 6)
        assert len(sched_list(n)) <= 10


def test_without_a_clock_a_write_is_armed_at_the_next_poll():
    n, s, eng, clock, app = setup()
    eng.clock = None
    write(s, EVE)
    assert reported(s)["Schedule"]["Schedules"][0]["triggers"][0]["ts"] == 0
    assert eng.next_due() == 0
    assert drive(eng, s, T0) == []
    assert reported(s)["Schedule"]["Schedules"][0]["triggers"][0]["ts"] == at(2026, 3, 25, 18, 30)
    assert eng.next_due() == at(2026, 3, 25, 18, 30)


class _TzModule:
    current = None


def test_zone_from_the_tz_module():
    mods = sys.modules
    saved = mods.get("rainmaker.tz")
    tzmod = _TzModule()
    tzmod.current = EU
    mods["rainmaker.tz"] = tzmod
    try:
        eng = sched.Engine()
        assert eng.zone_now() is EU
        eng.schedules.write([{"operation": "add", "id": "d", "name": "D", "triggers": [{"m": 480, "d": 127}],
                              "action": {"L": {"P": True}}}], T0)
        eng.poll(T0)
        assert eng.schedules.get("d").due == at(2026, 3, 26, 8, 0)
        tzmod.current = EuZone(std=0, dst=False)  # a new TZ written: a new zone object
        eng.poll(T0 + 1)
        assert eng.schedules.get("d").due == 1774512000  # 08:00 UTC
    finally:
        if saved is None:
            del mods["rainmaker.tz"]
        else:
            mods["rainmaker.tz"] = saved
    # Without the module (a node with no Time service): UTC. Other tests in
    # this process may have loaded the real one.
    saved = mods.pop("rainmaker.tz", None)
    try:
        assert sched.Engine().zone_now() is sched.UTC
    finally:
        if saved is not None:
            mods["rainmaker.tz"] = saved


def test_zone_from_the_real_tz_module():
    from rainmaker import tz

    old = tz.current
    try:
        tz.current = tz.parse("CET-1CEST,M3.5.0,M10.5.0/3")
        eng = sched.Engine()
        assert eng.zone_now() is tz.current
        eng.schedules.write([{"operation": "add", "id": "d", "name": "D", "triggers": [{"m": 480, "d": 127}],
                              "action": {"L": {"P": True}}}], T0)
        eng.poll(T0)
        assert eng.schedules.get("d").due == at(2026, 3, 26, 8, 0)
        tz.current = tz.parse("UTC0")
        eng.poll(T0 + 1)
        assert eng.schedules.get("d").due == 1774512000  # 08:00 UTC
    finally:
        tz.current = old


# -- the default: the Keeper (keeper.py), rainmaker.sched loaded only while it has work ------

BERLIN = "CET-1CEST,M3.5.0,M10.5.0/3"  # the zone EU stands for


def lazy(t=T0, store=None):
    from rainmaker import tz

    tz.current = tz.parse(BERLIN)
    app = App()
    n = Node("N", "T")
    n.node_id = "N1"
    n.add(std.lightbulb("Light", cb=app))
    n.add(std.schedule_service())
    n.add(std.scenes_service(deactivation=True))
    k = n.device("Schedule").engine
    assert n.device("Scenes").engine is k
    clock = Clock(t)
    k.clock = clock
    s = Sync(n, store)
    report(s, 0)
    s.connected()
    report(s, 0)
    return n, s, k, clock, app


def resident():
    return "rainmaker.sched" in sys.modules


def _no_load(*args):
    raise AssertionError("rainmaker.sched loaded with nothing to do")


def test_the_engine_is_loaded_only_while_it_has_work():
    from rainmaker import tz

    store = MemStore()
    try:
        n, s, k, clock, app = lazy(store=store)
        write(s, EVE)
        assert not resident()  # the write was answered, and the engine dropped
        assert one(n, "ab12")["triggers"][0]["ts"] == at(2026, 3, 25, 18, 30)
        reported(s)
        assert k.at == at(2026, 3, 25, 18, 30) and k.last is None
        assert drive(k, s, T0) == [] and not resident()  # the first poll after boot always runs
        assert k.at == at(2026, 3, 25, 18, 30)
        k._run = _no_load  # passes with nothing due do not load it
        for t in (T0 + 1, T0 + 3600, T0 - 3600, at(2026, 3, 25, 18, 29)):
            assert drive(k, s, t) == []
        del k._run
        t = at(2026, 3, 25, 18, 30)
        assert drive(k, s, t) == ["Schedule"] and not resident()
        assert app.calls == [("Light", {"Power": True}, "Schedule")]
        assert k.at == at(2026, 3, 26, 18, 30)
        assert reported(s)["Schedule"]["Schedules"][0]["triggers"][0]["ts"] == at(2026, 3, 26, 18, 30)
        # A step back of an hour over the occurrence: nothing fires twice.
        assert drive(k, s, t - 3600) == [] and drive(k, s, t + 5) == [] and app.calls[1:] == []
        # Scenes: activated by the next poll, not inside the write.
        write(s, {"Scenes": {"Scenes": [{"operation": "add", "id": "sc", "name": "S",
                                         "action": {"Light": {"Brightness": 10}}}]}})
        write(s, {"Scenes": {"Scenes": [{"operation": "activate", "id": "sc"}]}})
        assert not resident() and len(app.calls) == 1 and k.at == 0
        assert drive(k, s, t + 10) == ["Scene Activate"] and not resident()
        assert app.calls[-1] == ("Light", {"Brightness": 10}, "Scene Activate")
        assert k.at == at(2026, 3, 26, 18, 30) and k.queue == []
        # A new zone (set here without the Time service) re-arms at the next poll.
        tz.current = tz.parse("UTC0")
        assert drive(k, s, t + 20) == [] and not resident()
        assert k.at == T0 + 6 * 3600 + 1800  # 18:30 UTC, today
        tz.current = tz.parse(BERLIN)
        assert drive(k, s, t + 30) == []
        assert k.at == at(2026, 3, 26, 18, 30)
        reported(s)
        # Powered off from 18:29 the next day to 18:33: fired once at boot, not again.
        t2 = at(2026, 3, 26, 18, 30)
        n2, s2, k2, clock2, app2 = lazy(t2 + 180, store)
        assert drive(k2, s2, t2 + 180) == ["Schedule"] and not resident()
        assert drive(k2, s2, t2 + 200) == [] and len(app2.calls) == 1
        reported(s2)
        n3, s3, k3, clock3, app3 = lazy(t2 + 210, store)
        assert drive(k3, s3, t2 + 210) == [] and app3.calls == []
        assert k3.at == at(2026, 3, 27, 18, 30)
        # A step back of a month (the clock ran ahead when ts was set): re-armed.
        assert drive(k3, s3, at(2026, 2, 20, 12, 0)) == []
        assert k3.at == at(2026, 2, 20, 18, 30)
    finally:
        tz.current = tz.UTC


def test_a_write_before_the_first_poll_keeps_the_restored_check():
    # After a reboot the restored ts are unchecked until a poll has run: a
    # write in between must not lose the missed occurrence (10 min late at most).
    from rainmaker import tz

    store = MemStore()
    try:
        n, s, k, clock, app = lazy(store=store)
        write(s, EVE)
        reported(s)
        t = at(2026, 3, 25, 18, 30)
        n2, s2, k2, clock2, app2 = lazy(t + 300, store)
        write(s2, {"Schedule": {"Schedules": [{"operation": "add", "id": "x", "name": "X",
                                               "triggers": [{"m": 1200, "d": 127}], "action": {"Light": {"Power": False}}}]}})
        assert not resident() and k2.at == 0
        assert drive(k2, s2, t + 300) == ["Schedule"] and not resident()
        assert app2.calls == [("Light", {"Power": True}, "Schedule")]
        assert k2.at == at(2026, 3, 25, 20, 0)
        # More than 10 min late: skipped, re-armed for the next day.
        reported(s2)
        n3, s3, k3, clock3, app3 = lazy(at(2026, 3, 25, 20, 0) + sched.CATCHUP + 1, store)
        assert drive(k3, s3, at(2026, 3, 25, 20, 0) + sched.CATCHUP + 1) == [] and app3.calls == []
        assert one(n3, "x")["triggers"][0]["ts"] == at(2026, 3, 26, 20, 0)
    finally:
        tz.current = tz.UTC


def test_the_zone_restored_at_boot_does_not_re_arm():
    # The Time service's zone and the schedules are restored together; the
    # persisted ts were armed in that zone, so what fell due during the reboot
    # still fires (a re-arm from now would skip it).
    from rainmaker import tz

    store = MemStore()
    try:
        n, s, k, clock, app = lazy(store=store)
        write(s, EVE)
        reported(s)
        store.data["Time"] = {"TZ": "Europe/Berlin", "TZ-POSIX": BERLIN}
        tz.current = tz.UTC  # as at boot
        t = at(2026, 3, 25, 18, 30)
        n2 = Node("N", "T")
        n2.node_id = "N1"
        app2 = App()
        n2.add(std.lightbulb("Light", cb=app2))
        n2.add(std.time_service())
        n2.add(std.schedule_service())
        k2 = n2.device("Schedule").engine
        s2 = Sync(n2, store)  # restores the zone and the list
        assert tz.current.posix == BERLIN
        k2.clock = Clock(t + 180)  # what the agent does next
        report(s2, 0)
        s2.connected()
        report(s2, 0)
        assert drive(k2, s2, t + 180) == ["Schedule"] and not resident()
        assert app2.calls == [("Light", {"Power": True}, "Schedule")]
        assert k2.at == at(2026, 3, 26, 18, 30)
        # A zone written later re-arms.
        s2.remote(b'{"Time":{"TZ":"Asia/Tokyo"}}', 0)
        assert k2.at == 0
        assert drive(k2, s2, t + 200) == []
        assert one(n2, "ab12")["triggers"][0]["ts"] == 1774517400  # 2026-03-26 18:30 JST
    finally:
        tz.current = tz.UTC


def test_no_reference_keeps_the_engine_in_the_heap():
    # Out of sys.modules is not enough: any object of rainmaker.sched left
    # referenced (a closure, an engine, sched.UTC) keeps its code in the heap.
    # Measured on MicroPython (gc.mem_alloc); not on the WASI VM, where a
    # collection during a test corrupts the heap (tests/vm.py), nor CPython.
    import gc
    from rainmaker import tz

    if not hasattr(gc, "mem_alloc") or getattr(sys.implementation, "_build", "") == "wasi":
        return
    try:
        n, s, k, clock, app = lazy()
        write(s, EVE)
        reported(s)
        drive(k, s, T0)  # names interned by the first import stay in the pool: measure from here
        t = at(2026, 3, 25, 18, 30)
        gc.collect()
        a = gc.mem_alloc()
        for i in range(3):
            assert drive(k, s, t + i * DAY) == ["Schedule"] and not resident()
            reported(s)
        gc.collect()
        grown = gc.mem_alloc() - a
        assert grown < 3000, "%d bytes more after 3 runs of the engine" % grown
    finally:
        tz.current = tz.UTC


def test_empty_lists_never_load_the_engine():
    # A node that offers schedules but has none (the example app until the
    # user adds one) never pays for the engine, not even at the first poll.
    from rainmaker import tz

    n, s, k, clock, app = lazy()
    try:
        k._run = _no_load
        for t in (T0, T0 + 1, T0 + 3600, T0 - 2 * 86400):  # the first poll, then a step back of two days
            assert drive(k, s, t) == []
        tz.current = tz.parse("UTC0")  # a new zone: nothing to re-arm either
        assert drive(k, s, T0 + 10) == [] and k.at is None and k.zone is tz.current
        del k._run
        write(s, EVE)  # the first schedule: the engine answers, and is dropped again
        assert not resident() and k.at == at(2026, 3, 25, 19, 30)  # 18:30 in UTC0, as CET
    finally:
        tz.current = tz.UTC


def test_no_memory_for_the_engine_is_retried_once_a_minute_not_at_every_pass():
    from rainmaker import tz

    n, s, k, clock, app = lazy()
    try:
        write(s, EVE)
        reported(s)
        assert drive(k, s, T0) == []  # the first poll after boot
        t = at(2026, 3, 25, 18, 30)
        tries = []

        def no_memory(now, name=None, ops=None):
            tries.append(now)
            raise MemoryError("memory allocation failed, allocating 4096 bytes")

        k._run = no_memory
        raises(MemoryError, k.poll, t)
        for dt in (1, 30, 59):  # the agent polls every 250 ms: not retried within the minute
            assert drive(k, s, t + dt) == []
        assert tries == [t]
        raises(MemoryError, k.poll, t + 60)
        assert tries == [t, t + 60]
        del k._run  # memory again: the occurrence, 2 min late, still fires once
        assert drive(k, s, t + 125) == ["Schedule"] and app.calls == [("Light", {"Power": True}, "Schedule")]
        assert drive(k, s, t + 130) == [] and len(app.calls) == 1
    finally:
        tz.current = tz.UTC
