# HTTP/1.1 client side for downloads (OTA), sans-IO.
#
# url() splits an https URL, request() builds the GET, Response turns the
# bytes read from the (TLS) socket into events. Nothing here touches a socket,
# so the same code runs under CPython tests and on the board. Every input is
# bounded: the response head is held in at most _MAX_HEAD bytes, a chunk-size
# line in _MAX_LINE; body bytes are handed out as memoryview slices of the
# caller's buffer, never copied or accumulated, so a 1.5 MB image costs what a
# 1 KB one does.
from micropython import const

HEAD = const(1)  # value: the Response itself (status, length, location, ...)
BODY = const(2)  # value: memoryview slice of the bytes fed, valid until the next feed
END = const(3)  # value: None; the body is complete

_MAX_HEAD = const(2048)  # status line + headers (and, separately, chunked trailers)
_MAX_LINE = const(80)  # one chunk-size line, extensions included
_MAX_HEX = const(8)  # hex digits of a chunk size: < 4 GiB
_MAX_URL = const(2000)  # pre-signed object-store URLs run to ~1.5 KB
_MAX_INTERIM = const(4)  # 1xx responses skipped before the real one

# parser states
_HEAD = const(0)
_LEN = const(1)  # Content-Length body: _left bytes to go
_CLOSE = const(2)  # body runs until the peer closes
_SIZE = const(3)  # chunk-size line
_DATA = const(4)  # chunk data: _left bytes to go
_CRLF = const(5)  # the line end after chunk data
_TRAIL = const(6)  # trailer lines after the last chunk
_DONE = const(7)
_FAIL = const(8)

_REDIRECTS = (301, 302, 303, 307, 308)
AGENT = "rainmaker-micropython/1"


_NONE = bytearray(0)  # Response._buf when no head is being gathered


def _blank(mv, i, top):
    """Index just past the first blank line (LF LF or LF CR LF) in mv[i:top], or -1."""
    while i < top:
        if mv[i] == 10:
            if i + 1 < top and mv[i + 1] == 10:
                return i + 2
            if i + 2 < top and mv[i + 1] == 13 and mv[i + 2] == 10:
                return i + 3
        i += 1
    return -1


class HTTPError(ValueError):
    """A URL, request or response this client will not handle; the text says why."""


def url(s):
    """'https://host[:port]/path?query' -> (host, port, path). Only https: the
    firmware and bundles must come over an authenticated channel."""
    if not isinstance(s, str) or len(s) > _MAX_URL:
        raise HTTPError("URL must be a string of at most %d characters" % _MAX_URL)
    for c in s:
        if c <= " " or c > "~":
            raise HTTPError("URL has a space, control or non-ASCII character; percent-encode it")
    if s[:8].lower() != "https://":
        raise HTTPError("only https:// URLs are accepted, got %r" % s[:16])
    rest = s[8:]
    cut = len(rest)
    for c in "/?#":
        i = rest.find(c)
        if 0 <= i < cut:
            cut = i
    auth, path = rest[:cut], rest[cut:]
    i = path.find("#")  # the fragment is never sent
    if i >= 0:
        path = path[:i]
    if not path or path[0] != "/":
        path = "/" + path
    if "@" in auth:
        raise HTTPError("credentials in the URL are not supported; use a pre-signed URL")
    port = 443
    if auth.startswith("["):  # IPv6 literal
        j = auth.find("]")
        if j < 0:
            raise HTTPError("unclosed '[' in the URL's host")
        host, tail = auth[1:j], auth[j + 1:]
        if not host or any(c not in "0123456789abcdefABCDEF:." for c in host):
            raise HTTPError("bad IPv6 address in the URL")
    else:
        j = auth.find(":")
        host, tail = (auth, "") if j < 0 else (auth[:j], auth[j:])
        for c in host:
            if not (c.isalpha() or c.isdigit() or c in "-._"):
                raise HTTPError("bad character %r in the URL's host" % c)
    if not host:
        raise HTTPError("URL has no host")
    if tail:
        if tail[0] != ":" or not 2 <= len(tail) <= 6 or not tail[1:].isdigit():
            raise HTTPError("bad port in the URL")
        port = int(tail[1:])
        if not 0 < port < 65536:
            raise HTTPError("port %d out of range" % port)
    return host, port, path


def request(host, path, start=0, port=443):
    """The GET for path on host; with start > 0 a Range request for the rest
    of the file (resuming an interrupted download)."""
    for part in (host, path):
        for c in part:
            if c <= " " or c > "~":
                raise HTTPError("host or path has a space or control character")
    if not path.startswith("/"):
        raise HTTPError("path must start with '/'")
    if ":" in host:
        host = "[" + host + "]"
    if port != 443:
        host = "%s:%d" % (host, port)
    r = "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: %s\r\nAccept-Encoding: identity\r\n" % (path, host, AGENT)
    if start > 0:
        r += "Range: bytes=%d-\r\n" % start
    return (r + "Connection: close\r\n\r\n").encode()


def _digits(v, what):
    v = v.strip()
    if not v or len(v) > 12 or not v.isdigit():
        raise HTTPError("bad %s %r" % (what, bytes(v[:20])))
    return int(v)


class Response:
    """Incremental response parser. After construction, for each read:

        for ev, val in r.feed(data): ...

    and feed(b"") once the peer has closed. Events: (HEAD, r) once the head
    is in (r.status, r.length (Content-Length or None), r.chunked,
    r.location for redirects, r.range = (first, last, total or None) for
    206); (BODY, memoryview) any number of times; (END, None) once. A
    response cut short raises HTTPError("truncated ..."); any bad syntax or
    bound raises HTTPError; after an error every feed raises it again.
    Run each feed's iterator to its end: the bytes after an abandoned event
    are not parsed."""

    def __init__(self):
        self._buf = _NONE  # a head split across feeds is gathered here (_MAX_HEAD bytes)
        self._n = 0  # bytes held in _buf
        self._st = _HEAD
        self._left = 0
        self._line = 0  # bytes of the current chunk-size line
        self._hex = 0  # hex digits read in it (-1: in an extension)
        self._cr = False  # a CR ended chunk data, LF still to come
        self._err = None
        self._interim = 0
        self.status = 0
        self.length = None
        self.chunked = False
        self.location = None
        self.range = None

    def done(self):
        return self._st == _DONE

    def held(self):
        """Bytes the parser holds between feeds (at most its head buffer)."""
        return self._n

    def feed(self, data):
        if self._err:
            raise HTTPError(self._err)
        try:
            if not data:
                yield from self._eof()
            else:
                yield from self._run(memoryview(data))
        except HTTPError as e:
            self._st = _FAIL
            self._err = e.args[0]
            raise

    def _eof(self):
        st = self._st
        if st == _CLOSE:
            self._st = _DONE
            yield END, None
        elif st == _HEAD:
            raise HTTPError("truncated: connection closed %s" % ("before any response" if not self._n else "inside the response head"))
        elif st == _LEN:
            raise HTTPError("truncated: body ended %d bytes short of its Content-Length" % self._left)
        elif st != _DONE:
            raise HTTPError("truncated: chunked body ended before its last chunk")

    def _run(self, mv):
        i = 0
        n = len(mv)
        while i < n:
            st = self._st
            if st == _LEN or st == _DATA:
                k = n - i
                if k > self._left:
                    k = self._left
                self._left -= k
                yield BODY, mv[i:i + k]
                i += k
                if not self._left:
                    if st == _LEN:
                        self._st = _DONE
                        yield END, None
                    else:
                        self._st = _CRLF
            elif st == _CLOSE:
                yield BODY, mv[i:] if i else mv
                return
            elif st == _HEAD:
                i = self._head(mv, i)
                if self._st == _HEAD:
                    continue  # a 1xx was skipped or more head is needed
                yield HEAD, self
                if self._st == _DONE:
                    yield END, None
            elif st == _TRAIL:
                i = self._trail(mv, i)
                if self._st == _DONE:
                    yield END, None
            elif st == _SIZE:
                i = self._size(mv, i)
            elif st == _CRLF:
                b = mv[i]
                i += 1
                if b == 13 and not self._cr:
                    self._cr = True
                elif b == 10:
                    self._cr = False
                    self._st = _SIZE
                else:
                    raise HTTPError("chunk data not followed by CRLF")
            else:
                raise HTTPError("%d bytes after the end of the response" % (n - i))

    def _head(self, mv, i):
        """Find the blank line that ends the head, parse the head, return the
        index in mv just past it (or len(mv) if it has not all come yet). A
        head that comes whole in one feed, as it nearly always does, is parsed
        from it; only a head split across feeds is gathered in a buffer, which
        is allocated for it and dropped after."""
        n = len(mv)
        old = self._n
        if not old:
            if mv[i] == 10 or (mv[i] == 13 and i + 1 < n and mv[i + 1] == 10):
                raise HTTPError("response starts with a blank line, not a status line")
            top = i + _MAX_HEAD if n - i > _MAX_HEAD else n
            end = _blank(mv, i, top)
            if end > 0:
                self._parse(mv[i:end])
                return end
            if top < n:
                raise HTTPError("response head longer than %d bytes" % _MAX_HEAD)
            if len(self._buf) < _MAX_HEAD:
                self._buf = bytearray(_MAX_HEAD)
        k = n - i
        room = _MAX_HEAD - old
        if k > room:
            k = room
        buf = self._buf
        buf[old:old + k] = mv[i:i + k]
        self._n = old + k
        if old and buf[0] == 13 and buf[1] == 10:  # a CR, then the LF in this feed
            raise HTTPError("response starts with a blank line, not a status line")
        # the blank line ending it, possibly split across feeds
        end = _blank(buf, old - 2 if old > 2 else 0, self._n)
        if end < 0:
            if self._n >= _MAX_HEAD:
                raise HTTPError("response head longer than %d bytes" % _MAX_HEAD)
            return n  # not there yet
        self._parse(memoryview(buf)[:end])
        return i + end - old

    def _trail(self, mv, i):
        """Skip trailer lines (nothing in them is used) up to the blank line
        that ends them; return the index in mv just past it."""
        n = len(mv)
        while i < n:
            c = mv[i]
            i += 1
            self._left += 1  # trailer bytes so far (_left is free after the last chunk)
            if self._left > _MAX_HEAD:
                raise HTTPError("response trailer longer than %d bytes" % _MAX_HEAD)
            if c == 10:
                if not self._line:
                    self._st = _DONE
                    return i
                self._line = 0
            elif c != 13:
                self._line += 1  # characters on this trailer line
        return i

    def _parse(self, head):
        lines = bytes(head).split(b"\n")
        self._n = 0
        st = lines[0].rstrip(b"\r")
        if len(st) < 12 or st[:7] != b"HTTP/1." or st[7] not in (48, 49) or st[8] != 32 or st[12:13] not in (b"", b" "):
            raise HTTPError("bad status line %r" % st[:40])
        code = st[9:12]
        if not code.isdigit():
            raise HTTPError("bad status code %r" % code)
        status = int(code)
        if status < 100:
            raise HTTPError("status %d out of range" % status)
        length = None
        chunked = False
        location = None
        rng = None
        for ln in lines[1:]:
            ln = ln.rstrip(b"\r")
            if not ln:
                continue
            if ln[0] in (32, 9):
                raise HTTPError("folded header lines are not allowed")
            name, colon, value = ln.partition(b":")
            if not colon or not name or b" " in name or b"\t" in name:
                raise HTTPError("bad header line %r" % ln[:40])
            name = name.lower()
            value = value.strip()
            if name == b"content-length":
                v = _digits(value, "Content-Length")
                if length is not None and v != length:
                    raise HTTPError("two different Content-Length values")
                length = v
            elif name == b"transfer-encoding":
                if value.lower() != b"chunked" or chunked:
                    raise HTTPError("unsupported Transfer-Encoding %r; only chunked is" % value[:20])
                chunked = True
            elif name == b"location":
                try:
                    location = value.decode()
                except UnicodeError:
                    raise HTTPError("Location is not UTF-8")
            elif name == b"content-range":
                rng = self._crange(value)
        if 100 <= status < 200:
            self._interim += 1
            if status == 101 or self._interim > _MAX_INTERIM:
                raise HTTPError("unexpected %d response" % status)
            return  # stays in _HEAD for the real response
        if chunked and length is not None:
            raise HTTPError("both Content-Length and Transfer-Encoding: chunked; refusing an ambiguous body")
        if status in _REDIRECTS and not location:
            raise HTTPError("redirect %d without a Location" % status)
        if status == 206:
            if rng is None:
                raise HTTPError("206 without a Content-Range")
            if length is not None and length != rng[1] - rng[0] + 1:
                raise HTTPError("Content-Length disagrees with Content-Range")
        self._buf = _NONE  # the head is parsed: a buffer it needed is not held through the body
        self.status = status
        self.length = length
        self.chunked = chunked
        self.location = location if status in _REDIRECTS else None
        self.range = rng if status == 206 else None
        if status in (204, 304):
            self._st = _DONE
        elif chunked:
            self._st = _SIZE
            self._line = self._hex = 0
            self._left = 0
        elif length is not None:
            self._left = length
            self._st = _LEN if length else _DONE
        else:
            self._st = _CLOSE

    def _crange(self, v):
        # "bytes first-last/total" or "bytes first-last/*"
        if v[:6] != b"bytes ":
            raise HTTPError("bad Content-Range %r" % v[:40])
        span, slash, total = v[6:].partition(b"/")
        a, dash, b = span.partition(b"-")
        if not slash or not dash:
            raise HTTPError("bad Content-Range %r" % v[:40])
        a = _digits(a, "Content-Range start")
        b = _digits(b, "Content-Range end")
        t = None if total.strip() == b"*" else _digits(total, "Content-Range total")
        if b < a or (t is not None and b >= t):
            raise HTTPError("Content-Range %d-%d/%s is not a valid span" % (a, b, t))
        return a, b, t

    def _size(self, mv, i):
        """Read the chunk-size line byte by byte (it is short); return the index after it."""
        n = len(mv)
        while i < n:
            c = mv[i]
            i += 1
            self._line += 1
            if self._line > _MAX_LINE:
                raise HTTPError("chunk-size line longer than %d bytes" % _MAX_LINE)
            if c == 10:
                if not self._hex:
                    raise HTTPError("chunk-size line without a size")
                size = self._left
                self._line = self._hex = 0
                if size:
                    self._st = _DATA
                else:
                    self._st = _TRAIL
                return i
            if self._hex < 0:
                continue  # after the size: chunk extensions and the CR, ignored
            if 48 <= c <= 57:
                d = c - 48
            elif 97 <= c <= 102:
                d = c - 87
            elif 65 <= c <= 70:
                d = c - 55
            elif c in (59, 13, 32, 9) and self._hex > 0:
                self._hex = -1  # size done; rest of the line is ignored
                continue
            else:
                raise HTTPError("bad character %r in a chunk size" % chr(c))
            self._hex += 1
            if self._hex > _MAX_HEX:
                raise HTTPError("chunk size has more than %d hex digits" % _MAX_HEX)
            self._left = self._left * 16 + d
        return i
