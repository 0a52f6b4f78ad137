# HTTP/1.1 for protocomm over SoftAP (docs/provisioning.md#http-transport), without I/O.
#
# Parser: bytes in, one Request out when complete. Limits as esp_http_server
# and protocomm_httpd have them: a bounded header block, a Content-Length of
# 1..4096 bytes, no chunked bodies. Anything else raises Refused.
# Server: sessions by the "session=<id>" cookie, or by the socket when the
# client sends no Cookie header; one session at a time.
import os
from micropython import const
from .errors import Refused

MAX_BODY = const(4096)
MAX_HEAD = const(1024)
_MAX_LINES = const(24)


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
            if not value.isdigit() or len(value) > 6:
                raise Refused("bad Content-Length")
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
    text = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}[status]
    head = "HTTP/1.1 %d %s\r\nContent-Type: text/html\r\nContent-Length: %d\r\n" % (status, text, len(body))
    if cookie is not None:
        head += "Set-Cookie: session=%d\r\n" % cookie
    if close:
        head += "Connection: close\r\n"
    return head.encode() + b"\r\n" + body


class Server:
    """Requests from any connection -> protocomm, with its session rules."""

    def __init__(self, pc, rand=os.urandom):
        self.pc = pc
        self.rand = rand
        self.sid = None
        self.conn = None
        self.last_error = None

    def handle(self, conn, req):
        """(response bytes or None, keep the connection open)."""
        name = req.path[1:].split("?")[0]
        if not self.pc.known(name):
            return response(404, b"This URI does not exist", close=True), False
        if req.method != "POST":
            return response(405, b"Method not allowed", close=True), False
        if req.cookie is not None:
            same = self.sid is not None and req.cookie == str(self.sid)
        else:
            same = self.sid is not None and conn == self.conn
        new = None
        if not same:
            self.sid = new = (int.from_bytes(self.rand(4), "big") & 0x7FFFFFFF) or 1
            self.pc.open()
        self.conn = conn
        try:
            body = self.pc.request(name, req.body)
        except (Refused, ValueError) as e:
            self.last_error = "%s: %s" % (name, e)
            return None, False
        return response(200, body, new, req.close), not req.close
