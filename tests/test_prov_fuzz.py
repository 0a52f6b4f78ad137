"""Fuzzing the provisioning core (hypothesis): every decoder, every endpoint
handler, the three handshakes, the HTTP parser and the session server.

Whatever comes in, the answer is bytes or a refusal (Refused / ValueError),
never another exception; the state stays valid; nothing is written (the core
has no I/O). Inputs are both raw bytes and well-formed protobuf with random
fields, so the handlers' field checks are reached. Bounded: a fixed number
of examples per target, no deadline, no example database on disk.
"""
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from rainmaker.prov import pb, srp
from rainmaker.prov.assoc import UserAssoc
from rainmaker.prov.errors import Refused
from rainmaker.prov.httpd import MAX_BODY, MAX_HEAD, MAX_CONNS, PER_PEER, Parser, Server
from rainmaker.prov.netconfig import NetConfig
from rainmaker.prov.protocomm import Protocomm
from rainmaker.prov.scan import Scan, MAX_ENTRIES
from rainmaker.prov.sec0 import Sec0
from rainmaker.prov.sec1 import Sec1
from rainmaker.prov.sec2 import Sec2

FUZZ = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SLOW = settings(FUZZ, max_examples=120)


class ECB:
    def __init__(self, key):
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        self.c = Cipher(algorithms.AES(bytes(key)), modes.ECB()).encryptor()

    def encrypt(self, buf):
        return self.c.update(bytes(buf))


def _varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


FIELDS = st.one_of(st.sampled_from([1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15, 20, 21, 22, 23]), st.integers(1, 40))
SCALARS = st.one_of(st.integers(-2 ** 63, 2 ** 64 - 1), st.sampled_from([0, 1, 2, 3, 4, 5, 6, 16, 32, 384]))


def _field(num, value):
    if isinstance(value, int):
        return _varint(num << 3) + _varint(value)
    return _varint((num << 3) | 2) + _varint(len(value)) + value


MESSAGES = st.recursive(
    st.lists(st.tuples(FIELDS, st.one_of(SCALARS, st.binary(max_size=64))), max_size=6)
    .map(lambda fs: b"".join(_field(n, v) for n, v in fs)),
    lambda inner: st.lists(st.tuples(FIELDS, st.one_of(SCALARS, st.binary(max_size=40), inner)), max_size=5)
    .map(lambda fs: b"".join(_field(n, v) for n, v in fs)),
    max_leaves=12,
)
INPUTS = st.one_of(st.binary(max_size=600), MESSAGES)


def refused_or_bytes(fn, data):
    try:
        out = fn(data)
    except (Refused, ValueError):
        return None
    assert isinstance(out, bytes)
    return out


@FUZZ
@given(st.binary(max_size=2000))
def test_decode_never_fails_otherwise(data):
    try:
        d = pb.decode(data)
    except ValueError:
        return
    assert all(isinstance(v, (int, bytes)) for v in d.values())
    assert all(0 <= v < 2 ** 64 for v in d.values() if isinstance(v, int))


@FUZZ
@given(st.lists(INPUTS, min_size=1, max_size=8))
def test_netconfig_endpoints(msgs):
    n = NetConfig()
    for m in msgs:
        refused_or_bytes(n.config, m)
        refused_or_bytes(n.ctrl, m)
        assert n.state in (0, 1, 2, 3)
        if n.creds:
            ssid, pw = n.creds
            assert 1 <= len(ssid.encode()) <= 32 and len(pw.encode()) <= 63
        creds = n.take()
        if creds:
            n.failed(1)


@FUZZ
@given(st.lists(INPUTS, min_size=1, max_size=8))
def test_scan_endpoint(msgs):
    aps = [(b"n%d" % i, bytes(6), 1, -40 - i, 3, False) for i in range(20)]
    s = Scan(lambda: aps)
    for m in msgs:
        refused_or_bytes(s.handle, m)
        assert len(s.results) <= MAX_ENTRIES


@FUZZ
@given(INPUTS)
def test_user_assoc_endpoint(m):
    a = UserAssoc("NODE")
    refused_or_bytes(a.handle, m)
    if a.mapping:
        assert all(1 <= len(x.encode()) <= 128 for x in a.mapping)


_SALT = b"\x11" * 16
_VER = srp.verifier(_SALT, b"wifiprov", b"abcd1234")


def _schemes():
    return [Sec0(), Sec1(b"abcd1234", ecb=ECB), Sec2(_SALT, _VER, ecb=ECB)]


@SLOW
@given(st.lists(st.one_of(INPUTS, st.builds(lambda v, m: _field(2, v) + _field(10 + v, m),
                                            st.integers(0, 2), MESSAGES)), min_size=1, max_size=5))
def test_handshakes(msgs):
    for sec in _schemes():
        for m in msgs:
            refused_or_bytes(sec.handshake, m)
            if sec.version and not sec.established:
                with pytest.raises(Refused):
                    sec.encrypt(b"x")


ENDPOINTS = st.sampled_from(["proto-ver", "prov-session", "prov-config", "prov-scan", "prov-ctrl",
                             "cloud_user_assoc", "nope", ""])


@SLOW
@given(st.integers(0, 2), st.lists(st.tuples(ENDPOINTS, INPUTS), min_size=1, max_size=10))
def test_protocomm_sequences(v, reqs):
    sec = _schemes()[v]
    net = NetConfig()
    pc = Protocomm(sec, {"prov-config": net.config, "prov-scan": Scan(lambda: []).handle,
                         "prov-ctrl": net.ctrl, "cloud_user_assoc": UserAssoc("N").handle})
    now = 0
    for name, body in reqs:
        now += 1500
        refused_or_bytes(lambda b: pc.request(name, b, now), body)
        assert pc.fails <= len(reqs) and 0 <= pc.wait(now) <= 60000  # slowed down, never locked


HTTP_PARTS = st.one_of(
    st.binary(max_size=300),
    st.sampled_from([b"POST /prov-session HTTP/1.1\r\n", b"POST /proto-ver HTTP/1.1\r\n", b"GET / HTTP/1.1\r\n",
                     b"Content-Length: 3\r\n", b"Content-Length: 0\r\n", b"Content-Length: 99999\r\n",
                     b"Cookie: session=1\r\n", b"Cookie: session=\r\n", b"Connection: close\r\n",
                     b"Transfer-Encoding: chunked\r\n", b"\r\n", b"\r\n\r\n", b"---", b"\x52\x03\xa2\x01\x00"]),
)


@FUZZ
@given(st.lists(HTTP_PARTS, min_size=1, max_size=12))
def test_http_parser_and_server(parts):
    seq = [0]

    def rand(n):
        seq[0] += 1
        return seq[0].to_bytes(n, "big")

    server = Server(Protocomm(Sec0(), {"prov-config": NetConfig().config}), rand)
    p = Parser()
    for chunk in parts:
        try:
            req = p.feed(chunk)
            while req is not None:
                assert 0 < len(req.body) <= MAX_BODY or (req.method != "POST" and len(req.body) <= MAX_BODY)
                out, keep = server.handle(1, req, 0)
                assert out is None or out.startswith(b"HTTP/1.1 ")
                if out is None or not keep:
                    p = Parser()
                    break
                req = p.feed(b"")
        except Refused:
            p = Parser()  # the connection is closed
        assert p.head is not None or len(p.buf) <= MAX_HEAD + 4 + MAX_BODY + 300


EVENTS = st.lists(st.tuples(st.sampled_from(["accept", "close", "proto-ver", "session", "status"]),
                            st.integers(0, 3), st.integers(0, 9)), min_size=1, max_size=60)


@FUZZ
@given(EVENTS)
def test_connection_table(events):
    """Whatever the peers do, the table stays bounded (in all and per address),
    and the connection carrying the session is never the one evicted."""
    seq = [0]

    def rand(n):
        seq[0] += 1
        return seq[0].to_bytes(n, "big")

    server = Server(Protocomm(Sec0(), {"prov-config": NetConfig().config}), rand)
    now = 0
    ids = 0
    for kind, peer, pick in events:
        now += 700
        if kind == "accept":
            ids += 1
            holder = server.conn
            victim = server.accept(ids, peer, now)
            assert victim is None or (victim != holder and victim != ids)
            continue
        if not server.conns:
            continue
        cid = server.conns[pick % len(server.conns)][0]
        if kind == "close":
            server.closed(cid)
        else:
            path, body = {"proto-ver": ("/proto-ver", b"---"), "session": ("/prov-session", b"\x52\x03\xa2\x01\x00"),
                          "status": ("/prov-config", b"\x52\x00")}[kind]
            req = Parser().feed(b"POST %s HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (path.encode(), len(body), body))
            out, keep = server.handle(cid, req, now)
            if not keep:
                server.closed(cid)
        assert len(server.conns) <= MAX_CONNS
        for p in range(4):
            assert sum(1 for c in server.conns if c[1] == p) <= PER_PEER
