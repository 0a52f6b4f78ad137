"""Tests for the cloud recorder (tools.cloud) and the developer console (tools.console)."""

import json
import os
import selectors
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from provisioning import ca
from tools import cloud, console
from tools.broker import Broker, credential_paths
from tests.mqtt_client import Client, WAIT
ROOT = Path(__file__).resolve().parents[1]

CONFIG = {
    "node_id": "A",
    "config_version": "2020-03-20",
    "info": {"name": "Desk", "fw_version": "1.0", "type": "Lightbulb", "platform": "esp32"},
    "devices": [{
        "name": "Light", "type": "esp.device.lightbulb", "primary": "Power",
        "params": [
            {"name": "Name", "type": "esp.param.name", "data_type": "string", "properties": ["read", "write"]},
            {"name": "Power", "type": "esp.param.power", "data_type": "bool", "properties": ["read", "write"]},
            {"name": "Brightness", "type": "esp.param.brightness", "data_type": "int",
             "properties": ["read", "write"], "bounds": {"min": 0, "max": 100, "step": 1}},
            {"name": "Mode", "data_type": "string", "properties": ["read", "write"],
             "valid_strs": ["warm", "cold"]},
        ],
    }],
    "services": [{
        "name": "System", "type": "esp.service.system",
        "params": [{"name": "Uptime", "data_type": "int", "properties": ["read"]}],
    }],
}


def wait_for(predicate, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.03)
    return predicate()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("console")
    workdir = root / "cloud"
    broker = Broker(workdir)
    broker.start()
    recorder = cloud.Recorder(workdir, broker.host, broker.port).start()
    paths = credential_paths(workdir)
    ca.issue_node(paths["ca_dir"], root / "A", "A")
    node = Client(broker.port, paths["ca_crt"], root / "A" / "node.crt", root / "A" / "node.key", client_id="A")
    assert node.connect(), "node A could not connect"
    yield {"workdir": workdir, "broker": broker, "recorder": recorder, "node": node, "root": root}
    node.close()
    recorder.stop()
    broker.stop()


def store(workdir, name):
    return cloud.read_json(Path(workdir) / "nodes" / "A" / name)


# ------------------------------------------------------------- recorder (no broker)

def test_parse_topic_both_forms():
    assert cloud.parse_topic("node/A/params/local") == ("A", "params/local", None)
    assert cloud.parse_topic("$aws/rules/esp_set_params/node/A/params/local") == (
        "A", "params/local", "esp_set_params")
    assert cloud.parse_topic("node/../config") is None
    assert cloud.parse_topic("node/A") is None
    assert cloud.parse_topic("other/A/config") is None
    assert cloud.normalise_topic("$aws/rules/esp_node_config/node/A/config") == "node/A/config"


def test_record_message_store_and_merge(tmp_path):
    rec = cloud.record_message
    assert rec(tmp_path, "$aws/rules/esp_node_config/node/A/config", json.dumps(CONFIG)) == "config"
    init = {"Light": {"Name": "Desk", "Power": False, "Brightness": 10}, "System": {"Uptime": 1}}
    assert rec(tmp_path, "node/A/params/local/init", json.dumps(init)) == "params-init"
    assert rec(tmp_path, "$aws/rules/esp_set_params/node/A/params/local",
               '{"Light":{"Power":true},"New":{"X":1}}') == "params-delta"
    assert rec(tmp_path, "node/A/params/local", b"{not json") == "ignored: malformed"
    assert rec(tmp_path, "node/A/params/local", b"[1,2]") == "ignored: not an object"
    assert rec(tmp_path, "node/A/params/local", b"\xff\xfe") == "ignored: malformed"
    assert rec(tmp_path, "node/A/otastatus", b"anything") == "logged"
    assert store(tmp_path, "config.json") == CONFIG
    assert store(tmp_path, "params.json") == {
        "Light": {"Name": "Desk", "Power": True, "Brightness": 10},
        "System": {"Uptime": 1}, "New": {"X": 1}}
    # init replaces everything
    rec(tmp_path, "node/A/params/local/init", '{"Light":{"Power":false}}')
    assert store(tmp_path, "params.json") == {"Light": {"Power": False}}
    lines = (tmp_path / "traffic.log").read_text().splitlines()
    assert len(lines) == 8
    assert json.loads(lines[0])["topic"] == "$aws/rules/esp_node_config/node/A/config"
    assert store(tmp_path, "state.json")["last_topic"] == "node/A/params/local/init"


def test_traffic_log_truncates_and_rotates(tmp_path, monkeypatch):
    monkeypatch.setattr(cloud, "MAX_TRAFFIC_LOG", 10_000)
    cloud.record_message(tmp_path, "node/A/big", b"x" * 5000)
    entry = json.loads((tmp_path / "traffic.log").read_text())
    assert len(entry["payload"]) == 2048 and entry["truncated"] == 5000
    for _ in range(10):
        cloud.record_message(tmp_path, "node/A/big", b"y" * 3000)
    assert (tmp_path / "traffic.log.1").exists()
    assert (tmp_path / "traffic.log").stat().st_size < 10_000 + 3000


# ------------------------------------------------------------- recorder via the broker

def test_recorder_stores_config_init_and_delta(env):
    node, workdir = env["node"], env["workdir"]
    assert node.publish("$aws/rules/esp_node_config/node/A/config", CONFIG).is_published()
    assert node.publish("node/A/params/local/init",
                 {"Light": {"Name": "Desk", "Power": False, "Brightness": 10, "Mode": "warm"},
                  "System": {"Uptime": 5}}).is_published()
    assert node.publish("node/A/params/local", b"garbage{").is_published()
    assert node.publish("$aws/rules/esp_set_params/node/A/params/local", {"Light": {"Brightness": 55}}).is_published()
    assert wait_for(lambda: (store(workdir, "params.json") or {}).get("Light", {}).get("Brightness") == 55)
    assert store(workdir, "config.json") == CONFIG
    assert store(workdir, "params.json") == {
        "Light": {"Name": "Desk", "Power": False, "Brightness": 55, "Mode": "warm"}, "System": {"Uptime": 5}}
    assert env["recorder"].count >= 4


# ------------------------------------------------------------- console

def test_parse_assignments():
    assert console.parse_assignments(["Light.Power=false", "Light.Brightness=40", "My Fan.Name=big fan",
                                      'Light.Name="true"', "Light.Obj={\"a\":1}", "Light.Eq=a=b"]) == {
        "Light": {"Power": False, "Brightness": 40, "Name": "true", "Obj": {"a": 1}, "Eq": "a=b"},
        "My Fan": {"Name": "big fan"}}
    assert console.parse_assignments(['{"Light":{"Power":false}}']) == {"Light": {"Power": False}}
    for bad in (["Power=true"], ["Light.Power"], ["{nope"], ['{"Light": 1}'], [".x=1"]):
        with pytest.raises(console.ConsoleError):
            console.parse_assignments(bad)


def test_validate_params_names_the_mistake():
    v = console.validate_params
    assert v(CONFIG, {"Light": {"Power": True, "Brightness": 100, "Mode": "cold"}}) == []
    assert "no device 'Lamp'" in v(CONFIG, {"Lamp": {"Power": True}})[0]
    assert "no param 'Bright'" in v(CONFIG, {"Light": {"Bright": 1}})[0]
    assert "Light.Brightness=400 is outside 0..100" in v(CONFIG, {"Light": {"Brightness": 400}})[0]
    assert "needs a bool" in v(CONFIG, {"Light": {"Power": "maybe"}})[0]
    assert "needs a int" in v(CONFIG, {"Light": {"Brightness": 2.5}})[0]
    assert "one of warm, cold" in v(CONFIG, {"Light": {"Mode": "blue"}})[0]
    assert "read-only" in v(CONFIG, {"System": {"Uptime": 3}})[0]


def test_set_publishes_params_write(env, capsys):
    node, workdir = env["node"], env["workdir"]
    cloud.record_message(workdir, "node/A/config", json.dumps(CONFIG))  # make validation possible
    node.subscribe("node/A/params/remote")
    node.drain(0.1)
    assert console.main(["--dir", str(workdir), "set", "A", "Light.Power=false", "Light.Brightness=40"]) == 0
    assert node.messages.get(timeout=WAIT) == ("node/A/params/remote", b'{"Light":{"Power":false,"Brightness":40}}')
    assert console.main(["--dir", str(workdir), "set", "A", '{"Light":{"Mode":"cold"}}']) == 0
    assert json.loads(node.messages.get(timeout=WAIT)[1]) == {"Light": {"Mode": "cold"}}
    assert "published to node/A/params/remote" in capsys.readouterr().out


def test_set_rejects_bad_names_before_publishing(env, capsys):
    node, workdir = env["node"], env["workdir"]
    cloud.record_message(workdir, "node/A/config", json.dumps(CONFIG))
    node.subscribe("node/A/params/remote")
    node.drain(0.1)
    assert console.main(["--dir", str(workdir), "set", "A", "Light.Bright=40"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: device 'Light' has no param 'Bright'") and "Brightness" in err
    assert console.main(["--dir", str(workdir), "set", "A", "Lamp.Power=true"]) == 2
    assert "no device 'Lamp'" in capsys.readouterr().err
    assert console.main(["--dir", str(workdir), "set", "A/#", "Light.Power=true"]) == 2
    assert "invalid node id" in capsys.readouterr().err
    assert node.drain(0.4) == []
    # --no-validate sends anyway (the node ignores unknown names itself)
    assert console.main(["--dir", str(workdir), "set", "A", "--no-validate", "Lamp.Power=true"]) == 0
    assert node.messages.get(timeout=WAIT)[1] == b'{"Lamp":{"Power":true}}'


def test_nodes_and_show(env, capsys):
    workdir = env["workdir"]
    cloud.record_message(workdir, "node/A/config", json.dumps(CONFIG))
    cloud.record_message(workdir, "node/A/params/local/init", '{"Light":{"Power":true,"Brightness":7}}')
    assert console.main(["--dir", str(workdir), "nodes"]) == 0
    out = capsys.readouterr().out
    assert "A " in out and "Desk" in out and "Lightbulb" in out
    assert console.main(["--dir", str(workdir), "show", "A"]) == 0
    out = capsys.readouterr().out
    assert "Brightness = 7" in out and "0..100 step 1" in out and "[service] System" in out
    assert console.main(["--dir", str(workdir), "show", "ZZ"]) == 2
    assert "unknown" in capsys.readouterr().err


def test_console_without_broker_json_is_a_clear_error(tmp_path, capsys):
    assert console.main(["--dir", str(tmp_path), "set", "A", "--no-validate", "L.P=1"]) == 2
    assert "broker.json" in capsys.readouterr().err


def test_watch_count(env):
    node, workdir = env["node"], env["workdir"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.console", "--dir", str(workdir), "watch", "A", "--count", "2",
         "--timeout", "8"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stderr, selectors.EVENT_READ)
        assert sel.select(timeout=8), "watch did not start"
        assert "watching" in proc.stderr.readline()
        assert node.publish("$aws/rules/esp_set_params/node/A/params/local", {"Light": {"Power": True}}).is_published()
        assert node.publish("node/A/params/local", {"Light": {"Brightness": 3}}).is_published()
        out, err = proc.communicate(timeout=8)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 2
    assert 'node/A/params/local {"Light": {"Power": true}}' in lines[0]
    assert "via $aws/rules/esp_set_params" in lines[0]
    assert 'node/A/params/local {"Light": {"Brightness": 3}}' in lines[1]


def test_watch_timeout_reports_shortfall(env, capsys):
    assert console.main(["--dir", str(env["workdir"]), "watch", "NOBODY", "--count", "1",
                         "--timeout", "0.3"]) == 1
    assert "got 0 of 1" in capsys.readouterr().err


def test_run_cloud_starts_and_stops(tmp_path):
    stop = threading.Event()
    errors = []

    def run():
        try:
            cloud.run_cloud(tmp_path / "c", port=0, stop_event=stop)
        except Exception as exc:  # surfaced by the assert below
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    try:
        assert wait_for(lambda: (tmp_path / "c" / "broker.json").exists(), 8)
    finally:
        stop.set()
        t.join(10)
    assert not errors and not t.is_alive()
    assert not (tmp_path / "c" / "broker.json").exists()


def test_schedule_add_sends_what_the_apps_send(env, capsys):
    node, workdir = env["node"], env["workdir"]
    node.subscribe("node/A/params/remote")
    node.drain(0.1)
    assert console.main(["--dir", str(workdir), "schedule", "add", "A", "--id", "ab12", "--name", "Eve",
                         "--at", "18:30", "--days", "mon,tue,wed,thu,fri", "Light.Power=true"]) == 0
    assert json.loads(node.messages.get(timeout=WAIT)[1]) == {"Schedule": {"Schedules": [
        {"operation": "add", "id": "ab12", "name": "Eve", "triggers": [{"m": 1110, "d": 31}],
         "action": {"Light": {"Power": True}}}]}}
    assert console.main(["--dir", str(workdir), "schedule", "disable", "A", "ab12"]) == 0
    assert json.loads(node.messages.get(timeout=WAIT)[1]) == {
        "Schedule": {"Schedules": [{"operation": "disable", "id": "ab12"}]}}
    assert console.main(["--dir", str(workdir), "scene", "activate", "A", "s1"]) == 0
    assert json.loads(node.messages.get(timeout=WAIT)[1]) == {
        "Scenes": {"Scenes": [{"operation": "activate", "id": "s1"}]}}


@pytest.mark.parametrize("argv,why", [
    (["schedule", "add", "A", "--id", "x", "--name", "N", "--at", "25:00", "L.P=1"], "HH:MM"),
    (["schedule", "add", "A", "--id", "x", "--name", "N", "--at", "07:00", "--days", "funday", "L.P=1"], "funday"),
    (["schedule", "add", "A", "--id", "toolongid", "--name", "N", "--in", "5", "L.P=1"], "1..8"),
    (["schedule", "add", "A", "--id", "x", "--name", "N", "L.P=1"], "say when"),
    (["schedule", "add", "A", "--id", "x", "--name", "N", "--in", "5"], "action"),
    (["schedule", "add", "A", "--id", "x", "--name", "N", "--at", "07:00", "--date", "2027-02-30", "L.P=1"],
     "YYYY-MM-DD"),
    (["schedule", "remove", "A"], "needs the schedule's ID"),
    (["scene", "add", "A", "--id", "s", "L.P=1"], "--name"),
])
def test_schedule_and_scene_refuse_bad_input_before_publishing(env, capsys, argv, why):
    node, workdir = env["node"], env["workdir"]
    node.subscribe("node/A/params/remote")
    node.drain(0.1)
    assert console.main(["--dir", str(workdir)] + argv) == 2
    assert why in capsys.readouterr().err
    assert node.drain(0.2) == []


def test_schedule_list_shows_the_reported_schedules(env, capsys):
    workdir = env["workdir"]
    cloud.record_message(workdir, "node/A/params/local", json.dumps({"Schedule": {"Schedules": [
        {"id": "ab12", "name": "Eve", "enabled": True, "triggers": [{"m": 1110, "d": 31, "ts": 1800000000}],
         "action": {"Light": {"Power": True}}}]}}))
    assert console.main(["--dir", str(workdir), "schedule", "list", "A"]) == 0
    out = capsys.readouterr().out
    assert "ab12" in out and "18:30 mon,tue,wed,thu,fri" in out and "next " in out
