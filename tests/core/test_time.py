# The Time service (docs/protocol.md#time-service): its config entry, the
# writes the phone apps send, refusals, persistence and the zone in effect
# (rainmaker.tz.current) after a write and after a reboot.
from rainmaker import Node, std, log, tz
from rainmaker.sync import Sync, CONFIG, INIT, LOCAL
from util import js, MemStore, Logs, raises, report

log.level = -1

BERLIN = "CET-1CEST,M3.5.0,M10.5.0/3"


def setup(store=None, default=""):
    tz.current = tz.UTC  # as after a boot
    n = Node("N", "T")
    n.node_id = "N1"
    n.add(std.switch("Switch"))
    n.add(std.time_service(default))
    s = Sync(n, store)
    suffix, cfg = report(s, 0)
    assert suffix == CONFIG
    s.connected()
    suffix, init = report(s, 0)
    assert suffix == INIT
    assert report(s, 0) is None
    return n, s, js(cfg), js(init)


def test_config_is_the_sdk_s():
    n, s, cfg, init = setup()
    assert cfg["services"] == [{
        "name": "Time", "type": "esp.service.time", "params": [
            {"name": "TZ", "type": "esp.param.tz", "data_type": "string", "properties": ["read", "write"]},
            {"name": "TZ-POSIX", "type": "esp.param.tz_posix", "data_type": "string",
             "properties": ["read", "write"]},
        ]}]
    assert [d["name"] for d in cfg["devices"]] == ["Switch"]
    assert init["Time"] == {"TZ": "", "TZ-POSIX": ""}
    assert tz.current is tz.UTC


def test_app_writes_an_iana_name_and_both_params_are_reported():
    store = MemStore()
    n, s, cfg, init = setup(store)
    assert s.remote(b'{"Time":{"TZ":"Europe/Berlin"}}', 5) == 2
    assert tz.current.posix == BERLIN
    assert tz.current.offset(1751328000) == 7200  # 2025-07-01: summer time
    suffix, payload = report(s, 5)
    assert suffix == LOCAL and js(payload) == {"Time": {"TZ": "Europe/Berlin", "TZ-POSIX": BERLIN}}
    assert store.data["Time"] == {"TZ": "Europe/Berlin", "TZ-POSIX": BERLIN}  # on flash before the report
    # Names are found whatever their case and with spaces for '_'.
    s.remote(b'{"Time":{"TZ":"america/new york"}}', 2000)
    assert tz.current.posix == "EST5EDT,M3.2.0,M11.1.0"
    assert js(report(s, 2000)[1])["Time"]["TZ-POSIX"] == "EST5EDT,M3.2.0,M11.1.0"


def test_unknown_name_is_refused_and_the_current_zone_kept():
    n, s, cfg, init = setup()
    s.remote(b'{"Time":{"TZ":"Asia/Kolkata"}}', 0)
    report(s, 0)
    logs = Logs()
    try:
        for bad in (b'{"Time":{"TZ":"Mars/Olympus_Mons"}}', b'{"Time":{"TZ":""}}', b'{"Time":{"TZ":5}}',
                    b'{"Time":{"TZ":"Europe/Berlin CET-1"}}', b'{"Time":{"TZ":"' + b"x" * 3000 + b'"}}'):
            before = logs.warnings()
            assert s.remote(bad, 10) == 0, bad
            assert logs.warnings() > before, bad
            assert tz.current.posix == "IST-5:30"
            # the refusal is answered with the values the node has
            assert js(report(s, 10)[1]) == {"Time": {"TZ": "Asia/Kolkata"}}, bad
    finally:
        logs.close()
    assert n.device("Time")["TZ-POSIX"] == "IST-5:30"


def test_posix_write_is_parsed_and_applied_or_refused():
    n, s, cfg, init = setup()
    assert s.remote(b'{"Time":{"TZ-POSIX":"<+0545>-5:45"}}', 0) == 1
    assert tz.current.offset(0) == 20700 and tz.current.local(0)[3:5] == (5, 45)
    assert js(report(s, 0)[1]) == {"Time": {"TZ-POSIX": "<+0545>-5:45"}}
    for bad in (b'{"Time":{"TZ-POSIX":"CET"}}', b'{"Time":{"TZ-POSIX":"CET-1CEST,M3.5.0"}}',
                b'{"Time":{"TZ-POSIX":"Europe/Berlin"}}', b'{"Time":{"TZ-POSIX":false}}'):
        assert s.remote(bad, 10) == 0, bad
        assert tz.current.posix == "<+0545>-5:45"
        assert js(report(s, 10)[1]) == {"Time": {"TZ-POSIX": "<+0545>-5:45"}}
    # "" means UTC, as an empty TZ does.
    assert s.remote(b'{"Time":{"TZ-POSIX":""}}', 20) == 1 and tz.current is tz.UTC


def test_posix_written_with_a_name_wins():
    n, s, cfg, init = setup()
    s.remote(b'{"Time":{"TZ":"Europe/Berlin","TZ-POSIX":"CET-1"}}', 0)
    assert tz.current.posix == "CET-1"
    assert js(report(s, 0)[1]) == {"Time": {"TZ": "Europe/Berlin", "TZ-POSIX": "CET-1"}}
    # a bad POSIX string does not stop a good name
    s.remote(b'{"Time":{"TZ":"Asia/Tokyo","TZ-POSIX":"JST"}}', 10)
    assert tz.current.posix == "JST-9"
    assert js(report(s, 10)[1]) == {"Time": {"TZ": "Asia/Tokyo", "TZ-POSIX": "JST-9"}}


def test_stored_zone_is_in_effect_after_a_reboot():
    store = MemStore()
    n, s, cfg, init = setup(store)
    s.remote(b'{"Time":{"TZ":"Australia/Lord_Howe"}}', 0)
    report(s, 0)
    tz.current = tz.UTC  # the reboot
    n2, s2, cfg2, init2 = setup(store)
    assert tz.current.posix == "<+1030>-10:30<+11>-11,M10.1.0,M4.1.0"
    assert init2["Time"] == {"TZ": "Australia/Lord_Howe", "TZ-POSIX": "<+1030>-10:30<+11>-11,M10.1.0,M4.1.0"}


def test_bad_stored_zone_is_ignored_with_a_warning():
    store = MemStore({"Time": {"TZ": "Nowhere", "TZ-POSIX": "XX-1"}})
    logs = Logs()
    try:
        n, s, cfg, init = setup(store)
        assert logs.warnings() == 1
    finally:
        logs.close()
    assert tz.current is tz.UTC and init["Time"]["TZ-POSIX"] == ""


def test_default_zone_and_local_changes():
    n, s, cfg, init = setup(default="Asia/Shanghai")
    assert tz.current.posix == "CST-8"
    assert init["Time"] == {"TZ": "Asia/Shanghai", "TZ-POSIX": "CST-8"}
    # a stored zone beats the default
    n, s, cfg, init = setup(MemStore({"Time": {"TZ": "UTC", "TZ-POSIX": "UTC0"}}), default="Asia/Shanghai")
    assert tz.current.posix == "UTC0"
    raises(ValueError, std.time_service, "Asia/Nowhere")
    t = n.device("Time")
    t.update("TZ-POSIX", "EST5EDT,M3.2.0,M11.1.0")
    assert tz.current.offset(1751328000) == -14400
    raises(ValueError, t.update, "TZ-POSIX", "EST")
    assert tz.current.posix == "EST5EDT,M3.2.0,M11.1.0"
    tz.current = tz.UTC


def test_a_new_zone_re_arms_the_schedules():
    n, s, cfg, init = setup()
    n.add(std.schedule_service())
    k = n.device("Schedule").engine  # the Keeper (keeper.py): rainmaker.sched loads only when it has work
    k.clock = lambda: 1800000000  # as the agent does once the params are restored
    k.at = 1800000000
    s.remote(b'{"Time":{"TZ":"Europe/Berlin"}}', 0)
    assert k.moved and k.at == 0
    k.moved, k.at = False, 1800000000
    s.remote(b'{"Time":{"TZ":"Europe/Berlin"}}', 10)  # the same zone: nothing to re-arm
    s.remote(b'{"Time":{"TZ-POSIX":"bad"}}', 20)  # refused: the zone stays
    assert not k.moved and k.at == 1800000000
    s.remote(b'{"Time":{"TZ-POSIX":"CET-1"}}', 30)
    assert k.moved and k.at == 0
    tz.current = tz.UTC


def test_schedules_follow_the_zone_the_app_writes():
    # The real chain: the apps' TZ write, the Time service, rainmaker.tz, and
    # the schedules of the Keeper (keeper.py) (what the agent polls), re-armed at once.
    import sys

    T = 1751371200  # 2025-07-01 12:00 UTC: 14:00 in Berlin, 21:00 in Tokyo
    try:
        n, s, cfg, init = setup()
        n.add(std.schedule_service())
        k = n.device("Schedule").engine
        k.clock = lambda: T
        report(s, 0)
        report(s, 0)

        def ts():
            return n.device("Schedule")["Schedules"][0]["triggers"][0]["ts"]

        s.remote(b'{"Time":{"TZ":"Europe/Berlin"}}', 0)
        s.remote(b'{"Schedule":{"Schedules":[{"operation":"add","id":"w","name":"Wake",'
                 b'"triggers":[{"m":480,"d":127}],"action":{"Switch":{"Power":true}}}]}}', 0)
        assert k.poll(T) == []
        assert ts() == T + 18 * 3600  # 08:00 CEST tomorrow
        assert k.at == T + 18 * 3600 and "rainmaker.sched" not in sys.modules
        s.remote(b'{"Time":{"TZ":"Asia/Tokyo"}}', 10)
        assert k.at == 0  # re-armed at the next poll, not at 08:00 CEST
        assert k.poll(T + 1) == []
        assert ts() == T + 11 * 3600  # 08:00 JST tomorrow
        assert k.at == T + 11 * 3600
        # A zone set without the Time service (tz.current replaced) is seen too.
        tz.current = tz.parse("UTC0")
        assert k.poll(T + 2) == []
        assert ts() == T + 20 * 3600  # 08:00 UTC tomorrow
    finally:
        tz.current = tz.UTC


def _loaded(name):
    import sys

    return "rainmaker." + name in sys.modules or hasattr(sys.modules["rainmaker"], name)


def test_the_table_search_and_the_builder_are_not_kept():
    # The IANA table search (zones.py) is loaded for a lookup and dropped
    # after, whatever the lookup's outcome; the service's builder is in
    # std.py, so the resident tz holds neither.
    import sys

    sys.modules.pop("rainmaker.zones", None)
    try:
        n, s, cfg, init = setup(default="Asia/Shanghai")  # a lookup at build time
        assert tz.current.posix == "CST-8"
        assert not _loaded("zones") and not _loaded("tzparse")
        assert not hasattr(tz, "service") and not hasattr(tz, "lookup")
        raises(ValueError, std.time_service, "Asia/Nowhere")
        assert not _loaded("zones")
        for w, posix in ((b'{"Time":{"TZ":"Europe/Berlin"}}', BERLIN),
                         (b'{"Time":{"TZ":"Mars/Olympus_Mons"}}', BERLIN),  # unknown: refused
                         (b'{"Time":{"TZ":5}}', BERLIN),
                         (b'{"Time":{"TZ":"Asia/Tokyo","TZ-POSIX":"CET-1"}}', "CET-1")):
            s.remote(w, 0)
            assert tz.current.posix == posix, w
            assert not _loaded("zones") and not _loaded("tzparse"), w
        old = tz.path
        tz.path = "/nonexistent/zones.txt"  # the table missing: logged, the zone kept
        try:
            assert s.remote(b'{"Time":{"TZ":"Europe/Berlin"}}', 0) == 0
            assert tz.current.posix == "CET-1" and not _loaded("zones")
        finally:
            tz.path = old
        # and found again once it is back
        assert s.remote(b'{"Time":{"TZ":"Europe/Berlin"}}', 0) == 2 and not _loaded("zones")
        assert tz.current.posix == BERLIN
    finally:
        tz.current = tz.UTC
