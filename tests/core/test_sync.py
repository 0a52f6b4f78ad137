# Param sync (docs/protocol.md#params): remote writes validated against the model, the app's
# callback contract, refusals re-reported, local changes merged, init
# reports, runtime reconfiguration, persistence.
import json
from rainmaker import Node, Param, std, log
from rainmaker.sync import Sync, CONFIG, INIT, LOCAL
from util import js, MemStore, Logs, report

log.level = -1  # keep test output quiet; counts and last_error still work


class App:
    def __init__(self, answer=None, exc=None):
        self.calls = []
        self.answer = answer
        self.exc = exc

    def __call__(self, device, values, source):
        self.calls.append((device.name, dict(values), source))
        if self.exc:
            raise self.exc
        return self.answer


def setup(app=None, store=None):
    n = Node("N", "T")
    n.node_id = "N1"
    n.add(std.lightbulb("Light", cb=app))
    n.add(std.temperature_sensor("Temp", 20.0))
    s = Sync(n, store)
    assert report(s, 0)[0] == CONFIG
    s.connected()
    assert report(s, 0)[0] == INIT
    assert report(s, 0) is None
    return n, s


def test_accepted_write_reaches_callback_and_is_echoed():
    app = App()
    n, s = setup(app)
    assert s.remote(b'{"Light":{"Power":true,"Brightness":40}}', 10) == 2
    assert app.calls == [("Light", {"Power": True, "Brightness": 40}, "Cloud")]
    assert n.device("Light")["Brightness"] == 40
    suffix, payload = report(s, 10)
    assert suffix == LOCAL and js(payload) == {"Light": {"Power": True, "Brightness": 40}}
    assert report(s, 10) is None


def test_callback_can_change_values():
    n, s = setup(App(answer={"Brightness": 10}))
    s.remote(b'{"Light":{"Brightness":90}}', 0)
    assert n.device("Light")["Brightness"] == 10
    assert js(report(s, 0)[1]) == {"Light": {"Brightness": 10}}


def test_callback_partial_answer_refuses_the_rest():
    n, s = setup(App(answer={"Power": True}))
    s.remote(b'{"Light":{"Power":true,"Hue":200}}', 0)
    light = n.device("Light")
    assert light["Power"] is True and light["Hue"] == 0
    assert js(report(s, 0)[1]) == {"Light": {"Power": True, "Hue": 0}}
    assert s.refused == 1


def test_refusal_reports_current_value():
    for app in (App(answer=False), App(exc=ValueError("too hot"))):
        logs = Logs()
        n, s = setup(app)
        assert s.remote(b'{"Light":{"Brightness":90}}', 0) == 0
        assert n.device("Light")["Brightness"] == 100
        assert js(report(s, 0)[1]) == {"Light": {"Brightness": 100}}
        assert logs.warnings() == 1
    assert "too hot" in logs.last()[1]


def test_invalid_writes_never_reach_the_app():
    cases = [
        (b'{"Light":{"Brightness":101}}', "outside 0..100"),
        (b'{"Light":{"Brightness":"50"}}', "must be an integer"),
        (b'{"Light":{"Power":"on"}}', "true or false"),
        (b'{"Temp":{"Temperature":5}}', "read-only"),
        (b'{"Light":{"Hue":12.5}}', "must be an integer"),
    ]
    for payload, why in cases:
        app = App()
        logs = Logs()
        n, s = setup(app)
        assert s.remote(payload, 0) == 0
        assert app.calls == []
        assert why in logs.last()[1], (payload, logs.last())
        # The current value goes back so the cloud does not keep the bad one.
        dev, vals = list(js(payload).items())[0]
        pname = list(vals)[0]
        assert js(report(s, 0)[1]) == {dev: {pname: n.device(dev)[pname]}}


def test_garbage_is_logged_and_ignored():
    cases = [
        (b'{"Light":{"Power":tru', "malformed JSON"),
        (b"\xff\xfe", "malformed JSON"),
        (b"[1,2]", "expected a JSON object"),
        (b'{"Light":[1]}', "expected an object of params"),
        (b'{"Nope":{"Power":true}}', "unknown device"),
        (b'{"Light":{"Nope":1}}', "unknown param Light.Nope"),
        (b'{"Light":{"Name":"' + b"x" * 5000 + b'"}}', "limit is 4096"),
    ]
    for payload, why in cases:
        app = App()
        logs = Logs()
        n, s = setup(app)
        before = n.params()
        assert s.remote(payload, 0) == 0
        assert app.calls == [] and n.params() == before
        assert logs.warnings() == 1 and why in logs.last()[1], (payload, logs.last())
        assert report(s, 0) is None  # nothing to report, nothing lost


def test_mixed_write_applies_the_good_part():
    app = App()
    n, s = setup(app)
    s.remote(b'{"Light":{"Power":true,"Brightness":500},"Nope":{},"Temp":{"Name":"Kitchen"}}', 0)
    assert app.calls == [("Light", {"Power": True}, "Cloud")]
    assert n.device("Temp")["Name"] == "Kitchen"  # no callback: accepted as is
    assert js(report(s, 0)[1]) == {"Light": {"Power": True, "Brightness": 100}, "Temp": {"Name": "Kitchen"}}


def test_local_changes_are_merged_over_the_window():
    n, s = setup()
    light = n.device("Light")
    light.update("Brightness", 10)
    assert report(s, 1000) is None  # the window starts here
    light.update("Brightness", 20)
    n.device("Temp").update("Temperature", 21.25)
    assert report(s, 1199) is None
    suffix, payload = report(s, 1200)
    assert suffix == LOCAL
    assert payload == '{"Light":{"Brightness":20},"Temp":{"Temperature":21.25000}}'
    assert report(s, 5000) is None


def test_reconnect_sends_full_state_again():
    n, s = setup()
    n.device("Light").update("Power", True)
    s.connected()
    suffix, payload = report(s, 0)
    assert suffix == INIT and js(payload)["Light"]["Power"] is True
    assert report(s, 10000) is None  # the pending delta was folded into init


def test_runtime_reconfiguration_republishes_config_then_params():
    n, s = setup()
    fan = n.add(std.fan("Fan"))
    suffix, pieces = report(s, 0)
    # The config goes out in pieces (copied straight into the packet) that join to the node's config.
    assert suffix == CONFIG and isinstance(pieces, list) and len(pieces) > 1
    assert b"".join(pieces).decode() == n.config() and '"Fan"' in n.config()
    assert "Fan" in js(report(s, 0)[1])
    fan.add(std.speed(2))
    assert report(s, 0)[0] == CONFIG
    assert js(report(s, 0)[1])["Fan"]["Speed"] == 2
    n.remove("Fan")
    suffix, cfg = report(s, 0)
    assert suffix == CONFIG and b"Fan" not in b"".join(cfg) and b"Light" in b"".join(cfg)
    assert "Fan" not in js(report(s, 0)[1])


def test_removed_param_is_not_reported():
    n, s = setup()
    light = n.device("Light")
    light.update("Hue", 5)
    light.remove("Hue")
    report(s, 0)  # config
    report(s, 0)  # init
    assert report(s, 10000) is None


def test_persisted_params_survive_a_reboot_without_a_callback():
    store = MemStore()
    n, s = setup(App(), store)
    s.remote(b'{"Light":{"Name":"Desk"}}', 0)
    assert s.save(0) and store.data == {"Light": {"Name": "Desk"}, "Temp": {"Name": "Temp"}}
    assert not s.save(10)  # nothing new

    app = App()
    n2 = Node("N", "T")
    n2.add(std.lightbulb("Light", cb=app))
    Sync(n2, store)
    assert n2.device("Light")["Name"] == "Desk"
    assert app.calls == []  # restoring is not a remote write


def test_restore_on_device_added_later_and_bad_stored_value():
    store = MemStore({"Light": {"Name": 5}, "Fan": {"Name": "Ceiling"}})
    n = Node("N", "T")
    logs = Logs()
    s = Sync(n, store)
    n.add(std.lightbulb("Light"))
    assert n.device("Light")["Name"] == "Light" and logs.warnings() == 1
    n.add(std.fan("Fan"))
    assert n.device("Fan")["Name"] == "Ceiling"


def test_store_writes_are_rate_limited():
    store = MemStore()
    n, s = setup(None, store)
    light = n.device("Light")
    light.update("Name", "a")
    assert s.save(0)
    light.update("Name", "b")
    assert not s.save(500)
    assert s.save(1000) and store.data["Light"]["Name"] == "b"
    assert store.saves == 2


def test_unchanged_local_value_is_not_reported():
    n, s = setup()
    n.device("Temp").update("Temperature", 20.0)  # same as before
    n.device("Light").update("Power", False)
    assert report(s, 0) is None and report(s, 10000) is None


def test_echo_of_a_persisted_param_waits_for_the_flash_write():
    # A power cut right after an echo must not lose the echoed value, and a
    # burst of writes still costs at most one flash write a second.
    store = MemStore()
    n, s = setup(App(), store)
    s.remote(b'{"Light":{"Name":"a"}}', 0)
    assert report(s, 0) == (LOCAL, '{"Light":{"Name":"a"}}')
    assert store.data["Light"]["Name"] == "a" and store.saves == 1
    s.remote(b'{"Light":{"Name":"b"}}', 300)
    s.remote(b'{"Light":{"Name":"c"}}', 600)
    assert report(s, 300) is None and report(s, 999) is None  # flash written < 1 s ago
    assert store.saves == 1
    assert report(s, 1000) == (LOCAL, '{"Light":{"Name":"c"}}')
    assert store.data["Light"]["Name"] == "c" and store.saves == 2
    # Params that are not persisted are not held back.
    s.remote(b'{"Light":{"Power":true}}', 1100)
    assert report(s, 1100) == (LOCAL, '{"Light":{"Power":true}}')


def test_init_after_connect_carries_only_stored_persisted_values():
    store = MemStore()
    n, s = setup(App(), store)
    s.remote(b'{"Light":{"Name":"x"}}', 0)
    s.connected()
    suffix, payload = report(s, 0)
    assert suffix == INIT and js(payload)["Light"]["Name"] == "x" and store.data["Light"]["Name"] == "x"


def test_deeply_nested_write_is_refused_before_parsing():
    n, s = setup(App())
    logs = Logs()
    deep = b'{"Light":{"Name":' + b"[" * 4000 + b"]" * 4000 + b"}}"
    deep = deep[:4000]  # under the 4 KB limit, unterminated as an attacker may send it
    assert s.remote(deep, 0) == 0
    assert logs.warnings() == 1 and "nested deeper than 16" in logs.last()[1]
    # brackets inside strings are not nesting
    assert s.remote(b'{"Light":{"Name":"' + b"[{" * 100 + b'"}}', 0) == 1
    assert n.device("Light")["Name"] == "[{" * 100


def test_memory_error_while_building_the_config_leaves_it_due():
    n = Node("N", "T")
    n.node_id = "N1"
    n.add(std.switch("Plug"))
    s = Sync(n)
    real = n.config

    def boom(parts=False):
        raise MemoryError

    n.config = boom
    try:
        report(s, 0)
        raise AssertionError("MemoryError not raised")
    except MemoryError:
        pass
    n.config = real
    assert s.config_due and report(s, 0)[0] == CONFIG


def test_take_only_builds_and_sent_clears():
    # Two-phase: the link calls sent() once the packet exists, so a report
    # whose packet found no memory is built again, with what changed since.
    n, s = setup()
    s.remote(b'{"Light":{"Power":true}}', 10)
    first = s.take(10)
    assert first[0] == LOCAL and s.take(10) == first  # not sent: still due, the same
    s.remote(b'{"Light":{"Brightness":40}}', 20)  # merged, not lost
    suffix, payload = s.take(20)
    assert suffix == LOCAL and js(payload) == {"Light": {"Power": True, "Brightness": 40}}
    s.sent(suffix)
    assert s.take(20) is None and s.pending() == 0
    s.reconfigured()
    assert s.take(30)[0] == CONFIG and s.take(30)[0] == CONFIG
    s.sent(CONFIG)
    assert s.take(30)[0] == INIT
    n.device("Light").update("Power", False)
    suffix, payload = s.take(40)
    assert suffix == INIT and js(payload) == js(n.params()) and js(payload)["Light"]["Power"] is False
    s.sent(INIT)
    assert s.take(1000) is None  # the change went out in the init
