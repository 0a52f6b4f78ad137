"""Wi-Fi provisioning end to end: esp-rainmaker-cli's own client code (HTTP
transport, Security 0/1/2 classes, cloud_user_assoc, scan, credentials,
status polls; driven by tools/provision.py in a subprocess) against the
firmware on the simulated board (both backends: CPython and MicroPython), then
the board online in the local cloud with its user mapping. Plus bad input over HTTP, the lock-out, the timeout,
the Wi-Fi reset button and the host QR tool.
"""
import hashlib
import json
import socket
import subprocess
import sys
import time

import pytest

from tests.harness import Cloud, Board, ROOT, write_json, SIM_SSID, SIM_PASSWORD
from tools.sim.relay import free_port

pytest.importorskip("rmaker_tools", reason="esp-rainmaker-cli is not installed")


def rnd(i):
    # Fixed identities, so the PoP is known; checked below not to hit the
    # CLI's 1-in-256 SRP quirk (docs/provisioning.md#security-2, leading zero of H(I:P)).
    return hashlib.sha512(b"test-board-%d" % i).digest()


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    c = Cloud(tmp_path_factory.mktemp("cloud")).start()
    yield c
    c.stop()




def prov_board(cloud, root, node, sec, ident, assoc_ms=None, backend="cpython", **cfg_extra):
    port = free_port()
    if backend == "cpython":  # the sim maps the board's port 80 to the host's
        b = Board(cloud, root, node, wifi=False, args=["--port-map", "80=%d" % port])
    else:  # MicroPython's sockets are real: the board's config names the port
        b = Board(cloud, root, node, wifi=False, backend=backend)
        cfg_extra["prov_port"] = port
    cfg = json.loads((b.dir / "rainmaker.json").read_text())
    cfg.update(prov_sec=sec, random=rnd(ident).hex(), **cfg_extra)
    write_json(b.dir / "rainmaker.json", cfg)
    air = json.loads(b.air.read_text())
    air["networks"].append({"ssid": "Neighbour", "password": "x" * 10, "up": True, "rssi": -80,
                            "channel": 11, "authmode": 4})
    if assoc_ms:
        air["assoc_ms"] = assoc_ms
    write_json(b.air, air)
    b.port = port
    return b


def qr_of(board, since=0):
    line = board.wait_line("prov: QR ", since, timeout=30)
    return line.split("prov: QR ", 1)[1]


def cli(port, *args, timeout=90):
    """tools.provision (esp-rainmaker-cli's provision_device) -> (result dict, output)."""
    r = subprocess.run([sys.executable, "-m", "tools.provision", "--host", "127.0.0.1:%d" % port,
                        "--poll", "0.3"] + list(args),
                       cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    out = r.stdout + r.stderr
    lines = [l for l in r.stdout.splitlines() if l.startswith("RESULT ")]
    assert lines, "tools.provision printed no result:\n" + out[-3000:]
    return json.loads(lines[-1][7:]), out


def suffixes(cloud, node, since):
    out = []
    for topic, payload, _ in cloud.messages[since:]:
        parts = topic.split("/")
        if parts[:2] == ["node", node]:
            out.append(("/".join(parts[2:]), payload))
    return out


def refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return True
    return False


@pytest.mark.parametrize("sec", [0, 1, 2])
def test_cli_provisions_the_board_and_it_comes_online_mapped(cloud, backend, tmp_path, sec):
    node = "240AC4E2F00%d" % sec
    r = rnd(sec)
    assert hashlib.sha512(b"wifiprov:" + r[:4].hex().encode()).digest()[0] != 0
    b = prov_board(cloud, tmp_path, node, sec, sec, backend=backend).start()
    try:
        since = cloud.mark()
        qr = qr_of(b)
        data = json.loads(qr)
        assert data["name"] == "PROV_" + r[-3:].hex() and data["transport"] == "softap"
        assert data.get("pop") == (r[:4].hex() if sec else None)
        assert ("username" in data) == (sec == 2)
        assert list(data) == ["ver", "name"] + (["username"] if sec == 2 else []) + (["pop"] if sec else []) + ["transport"]
        from tools.qr import from_board

        assert from_board(b.dir) == qr  # the host tool derives the same payload
        assert not (b.dir / "wifi.json").exists()

        res, out = cli(b.port, "--qr", qr, "--ssid", SIM_SSID, "--password", SIM_PASSWORD,
                       "--user-id", "user-%d" % sec, "--secret-key", "secret-%d" % sec)
        assert res["ok"], out[-3000:]
        assert res["node_id"] == node
        assert '"sec_ver":%d' % sec in out and "Establishing session - Successful" in out
        assert "Sending user information to node - Successful" in out
        assert [(ap["ssid"], ap["rssi"], ap["auth"]) for ap in res["scan"]] == [
            (SIM_SSID, -52, "WPA2_PSK"), ("Neighbour", -80, "WPA_WPA2_PSK")]
        assert "Wi-Fi Provisioning Successful" in out

        b.wait_line("online as " + node, timeout=30)
        assert json.loads((b.dir / "wifi.json").read_text()) == {"ssid": SIM_SSID, "password": SIM_PASSWORD}
        b.wait_line("user mapping for user-%d acknowledged" % sec)
        assert not (b.dir / "mapping.json").exists()
        cloud.wait("params/local/init", node, since)
        seen = suffixes(cloud, node, since)
        kinds = [s for s, _ in seen]
        assert kinds.index("config") < kinds.index("user/mapping") < kinds.index("params/local/init")
        mapping = json.loads(dict(seen)["user/mapping"])
        assert mapping == {"node_id": node, "user_id": "user-%d" % sec, "secret_key": "secret-%d" % sec}
        assert refused(b.port)  # provisioning is over: no server, no access point
        assert "Traceback" not in "\n".join(b.lines())

        if sec == 0:
            # Wi-Fi reset: the button held 3 s erases the credentials and reboots
            # into provisioning.
            mark = b.mark()
            pins = b.pins()
            pins.press(0)
            b.wait_line("Wi-Fi credentials erased", mark, timeout=10)
            pins.release(0)
            assert qr_of(b, mark) == qr
            assert not (b.dir / "wifi.json").exists()
        if sec == 2:
            # A mapping still pending at a reboot goes out after the next
            # connect, after the config and before the params.
            write_json(b.dir / "mapping.json", {"user_id": "later", "secret_key": "k2"})
            since, mark = cloud.mark(), b.mark()
            b.power_cycle()
            b.wait_line("user mapping for later acknowledged", mark, timeout=30)
            cloud.wait("params/local/init", node, since)
            kinds = [s for s, _ in suffixes(cloud, node, since)]
            assert kinds.index("config") < kinds.index("user/mapping") < kinds.index("params/local/init")
            assert not any("prov:" in l for l in b.lines(mark))  # credentials kept: no provisioning
            assert not (b.dir / "mapping.json").exists()
    finally:
        b.stop()


def raw(port, data, wait=5):
    """Send bytes on a fresh connection; what comes back until the board closes it."""
    s = socket.create_connection(("127.0.0.1", port), timeout=wait)
    try:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(4096)
            except socket.timeout:
                return out + b"<open>"
            except ConnectionResetError:  # closed with our bytes unread
                return out
            if not chunk:
                return out
            out += chunk
    finally:
        s.close()


def post(path, body, extra=b""):
    return b"POST /%s HTTP/1.1\r\nContent-Length: %d\r\n%s\r\n" % (path.encode(), len(body), extra) + body


def sec1_cmd0(pub):
    """SessionData{sec_ver=1, sec1{sc0{client_pubkey}}}, built by hand (keys under 64 bytes)."""
    sc0 = b"\x0a" + bytes([len(pub)]) + pub
    sec1 = b"\xa2\x01" + bytes([len(sc0)]) + sc0
    return b"\x10\x01\x5a" + bytes([len(sec1)]) + sec1


def test_bad_input_is_refused_nothing_is_stored_and_the_board_keeps_serving(cloud, backend, tmp_path):
    node = "240AC4E2F011"
    b = prov_board(cloud, tmp_path, node, 1, 4, assoc_ms=700, backend=backend).start()  # attempts the CLI can watch
    try:
        qr = qr_of(b)
        port = b.port
        assert raw(port, post("nope", b"x")).startswith(b"HTTP/1.1 404 Not Found\r\n")
        assert raw(port, b"GET /proto-ver HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 405")
        assert raw(port, post("prov-session", b"")) == b""  # empty body: closed, no reply
        assert raw(port, post("prov-session", b"x" * 5000)) == b""  # over 4096 bytes
        assert raw(port, post("prov-session", b"\xff\xff\xff")) == b""  # malformed protobuf
        assert raw(port, b"HELLO\r\n\r\n") == b""
        assert raw(port, b"POST /proto-ver HTTP/1.1\r\nContent-Length: 3\r\n" + b"X: y\r\n" * 300) == b""
        # a truncated handshake: command 0 only, then a request on the session
        out = raw(port, post("prov-session", sec1_cmd0(b"\x09" + bytes(31))) + post("prov-config", b"\x52\x00"))
        assert out.startswith(b"HTTP/1.1 200 OK\r\n") and out.count(b"HTTP/1.1") == 1
        # a wrong PoP: the CLI's Security1 fails, the board counts it
        res, out = cli(port, "--sec", "1", "--pop", "00000000", "--ssid", SIM_SSID, "--password", SIM_PASSWORD)
        assert not res["ok"] and "closed connection without response" in res["error"]
        # credentials for a network that does not exist, then a wrong password:
        # the CLI reads the reason, resets the attempt through prov-ctrl
        res, out = cli(port, "--qr", qr, "--ssid", "NoSuchNet", "--password", "whatever1")
        assert not res["ok"] and "Failure reason: Incorrect SSID" in out, out[-2000:]
        assert "Device reset via prov-ctrl successful" in out
        res, out = cli(port, "--qr", qr, "--ssid", SIM_SSID, "--password", "wrong-pass")
        assert not res["ok"] and "Failure reason: Incorrect Password" in out, out[-2000:]
        assert out.count("WiFi state: Connecting") >= 2  # three attempts, then the verdict
        b.wait_line("joining 'SimNet' (attempt 3 of 3)")
        assert not (b.dir / "wifi.json").exists() and not (b.dir / "mapping.json").exists()
        assert b.count("could not join") == 2
        # still serving, still not locked (one failed handshake so far)
        out = raw(port, post("proto-ver", b"---"))
        assert out.startswith(b"HTTP/1.1 200 OK\r\n") and b'"sec_ver":1' in out
        res, out = cli(port, "--qr", qr, "--ssid", SIM_SSID, "--password", SIM_PASSWORD, "--user-id", "u-bad")
        assert res["ok"], out[-2000:]
        b.wait_line("online as " + node, timeout=30)
        assert json.loads((b.dir / "wifi.json").read_text())["password"] == SIM_PASSWORD
        assert "Traceback" not in "\n".join(b.lines())
    finally:
        b.stop()


def test_five_failed_handshakes_stop_provisioning_until_reboot(cloud, backend, tmp_path):
    node = "240AC4E2F012"
    b = prov_board(cloud, tmp_path, node, 1, 5, backend=backend).start()
    try:
        qr_of(b)
        for i in range(5):
            out = raw(b.port, post("prov-session", sec1_cmd0(b"\x01" * 31)))  # bad key length: counted
            assert out == b""
        b.wait_line("5 failed handshakes (wrong PoP?): provisioning stopped until reboot", timeout=10)
        deadline = time.monotonic() + 5
        while not refused(b.port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert refused(b.port)
        b.wait_line("no credentials in wifi.json")
        assert not (b.dir / "wifi.json").exists()
        mark = b.mark()
        b.power_cycle()  # a reboot starts provisioning again
        qr = qr_of(b, mark)
        res, out = cli(b.port, "--qr", qr, "--ssid", SIM_SSID, "--password", SIM_PASSWORD)
        assert res["ok"], out[-2000:]
        b.wait_line("online as " + node, mark, timeout=30)
    finally:
        b.stop()


def test_provisioning_times_out(cloud, backend, tmp_path):
    b = prov_board(cloud, tmp_path, "240AC4E2F013", 2, 3, prov_timeout=2, backend=backend).start()
    try:
        qr_of(b)
        b.wait_line("no credentials within 2 s: provisioning stopped", timeout=15)
        b.wait_line("no credentials in wifi.json")
        assert refused(b.port)
        # Credentials that arrive later (a deploy with Wi-Fi settings) are picked up without a reboot.
        mark = b.mark()
        write_json(b.dir / "wifi.json", {"ssid": SIM_SSID, "password": SIM_PASSWORD})
        b.wait_line("online as 240AC4E2F013", mark, timeout=30)
        assert "Traceback" not in "\n".join(b.lines())
    finally:
        b.stop()


def test_qr_tool_renders_and_finds_the_payload(tmp_path):
    payload = '{"ver":"v1","name":"PROV_a1b2c3","username":"wifiprov","pop":"0011aabb","transport":"softap"}'
    log = "rm I prov: not provisioned\nrm I prov: QR %s\nrm I wifi: x\n" % payload
    r = subprocess.run([sys.executable, "-m", "tools.qr", "-"], input=log, cwd=ROOT,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "\u2588" in r.stdout or "pip install segno" in r.stdout
    assert "name PROV_a1b2c3   PoP 0011aabb" in r.stdout
    assert "qrcode.html?data=%7B%22ver%22" in r.stdout
    r = subprocess.run([sys.executable, "-m", "tools.qr", '{"ver":"v2"}'], cwd=ROOT,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "not a RainMaker provisioning payload" in r.stderr
