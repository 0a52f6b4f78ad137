"""The OTA file server (tools/otaserver.py) against a real TLS client that
verifies it with the local CA, as a board does."""

import hashlib
import http.client
import json
import os
import socket
import ssl
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tools import otaserver
from tools.broker import client_tls_context, credential_paths
from tools.otaserver import Fault, OtaServer, OtaServerError, parse_fault, parse_range, resolve_path

SIZE = 100_003  # not a multiple of the 4 KB block, so the last block is partial
BLOCK = 4096
DATA = hashlib.sha256(b"seed").digest() * (SIZE // 32) + b"x" * (SIZE % 32)


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ota")
    root = workdir / "ota"
    root.mkdir()
    (root / "app.bin").write_bytes(DATA)
    (root / "sub").mkdir()
    (root / "sub" / "b.rmb").write_bytes(b"RMB1 small")
    (root / ".app.bin.1234.tmp").write_bytes(b"half written")
    (workdir / "secret.key").write_bytes(b"SECRET-KEY-MATERIAL")
    os.symlink(workdir / "secret.key", root / "link.bin")
    server = OtaServer(root, workdir, 0, log_path=workdir / "otaserver.log").start()
    ctx = client_tls_context(credential_paths(workdir)["ca_crt"])
    yield {"server": server, "ctx": ctx, "workdir": workdir, "root": root}
    server.stop()


@pytest.fixture
def srv(served):
    served["server"].clear()
    yield served
    served["server"].clear()


def raw_get(env, target, headers=(), method="GET", timeout=3.0, ctx=None):
    """One request over a fresh TLS connection; returns (head text, body bytes, error).

    Reads until the server closes (or the timeout), so a short or stalled body shows."""
    raw = socket.create_connection(("127.0.0.1", env["server"].port), timeout=timeout)
    conn = (ctx or env["ctx"]).wrap_socket(raw, server_hostname="127.0.0.1")
    req = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(f"{h}\r\n" for h in headers)
    conn.sendall((req + "Connection: close\r\n\r\n").encode())
    buf, err = b"", None
    try:
        while True:
            got = conn.recv(65536)
            if not got:
                break
            buf += got
    except (OSError, ssl.SSLError) as exc:
        err = exc
    finally:
        conn.close()
    head, _, body = buf.partition(b"\r\n\r\n")
    return head.decode("latin-1"), body, err


def status_of(head):
    return int(head.split(" ", 2)[1]) if head else None


def header(head, name):
    for line in head.split("\r\n")[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == name.lower():
            return v.strip()
    return None


# ------------------------------------------------------------- serving

def test_binds_loopback_only_and_certificate_names_both_hosts(srv):
    assert srv["server"]._server.server_address[0] == "127.0.0.1"
    for name in ("127.0.0.1", "localhost"):
        raw = socket.create_connection(("127.0.0.1", srv["server"].port), timeout=3)
        with srv["ctx"].wrap_socket(raw, server_hostname=name) as conn:
            assert conn.version() in ("TLSv1.2", "TLSv1.3")
    raw = socket.create_connection(("127.0.0.1", srv["server"].port), timeout=3)
    with pytest.raises(ssl.SSLCertVerificationError):
        srv["ctx"].wrap_socket(raw, server_hostname="example.com")
    raw.close()


def test_whole_file_with_http_client(srv):
    conn = http.client.HTTPSConnection("127.0.0.1", srv["server"].port, context=srv["ctx"], timeout=5)
    conn.request("GET", "/app.bin")
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    assert resp.status == 200 and body == DATA
    assert resp.getheader("Content-Length") == str(SIZE)
    assert resp.getheader("Accept-Ranges") == "bytes"
    assert wait_for(lambda: srv["server"].sent("/app.bin") == SIZE)
    rec = srv["server"].requests[-1]
    assert rec["method"] == "GET" and rec["path"] == "/app.bin" and rec["range"] is None and rec["status"] == 200


def test_head_has_the_length_and_no_body(srv):
    head, body, _ = raw_get(srv, "/app.bin", method="HEAD")
    assert status_of(head) == 200 and header(head, "Content-Length") == str(SIZE) and body == b""
    assert wait_for(lambda: srv["server"].requests and srv["server"].requests[-1]["method"] == "HEAD")
    assert srv["server"].sent() == 0


@pytest.mark.parametrize("rng,first,last", [
    ("bytes=8192-", 8192, SIZE - 1),
    ("bytes=0-", 0, SIZE - 1),
    ("bytes=100-199", 100, 199),
    ("bytes=4096-999999999", 4096, SIZE - 1),
    ("bytes=-10", SIZE - 10, SIZE - 1),
    ("bytes=100002-", 100002, 100002),
])
def test_range_is_206_with_content_range(srv, rng, first, last):
    head, body, _ = raw_get(srv, "/app.bin", [f"Range: {rng}"])
    assert status_of(head) == 206, head
    assert header(head, "Content-Range") == f"bytes {first}-{last}/{SIZE}"
    assert header(head, "Content-Length") == str(last - first + 1)
    assert body == DATA[first:last + 1]
    assert wait_for(lambda: srv["server"].sent() == last - first + 1)
    assert srv["server"].requests[-1]["range"] == rng


@pytest.mark.parametrize("rng", [f"bytes={SIZE}-", "bytes=999999999-", "bytes=-0"])
def test_range_past_the_end_is_416(srv, rng):
    head, body, _ = raw_get(srv, "/app.bin", [f"Range: {rng}"])
    assert status_of(head) == 416 and header(head, "Content-Range") == f"bytes */{SIZE}"
    assert DATA[:100] not in body


@pytest.mark.parametrize("rng", ["bytes=5-2", "bytes=a-", "items=0-", "bytes=0-1,5-6", "bytes", "bytes=-",
                                 "bytes=" + "9" * 40 + "-"])
def test_range_not_honoured_serves_the_whole_file(srv, rng):
    head, body, _ = raw_get(srv, "/app.bin", [f"Range: {rng}"])
    assert status_of(head) == 200 and body == DATA


def test_files_in_subdirectories_are_served(srv):
    head, body, _ = raw_get(srv, "/sub/b.rmb")
    assert status_of(head) == 200 and body == b"RMB1 small"


@pytest.mark.parametrize("target", [
    "/missing.bin", "/", "/sub", "/sub/", "/../secret.key", "/sub/../../secret.key", "/%2e%2e/secret.key",
    "/%2E%2E%2Fsecret.key", "/sub/%2e%2e/%2e%2e/secret.key", "//secret.key/../../secret.key",
    "/..%5csecret.key", "/link.bin", "/.app.bin.1234.tmp", "/app.bin%00", "/%ff%fe",
    "../secret.key", "secret.key", "/" + "a/" * 200 + "x",
    "http://127.0.0.1/../secret.key", "/..;/secret.key",
])
def test_nothing_outside_the_directory_and_no_hidden_files(srv, target):
    head, body, _ = raw_get(srv, target)
    assert status_of(head) in (400, 404), head
    assert b"SECRET" not in body and b"half written" not in body


def test_malformed_requests_get_an_error_not_a_crash(srv):
    for line in ("GARBAGE\r\n", "GET\r\n", "GET /app.bin HTTP/9.9\r\n", "GET /app.bin HTTP/1.1\r\n" + "X: y\r\n" * 200):
        raw = socket.create_connection(("127.0.0.1", srv["server"].port), timeout=3)
        conn = srv["ctx"].wrap_socket(raw, server_hostname="127.0.0.1")
        conn.sendall((line + "\r\n").encode())
        got = b""
        try:
            while chunk := conn.recv(4096):
                got += chunk
        except OSError:
            pass
        conn.close()
        assert got.startswith(b"HTTP/1.") and got.split(b" ")[1][:1] in (b"4", b"5"), (line[:30], got[:60])
    head, body, _ = raw_get(srv, "/app.bin")  # still serving
    assert status_of(head) == 200 and body == DATA


def test_silent_client_and_plain_tcp_do_not_block_others(srv):
    idle = socket.create_connection(("127.0.0.1", srv["server"].port), timeout=3)
    plain = socket.create_connection(("127.0.0.1", srv["server"].port), timeout=3)
    plain.sendall(b"GET /app.bin HTTP/1.1\r\n\r\n")  # no TLS
    try:
        head, body, _ = raw_get(srv, "/app.bin")
        assert status_of(head) == 200 and body == DATA
    finally:
        idle.close()
        plain.close()


# ------------------------------------------------------------- misbehaving on purpose

def test_stall_sends_n_bytes_then_holds_the_connection(srv):
    srv["server"].add_fault("stall:5000")
    t0 = time.monotonic()
    head, body, err = raw_get(srv, "/app.bin", timeout=1.0)
    assert isinstance(err, (socket.timeout, TimeoutError)), err  # open, but silent
    assert time.monotonic() - t0 >= 0.9
    assert status_of(head) == 200 and header(head, "Content-Length") == str(SIZE)
    assert body == DATA[:5000]
    rec = srv["server"].requests[-1]
    assert rec["sent"] == 5000 and rec["stalled"] and rec["fault"] == "stall:5000"


def test_cut_then_resume_from_the_last_whole_block(srv):
    server = srv["server"]
    server.add_fault("cut:10000,once")
    head, body, err = raw_get(srv, "/app.bin")
    assert status_of(head) == 200 and body == DATA[:10000]  # closed early: short of Content-Length
    resume = len(body) // BLOCK * BLOCK
    head, rest, _ = raw_get(srv, "/app.bin", [f"Range: bytes={resume}-"])
    assert status_of(head) == 206 and body[:resume] + rest == DATA
    assert wait_for(lambda: len(server.requests) == 2 and server.sent() == 10000 + SIZE - resume)
    first, second = server.requests
    assert first["range"] is None and first["cut"] and first["sent"] == 10000
    assert second["range"] == f"bytes={resume}-" and second["fault"] is None
    assert server.sent("/app.bin") <= SIZE + BLOCK  # about the file plus one block, not twice the file
    assert server.starts("/app.bin") == [0, resume] and resume % BLOCK == 0
    log = [json.loads(line) for line in (srv["workdir"] / "otaserver.log").read_text().splitlines()]
    assert log[-1]["range"] == f"bytes={resume}-" and log[-2]["sent"] == 10000


def test_redirect_points_at_another_path_on_this_server(srv):
    srv["server"].add_fault("redirect:/sub/b.rmb,path=/old.bin")
    head, _, _ = raw_get(srv, "/old.bin")
    assert status_of(head) == 302
    assert header(head, "Location") == f"https://127.0.0.1:{srv['server'].port}/sub/b.rmb"
    head, body, _ = raw_get(srv, "/sub/b.rmb")  # the target itself is not redirected
    assert status_of(head) == 200 and body == b"RMB1 small"


def test_chunked_transfer_decodes_to_the_file(srv):
    srv["server"].add_fault("chunked:3000")
    head, raw_body, _ = raw_get(srv, "/app.bin")
    assert header(head, "Transfer-Encoding") == "chunked" and header(head, "Content-Length") is None
    assert raw_body.startswith(b"bb8\r\n") and raw_body.endswith(b"\r\n0\r\n\r\n")
    conn = http.client.HTTPSConnection("127.0.0.1", srv["server"].port, context=srv["ctx"], timeout=5)
    conn.request("GET", "/app.bin", headers={"Range": "bytes=4096-"})
    resp = conn.getresponse()
    assert resp.status == 206 and resp.read() == DATA[4096:]
    conn.close()


def test_status_fault_serves_an_error_page(srv):
    srv["server"].add_fault("status:503,times=2")
    for _ in range(2):
        head, body, _ = raw_get(srv, "/app.bin")
        assert status_of(head) == 503 and body.startswith(b"<html>")
    head, body, _ = raw_get(srv, "/app.bin")
    assert status_of(head) == 200 and body == DATA


def test_wrong_ca_fails_verification_against_the_local_ca(srv):
    server = srv["server"]
    server.add_fault("wrong-ca,once")
    with pytest.raises(ssl.SSLCertVerificationError):
        raw_get(srv, "/app.bin")
    assert wait_for(lambda: server.requests and "tls_error" in server.requests[-1])
    assert server.requests[-1]["sent"] == 0
    # The other certificate is a real one: a client trusting its CA gets the file.
    server.add_fault("wrong-ca,once")
    foreign = client_tls_context(srv["workdir"] / "ota-foreign" / "ca" / "ca.crt")
    head, body, _ = raw_get(srv, "/app.bin", ctx=foreign)
    assert status_of(head) == 200 and body == DATA
    head, body, _ = raw_get(srv, "/app.bin")  # once: the local CA works again
    assert status_of(head) == 200


def test_a_head_or_a_404_does_not_use_up_a_body_fault(srv):
    server = srv["server"]
    server.add_fault("cut:100,once")
    assert status_of(raw_get(srv, "/app.bin", method="HEAD")[0]) == 200
    assert status_of(raw_get(srv, "/missing.bin")[0]) == 404
    assert len(server.faults) == 1
    assert raw_get(srv, "/app.bin")[1] == DATA[:100]
    assert server.faults == []


def test_faults_limited_to_a_path(srv):
    srv["server"].add_fault("status:500,path=/sub/b.rmb")
    assert status_of(raw_get(srv, "/app.bin")[0]) == 200
    assert status_of(raw_get(srv, "/sub/b.rmb")[0]) == 500


def test_stop_releases_stalled_connections(tmp_path):
    (tmp_path / "ota").mkdir()
    (tmp_path / "ota" / "f").write_bytes(DATA)
    server = OtaServer(tmp_path / "ota", tmp_path, 0, faults=[parse_fault("stall:10")],
                       state_file=True).start()
    assert json.loads((tmp_path / "otaserver.json").read_text())["port"] == server.port
    assert otaserver.running_server(tmp_path)[1] == server.port
    env = {"server": server, "ctx": client_tls_context(credential_paths(tmp_path)["ca_crt"])}
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=3)
    conn = env["ctx"].wrap_socket(raw, server_hostname="127.0.0.1")
    conn.sendall(b"GET /f HTTP/1.1\r\nHost: x\r\n\r\n")
    assert wait_for(lambda: server.requests and server.requests[-1].get("stalled"))
    t0 = time.monotonic()
    server.stop()
    assert time.monotonic() - t0 < 4
    conn.close()
    assert not (tmp_path / "otaserver.json").exists()
    assert otaserver.running_server(tmp_path) is None


def test_add_file_and_starts(srv):
    server = srv["server"]
    url = server.add_file("sub/new.bin", b"new bytes")
    assert url == f"https://127.0.0.1:{server.port}/sub/new.bin"
    assert raw_get(srv, "/sub/new.bin")[1] == b"new bytes"
    raw_get(srv, "/sub/new.bin", ["Range: bytes=4-"])
    raw_get(srv, "/sub/new.bin", ["Range: bytes=1-2"])
    raw_get(srv, "/sub/new.bin", method="HEAD")
    assert wait_for(lambda: len(server.requests) == 4)
    assert server.starts("/sub/new.bin") == [0, 4, None]
    for bad in ("../x", "a/../../x", ".hidden", "", "a//b", "a\\b"):
        with pytest.raises(OtaServerError):
            server.add_file(bad, b"x")
    assert not (srv["workdir"] / "x").exists()


def test_running_server_ignores_a_stale_or_broken_state_file(tmp_path):
    assert otaserver.running_server(tmp_path) is None
    (tmp_path / "otaserver.json").write_text("{not json")
    assert otaserver.running_server(tmp_path) is None
    (tmp_path / "otaserver.json").write_text(json.dumps({"host": "127.0.0.1", "port": 1, "root": "x"}))
    assert otaserver.running_server(tmp_path) is None
    # alive process, closed port
    (tmp_path / "otaserver.json").write_text(json.dumps({"host": "127.0.0.1", "port": 1, "root": "x",
                                                         "pid": os.getpid()}))
    assert otaserver.running_server(tmp_path) is None


def test_a_liveness_probe_does_not_use_up_a_fault(served, tmp_path):
    server = OtaServer(tmp_path / "ota", served["workdir"], 0, faults=[parse_fault("wrong-ca,once")],
                       state_file=True).start()
    try:
        state = json.loads((served["workdir"] / "otaserver.json").read_text())
        assert state["port"] == server.port and state["pid"] == os.getpid()
        for _ in range(3):
            assert otaserver.running_server(served["workdir"])[1] == server.port
        assert len(server.faults) == 1 and server.requests == []
        with pytest.raises(ssl.SSLCertVerificationError):  # the fault is still there for the board
            raw_get({"server": server}, "/x", ctx=served["ctx"])
    finally:
        server.stop()
    assert otaserver.running_server(served["workdir"]) is None


def test_port_in_use_is_a_clear_error(served, tmp_path):
    with pytest.raises(OtaServerError, match="another port"):
        OtaServer(tmp_path / "ota", served["workdir"], served["server"].port).start()


# ------------------------------------------------------------- the board's own client

MP_CLIENT = """\
# Downloads on MicroPython as the agent does its I/O: a non-blocking TLS socket
# under asyncio streams, the firmware's http parser, a deadline per read.
import sys
sys.path.insert(0, LIB)
import asyncio, socket, ssl, json
from rainmaker import http

ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.verify_mode = ssl.CERT_REQUIRED
ctx.load_verify_locations(cafile=CA)


async def get(path, start):
    out = {"status": None, "got": 0, "err": None, "range": None, "location": None, "chunked": None}
    s = socket.socket()
    s.connect(socket.getaddrinfo("127.0.0.1", PORT)[0][-1])
    s.setblocking(False)
    s = ctx.wrap_socket(s, server_hostname="127.0.0.1", do_handshake_on_connect=False)
    s.setblocking(False)
    stream = asyncio.StreamWriter(s)
    r = http.Response()
    try:
        stream.write(http.request("127.0.0.1", path, start, PORT))
        await asyncio.wait_for(stream.drain(), 3)
        while True:
            try:
                data = await asyncio.wait_for(stream.read(2048), 2)
            except asyncio.TimeoutError:
                out["read_err"] = "timeout"
                data = b""
            for ev, v in r.feed(data):
                if ev == http.HEAD:
                    out["status"], out["range"], out["location"], out["chunked"] = v.status, v.range, v.location, v.chunked
                elif ev == http.BODY:
                    out["got"] += len(v)
                elif ev == http.END:
                    return out
            if not data:
                return out
    except http.HTTPError as e:
        out["err"] = str(e)
    except (OSError, ValueError) as e:  # MicroPython's ssl: ValueError for a certificate it refuses
        out["err"] = "tls: " + str(e).strip()
    finally:
        s.close()
    return out


async def main():
    for path, start in PLAN:
        print(json.dumps(await get(path, start)))

asyncio.run(main())
"""


def run_micropython(env, plan):
    """Run the downloads in plan [(path, start)] on MicroPython itself (its ssl,
    the firmware's http parser); one JSON result per download."""
    import subprocess
    from pathlib import Path
    from tools.sim.mpboard import default_micropython
    mp = default_micropython()
    if not mp:
        pytest.skip("no MicroPython unix-port binary (set MICROPYTHON=/path/to/micropython32)")
    lib = Path(__file__).resolve().parents[1] / "firmware" / "lib"
    ca_der = credential_paths(env["workdir"])["ca_dir"] / "ca.der"
    head = f"LIB = {str(lib)!r}\nCA = {str(ca_der)!r}\nPORT = {env['server'].port}\nPLAN = {plan!r}\n"
    script = env["workdir"] / "mpget.py"
    script.write_text(head + MP_CLIENT)
    done = subprocess.run([mp, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr + done.stdout
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_micropython_client_cut_resume_chunked_redirect_stall(srv):
    server = srv["server"]
    server.add_file("chunk.bin", DATA[:30000])
    server.add_fault("cut:10000,once,path=/app.bin")
    server.add_fault("chunked:1000,path=/chunk.bin")
    server.add_fault("redirect:/app.bin,path=/old.bin")
    server.add_fault("stall:5000,path=/stall.bin")
    server.add_file("stall.bin", DATA[:20000])
    resume = 10000 // BLOCK * BLOCK
    cut, resumed, chunked, moved, stalled = run_micropython(
        srv, [("/app.bin", 0), ("/app.bin", resume), ("/chunk.bin", 0), ("/old.bin", 0), ("/stall.bin", 0)])
    assert cut["status"] == 200 and cut["got"] == 10000 and "truncated" in cut["err"]
    assert resumed["status"] == 206 and resumed["err"] is None
    assert resumed["range"] == [resume, SIZE - 1, SIZE] and resumed["got"] == SIZE - resume
    assert chunked["chunked"] and chunked["got"] == 30000 and chunked["err"] is None
    assert moved["status"] == 302 and moved["location"] == server.url("/app.bin")
    assert stalled["got"] == 5000 and "truncated" in stalled["err"]
    assert server.starts("/app.bin") == [0, resume]
    assert server.sent("/app.bin") == SIZE + 10000 - resume


MP_FETCH = """\
# The agent's own download (rainmaker.fetch.download) on MicroPython, into a sink
# that records what it is given.
import sys
sys.path.insert(0, LIB)
import asyncio, ssl, json, hashlib, binascii
from rainmaker import fetch

ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.verify_mode = ssl.CERT_REQUIRED
ctx.load_verify_locations(cafile=CA)


class Sink:
    def __init__(self, first):
        assert len(first) >= 4
        self.first = bytes(first[:4])
        self.h = hashlib.sha256()
        self.n = 0
        self.empty = 0
        self.aborted = 0
        made.append(self)

    def resume(self, offset):
        pass

    def abort(self):
        self.aborted += 1

    def write(self, mv):
        self.empty += not len(mv)
        self.n += len(mv)
        self.h.update(mv)

    def written(self):
        return self.n


made = []


async def main():
    for path in PATHS:
        del made[:]
        try:
            s = await fetch.download("https://127.0.0.1:%d%s" % (PORT, path), 0, lambda first, start: Sink(first),
                                     ctx, lambda s: None, 5000)
            out = {"first": binascii.hexlify(s.first).decode(), "n": s.n, "empty": s.empty,
                   "sha": binascii.hexlify(s.h.digest()).decode()}
        except Exception as e:
            out = {"err": "%s: %s" % (type(e).__name__, e)}
        out["aborted"] = [x.aborted for x in made]
        print(json.dumps(out))

asyncio.run(main())
"""


def test_the_agents_download_gathers_first_bytes_that_come_one_at_a_time(srv):
    # 1-byte chunks: the kind of file is told by its first 4 bytes, gathered across
    # reads; the sink then gets the whole body, and never an empty write (a bundle
    # would take it for its end).
    import hashlib
    import subprocess
    from pathlib import Path
    from tools.sim.mpboard import default_micropython

    mp = default_micropython()
    if not mp:
        pytest.skip("no MicroPython unix-port binary (set MICROPYTHON=/path/to/micropython32)")
    server = srv["server"]
    body = b"RMB1" + bytes(range(60))
    for name, data in (("one.bin", body), ("three.bin", b"RMB"), ("none.bin", b"")):
        server.add_file(name, data)
        server.add_fault("chunked:1,path=/" + name)
    lib = Path(__file__).resolve().parents[1] / "firmware" / "lib"
    ca_der = credential_paths(srv["workdir"])["ca_dir"] / "ca.der"
    paths = ["/one.bin", "/three.bin", "/none.bin", "/app.bin"]
    script = srv["workdir"] / "mpfetch.py"
    script.write_text(f"LIB = {str(lib)!r}\nCA = {str(ca_der)!r}\nPORT = {server.port}\nPATHS = {paths!r}\n"
                      + MP_FETCH)
    done = subprocess.run([mp, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr + done.stdout
    one, three, none, whole = [json.loads(line) for line in done.stdout.splitlines()]
    assert one == {"first": "524d4231", "n": len(body), "empty": 0, "sha": hashlib.sha256(body).hexdigest(),
                   "aborted": [0]}
    assert three == {"err": "Failed: the file is too short to be an update (3 bytes)", "aborted": []}
    assert none == {"err": "Failed: the server sent an empty file", "aborted": []}
    assert whole == {"first": DATA[:4].hex(), "n": SIZE, "empty": 0, "sha": hashlib.sha256(DATA).hexdigest(),
                     "aborted": [0]}


def test_the_agents_download_aborts_the_sink_of_an_attempt_that_fails(srv):
    # A bundle's sink holds staged files and its file list on flash: an attempt
    # cut short, or refused by the sink itself, must not leave them behind.
    # (Before, only a download that returned whole was ever aborted.)
    import subprocess
    from pathlib import Path
    from tools.sim.mpboard import default_micropython

    mp = default_micropython()
    if not mp:
        pytest.skip("no MicroPython unix-port binary (set MICROPYTHON=/path/to/micropython32)")
    server = srv["server"]
    server.add_file("cut.bin", b"RMB1" + bytes(20000))
    server.add_fault("cut:900,path=/cut.bin")  # before the 1000 bytes the sink refuses at
    server.add_file("refused.bin", b"RMB1" + bytes(3000))
    lib = Path(__file__).resolve().parents[1] / "firmware" / "lib"
    ca_der = credential_paths(srv["workdir"])["ca_dir"] / "ca.der"
    script = srv["workdir"] / "mpfetch.py"
    refuse = ("\nSink.write0 = Sink.write\n"
              "def _w(self, mv):\n"
              "    if self.n > 1000:\n"
              "        raise fetch.Refused('Same version received')\n"
              "    self.write0(mv)\n"
              "Sink.write = _w\n")
    src = MP_FETCH.replace("\n\nmade = []", refuse + "\n\nmade = []")
    script.write_text(f"LIB = {str(lib)!r}\nCA = {str(ca_der)!r}\nPORT = {server.port}\n"
                      f"PATHS = {['/cut.bin', '/refused.bin']!r}\n" + src)
    done = subprocess.run([mp, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr + done.stdout
    cut, refused = [json.loads(line) for line in done.stdout.splitlines()]
    assert "truncated" in cut["err"] or "closed" in cut["err"], cut
    assert cut["aborted"] == [1]
    assert refused == {"err": "Refused: Same version received", "aborted": [1]}


def test_micropython_client_refuses_the_wrong_ca(srv):
    srv["server"].add_fault("wrong-ca,once")
    wrong, right = run_micropython(srv, [("/app.bin", 0), ("/app.bin", 0)])
    assert wrong["err"].startswith("tls:") and "not correctly signed" in wrong["err"] and wrong["got"] == 0
    assert right["status"] == 200 and right["got"] == SIZE and right["err"] is None


# ------------------------------------------------------------- pure parts

@pytest.mark.parametrize("text,kind,arg,path,times", [
    ("stall:4096", "stall", 4096, None, None),
    ("cut:0,once", "cut", 0, None, 1),
    ("cut:8192,times=3,path=/app.bin", "cut", 8192, "/app.bin", 3),
    ("redirect:/x.bin", "redirect", "/x.bin", None, None),
    ("redirect:x.bin,once", "redirect", "/x.bin", None, 1),
    ("chunked", "chunked", 1024, None, None),
    ("chunked:7", "chunked", 7, None, None),
    ("status:404", "status", 404, None, None),
    ("wrong-ca,once", "wrong-ca", None, None, 1),
])
def test_parse_fault(text, kind, arg, path, times):
    f = parse_fault(text)
    assert (f.kind, f.arg, f.path, f.times) == (kind, arg, path, times)
    g = parse_fault(otaserver.format_fault(f))
    assert (g.kind, g.arg, g.path, g.times) == (kind, arg, path, times)


@pytest.mark.parametrize("text", ["", "explode", "stall", "stall:x", "cut:-1", "status:99", "status:700",
                                  "chunked:0", "redirect", "cut:1,times=0", "cut:1,path=app.bin", "cut:1,twice",
                                  "wrong-ca,path=/a", "stall:" + "9" * 30])
def test_parse_fault_refuses_bad_specs(text):
    with pytest.raises(OtaServerError):
        parse_fault(text)


def test_fault_needs_a_known_kind():
    with pytest.raises(OtaServerError, match="unknown fault"):
        Fault("melt")


@given(st.text(max_size=40), st.integers(0, 10**6))
@settings(max_examples=300, deadline=None)
def test_parse_range_never_raises_and_stays_inside(text, size):
    r = parse_range(text, size)
    assert r is None or r == "unsatisfiable" or (0 <= r[0] <= r[1] < size)


@given(st.text(alphabet="/.%2eEfF5cC0a:\\;?#x", max_size=40))
@settings(max_examples=500, deadline=None)
def test_resolve_path_never_leaves_the_root(tmp_path_factory, target):
    root = tmp_path_factory.getbasetemp() / "resolve-root"
    (root / "a").mkdir(parents=True, exist_ok=True)
    (root / "a" / "f").write_bytes(b"ok")
    (root.parent / "outside").write_bytes(b"no")
    got = resolve_path(root, target)
    assert got is None or root.resolve() in got.parents
