"""The HTTP response parser against hostile and broken input, and against a
real HTTP server (Python's http.server on 127.0.0.1).

Fuzz: valid responses of every framing, then random and mutated ones (bytes
flipped, inserted, deleted, lines duplicated, cut short), each fed whole, at
every single split point, and byte by byte. The parser may only ever raise
its own HTTPError, must never hold more than its 2048-byte head buffer, and
body bytes it hands out must be exactly the framed body when it says END.
"""
import http.server
import random
import socket
import threading
import tracemalloc

import pytest

from rainmaker import http as rh

SEED = 20261128


def valid_responses(rng):
    body = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))
    out = []
    out.append((b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nServer: x\r\n\r\n" % len(body) + body, body))
    chunks = []
    i = 0
    while i < len(body):
        n = rng.randrange(1, 40)
        chunks.append(b"%x%s\r\n" % (len(body[i:i + n]), b";e=1" if rng.random() < 0.2 else b"") + body[i:i + n] + b"\r\n")
        i += n
    trailer = b"T: 1\r\n" if rng.random() < 0.5 else b""
    out.append((b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"".join(chunks) + b"0\r\n" + trailer + b"\r\n", body))
    out.append((b"HTTP/1.0 200 OK\r\nX: y\r\n\r\n" + body, body))
    n = len(body)
    if n:
        out.append((b"HTTP/1.1 206 Partial\r\nContent-Range: bytes 10-%d/%d\r\nContent-Length: %d\r\n\r\n"
                    % (9 + n, 10 + n + 5, n) + body, body))
    out.append((b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 302 Found\r\nLocation: https://x/y\r\nContent-Length: 0\r\n\r\n", b""))
    return out


def mutate(rng, data):
    data = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        op = rng.randrange(6)
        if not data:
            data += bytes([rng.randrange(256)])
            continue
        i = rng.randrange(len(data))
        if op == 0:
            data[i] = rng.randrange(256)
        elif op == 1:
            data.insert(i, rng.choice(b"\r\n:; 0aF-/\x00\xff"))
        elif op == 2:
            del data[i]
        elif op == 3:
            del data[i:]
        elif op == 4:
            j = data.find(b"\n", i)
            if j > 0:
                data[i:i] = data[i:j + 1] * rng.randrange(1, 60)
        else:
            data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 30)))
    return bytes(data)


def feed_all(pieces):
    """Feed pieces then EOF; returns (body, ended) or raises HTTPError only."""
    r = rh.Response()
    body = bytearray()
    ended = False
    head = False
    try:
        for p in list(pieces) + [b""]:
            for ev, v in r.feed(p):
                assert not ended
                if ev == rh.HEAD:
                    head = True
                elif ev == rh.BODY:
                    body += v
                elif ev == rh.END:
                    ended = True
            # The head buffer is the only one: taken only for a head split across
            # feeds, dropped once it is parsed; trailers are skipped, not kept.
            assert r.held() <= 2048 and len(r._buf) in (0, 2048)
            assert not head or (not r.held() and not r._buf)
    except rh.HTTPError as e:
        assert str(e)
        return None, False
    return bytes(body), ended


def splits(data):
    yield [data]
    for i in range(1, len(data)):
        yield [data[:i], data[i:]]
    yield [data[i:i + 1] for i in range(len(data))]


def test_valid_responses_at_every_split():
    rng = random.Random(SEED)
    for _ in range(15):
        for data, body in valid_responses(rng):
            for pieces in splits(data):
                got, ended = feed_all(pieces)
                assert ended and got == body, pieces[:2]


def test_mutated_responses_never_crash():
    rng = random.Random(SEED + 1)
    n = 0
    for _ in range(120):
        for data, _ in valid_responses(rng):
            m = mutate(rng, data)
            results = set()
            for pieces in splits(m):
                got, ended = feed_all(pieces)
                results.add((got, ended))
                n += 1
            # how the bytes are split never changes the outcome
            assert len(results) == 1, m
    assert n > 10000


def test_random_bytes_never_crash():
    rng = random.Random(SEED + 2)
    for _ in range(300):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200)))
        if rng.random() < 0.5:
            data = b"HTTP/1.1 " + data
        for pieces in splits(data):
            feed_all(pieces)


def test_long_garbage_heads_stay_bounded():
    rng = random.Random(SEED + 3)
    for _ in range(20):
        junk = b"HTTP/1.1 200 OK\r\n" + bytes(rng.choice(b"ab: \r") for _ in range(5000))
        junk = junk.replace(b"\n\r\n", b"\n").replace(b"\n\n", b"\n")
        for step in (1, 13, 1000, 5000):
            got, ended = feed_all([junk[i:i + step] for i in range(0, len(junk), step)])
            assert got is None


def test_memory_is_flat_over_a_long_body():
    """tracemalloc: streaming 8 MB costs no more than streaming 80 KB."""
    def stream(total):
        chunk = b"1000\r\n" + b"x" * 4096 + b"\r\n"
        r = rh.Response()
        tracemalloc.start()
        list(r.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"))
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        n = 0
        while n < total:
            for ev, v in r.feed(chunk):
                n += len(v)
        list(r.feed(b"0\r\n\r\n"))
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
        assert r.done()
        return peak

    small, big = stream(80 * 1024), stream(8 * 1024 * 1024)
    assert big < small + 4096, (small, big)


# ---------------------------------------------------------------- a real server

BLOB = bytes((i * 31 + 7) & 0xFF for i in range(200_000))


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_GET(self):
        self.server.seen.append((self.path, dict(self.headers)))
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "https://example.invalid/fw.bin")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path == "/missing":
            self.send_error(404)
            return
        data = BLOB
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.split("=")[1].rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data)))
            data = data[start:]
        else:
            self.send_response(200)
        if self.path == "/chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(data), 3000):
                part = data[i:i + 3000]
                self.wfile.write(b"%x\r\n" % len(part) + part + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        elif self.path == "/close":
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
            self.close_connection = True
        elif self.path == "/short":
            self.send_header("Content-Length", str(len(data) + 100))
            self.end_headers()
            self.wfile.write(data)
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)


@pytest.fixture(scope="module")
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.seen = []
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def fetch(server, path, start=0, bufsize=1500):
    port = server.server_address[1]
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(rh.request("127.0.0.1", path, start, port))
        r = rh.Response()
        body = bytearray()
        buf = bytearray(bufsize)
        mv = memoryview(buf)
        while True:
            n = s.recv_into(buf)
            for ev, v in r.feed(mv[:n]):
                if ev == rh.BODY:
                    body += v
            if not n or r.done():
                return r, bytes(body)
    finally:
        s.close()


@pytest.mark.parametrize("path", ["/fw.bin", "/chunked", "/close"])
def test_real_server_framings(server, path):
    r, body = fetch(server, path)
    assert r.status == 200 and body == BLOB
    assert r.chunked == (path == "/chunked")
    assert r.length == (len(BLOB) if path == "/fw.bin" else None)
    sent, headers = server.seen[-1]
    assert sent == path and headers["Connection"] == "close" and headers["Host"].startswith("127.0.0.1:")
    assert "Range" not in headers and headers["User-Agent"] == rh.AGENT


@pytest.mark.parametrize("path", ["/fw.bin", "/chunked"])
def test_real_server_range_resume(server, path):
    r, body = fetch(server, path, start=123_457, bufsize=977)
    assert r.status == 206 and r.range == (123_457, len(BLOB) - 1, len(BLOB))
    assert body == BLOB[123_457:]
    assert server.seen[-1][1]["Range"] == "bytes=123457-"


def test_real_server_redirect_and_error(server):
    r, body = fetch(server, "/moved")
    assert r.status == 302 and r.location == "https://example.invalid/fw.bin" and body == b""
    r, body = fetch(server, "/missing")
    assert r.status == 404 and r.done()


def test_real_server_short_body_is_truncated(server):
    with pytest.raises(rh.HTTPError, match="truncated: body ended 100 bytes short"):
        fetch(server, "/short")
