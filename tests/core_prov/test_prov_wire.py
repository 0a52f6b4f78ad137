# The protobuf subset and the HTTP layer of provisioning: exact encodings,
# limits, malformed input, cookie sessions. CPython and the MicroPython VM.
from rainmaker.prov import pb
from rainmaker.prov.httpd import Parser, Server, response
from rainmaker.prov.protocomm import Protocomm
from rainmaker.prov.errors import Refused
from rainmaker.prov.sec0 import Sec0
from rainmaker.prov.netconfig import NetConfig
from provclient import sec0_cmd, get_status
from util import raises, h


def test_varint_and_field_encodings():
    assert pb.varint(0) == b"\x00"
    assert pb.varint(300) == h("ac 02")
    assert pb.varint(-52) == h("cc ff ff ff ff ff ff ff ff 01")  # int32 rssi
    assert pb.f_int(1, 0) == b"" and pb.f_bytes(2, b"") == b""
    assert pb.f_msg(21, b"") == h("aa 01 00")
    assert pb.f_bool(1, True) == h("08 01")


def test_decode_roundtrip_and_defaults():
    msg = pb.f_int(1, 5) + pb.f_bytes(2, b"abc") + pb.f_msg(10, pb.f_int(3, -1))
    d = pb.decode(msg)
    assert pb.get_int(d, 1) == 5 and pb.get_bytes(d, 2) == b"abc"
    assert pb.get_int(pb.get_msg(d, 10), 3, 2 ** 64) == 2 ** 64 - 1
    assert pb.get_int(d, 7) == 0 and pb.get_bytes(d, 8) == b""  # proto3 defaults
    # unknown fixed32/fixed64 fields are skipped
    assert pb.decode(h("0d 01 02 03 04 09 01 02 03 04 05 06 07 08 08 07")) == {1: 7}


def test_decode_refuses_malformed_input():
    for bad in ("08", "08 80", "12 05 61 62", "0b", "0c", "0e 00", "00 01", "f8 ff ff ff ff 0f 01",
                "08 ff ff ff ff ff ff ff ff ff ff 01", "0d 01 02", "0a 80 80 80 80 10"):
        raises(ValueError, pb.decode, h(bad))
    raises(ValueError, pb.decode, b"\x08\x01" * 25)  # too many fields
    d = pb.decode(h("08 01 12 01 41"))
    raises(ValueError, pb.get_bytes, d, 1)  # wrong type
    raises(ValueError, pb.get_int, d, 2)
    raises(ValueError, pb.get_msg, d, 3)  # missing
    raises(ValueError, pb.get_int, pb.decode(h("08 05")), 1, 4)  # above the bound
    raises(ValueError, pb.get_bytes, d, 2, 2)  # too short


def test_decode_of_a_view_gives_views_and_the_same_values():
    # A prov-session request is decoded as views (session.route): no copy of
    # the nested messages, only the fields taken are copied, as bytes.
    inner = pb.f_bytes(1, b"user") + pb.f_bytes(2, bytes(range(200)) * 2)
    msg = pb.f_int(2, 2) + pb.f_msg(12, pb.f_int(1, 0) + pb.f_msg(20, inner))
    d = pb.decode(memoryview(msg))
    assert type(d[12]) is memoryview and bytes(d[12]) == pb.decode(msg)[12]
    s = pb.get_msg(d, 12)
    sc0 = pb.get_msg(s, 20)
    assert type(s[20]) is memoryview and pb.get_int(s, 1) == 0
    a = pb.get_bytes(sc0, 2)
    assert type(a) is bytes and a == bytes(range(200)) * 2 and pb.get_bytes(sc0, 1) == b"user"
    assert pb.get_bytes(sc0, 3) == b""
    raises(ValueError, pb.get_bytes, sc0, 2, 0, 399)  # lengths are checked on views too
    raises(ValueError, pb.get_int, s, 20)
    raises(ValueError, pb.get_msg, sc0, 5)
    for bad in ("08", "12 05 61 62", "0b", "0a 80 80 80 80 10"):
        raises(ValueError, pb.decode, memoryview(h(bad)))
    raises(ValueError, pb.get_msg, pb.decode(memoryview(h("0a 02 08 80"))), 1)  # truncated inside


REQ = (b"POST /prov-session HTTP/1.1\r\nHost: 192.168.4.1:80\r\nAccept-Encoding: identity\r\n"
       b"Content-Length: 5\r\nContent-type: application/x-www-form-urlencoded\r\nAccept: text/plain\r\n\r\n")


def test_parser_reads_the_cli_request_in_pieces_and_pipelined():
    p = Parser()
    raw = REQ + sec0_cmd()
    r = None
    for i in range(len(raw)):
        r = p.feed(raw[i:i + 1])
        assert (r is None) == (i < len(raw) - 1)
    assert (r.method, r.path, r.cookie, r.body, r.close) == ("POST", "/prov-session", None, sec0_cmd(), False)
    two = raw.replace(b"Accept: text/plain", b"Cookie: a=b; session=42") + raw
    r1 = p.feed(two)
    assert r1.cookie == "42"
    r2 = p.feed(b"")
    assert r2.body == sec0_cmd() and r2.cookie is None
    assert p.feed(b"") is None


def test_parser_limits():
    for bad in (
        REQ.replace(b"Content-Length: 5", b"Content-Length: 0"),  # empty body
        REQ.replace(b"Content-Length: 5", b"Content-Length: 4097"),
        REQ.replace(b"Content-Length: 5", b"Content-Length: -1"),
        REQ.replace(b"Content-Length: 5\r\n", b""),
        REQ.replace(b"Content-Length: 5", b"Transfer-Encoding: chunked"),
        REQ.replace(b"HTTP/1.1", b"HTTP/2"),
        REQ.replace(b"POST /", b"POST"),
        REQ.replace(b"Accept: text/plain", b"no colon here"),
        REQ.replace(b"Host", b"X-" + b"a" * 1100),
        b"\xff\xfe" + REQ,
    ):
        raises(Refused, Parser().feed, bad + b"12345")
    raises(Refused, Parser().feed, b"POST /x HTTP/1.1\r\n" + b"a: b\r\n" * 200)  # no end of header in sight
    assert Parser().feed(REQ.replace(b"Content-Length: 5", b"Content-Length: 4096")) is None


def _server():
    seq = [0]

    def rand(n):
        seq[0] += 1
        return bytes(n - 1) + bytes([seq[0]])

    return Server(Protocomm(Sec0(), {"prov-config": NetConfig().config}), rand)


def _req(path, body, cookie=None, method="POST"):
    p = Parser()
    head = "%s %s HTTP/1.1\r\nContent-Length: %d\r\n" % (method, path, len(body))
    if cookie is not None:
        head += "Cookie: session=%s\r\n" % cookie
    return p.feed(head.encode() + b"\r\n" + body)


def test_sessions_follow_the_cookie_or_the_socket():
    s = _server()
    out, keep = s.handle(1, _req("/prov-session", sec0_cmd()), 0)
    assert keep and out.startswith(b"HTTP/1.1 200 OK\r\n") and b"Set-Cookie: session=1\r\n" in out
    assert out.endswith(b"\r\n\r\n" + h("52 05 08 01 aa 01 00"))
    # same socket, no cookie: same session, no new cookie
    out, _ = s.handle(1, _req("/prov-config", get_status()), 0)
    assert b"Set-Cookie" not in out and out.endswith(h("08 01 5a 02 10 02"))
    # another socket with the cookie: same session
    out, _ = s.handle(2, _req("/prov-config", get_status(), cookie="1"), 0)
    assert out.endswith(h("08 01 5a 02 10 02"))
    # another socket without the cookie: a new session, without the handshake
    out, keep = s.handle(3, _req("/prov-config", get_status()), 0)
    assert out is None and not keep
    assert s.sid == 2
    # a stale cookie: new session too
    out, _ = s.handle(3, _req("/prov-session", sec0_cmd(), cookie="1"), 0)
    assert b"Set-Cookie: session=3\r\n" in out
    # proto-ver is answered on any connection and leaves the session alone
    out, keep = s.handle(4, _req("/proto-ver", b"---"), 0)
    assert keep and b"Set-Cookie" not in out and b'"sec_ver":0' in out
    out, _ = s.handle(3, _req("/prov-config", get_status()), 0)
    assert s.sid == 3 and out.endswith(h("08 01 5a 02 10 02"))


def test_unknown_endpoint_wrong_method_and_refusals():
    s = _server()
    out, keep = s.handle(1, _req("/nope", b"x"), 0)
    assert out.startswith(b"HTTP/1.1 404 Not Found\r\n") and not keep
    out, keep = s.handle(1, _req("/proto-ver", b"", method="GET"), 0)
    assert out.startswith(b"HTTP/1.1 405") and not keep
    out, keep = s.handle(1, _req("/prov-session", h("ff ff")), 0)
    assert out is None and not keep and "prov-session" in s.last_error
    assert response(200, b"ab", close=True) == b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 2\r\nConnection: close\r\n\r\nab"


def test_a_body_over_the_limit_is_refused_from_the_header_for_every_method():
    # Refused as soon as the header is in: the body is never waited for, so
    # never held in memory (a 999999-byte GET used to be buffered whole).
    for method in (b"GET", b"PUT", b"POST", b"DELETE"):
        for length in (b"4097", b"999999", b"99999999999999999999999"):
            head = method + b" /proto-ver HTTP/1.1\r\nContent-Length: " + length + b"\r\n\r\n"
            p = Parser()
            e = raises(Refused, p.feed, head)
            assert type(e).__name__ == "TooLarge", (method, length, e)
            assert len(p.buf) <= len(head)
    from rainmaker.prov.httpd import TooLarge

    # header and first body bytes in one read: same
    raises(TooLarge, Parser().feed, b"GET / HTTP/1.1\r\nContent-Length: 5000\r\n\r\n" + b"x" * 400)
    # within the limit a GET body is read (then answered 405), a POST one too
    r = Parser().feed(b"GET /proto-ver HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
    assert r.method == "GET" and r.body == b"abc"
    r = Parser().feed(b"POST /proto-ver HTTP/1.1\r\nContent-Length: 0000000003\r\n\r\nabc")
    assert r.body == b"abc"  # leading zeros are still a small number
    assert response(413, b"", close=True).startswith(b"HTTP/1.1 413 Content Too Large\r\n")
    raises(Refused, Parser().feed, b"GET / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n")


def _srv_sec1():
    from rainmaker.prov.sec1 import Sec1
    from aes_ref import ECB

    seq = [0]

    def rand(n):
        seq[0] += 1
        return bytes([seq[0] & 0xFF]) * n

    return Server(Protocomm(Sec1(b"abcd1234", rand=rand, ecb=ECB), {"prov-config": NetConfig().config}), rand)


def _handshake(s, cid, now, client_key=b"\x31"):
    from provclient import Sec1Client

    c = Sec1Client(b"abcd1234", client_key * 32)
    out, keep = s.handle(cid, _req("/prov-session", c.cmd0()), now)
    assert keep, s.last_error
    out, keep = s.handle(cid, _req("/prov-session", c.cmd1(out.split(b"\r\n\r\n", 1)[1])), now)
    assert keep and c.check(out.split(b"\r\n\r\n", 1)[1])
    return c


def test_a_connection_flood_evicts_only_the_flood():
    from rainmaker.prov.httpd import MAX_CONNS, PER_PEER

    for flood_peer in ("10.0.0.66", "192.168.4.2"):  # another address, or the client's own
        s = _srv_sec1()
        now = 1000
        assert s.accept(1, "192.168.4.2", now) is None
        s.handle(1, _req("/proto-ver", b"---"), now)
        c = _handshake(s, 1, now)
        evicted = []
        for cid in range(2, 300):
            now += 50
            v = s.accept(cid, flood_peer, now)
            assert v != 1
            if v is not None:
                evicted.append(v)
            if cid % 3 == 0:  # some flood connections send a request, too
                s.handle(cid, _req("/proto-ver", b"---"), now)
            assert len(s.conns) <= MAX_CONNS
            assert sum(1 for e in s.conns if e[1] == flood_peer) <= (MAX_CONNS if flood_peer == "192.168.4.2" else PER_PEER)
        assert len(evicted) > 280
        # the session's connection is still there, and the session works
        out, keep = s.handle(1, _req("/prov-config", c.encrypt(get_status())), now)
        assert keep and c.decrypt(out.split(b"\r\n\r\n", 1)[1]) == h("08 01 5a 02 10 02")


def test_a_new_client_gets_in_during_a_flood_and_talkers_outrank_silent_connections():
    s = _srv_sec1()
    now = 0
    from rainmaker.prov.httpd import MAX_CONNS, PER_PEER

    assert MAX_CONNS > PER_PEER >= 2
    got = [s.accept(cid, "10.0.0.66", now) for cid in range(1, PER_PEER + 2)]
    assert got == [None] * PER_PEER + [1]  # PER_PEER per address: its oldest made room
    # the phone connects during a flood from elsewhere: a free slot, or the flood makes room
    assert s.accept(10, "192.168.4.2", now) in (None, 2, 3)
    s.handle(10, _req("/proto-ver", b"---"), now)  # a client sends its first request at once
    s.accept(11, "10.0.0.67", now)  # a second flooding address
    for cid in range(20, 40):
        assert s.accept(cid, "10.0.0.%d" % (66 + cid % 2), now + cid) != 10
    # same address: a connection that has sent a request outlives silent ones
    s = _srv_sec1()
    s.accept(1, "a", 0)
    s.handle(1, _req("/proto-ver", b"---"), 0)
    for cid in range(2, 50):
        assert s.accept(cid, "a", cid) != 1
    # an idle connection is never closed for being idle: only for room
    s = _srv_sec1()
    s.accept(1, "a", 0)
    assert s.accept(2, "b", 10 ** 8) is None and [e[0] for e in s.conns] == [1, 2]
    s.closed(1)
    s.closed(1)  # twice is harmless
    assert [e[0] for e in s.conns] == [2]


def test_an_established_session_is_not_taken_over_from_another_address():
    from rainmaker.prov.httpd import HOLD_MS

    s = _srv_sec1()
    s.accept(1, "phone", 0)
    c = _handshake(s, 1, 0)
    s.accept(2, "stranger", 10)
    from provclient import Sec1Client

    intruder = Sec1Client(b"abcd1234", b"\x77" * 32)
    out, keep = s.handle(2, _req("/prov-session", intruder.cmd0()), 20)
    assert out is None and not keep and "another client" in s.last_error
    out, keep = s.handle(2, _req("/proto-ver", b"---"), 20)  # answered all the same
    assert keep
    out, keep = s.handle(1, _req("/prov-config", c.encrypt(get_status())), HOLD_MS - 1000)
    assert keep and c.decrypt(out.split(b"\r\n\r\n", 1)[1]) == h("08 01 5a 02 10 02")
    # the phone's own address may start over (an app's retry on a new connection)
    s.accept(3, "phone", HOLD_MS)
    c2 = _handshake(s, 3, HOLD_MS, b"\x32")
    # a session unused for HOLD_MS, or whose connection closed, can be replaced
    t = HOLD_MS * 2 + 1
    s.accept(4, "stranger", t)
    _handshake(s, 4, t, b"\x33")
    s.closed(4)
    s.accept(5, "other", t + 1)
    _handshake(s, 5, t + 1, b"\x34")
    assert c2 is not None
