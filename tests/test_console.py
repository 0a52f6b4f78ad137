"""Tests for the cloud recorder (tools.cloud) and the developer console (tools.console)."""

import hashlib
import json
import os
import selectors
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
    assert rec(tmp_path, "node/A/otastatus", b"anything") == "ota-status"  # logged; no job to close
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


def test_ota_job_store_closes_on_the_final_status_only(tmp_path):
    rec = cloud.record_message
    assert cloud.pending_ota_job(tmp_path, "A") is None
    cloud.save_ota_job(tmp_path, "A", {"ota_job_id": "j1", "url": "https://x/y"})
    assert cloud.pending_ota_job(tmp_path, "A")["ota_job_id"] == "j1"
    for payload in (b"{garbage", b'{"ota_job_id":"other","status":"success"}',
                    b'{"ota_job_id":"j1","status":"in-progress","additional_info":"Downloaded 10% Firmware Image"}',
                    b'{"ota_job_id":"j1","status":"delayed","additional_info":"Not within download window."}',
                    b'{"ota_job_id":"j1","status":"failed","additional_info":"OTA Attempt 2/3 failed: x"}',
                    b'{"ota_job_id":"j1","status":"bogus"}'):
        assert rec(tmp_path, "$aws/rules/esp_node_otastatus/node/A/otastatus", payload) == "ota-status"
        assert cloud.pending_ota_job(tmp_path, "A") is not None, payload
    assert rec(tmp_path, "node/A/otafetch", b'{"node_id":"A"}') == "ota-fetch"
    rec(tmp_path, "node/A/otastatus", b'{"ota_job_id":"j1","status":"failed","additional_info":"OTA Attempt 3/3 failed: x"}')
    assert cloud.pending_ota_job(tmp_path, "A") is None
    assert store(tmp_path, "ota.json")["state"] == "failed"
    (tmp_path / "nodes" / "A" / "ota.json").write_text("[1]")  # damaged: nothing pending, no crash
    assert cloud.pending_ota_job(tmp_path, "A") is None
    assert rec(tmp_path, "node/A/otastatus", b'{"ota_job_id":"j1","status":"success"}') == "ota-status"


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


def test_run_cloud_runs_the_ota_file_server(tmp_path):
    from tools.otaserver import parse_fault, running_server
    stop = threading.Event()
    errors = []
    workdir = tmp_path / "c"

    def run():
        try:
            cloud.run_cloud(workdir, port=0, stop_event=stop, ota_port=0, ota_faults=[parse_fault("status:418")])
        except Exception as exc:  # surfaced by the assert below
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    try:
        assert wait_for(lambda: running_server(workdir), 8)
        host, port, root = running_server(workdir)
        assert host == "127.0.0.1" and root == (workdir / "ota").resolve()
        (root / "f.bin").write_bytes(b"x")
        import http.client
        import ssl
        ctx = ssl.create_default_context(cafile=str(credential_paths(workdir)["ca_crt"]))
        conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=5)
        conn.request("GET", "/f.bin")
        assert conn.getresponse().status == 418  # the fault given to run_cloud
        conn.close()
    finally:
        stop.set()
        t.join(10)
    assert not errors and not t.is_alive()
    assert not (workdir / "otaserver.json").exists()
    assert json.loads((workdir / "otaserver.log").read_text().splitlines()[-1])["status"] == 418


def test_cloud_refuses_a_bad_fault_spec(tmp_path, capsys):
    assert cloud.main(["--dir", str(tmp_path), "--ota-fault", "melt:1"]) == 2
    assert "unknown fault" in capsys.readouterr().err


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


# ------------------------------------------------------------- ota

OTA_CONFIG = {**CONFIG, "node_id": "B", "info": {**CONFIG["info"], "fw_version": "1.0.0"}}


def small_bundle(version="1.2.0"):
    import struct
    body = b"print('hello')\n"
    manifest = json.dumps({"format": 1, "version": version, "total": len(body), "files": [
        {"path": "main.py", "size": len(body), "sha256": hashlib.sha256(body).hexdigest()}]}).encode()
    return b"RMB1" + struct.pack(">H", len(manifest)) + manifest + body


def https_get(url, ca_crt):
    """Download url as a board does: the server verified against the local CA."""
    import http.client
    import ssl
    from urllib.parse import urlsplit
    u = urlsplit(url)
    ctx = ssl.create_default_context(cafile=str(ca_crt))
    conn = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=5)
    try:
        conn.request("GET", u.path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class FakeNode:
    """Node B: answers each otaurl job with the statuses script(job, node) publishes."""

    def __init__(self, env, script):
        self.env, self.script = env, script
        paths = credential_paths(env["workdir"])
        self.ca = paths["ca_crt"]
        self.client = Client(env["broker"].port, self.ca, env["root"] / "B" / "node.crt",
                             env["root"] / "B" / "node.key", client_id="B")
        assert self.client.connect(), "node B could not connect"
        self.client.subscribe("node/B/otaurl")
        self.jobs, self.errors = [], []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        import queue
        while not self._stop.is_set():
            try:
                topic, payload = self.client.get(timeout=0.1)
            except queue.Empty:
                continue
            try:
                job = json.loads(payload)
                self.jobs.append(job)
                self.script(job, self)
            except Exception as exc:  # surfaced by the tests
                self.errors.append(exc)

    def status(self, job, status, info, ingest=False):
        doc = {"ota_job_id": job["ota_job_id"] if isinstance(job, dict) else job, "status": status,
               "additional_info": info, "ts": int(time.time())}
        topic = "$aws/rules/esp_node_otastatus/node/B/otastatus" if ingest else "node/B/otastatus"
        assert self.client.publish(topic, doc).is_published()

    def fetch(self):
        assert self.client.publish("$aws/rules/esp_node_otafetch/node/B/otafetch",
                                   {"node_id": "B", "fw_version": "1.0.0"}).is_published()

    def close(self):
        self._stop.set()
        self._thread.join(2)
        self.client.close()


@pytest.fixture(scope="module")
def ota_env(env):
    paths = credential_paths(env["workdir"])
    ca.issue_node(paths["ca_dir"], env["root"] / "B", "B")
    cloud.record_message(env["workdir"], "node/B/config", json.dumps(OTA_CONFIG))
    return env


@pytest.fixture
def fake_node(ota_env):
    made = []

    def make(script):
        node = FakeNode(ota_env, script)
        made.append(node)
        return node
    yield make
    for node in made:
        node.close()


def good_download(job, node):
    """A whole successful job, as the node side reports it (progress on)."""
    node.status(job, "in-progress", "Starting OTA Upgrade (HTTPS attempt 1/3)")
    code, data = https_get(job["url"], node.ca)
    assert code == 200 and len(data) == job["file_size"]
    assert hashlib.md5(data).hexdigest() == job["file_md5"]
    node.status(job, "in-progress", "Downloading Firmware Image", ingest=True)
    for pct in range(10, 100, 10):
        node.status(job, "in-progress", f"Downloaded {pct}% Firmware Image", ingest=pct % 20 == 0)
    node.status(job, "in-progress", "Firmware Image download complete")
    node.status(job, "in-progress", "Rebooting into new firmware (after 1 HTTPS attempt)")
    node.status(job, "success", "OTA Upgrade finished and verified successfully", ingest=True)


def ota(env, *args):
    return console.main(["--dir", str(env["workdir"]), "ota", *map(str, args)])



def test_ota_firmware_image_success_with_progress(ota_env, fake_node, tmp_path, capsys):
    from tests import esp_image
    image = esp_image.build(version="2.0.0", size=50_000)
    (tmp_path / "fw.app-bin").write_bytes(image)
    node = fake_node(good_download)
    assert ota(ota_env, "B", tmp_path / "fw.app-bin", "--job-id", "job-ok", "--timeout", 20) == 0
    out = capsys.readouterr().out
    assert not node.errors, node.errors
    job = node.jobs[0]
    assert list(job) == ["ota_job_id", "url", "file_size", "file_md5", "fw_version"]
    assert job["ota_job_id"] == "job-ok" and job["fw_version"] == "2.0.0" and job["file_size"] == len(image)
    assert job["url"].startswith("https://127.0.0.1:") and job["url"].endswith("/job-ok-fw.app-bin")
    assert (ota_env["workdir"] / "ota" / "job-ok-fw.app-bin").read_bytes() == image
    assert "firmware image fw.app-bin, version 2.0.0" in out
    assert "published to node/B/otaurl" in out
    assert "Downloaded 50% Firmware Image  [###############---------------]  50%" in out
    assert out.count("Firmware Image  [") == 9
    assert "success     OTA Upgrade finished and verified successfully" in out
    # the on-demand file server recorded the download, and is gone again
    log = [json.loads(x) for x in (ota_env["workdir"] / "otaserver.log").read_text().splitlines()]
    assert log[-1]["path"] == "/job-ok-fw.app-bin" and log[-1]["sent"] == len(image)


def test_ota_bundle_through_the_clouds_file_server(ota_env, fake_node, tmp_path, capsys):
    from tools.otaserver import OtaServer
    (tmp_path / "app.rmb").write_bytes(small_bundle("1.2.0"))
    workdir = ota_env["workdir"]
    with OtaServer(workdir / "ota", workdir, 0, state_file=True) as server:
        node = fake_node(good_download)
        assert ota(ota_env, "B", tmp_path / "app.rmb", "--job-id", "job-b", "--timeout", 20) == 0
        assert node.jobs[0]["url"] == f"https://127.0.0.1:{server.port}/job-b-app.rmb"
        assert node.jobs[0]["fw_version"] == "1.2.0"
        assert [r["path"] for r in server.requests] == ["/job-b-app.rmb"]
    assert "app bundle app.rmb, version 1.2.0" in capsys.readouterr().out


def test_ota_no_wait_needs_and_uses_the_clouds_file_server(ota_env, fake_node, tmp_path, capsys):
    from tools.otaserver import OtaServer
    (tmp_path / "app.rmb").write_bytes(small_bundle())
    node = fake_node(lambda job, n: None)
    assert ota(ota_env, "B", tmp_path / "app.rmb", "--no-wait") == 2
    assert "make cloud" in capsys.readouterr().err
    workdir = ota_env["workdir"]
    with OtaServer(workdir / "ota", workdir, 0, state_file=True) as server:
        assert ota(ota_env, "B", tmp_path / "app.rmb", "--no-wait", "--job-id", "nw1") == 0
        assert wait_for(lambda: node.jobs)
        code, data = https_get(node.jobs[0]["url"], node.ca)  # still served after the console left
        assert code == 200 and data == small_bundle()
        assert server.port == int(node.jobs[0]["url"].split(":")[2].split("/")[0])


def test_ota_failed_after_the_last_attempt(ota_env, fake_node, tmp_path, capsys):
    def script(job, node):
        for a in (1, 2, 3):
            node.status(job, "in-progress", f"Starting OTA Upgrade (HTTPS attempt {a}/3)")
            node.status(job, "failed", f"OTA Attempt {a}/3 failed: connection reset")
    (tmp_path / "app.rmb").write_bytes(small_bundle())
    fake_node(script)
    assert ota(ota_env, "B", tmp_path / "app.rmb", "--timeout", 20) == 1
    out = capsys.readouterr().out
    assert "OTA Attempt 1/3 failed" in out and "OTA Attempt 3/3 failed: connection reset" in out
    assert out.index("1/3 failed") < out.index("attempt 2/3") < out.index("3/3 failed")


def test_ota_rejected_and_other_jobs_reports_ignored(ota_env, fake_node, tmp_path, capsys):
    def script(job, node):
        node.status("someone-else", "success", "not ours")
        assert node.client.publish("node/B/otastatus", b"{broken").is_published()
        assert node.client.publish("node/B/otastatus", {"ota_job_id": job["ota_job_id"],
                                                        "status": "exploded"}).is_published()
        node.status(job, "rejected", "Same version received: 1.0.0")
    (tmp_path / "app.rmb").write_bytes(small_bundle())
    fake_node(script)
    assert ota(ota_env, "B", tmp_path / "app.rmb", "--timeout", 20) == 1
    out = capsys.readouterr().out
    assert "not ours" not in out and "ignored a malformed otastatus" in out
    assert "rejected    Same version received: 1.0.0" in out


def test_ota_timeout(ota_env, fake_node, tmp_path, capsys):
    (tmp_path / "app.rmb").write_bytes(small_bundle())
    fake_node(lambda job, node: node.status(job, "in-progress", "Starting OTA Upgrade (HTTPS attempt 1/3)"))
    t0 = time.monotonic()
    assert ota(ota_env, "B", tmp_path / "app.rmb", "--timeout", 1.5, "--job-id", "slow") == 1
    assert 1.4 < time.monotonic() - t0 < 10
    out = capsys.readouterr().out
    assert "Starting OTA Upgrade" in out and "timeout: no final status for job slow within 1.5s" in out


def test_ota_wait_fetch_holds_the_job_until_the_node_asks(ota_env, fake_node, tmp_path, capsys):
    (tmp_path / "app.rmb").write_bytes(small_bundle())
    node = fake_node(good_download)
    result = []
    t = threading.Thread(target=lambda: result.append(
        ota(ota_env, "B", tmp_path / "app.rmb", "--wait-fetch", "--timeout", 20)))
    t.start()
    try:
        assert wait_for(lambda: "waits for the node to ask" in capsys.readouterr().out or None, 5) is not None
        time.sleep(0.3)
        assert node.jobs == []  # nothing sent yet
        node.fetch()
        t.join(20)
    finally:
        t.join(20)
    assert result == [0] and len(node.jobs) == 1


def test_ota_queued_job_is_handed_out_by_the_cloud_on_fetch(ota_env, fake_node, tmp_path, capsys):
    from tools.otaserver import OtaServer
    (tmp_path / "app.rmb").write_bytes(small_bundle())
    workdir = ota_env["workdir"]
    node = fake_node(good_download)
    with OtaServer(workdir / "ota", workdir, 0, state_file=True):
        assert ota(ota_env, "B", tmp_path / "app.rmb", "--no-wait", "--wait-fetch", "--job-id", "q1") == 0
        time.sleep(0.3)
        assert node.jobs == []  # queued, not sent
        assert cloud.pending_ota_job(workdir, "B")["ota_job_id"] == "q1"
        node.fetch()  # the board boots and asks: the recorder answers
        assert wait_for(lambda: cloud.read_json(workdir / "nodes" / "B" / "ota.json")["state"] == "success", 10)
    assert [j["ota_job_id"] for j in node.jobs] == ["q1"] and not node.errors
    node.fetch()  # the job is over: a fetch gets nothing
    time.sleep(0.5)
    assert len(node.jobs) == 1


def test_ota_answers_a_fetch_after_a_delay(ota_env, fake_node, tmp_path, capsys):
    def script(job, node):
        if len(node.jobs) == 1:
            node.status(job, "delayed", "Not within download window.")
            node.fetch()  # the window opened: the node asks again
        else:
            good_download(job, node)
    (tmp_path / "app.rmb").write_bytes(small_bundle())
    node = fake_node(script)
    assert ota(ota_env, "B", tmp_path / "app.rmb", "--timeout", 20) == 0
    assert len(node.jobs) == 2 and node.jobs[0] == node.jobs[1]
    out = capsys.readouterr().out
    assert "delayed     Not within download window." in out and "asked for its job" in out


@pytest.mark.parametrize("args,why", [
    (["B", "{tmp}/missing.rmb"], "no such file"),
    (["B", "{tmp}/empty.rmb"], "1 to"),
    (["B", "{tmp}/page.html"], "neither an app bundle"),
    (["B", "{tmp}/bad.rmb"], "make bundle"),
    (["B", "{tmp}/combined.bin"], "not a usable firmware image"),
    (["NOBODY", "{tmp}/app.rmb"], "unknown here"),
    (["../B", "{tmp}/app.rmb"], "invalid node id"),
    (["B", "{tmp}/app.rmb", "--job-id", "bad id"], "--job-id"),
    (["B", "{tmp}/app.rmb", "--job-id", "x" * 64], "--job-id"),
    (["B", "{tmp}/app.rmb", "--timeout", "0"], "--timeout"),
    (["B", "{tmp}/app.rmb", "--timeout", "nan"], "--timeout"),
])
def test_ota_refuses_bad_input_before_sending(ota_env, fake_node, tmp_path, capsys, args, why):
    (tmp_path / "app.rmb").write_bytes(small_bundle())
    (tmp_path / "empty.rmb").write_bytes(b"")
    (tmp_path / "page.html").write_bytes(b"<html>404</html>")
    (tmp_path / "bad.rmb").write_bytes(small_bundle()[:-3])
    (tmp_path / "combined.bin").write_bytes(b"\xe9" + b"\0" * 400)
    node = fake_node(lambda job, n: None)
    # --timeout first: a case wrongly let through fails in 3 s instead of hanging
    assert ota(ota_env, "--timeout", 3, *[a.format(tmp=tmp_path) for a in args]) == 2
    assert why in capsys.readouterr().err
    time.sleep(0.3)
    assert node.jobs == []


def test_ota_without_a_broker_names_the_fix(tmp_path, capsys):
    (tmp_path / "app.rmb").write_bytes(small_bundle())
    (tmp_path / "c").mkdir()
    cloud.record_message(tmp_path / "c", "node/B/config", json.dumps(OTA_CONFIG))
    assert console.main(["--dir", str(tmp_path / "c"), "ota", "B", str(tmp_path / "app.rmb")]) == 2
    assert "start 'python -m tools.cloud'" in capsys.readouterr().err


def test_ota_help_explains(capsys):
    with pytest.raises(SystemExit):
        console.main(["ota", "--help"])
    out = capsys.readouterr().out
    assert "otaurl" in out and "--no-wait" in out and "--wait-fetch" in out and ".app-bin" in out


# pure parts of the ota command

def test_status_outcome_and_progress():
    def rep(status, info=""):
        return {"ota_job_id": "j", "status": status, "additional_info": info, "ts": 1}
    assert console.status_outcome(rep("success")) == "success"
    assert console.status_outcome(rep("rejected", "Firmware rolled back")) == "rejected"
    assert console.status_outcome(rep("failed", "OTA Attempt 2/3 failed: x")) is None
    assert console.status_outcome(rep("failed", "OTA Attempt 3/3 failed: x")) == "failed"
    assert console.status_outcome(rep("failed", "Aborted. URL not found in JSON")) == "failed"
    assert console.status_outcome(rep("in-progress", "Downloaded 30% Firmware Image")) is None
    assert console.status_outcome(rep("delayed", "No time information available yet.")) is None
    assert console.status_progress(rep("in-progress", "Downloaded 30% Firmware Image")) == 30
    assert console.status_progress(rep("in-progress", "Downloaded 999% Firmware Image")) == 100
    assert console.status_progress(rep("in-progress", "Downloading Firmware Image")) is None
    assert console.progress_bar(0, 10) == "[----------]   0%"
    assert console.progress_bar(100, 10) == "[##########] 100%"


def test_parse_status_refuses_what_is_not_a_status():
    ok = console.parse_status(b'{"ota_job_id":"j","status":"success","additional_info":"x","ts":5}')
    assert ok == {"ota_job_id": "j", "status": "success", "additional_info": "x", "ts": 5}
    for bad in (b"", b"null", b"[]", b'{"status":"success"}', b'{"ota_job_id":1,"status":"success"}',
                b'{"ota_job_id":"j","status":"done"}', b"\xff", b"[" * 100000, b'{"ota_job_id":"j"}'):
        assert console.parse_status(bad) is None
    big = console.parse_status(json.dumps({"ota_job_id": "j", "status": "failed",
                                           "additional_info": "y" * 1000, "ts": True}).encode())
    assert len(big["additional_info"]) == 300 and big["ts"] is None


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_parse_status_never_raises(data):
    r = console.parse_status(data)
    assert r is None or r["status"] in console.OTA_STATUSES


def test_follow_job_transport_free():
    import io
    import queue
    q = queue.Queue()
    for item in [("status", b'{"ota_job_id":"other","status":"success"}'),
                 ("fetch", b"{}"),
                 ("status", b'{"ota_job_id":"j","status":"in-progress","additional_info":"Downloaded 20% Firmware Image"}'),
                 ("status", b'{"ota_job_id":"j","status":"success","additional_info":"done"}')]:
        q.put(item)
    fetched, out = [], io.StringIO()
    assert console.follow_job(q, "j", 5, out, on_fetch=lambda: fetched.append(1)) == "success"
    assert fetched == [1] and "20%" in out.getvalue() and "other" not in out.getvalue()
    now = [0.0]

    def clock():
        now[0] += 1.0
        return now[0]
    assert console.follow_job(queue.Queue(), "j", 3, io.StringIO(), clock=clock) == "timeout"


def test_ota_file_name_is_url_safe():
    assert console.ota_file_name("job-1", "/x/app.rmb") == "job-1-app.rmb"
    assert console.ota_file_name("a:b", "/x/my app (2).bin") == "a_b-my_app__2_.bin"
    assert console.ota_file_name("j", "/x/.hidden") == "j-hidden"
    assert console.ota_file_name("j", "/x/ü.bin") == "j-_.bin"
