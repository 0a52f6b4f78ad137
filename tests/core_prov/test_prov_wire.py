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
    out, keep = s.handle(1, _req("/prov-session", sec0_cmd()))
    assert keep and out.startswith(b"HTTP/1.1 200 OK\r\n") and b"Set-Cookie: session=1\r\n" in out
    assert out.endswith(b"\r\n\r\n" + h("52 05 08 01 aa 01 00"))
    # same socket, no cookie: same session, no new cookie
    out, _ = s.handle(1, _req("/prov-config", get_status()))
    assert b"Set-Cookie" not in out and out.endswith(h("08 01 5a 02 10 02"))
    # another socket with the cookie: same session
    out, _ = s.handle(2, _req("/prov-config", get_status(), cookie="1"))
    assert out.endswith(h("08 01 5a 02 10 02"))
    # another socket without the cookie: a new session, without the handshake
    out, keep = s.handle(3, _req("/prov-config", get_status()))
    assert out is None and not keep
    assert s.sid == 2
    # a stale cookie: new session too
    out, _ = s.handle(3, _req("/proto-ver", b"---", cookie="1"))
    assert b"Set-Cookie: session=3\r\n" in out


def test_unknown_endpoint_wrong_method_and_refusals():
    s = _server()
    out, keep = s.handle(1, _req("/nope", b"x"))
    assert out.startswith(b"HTTP/1.1 404 Not Found\r\n") and not keep
    out, keep = s.handle(1, _req("/proto-ver", b"", method="GET"))
    assert out.startswith(b"HTTP/1.1 405") and not keep
    out, keep = s.handle(1, _req("/prov-session", h("ff ff")))
    assert out is None and not keep and "prov-session" in s.last_error
    assert response(200, b"ab", close=True) == b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 2\r\nConnection: close\r\n\r\nab"
