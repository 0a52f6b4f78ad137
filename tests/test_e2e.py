"""End to end: the firmware, unmodified, on the simulated board, against a real
broker with mutual TLS, observed from the cloud side. Every test that boots a board
runs on both backends (the `backend` fixture, tests/conftest.py): the CPython sim
and MicroPython itself.

One board runs the example app (firmware/main.py) for the main flow; the
failure cases each get a board of their own.
"""
import json
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from provisioning import ca
from tests.example_node import example_node
from tests.harness import Cloud, Board, ROOT

NODE = "240AC4E2E001"


def expected_config(node_id):
    # The board's config must match the same node built here, byte for byte.
    return example_node(node_id).config()


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    c = Cloud(tmp_path_factory.mktemp("cloud")).start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def board(cloud, backend, tmp_path_factory):
    since = cloud.mark()
    b = Board(cloud, tmp_path_factory.mktemp("b1"), NODE, keepalive=30, backend=backend).start()
    b.wait_line("online as " + NODE, timeout=30)
    b.first = since
    yield b
    b.stop()


def params(payload):
    return json.loads(payload)


# -- the main flow ---------------------------------------------------------------


def test_comes_online_with_config_matching_the_model(cloud, board):
    topic, payload = cloud.wait("config", NODE, board.first)
    assert topic == f"node/{NODE}/config"
    assert payload.decode() == expected_config(NODE)
    _, init = cloud.wait("params/local/init", NODE, board.first)
    p = params(init)
    assert set(p) == {"Light", "Temperature", "Time", "System", "Schedule", "Connectivity"}
    assert p["Time"] == {"TZ": "", "TZ-POSIX": ""} and p["Schedule"] == {"Schedules": []}
    assert p["System"] == {"Reboot": False, "Factory-Reset": False, "Wi-Fi-Reset": False}
    assert p["Light"] == {"Name": "Light", "Power": False, "Brightness": 100, "Hue": 0, "Saturation": 100}
    assert p["Connectivity"] == {"Connected": True}
    assert isinstance(p["Temperature"]["Temperature"], float)


def test_remote_write_reaches_the_app_and_is_echoed(cloud, board):
    since = cloud.mark()
    cloud.write(NODE, {"Light": {"Power": True, "Brightness": 40}})
    _, echo = cloud.wait("params/local", NODE, since)
    assert params(echo) == {"Light": {"Power": True, "Brightness": 40}}
    # The app's callback drove the LED: the simulated PWM pin shows the level.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if board.led_duty() == 40 * 65535 // 100:
            break
        time.sleep(0.05)
    assert board.led_duty() == 40 * 65535 // 100


def test_refused_write_is_answered_with_the_current_value(cloud, board):
    since, lsince = cloud.mark(), board.mark()
    cloud.write(NODE, {"Light": {"Brightness": 500}})
    _, echo = cloud.wait("params/local", NODE, since)
    assert params(echo) == {"Light": {"Brightness": 40}}
    board.wait_line("Light.Brightness 500 is outside 0..100; reporting current value", lsince)


def test_local_change_is_reported(cloud, board):
    since = cloud.mark()
    board.press_button()
    _, report = cloud.wait("params/local", NODE, since, where=lambda p: b"Power" in p)
    assert params(report) == {"Light": {"Power": False}}


@pytest.mark.parametrize("payload,line", [
    (b'{"Light":{"Power":tru', "remote write ignored: malformed JSON"),
    (b'{"Kitchen":{"Power":true}}', "remote write to unknown device 'Kitchen' ignored"),
    (b'{"Light":{"Colour":1}}', "remote write to unknown param Light.Colour ignored"),
    (b'{"Light":{"Power":"yes"}}', "Light.Power must be true or false, got str"),
    (b'{"Temperature":{"Temperature":99}}', "Temperature.Temperature is read-only"),
    (b'[]', "expected a JSON object of devices"),
    (b'{"Light":{"Name":"' + b"x" * 6000 + b'"}}', "remote write of 6021 bytes ignored: limit is 4096"),
    (b'{"Light":{"Name":"' + b"x" * 20000 + b'"}}', "bytes dropped: limit is 8192"),
])
def test_bad_input_is_logged_and_the_board_keeps_working(cloud, board, payload, line):
    lsince = board.mark()
    cloud.publish(f"node/{NODE}/params/remote", payload)
    board.wait_line(line, lsince)
    since = cloud.mark()
    cloud.write(NODE, {"Light": {"Saturation": 55}})
    _, echo = cloud.wait("params/local", NODE, since, where=lambda p: b'"Saturation":55' in p)
    assert params(echo) == {"Light": {"Saturation": 55}}
    since = cloud.mark()
    cloud.write(NODE, {"Light": {"Saturation": 100}})
    cloud.wait("params/local", NODE, since, where=lambda p: b'"Saturation":100' in p)
    assert "Traceback" not in "\n".join(board.lines(lsince))


def test_broker_restart_mid_traffic_recovers_and_re_reports(cloud, board):
    import threading

    stop = threading.Event()

    def traffic():  # the cloud keeps writing while the broker goes away
        n = 0
        while not stop.is_set():
            n += 1
            try:
                cloud._client.publish(f"node/{NODE}/params/remote", json.dumps({"Light": {"Hue": n % 300}}), qos=1)
            except Exception:
                pass
            time.sleep(0.05)

    t = threading.Thread(target=traffic, daemon=True)
    t.start()
    try:
        time.sleep(0.5)
        lsince = board.mark()
        cloud.broker.restart()
        board.wait_line("connection closed by broker", lsince, timeout=30)
        # A local change while the broker is down must not be lost.
        before = board.mark()
        board.press_button()
        board.wait_line("online as " + NODE, lsince, timeout=30)
    finally:
        stop.set()
        t.join(5)
    since = cloud.mark()
    cloud.write(NODE, {"Light": {"Hue": 120}})
    _, echo = cloud.wait("params/local", NODE, since, where=lambda p: b'"Hue":120' in p)
    assert params(echo) == {"Light": {"Hue": 120}}
    # The state the board reports after the outage includes the button press.
    recorded = [json.loads(p) for t_, p, _ in cloud.messages if t_.endswith(f"{NODE}/params/local/init")]
    assert recorded[-1]["Light"]["Power"] is True  # the press turned the light back on
    assert recorded[-1]["Light"]["Brightness"] == 40  # state survived the outage
    assert "Traceback" not in "\n".join(board.lines(before))


def test_wifi_drop_and_return(cloud, board):
    lsince, since = board.mark(), cloud.mark()
    dropped = time.monotonic()
    board.set_air(up=False)
    board.wait_line("Wi-Fi lost", lsince, timeout=20)
    # A board without radio cannot send a FIN: the broker notices the dead
    # link only through keep-alive (30 s here, 1.5x grace) and then
    # publishes the node's last will.
    _, will = cloud.wait("params/local", NODE, since, timeout=60, where=lambda p: b"Connectivity" in p)
    assert params(will) == {"Connectivity": {"Connected": False}}
    assert time.monotonic() - dropped >= 15, "the broker was told at once: a socket closed without radio sent a FIN"
    since = cloud.mark()
    board.set_air(up=True)
    board.wait_line("online as " + NODE, lsince, timeout=30)
    _, init = cloud.wait("params/local/init", NODE, since)
    assert params(init)["Connectivity"] == {"Connected": True}


def test_persisted_name_survives_a_power_cycle(cloud, board):
    since = cloud.mark()
    cloud.write(NODE, {"Light": {"Name": "Desk lamp"}})
    cloud.wait("params/local", NODE, since, where=lambda p: b"Desk lamp" in p)
    time.sleep(1.5)  # persisted params are written at most once a second
    lsince, since = board.mark(), cloud.mark()
    board.power_cycle()
    board.wait_line("online as " + NODE, lsince, timeout=30)
    _, init = cloud.wait("params/local/init", NODE, since)
    assert params(init)["Light"]["Name"] == "Desk lamp"
    assert params(init)["Light"]["Power"] is False  # not persisted: back to default


# -- runtime reconfiguration and topics -------------------------------------------


def test_runtime_reconfiguration_republishes_config_and_params(cloud, backend, tmp_path):
    node = "240AC4E2E002"
    since = cloud.mark()
    b = Board(cloud, tmp_path, node, main=ROOT / "tests" / "apps" / "reconfig_main.py", backend=backend).start()
    try:
        b.wait_line("online as " + node, timeout=30)
        _, cfg = cloud.wait("config", node, since)
        assert "Fan" not in [d["name"] for d in json.loads(cfg)["devices"]]
        cloud.wait("params/local/init", node, since)
        since = cloud.mark()
        cloud.write(node, {"Features": {"Fan": True}})
        _, cfg = cloud.wait("config", node, since)
        fan = [d for d in json.loads(cfg)["devices"] if d["name"] == "Fan"]
        assert fan and fan[0]["type"] == "esp.device.fan"
        _, init = cloud.wait("params/local/init", node, since)
        assert params(init)["Fan"] == {"Name": "Fan", "Power": False, "Speed": 2}
        assert params(init)["Features"] == {"Fan": True}
        since = cloud.mark()
        cloud.write(node, {"Fan": {"Speed": 4}})
        _, echo = cloud.wait("params/local", node, since)
        assert params(echo) == {"Fan": {"Speed": 4}}
        since = cloud.mark()
        cloud.write(node, {"Features": {"Fan": False}})
        _, cfg = cloud.wait("config", node, since)
        assert "Fan" not in [d["name"] for d in json.loads(cfg)["devices"]]
        assert "Traceback" not in "\n".join(b.lines())
    finally:
        b.stop()


def test_basic_ingest_topics(cloud, backend, tmp_path):
    node = "240AC4E2E003"
    since = cloud.mark()
    b = Board(cloud, tmp_path, node, topics="ingest", backend=backend).start()
    try:
        b.wait_line("online as " + node, timeout=30)
        topic, _ = cloud.wait("config", node, since)
        assert topic == f"$aws/rules/esp_node_config/node/{node}/config"
        topic, _ = cloud.wait("params/local/init", node, since)
        assert topic == f"$aws/rules/esp_init_params/node/{node}/params/local/init"
        since = cloud.mark()
        cloud.write(node, {"Light": {"Power": True}})  # subscriptions stay plain
        topic, echo = cloud.wait("params/local", node, since)
        assert topic == f"$aws/rules/esp_set_params/node/{node}/params/local"
    finally:
        b.stop()


# -- isolation and identity failures -----------------------------------------------


def _pem_identity(board, tmp_path):
    cert = x509.load_der_x509_certificate((board.dir / "certs" / "node.crt.der").read_bytes())
    key = serialization.load_der_private_key((board.dir / "certs" / "node.key.der").read_bytes(), None)
    c, k = tmp_path / "a.crt", tmp_path / "a.key"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    k.chmod(0o600)
    return c, k


def test_node_a_cannot_touch_node_b(cloud, board, tmp_path):
    import paho.mqtt.client as paho
    from tools.broker import client_tls_context

    other = Board(cloud, tmp_path / "a", "240AC4E2E0AA")  # identity only, not booted
    crt, key = _pem_identity(other, tmp_path)
    got = []
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="240AC4E2E0AA")
    c.tls_set_context(client_tls_context(cloud.workdir / "ca" / "ca.crt", crt, key))
    c.on_message = lambda cl, ud, msg: got.append(msg.topic)
    c.connect(cloud.broker.host, cloud.broker.port)
    c.loop_start()
    try:
        lsince, since = board.mark(), cloud.mark()
        c.publish(f"node/{NODE}/params/remote", json.dumps({"Light": {"Power": True}}), qos=1).wait_for_publish(5)
        c.publish(f"node/{NODE}/params/local", json.dumps({"Light": {"Power": True}}), qos=1).wait_for_publish(5)
        # Mosquitto grants a denied subscription but delivers nothing on it;
        # the embedded broker answers 0x80. Either way nothing may arrive.
        c.subscribe(f"node/{NODE}/#", qos=1)
        time.sleep(1)
        assert board.count("remote write", lsince) == 0 and board.count("params", lsince) == 0
        assert cloud.none("params/local", NODE, since, 0) == []
        # B talks for real now: A must not overhear it.
        cloud.write(NODE, {"Light": {"Saturation": 77}})
        cloud.wait("params/local", NODE, since, where=lambda p: b"77" in p)
        time.sleep(0.5)
        assert got == []
    finally:
        c.loop_stop()
        c.disconnect()


def _failing_board(cloud, tmp_path, node, mutate, backend="cpython"):
    b = Board(cloud, tmp_path, node, backend=backend)
    mutate(b)
    b.start()
    return b


def test_broker_with_the_wrong_ca_is_refused_and_never_downgraded(cloud, backend, tmp_path):
    def other_ca(b):
        ca.init_ca(tmp_path / "rogue-ca")
        (b.dir / "certs" / "ca.der").write_bytes((tmp_path / "rogue-ca" / "ca.der").read_bytes())

    b = _failing_board(cloud, tmp_path, "240AC4E2E004", other_ca, backend)
    try:
        first = b.wait_line("broker certificate rejected", timeout=20)
        assert "rm E tls: broker certificate rejected" in first and "certs/ca.der" in first
        b.wait_line("retrying in", timeout=10)
        m = b.mark()
        b.wait_line("broker certificate rejected", m, timeout=20)  # retried, refused again
        b.wait_line("retrying in", m, timeout=20)
        assert b.count("online as") == 0
        delays = [int(l.split("retrying in ")[1].split()[0]) for l in b.lines() if "retrying in" in l]
        assert len(delays) >= 2 and delays[1] >= 1000 // 2  # backoff, not a busy loop
    finally:
        b.stop()


def test_missing_client_certificate_is_named(cloud, backend, tmp_path):
    b = _failing_board(cloud, tmp_path, "240AC4E2E005", lambda b: (b.dir / "certs" / "node.crt.der").unlink(),
                       backend)
    try:
        b.wait_line("device certificate certs/node.crt.der is missing: deploy the credential bundle", timeout=20)
        b.wait_line("retrying in", timeout=10)
        assert b.count("online as") == 0
    finally:
        b.stop()


def test_expired_client_certificate_is_refused_by_the_broker(cloud, backend, tmp_path):
    import datetime

    def expire(b):
        past = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
        ca.issue_node(cloud.workdir / "ca", tmp_path / "old", b.node_id, not_before=past,
                      not_after=past + datetime.timedelta(days=30))
        for name in ("node.crt.der", "node.key.der"):
            (b.dir / "certs" / name).write_bytes((tmp_path / "old" / name).read_bytes())

    b = _failing_board(cloud, tmp_path, "240AC4E2E006", expire, backend)
    try:
        # Mosquitto answers with a TLS alert, the embedded broker closes the link: either way it refuses.
        line = b.wait_line("is certs/node.crt.der expired", timeout=20)
        assert "rm E tls: the broker " in line, line
        b.wait_line("retrying in", timeout=10)
        time.sleep(2)
        assert b.count("online as") == 0
        assert "Traceback" not in "\n".join(b.lines())
    finally:
        b.stop()
