# HTTP/1.1 for protocomm over SoftAP (docs/provisioning.md#http-transport), without I/O.
#
# Parser: bytes in, one Request out when complete. Limits as esp_http_server
# and protocomm_httpd have them: a bounded header block, a POST body of
# 1..4096 bytes, no chunked bodies. Anything else raises Refused; a body
# announced over 4096 bytes (any method) raises TooLarge as soon as the header
# is in, so the body is never read.
# Server: the connection table and the session rules. Sessions by the
# "session=<id>" cookie, or by the socket when the client sends no Cookie
# header; one session at a time.
#
# Connection rules (the open access point lets anyone connect):
# - at most MAX_CONNS connections, PER_PEER from one address; a new connection
#   is always taken, and makes room by closing one that does not carry the
#   session: from the address with the most connections, the one quiet the
#   longest. So a flood of connections only ever evicts the flood.
# - a connection is never closed for being idle: clients keep one connection
#   open while their user types (IDF's server does not close it either).
# - an established session (its handshake proved the PoP) cannot be taken over
#   from another address while its connection is open and it was used in the
#   last HOLD_MS; after that (the phone left) anyone may start a new one.
import os
from micropython import const
from .errors import Refused
from .protocomm import diff

MAX_BODY = const(4096)
MAX_HEAD = const(1024)
# 3 connections (+ the listening socket): enough for a client, its retry and
# a stranger. More sockets polled at once crashed MicroPython 1.28's unix port
# (SIGSEGV in poll once a 5th socket was polled, seen under a connection flood),
# and the ESP32 has few sockets to spare.
MAX_CONNS = const(3)
PER_PEER = const(2)
HOLD_MS = const(120000)
_MAX_LINES = const(24)


class TooLarge(Refused):
    """The announced body is over MAX_BODY: answered 413, connection closed."""


class Request:
    def __init__(self, method, path, cookie, body, close):
        self.method = method
        self.path = path
        self.cookie = cookie  # value of session=..., "" if a Cookie header has none, None if no header
        self.body = body
        self.close = close


class Parser:
    def __init__(self):
        self.buf = b""
        self.head = None  # (method, path, cookie, length, close) once the headers are in

    def feed(self, data):
        """Add bytes; returns a Request when one is complete, else None."""
        self.buf += data
        if self.head is None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    raise Refused("request header too long")
                return None
            if end > MAX_HEAD:
                raise Refused("request header too long")
            self.head = _head(self.buf[:end])
            self.buf = self.buf[end + 4:]
        method, path, cookie, length, close = self.head
        if len(self.buf) < length:
            return None
        if len(self.buf) == length:  # the usual case: no copy of the body
            body = self.buf
            self.buf = b""
        else:
            body = self.buf[:length]
            self.buf = self.buf[length:]
        self.head = None
        return Request(method, path, cookie, body, close)


def _head(raw):
    try:
        text = raw.decode()
    except UnicodeError:
        raise Refused("request header is not text")
    lines = text.split("\r\n")
    if len(lines) > _MAX_LINES:
        raise Refused("too many header lines")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.1", "HTTP/1.0") or not parts[1].startswith("/"):
        raise Refused("bad request line")
    length = None
    cookie = None
    close = parts[2] == "HTTP/1.0"
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise Refused("bad header line")
        name = name.strip().lower()
        value = value.strip()
        if name == "content-length":
            if not value.isdigit():
                raise Refused("bad Content-Length")
            value = value.lstrip("0") or "0"
            if len(value) > 5 or int(value) > MAX_BODY:  # no int() of a long digit string
                raise TooLarge("body over %d bytes" % MAX_BODY)
            length = int(value)
        elif name == "transfer-encoding":
            raise Refused("chunked bodies are not accepted")
        elif name == "cookie":
            cookie = ""
            for c in value.split(";"):
                k, _, v = c.strip().partition("=")
                if k == "session":
                    cookie = v
        elif name == "connection":
            close = value.lower() == "close"
    if parts[0] == "POST" and (length is None or not 1 <= length <= MAX_BODY):
        # an empty body is a failure too, as in protocomm_httpd
        raise Refused("POST body must be 1..%d bytes" % MAX_BODY)
    return parts[0], parts[1], cookie, length or 0, close


def response(status, body=b"", cookie=None, close=False):
    text = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 413: "Content Too Large"}[status]
    head = "HTTP/1.1 %d %s\r\nContent-Type: text/html\r\nContent-Length: %d\r\n" % (status, text, len(body))
    if cookie is not None:
        head += "Set-Cookie: session=%d\r\n" % cookie
    if close:
        head += "Connection: close\r\n"
    return head.encode() + b"\r\n" + body


class Server:
    """The connection table, and requests from any connection -> protocomm."""

    def __init__(self, pc, rand=os.urandom):
        self.pc = pc
        self.rand = rand
        self.sid = None
        self.conn = None  # the connection that carried the session's last request
        self.last = 0  # tick of that request
        self.conns = []  # [id, peer, tick of the last request (or accept), has sent one], oldest first
        self.last_error = None

    # -- connections --------------------------------------------------------------

    def accept(self, cid, peer, now):
        """A new connection: returns the id of one to close to make room, or None."""
        mine = 0
        for c in self.conns:
            if c[1] == peer:
                mine += 1
        victim = None
        if mine >= PER_PEER:
            victim = self._victim(peer)
        elif len(self.conns) >= MAX_CONNS:
            victim = self._victim(None)
        if victim is not None:
            self.closed(victim)
        self.conns.append([cid, peer, now, False])
        return victim

    def _victim(self, peer):
        # Never the session's connection. Then, in order: the address with the
        # most connections (a flood comes from one), a connection that never
        # sent a request (a client sends its first one at once), the one quiet
        # the longest.
        best = None
        key = -1
        for c in self.conns:
            if c[0] == self.conn or (peer is not None and c[1] != peer):
                continue
            n = 0
            for d in self.conns:
                if d[1] == c[1]:
                    n += 1
            k = n * 2 + (0 if c[3] else 1)
            if k > key or (best is not None and k == key and diff(c[2], best[2]) < 0):
                best, key = c, k
        return None if best is None else best[0]

    def closed(self, cid):
        for i in range(len(self.conns)):
            if self.conns[i][0] == cid:
                self.conns.pop(i)
                break
        if cid == self.conn:
            self.conn = None  # the session goes on for a client that sends its cookie

    def _entry(self, cid):
        for c in self.conns:
            if c[0] == cid:
                return c
        return None

    def _held(self, cid, now):
        """Is the established session someone else's, and still in use?"""
        if self.sid is None or self.conn is None or not self.pc.sec.established:
            return False
        mine = self._entry(cid)
        owner = self._entry(self.conn)
        if owner is None or (mine is not None and mine[1] == owner[1]):
            return False  # the owner's address may start again (an app's retry)
        return diff(now, self.last) < HOLD_MS

    # -- requests -----------------------------------------------------------------

    def handle(self, conn, req, now):
        """(response bytes or None, keep the connection open)."""
        name = req.path[1:].split("?")[0]
        if not self.pc.known(name):
            return response(404, b"This URI does not exist", close=True), False
        if req.method != "POST":
            return response(405, b"Method not allowed", close=True), False
        e = self._entry(conn)
        if e is not None:
            e[2] = now
            e[3] = True
        new = None
        if name != self.pc.ver_name:  # a constant answer: it neither starts nor touches a session
            if req.cookie is not None:
                same = self.sid is not None and req.cookie == str(self.sid)
            else:
                same = self.sid is not None and conn == self.conn
            if not same:
                if self._held(conn, now):
                    self.last_error = "%s: the session belongs to another client" % name
                    return None, False
                self.sid = new = (int.from_bytes(self.rand(4), "big") & 0x7FFFFFFF) or 1
                self.pc.open()
            self.conn = conn
            self.last = now
        try:
            body = self.pc.request(name, req.body, now)
        except (Refused, ValueError) as e:
            self.last_error = "%s: %s" % (name, e)
            return None, False
        return response(200, body, new, req.close), not req.close
