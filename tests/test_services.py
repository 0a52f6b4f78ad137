"""End to end: the RainMaker services (System, time series...) of
tests/apps/services_main.py, through the local cloud, on both backends."""
import json
import time

import pytest

from tests.harness import Cloud, Board, ROOT

NODE = "240AC4E2E0A1"
APP = ROOT / "tests" / "apps" / "services_main.py"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    c = Cloud(tmp_path_factory.mktemp("cloud")).start()
    yield c
    c.stop()


def start(cloud, backend, root):
    b = Board(cloud, root, NODE, main=APP, keepalive=30, backend=backend).start()
    b.wait_line("online as " + NODE, timeout=30)
    return b


@pytest.fixture()
def board(cloud, backend, tmp_path):
    b = start(cloud, backend, tmp_path)
    yield b
    b.stop()


def test_time_series_samples_go_out_in_batches(cloud, board):
    since = cloud.mark()
    _, ts = cloud.wait("tsdata", NODE, since, timeout=20)
    body = json.loads(ts)
    assert body["ts_data_version"] == "2021-09-13"
    (series,) = body["ts_data"]
    assert series["name"] == "Temp.Temperature"
    assert series["type"] == "esp.param.temperature" and series["dt"] == "float"
    recs = series["records"]
    assert len(recs) >= 10  # one message for many samples, not one each
    now = time.time()
    for r in recs:
        assert abs(r["t"] - now) < 60 and isinstance(r["v"], float)
    assert [r["t"] for r in recs] == sorted(r["t"] for r in recs)


def test_reboot_from_the_app(cloud, board):
    since, lsince = cloud.mark(), board.mark()
    cloud.write(NODE, {"System": {"Reboot": True}})
    _, echo = cloud.wait("params/local", NODE, since, where=lambda p: b"Reboot" in p)
    assert json.loads(echo)["System"] == {"Reboot": True}  # (a sensor change may share the report)
    board.wait_line("Reboot requested from the app", lsince)
    board.wait_line("rebooting", lsince, timeout=10)
    _, init = cloud.wait("params/local/init", NODE, since, timeout=40)
    assert json.loads(init)["System"] == {"Reboot": False, "Factory-Reset": False, "Wi-Fi-Reset": False}


def test_false_is_echoed_and_does_nothing(cloud, board):
    since, lsince = cloud.mark(), board.mark()
    cloud.write(NODE, {"System": {"Factory-Reset": False}})
    _, echo = cloud.wait("params/local", NODE, since, where=lambda p: b"Factory" in p)
    assert json.loads(echo)["System"] == {"Factory-Reset": False}
    time.sleep(3)
    assert not board.count("requested from the app", lsince)
    assert (board.dir / "wifi.json").exists()


def test_factory_reset_unmaps_then_forgets_the_user_but_keeps_the_identity(cloud, board):
    cloud.write(NODE, {"Plug": {"Name": "Kitchen"}})  # a persisted param
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and b"Kitchen" not in _read(board.dir / "params.json"):
        time.sleep(0.1)
    (board.dir / "mapping.json").write_text('{"user_id":"u1","secret_key":"s"}')
    since, lsince = cloud.mark(), board.mark()
    cloud.write(NODE, {"System": {"Factory-Reset": True}})
    _, m = cloud.wait("user/mapping", NODE, since)
    assert json.loads(m) == {"node_id": NODE, "user_id": "esp-rmaker", "secret_key": "failed", "reset": True}
    board.wait_line("Factory-Reset: ", lsince, timeout=10)
    # The last will tells the cloud the node went away.
    cloud.wait("params/local", NODE, since, where=lambda p: b'"Connected":false' in p)
    board.wait_line("rebooting", lsince)
    for f in ("wifi.json", "params.json", "mapping.json"):
        assert not (board.dir / f).exists(), f
    for f in ("rainmaker.json",):
        assert (board.dir / f).exists(), f
    assert list(board.dir.glob("certs/*")) or list(board.dir.glob("*.der"))
    # With no Wi-Fi it starts provisioning again.
    board.wait_line("not provisioned: access point", lsince, timeout=30)


def test_wifi_reset_goes_offline_and_back_to_provisioning(cloud, board):
    cloud.write(NODE, {"Plug": {"Name": "Hall"}})  # a persisted param: kept by a Wi-Fi reset
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and b"Hall" not in _read(board.dir / "params.json"):
        time.sleep(0.1)
    since, lsince = cloud.mark(), board.mark()
    cloud.write(NODE, {"System": {"Wi-Fi-Reset": True}})
    cloud.wait("params/local", NODE, since, where=lambda p: b'"Connected":false' in p)
    board.wait_line("rebooting", lsince)
    assert not (board.dir / "wifi.json").exists()
    assert b"Hall" in _read(board.dir / "params.json")
    board.wait_line("not provisioned: access point", lsince, timeout=30)


def _read(p):
    try:
        return p.read_bytes()
    except OSError:
        return b""


# -- schedules and scenes --------------------------------------------------------


def _schedules(payload):
    return json.loads(payload).get("Schedule", {}).get("Schedules")


def test_a_schedule_fires_with_the_cloud_away_and_is_reported_when_it_is_back(cloud, board):
    since = cloud.mark()
    cloud.write(NODE, {"Schedule": {"Schedules": [
        {"operation": "add", "id": "t1", "name": "Soon", "triggers": [{"rsec": 8}],
         "action": {"Plug": {"Power": True}}}]}})
    _, echo = cloud.wait("params/local", NODE, since, where=lambda p: b'"Schedules"' in p)
    (s,) = _schedules(echo)
    assert s["id"] == "t1" and s["name"] == "Soon" and s["enabled"] is True
    assert s["action"] == {"Plug": {"Power": True}}
    fire_at = s["triggers"][0]["ts"]
    assert abs(fire_at - (time.time() + 8)) < 5
    lsince = board.mark()
    cloud.broker_down()
    try:
        board.wait_line("connection closed by broker", lsince, timeout=20)
        board.wait_line('Schedule: {"Plug": {"Power": true}}', lsince, timeout=30)
        assert time.time() >= fire_at - 1
    finally:
        since = cloud.mark()
        cloud.broker_up()
    _, init = cloud.wait("params/local/init", NODE, since, timeout=60)
    state = json.loads(init)
    assert state["Plug"]["Power"] is True
    (s,) = state["Schedule"]["Schedules"]
    assert s["id"] == "t1" and s["enabled"] is False  # one-shot: disabled after firing


def test_schedules_are_kept_across_a_power_cycle(cloud, board):
    since = cloud.mark()
    cloud.write(NODE, {"Schedule": {"Schedules": [
        {"operation": "add", "id": "ab12", "name": "Eve", "triggers": [{"d": 31, "m": 1110}],
         "action": {"Plug": {"Power": True}}}]}})
    cloud.wait("params/local", NODE, since, where=lambda p: b'"ab12"' in p)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and b"ab12" not in _read(board.dir / "params.json"):
        time.sleep(0.1)
    since = cloud.mark()
    board.power_cycle()
    _, init = cloud.wait("params/local/init", NODE, since, timeout=40)
    (s,) = json.loads(init)["Schedule"]["Schedules"]
    assert (s["id"], s["name"], s["enabled"]) == ("ab12", "Eve", True)
    assert s["triggers"][0]["d"] == 31 and s["triggers"][0]["m"] == 1110 and s["triggers"][0]["ts"] > time.time()


@pytest.mark.parametrize("op,why", [
    ({"operation": "add", "id": "x", "name": "N", "triggers": [{"m": 2000, "d": 1}], "action": {"Plug": {"Power": True}}},
     "m"),
    ({"operation": "explode", "id": "x"}, "operation"),
    ({"operation": "add", "id": "waytoolongid", "name": "N", "triggers": [{"rsec": 5}], "action": {"Plug": {"Power": True}}},
     "id"),
    ({"operation": "add", "id": "x", "name": "N", "triggers": [{"sr": 10, "lat": 1.0, "lon": 2.0}],
      "action": {"Plug": {"Power": True}}}, "sunrise"),
])
def test_bad_schedules_are_refused_with_a_reason_and_the_board_keeps_working(cloud, board, op, why):
    since, lsince = cloud.mark(), board.mark()
    cloud.write(NODE, {"Schedule": {"Schedules": [op]}})
    _, echo = cloud.wait("params/local", NODE, since, where=lambda p: b'"Schedules"' in p)
    assert _schedules(echo) == []
    line = board.wait_line("sched", lsince)
    assert why in "\n".join(board.lines(lsince))
    since = cloud.mark()
    cloud.write(NODE, {"Plug": {"Power": True}})
    cloud.wait("params/local", NODE, since, where=lambda p: b'"Power":true' in p)
    assert "Traceback" not in "\n".join(board.lines(lsince)), line


def test_a_scene_activates_and_deactivates(cloud, board):
    since = cloud.mark()
    cloud.write(NODE, {"Scenes": {"Scenes": [
        {"operation": "add", "id": "s1", "name": "Movie", "action": {"Plug": {"Power": True}}}]}})
    _, echo = cloud.wait("params/local", NODE, since, where=lambda p: b'"Scenes"' in p)
    assert json.loads(echo)["Scenes"]["Scenes"] == [{"name": "Movie", "id": "s1", "action": {"Plug": {"Power": True}}}]
    since, lsince = cloud.mark(), board.mark()
    cloud.write(NODE, {"Scenes": {"Scenes": [{"operation": "activate", "id": "s1"}]}})
    cloud.wait("params/local", NODE, since, where=lambda p: b'"Plug":{"Power":true}' in p)
    board.wait_line("Scene Activate", lsince)
