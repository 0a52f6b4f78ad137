"""Local control end to end: a simulated board serving esp_local_ctrl over HTTP
while its cloud is down, driven by esp-rainmaker-cli's own local-control client
and Security 2 code (the real peer), by hand-made bad requests on every
endpoint, and found by zeroconf (a real mDNS client) through the board's
responder.

The board runs tests/apps/lctl_main.py: the agent with lctlsrv.serve() started
beside it by hand, on both backends (the CPython simulator, and MicroPython's
unix port with its own socket, select and asyncio). Its ports 8080 and 5353
become free host ports on 127.0.0.1, so mDNS is proven with queries sent
straight to the responder's port, not over multicast.
"""
import asyncio
import http.client
import json
import socket
import time

import pytest

from tests.harness import Cloud, Board, ROOT
from tools.sim.relay import free_port

pytest.importorskip("rmaker_tools", reason="esp-rainmaker-cli is not installed")
from rmaker_tools.common.security.security1 import Security1  # noqa: E402
from rmaker_tools.common.security.security2 import Security2  # noqa: E402
from rmaker_tools.common.transport.transport_http import Transport_HTTP  # noqa: E402
from rmaker_tools.rmaker_local_ctrl import esp_rainmaker_ctrl as ctrl  # noqa: E402
from rmaker_tools.rmaker_local_ctrl.proto import proto_lc  # noqa: E402

NODE = "240AC4A1C0DE"
PAUSE_MS = 1000  # handshakes refused this long after the 3rd failure (then 2, 4 ... 60 s)


def free_udp_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope="module")
def setup(tmp_path_factory, backend):
    cloud = Cloud(tmp_path_factory.mktemp("cloud")).start()
    cloud.broker.stop()  # the cloud is down: local control must not need it
    http_port, mdns_port = free_port(), free_udp_port()
    root = tmp_path_factory.mktemp("board")
    args = []
    if backend == "cpython":
        # The simulator binds 127.0.0.1 only and maps the board's default ports.
        args = ["--port-map", f"8080={http_port}", "--port-map", f"5353={mdns_port}"]
    b = Board(cloud, root, NODE, main=ROOT / "tests" / "apps" / "lctl_main.py", args=args, backend=backend)
    opts = {}
    if backend == "micropython":
        # MicroPython's own sockets bind real host ports: the app is told which.
        opts.update(port=http_port, mdns_port=mdns_port, addr="127.0.0.1")
    (b.dir / "lctl_test.json").write_text(json.dumps(opts))
    b.start()
    line = b.wait_line("rm I lctl: local control on port", timeout=180)  # Security 2 verifier: made once
    pop = line.rsplit("PoP ", 1)[1].strip()
    b.announced = 8080 if backend == "cpython" else http_port  # the port the board itself sees
    yield cloud, b, http_port, mdns_port, pop
    b.stop()
    cloud.stop()


def session(port, pop, user="wifiprov"):
    tp = Transport_HTTP(f"127.0.0.1:{port}", None, timeout=30)
    sec = Security2(1, user, pop, False)
    return tp, sec, asyncio.run(ctrl.establish_session(tp, sec))


def post(port, path, body, cookie=None):
    """(status, body), or None when the board closes the connection without a reply."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Cookie": cookie} if cookie else {}
        c.request("POST", path, body, headers)
        r = c.getresponse()
        return r.status, r.read()
    except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
        return None
    finally:
        c.close()


def test_pop_is_8_hex_digits_kept_on_flash(setup):
    cloud, b, port, _, pop = setup
    assert len(pop) == 8 and all(c in "0123456789abcdef" for c in pop)
    kept = json.loads((b.dir / "lctl.json").read_text())
    assert kept["random"][:8] == pop and "sec2" in kept  # the verifier is cached too


def test_version_endpoint(setup):
    _, _, port, _, _ = setup
    status, body = post(port, "/esp_local_ctrl/version", b"---")
    assert status == 200
    assert json.loads(body) == {"local_ctrl": {"ver": "v1.0", "sec_ver": 2, "sec_patch_ver": 1}}


def test_cli_reads_config_and_params_and_writes_params_with_cloud_down(setup):
    cloud, b, port, _, pop = setup
    tp, sec, ok = session(port, pop)
    assert ok, "esp-rainmaker-cli could not establish a Security 2 session with the PoP"
    count = proto_lc.get_prop_count_response(sec, tp.send_data("esp_local_ctrl/control", proto_lc.get_prop_count_request(sec)))
    assert count == 2
    cfg = asyncio.run(ctrl.get_rainmaker_config(tp, sec))
    assert cfg["node_id"] == NODE
    svc = [s for s in cfg["services"] if s["type"] == "esp.service.local_control"]
    assert svc and {p["name"]: p["type"] for p in svc[0]["params"]} == {
        "POP": "esp.param.local_control_pop", "Type": "esp.param.local_control_type"}
    params = asyncio.run(ctrl.get_rainmaker_params(tp, sec))
    assert params["Light"]["Power"] is False
    assert params["Local Control"] == {"POP": pop, "Type": 2}
    mark = b.mark()
    assert asyncio.run(ctrl.set_rainmaker_params(tp, sec, {"Light": {"Power": True}}))
    b.wait_line("APP write from Local: Power=True", since=mark)
    assert asyncio.run(ctrl.get_rainmaker_params(tp, sec))["Light"]["Power"] is True
    # Writing the read-only config property is refused in the reply's status.
    msg = proto_lc.set_prop_vals_request(sec, [0], [b"{}"])
    assert proto_lc.set_prop_vals_response(sec, tp.send_data("esp_local_ctrl/control", msg)) is False
    # An index out of range: InvalidArgument, no values.
    resp = tp.send_data("esp_local_ctrl/control", proto_lc.get_prop_vals_request(sec, [5]))
    m = proto_lc.local_ctrl_pb2.LocalCtrlMessage()
    m.ParseFromString(sec.decrypt_data(proto_lc.to_bytes(resp)))
    assert m.msg == proto_lc.local_ctrl_pb2.TypeRespGetPropertyValues
    assert m.resp_get_prop_vals.status == 4 and len(m.resp_get_prop_vals.props) == 0

    # The cloud comes back: the board connects and reports the state the phone set.
    # Its first report may beat the test's own client back to the broker, so the
    # broker is restarted once both are connected: the board reports again.
    lsince = b.mark()
    cloud.broker.start()
    b.wait_line("online as " + NODE, lsince, timeout=90)
    deadline = time.monotonic() + 30
    while not cloud._client.is_connected():
        assert time.monotonic() < deadline, "the test's MQTT client did not reconnect"
        time.sleep(0.1)
    since = cloud.mark()
    cloud.broker.restart()
    _, payload = cloud.wait("params/local/init", NODE, since=since, timeout=90, where=lambda p: b"Light" in p)
    init = json.loads(payload)
    assert init["Light"]["Power"] is True and init["Local Control"]["POP"] == pop


def test_wrong_pop_is_refused(setup):
    _, b, port, _, pop = setup
    wrong = "%08x" % (int(pop, 16) ^ 1)
    mark = b.mark()
    _, _, ok = session(port, wrong)
    assert not ok, "a session was established with a wrong PoP"
    b.wait_line("client proof does not match", since=mark)


def test_failed_handshakes_pause_the_service_then_it_recovers(setup):
    _, b, port, _, pop = setup
    wrong = "%08x" % (int(pop, 16) ^ 2)
    mark = b.mark()
    for _ in range(5):
        assert not session(port, wrong)[2]
        if b.count("local control paused", mark):
            break
    b.wait_line("local control paused", since=mark)
    assert not session(port, pop)[2], "a handshake was accepted while paused"
    b.wait_line("local control accepts handshakes again", since=mark, timeout=PAUSE_MS / 1000 + 10)
    tp, sec, ok = session(port, pop)
    assert ok and asyncio.run(ctrl.get_rainmaker_params(tp, sec))["Light"]


def test_bad_requests_close_the_connection_without_a_reply(setup):
    _, b, port, _, pop = setup
    assert post(port, "/esp_local_ctrl/version", b"") is None  # an empty body, as protocomm_httpd
    assert post(port, "/esp_local_ctrl/session", b"\xff\xff\xff") is None
    assert post(port, "/esp_local_ctrl/session", b"\x10\x01") is None  # Security 1 asked of a Security 2 board
    assert post(port, "/esp_local_ctrl/control", b"\x08\x00") is None  # no session
    assert post(port, "/nothing", b"x")[0] == 404
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", "/esp_local_ctrl/version")
    assert c.getresponse().status == 405
    c.close()
    # In a session: garbage, and a valid message with a broken tag.
    tp, sec, ok = session(port, pop)
    assert ok
    cookie = tp.get_cookie()
    assert post(port, "/esp_local_ctrl/control", b"\x00" * 40, cookie) is None
    tp, sec, ok = session(port, pop)
    good = proto_lc.to_bytes(proto_lc.get_prop_count_request(sec))
    assert post(port, "/esp_local_ctrl/control", good[:-1] + bytes([good[-1] ^ 1]), tp.get_cookie()) is None
    # The server is still there for a good client.
    tp, sec, ok = session(port, pop)
    assert ok and asyncio.run(ctrl.get_rainmaker_params(tp, sec))["Light"]


def test_security_1(tmp_path, backend):
    """The other scheme: X25519 with the PoP, then AES-CTR (esp-rainmaker-cli's Security1)."""
    cloud = Cloud(tmp_path / "cloud").start()
    cloud.broker.stop()
    port = free_port()
    b = Board(cloud, tmp_path / "board", NODE, main=ROOT / "tests" / "apps" / "lctl_main.py", backend=backend,
              args=["--port-map", f"8080={port}"] if backend == "cpython" else [])
    opts = {"sec": 1, "announce": False}
    if backend == "micropython":
        opts.update(port=port, addr="127.0.0.1")
    (b.dir / "lctl_test.json").write_text(json.dumps(opts))
    b.start()
    try:
        line = b.wait_line("rm I lctl: local control on port", timeout=120)
        assert "Security 1" in line
        pop = line.rsplit("PoP ", 1)[1].strip()
        status, body = post(port, "/esp_local_ctrl/version", b"---")
        assert json.loads(body) == {"local_ctrl": {"ver": "v1.0", "sec_ver": 1, "sec_patch_ver": 0}}
        tp = Transport_HTTP(f"127.0.0.1:{port}", None, timeout=30)
        sec = Security1(pop, False)
        assert asyncio.run(ctrl.establish_session(tp, sec))
        mark = b.mark()
        assert asyncio.run(ctrl.set_rainmaker_params(tp, sec, {"Light": {"Power": True}}))
        b.wait_line("APP write from Local: Power=True", since=mark)
        assert asyncio.run(ctrl.get_rainmaker_params(tp, sec))["Local Control"] == {"POP": pop, "Type": 1}
        tp = Transport_HTTP(f"127.0.0.1:{port}", None, timeout=30)
        assert not asyncio.run(ctrl.establish_session(tp, Security1("%08x" % (int(pop, 16) ^ 1), False)))
    finally:
        b.stop()
        cloud.stop()


def _legacy_query(mdns_port, qtype, name):
    from zeroconf import DNSIncoming, DNSOutgoing, DNSQuestion, const

    out = DNSOutgoing(const._FLAGS_QR_QUERY, multicast=False, id_=0x4242)
    out.add_question(DNSQuestion(name, qtype, const._CLASS_IN))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(10)
    try:
        for pkt in out.packets():
            s.sendto(pkt, ("127.0.0.1", mdns_port))
        data, _ = s.recvfrom(9000)
    finally:
        s.close()
    return DNSIncoming(data)


def test_mdns_answers_a_real_client(setup):
    pytest.importorskip("zeroconf")
    from zeroconf import const

    _, b, _, mdns_port, _ = setup
    stype = "_esp_local_ctrl._tcp.local."
    inst = f"{NODE}.{stype}"
    msg = _legacy_query(mdns_port, const._TYPE_PTR, stype)
    assert msg.id == 0x4242 and not msg.is_query()
    recs = {(r.type, r.name.lower()): r for r in msg.answers()}
    assert recs[(const._TYPE_PTR, stype)].alias.lower() == inst.lower()
    srv = recs[(const._TYPE_SRV, inst.lower())]
    assert srv.port == b.announced and srv.server.lower() == f"{NODE}.local.".lower()  # host name = node id
    txt = recs[(const._TYPE_TXT, inst.lower())]
    items = []
    d = txt.text
    while d:
        items.append(d[1:1 + d[0]].decode())
        d = d[1 + d[0]:]
    assert sorted(items) == sorted([
        "version_endpoint=/esp_local_ctrl/version", "session_endpoint=/esp_local_ctrl/session",
        "control_endpoint=/esp_local_ctrl/control", f"node_id={NODE}"])
    a = recs[(const._TYPE_A, srv.server.lower())]
    assert len(a.address) == 4


def test_mdns_zeroconf_service_info_resolves(setup):
    """zeroconf's own ServiceInfo resolution, its queries sent to the responder's port."""
    zc_mod = pytest.importorskip("zeroconf")
    _, b, _, mdns_port, _ = setup
    try:
        zc = zc_mod.Zeroconf(interfaces=["127.0.0.1"], ip_version=zc_mod.IPVersion.V4Only)
    except OSError as e:
        pytest.skip(f"zeroconf cannot open its sockets here: {e}")
    try:
        info = zc_mod.ServiceInfo("_esp_local_ctrl._tcp.local.", f"{NODE}._esp_local_ctrl._tcp.local.")
        ok = info.request(zc, 5000, question_type=zc_mod.DNSQuestionType.QU, addr="127.0.0.1", port=mdns_port)
        assert ok, "zeroconf did not resolve the service"
        assert info.port == b.announced
        assert info.properties[b"node_id"] == NODE.encode()
        assert info.properties[b"control_endpoint"] == b"/esp_local_ctrl/control"
        assert info.parsed_addresses()
    finally:
        zc.close()


def test_mdns_ignores_garbage_and_keeps_answering(setup):
    pytest.importorskip("zeroconf")
    from zeroconf import const

    _, b, _, mdns_port, _ = setup
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for pkt in (b"", b"\x00" * 5, b"\xff" * 64, b"\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x0c\x00\x01"):
        s.sendto(pkt, ("127.0.0.1", mdns_port))
    s.close()
    time.sleep(0.3)  # give the board the garbage first; the answer below proves it lived through it
    msg = _legacy_query(mdns_port, const._TYPE_SRV, f"{NODE}._esp_local_ctrl._tcp.local.")
    assert [r.port for r in msg.answers() if r.type == const._TYPE_SRV] == [b.announced]


def test_agent_starts_local_control_from_its_config(tmp_path):
    cloud = Cloud(tmp_path / "cloud").start()
    cloud.broker.stop()
    http_port = free_port()
    b = Board(cloud, tmp_path / "board", NODE, args=["--port-map", f"8080={http_port}"])
    cfg = json.loads((b.dir / "rainmaker.json").read_text())
    cfg["local_control"] = 2
    (b.dir / "rainmaker.json").write_text(json.dumps(cfg))
    b.start()
    try:
        pop = b.wait_line("local control on port 8080", timeout=120).rsplit("PoP ", 1)[1].strip()
        tp, sec, ok = session(http_port, pop)
        assert ok
        params = asyncio.run(ctrl.get_rainmaker_params(tp, sec))
        assert params["Local Control"] == {"POP": pop, "Type": 2}
        light = next(d for d in params if "Power" in params[d])
        mark = b.mark()
        assert asyncio.run(ctrl.set_rainmaker_params(tp, sec, {light: {"Power": True}}))
        assert asyncio.run(ctrl.get_rainmaker_params(tp, sec))[light]["Power"] is True
        assert "Traceback" not in "\n".join(b.lines(mark))
    finally:
        b.stop()
        cloud.stop()
