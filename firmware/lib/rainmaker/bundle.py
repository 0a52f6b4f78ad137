# App bundle: the Python files of an update in one streamable download.
#
#   0     b"RMB1"
#   4     manifest length, u16 big-endian (1..8192)
#   6     manifest, UTF-8 JSON: {"format": 1, "version": "1.2.0", "total": N,
#         "files": [{"path": "lib/x.mpy", "size": n, "sha256": "<hex>"}, ...]}
#         (other keys, e.g. "chip" and "arch", are informational)
#   6+m   the files' bytes, in manifest order, nothing between or after
#
# The manifest comes first so the whole update is judged (version, sizes,
# paths) before a byte of it is stored, and each file can be written straight
# to its place as it streams in: nothing but the manifest is buffered. Sans-IO:
# Reader turns bytes into events, the caller does the writing.
from micropython import const
import hashlib
import json

MAGIC = b"RMB1"
_HDR = const(6)
_MAX_MANIFEST = const(8192)  # 64 entries of ~110 bytes; the agent alone has ~40 files
_MAX_FILES = const(64)
_MAX_PATH = const(96)
_MAX_VERSION = const(32)
MAX_TOTAL = const(1536 * 1024)  # more than the whole filesystem of a 4 MB OTA layout

MANIFEST = const(1)  # value: the manifest dict, already checked
FILE = const(2)  # value: the file's entry {"path", "size", "sha256"}; its data follows
DATA = const(3)  # value: memoryview slice of the bytes fed, valid until the next feed
DONE = const(4)  # value: the entry; its bytes matched its size and sha256
END = const(5)  # value: the manifest; every file arrived whole

_S_HDR = const(0)
_S_MAN = const(1)
_S_FILE = const(2)
_S_DATA = const(3)
_S_END = const(4)
_S_FAIL = const(5)

_PATH_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-/"
_HEX = "0123456789abcdef"


class BundleError(ValueError):
    """The bundle is malformed, too big or corrupt; the text says which and where."""


def kind(first):
    """What a download is, from its first bytes: "image" (an ESP app image),
    "bundle", or None if more bytes are needed to tell."""
    if not first:
        return None
    if first[0] == 0xE9:
        return "image"
    n = len(first) if len(first) < 4 else 4
    if bytes(first[:n]) == MAGIC[:n]:
        return "bundle" if n == 4 else None
    raise BundleError("neither an ESP app image (first byte 0xe9) nor an app bundle (RMB1); "
                      "the OTA URL points at something else")


def check_path(p):
    """Raise BundleError unless p is a safe relative path on the board."""
    if not isinstance(p, str) or not 0 < len(p) <= _MAX_PATH:
        raise BundleError("file path must be 1..%d characters" % _MAX_PATH)
    for c in p:
        if c not in _PATH_CHARS:
            raise BundleError("file path %r has %r; only letters, digits and _ . - / are allowed" % (p, c))
    if p[0] == "/" or p[-1] == "/":
        raise BundleError("file path %r must be relative and name a file" % p)
    for part in p.split("/"):
        if part in ("", ".", ".."):
            raise BundleError("file path %r has an empty, '.' or '..' part" % p)


def check_manifest(m, max_total=MAX_TOTAL):
    """Raise BundleError unless m is a well-formed manifest; return m."""
    if not isinstance(m, dict):
        raise BundleError("manifest is not a JSON object")
    if m.get("format") != 1:
        raise BundleError("bundle format %r not supported (this agent reads format 1)" % (m.get("format"),))
    v = m.get("version")
    if not isinstance(v, str) or not 0 < len(v) <= _MAX_VERSION:
        raise BundleError("manifest version must be a string of 1..%d characters" % _MAX_VERSION)
    files = m.get("files")
    if not isinstance(files, list) or not 0 < len(files) <= _MAX_FILES:
        raise BundleError("manifest must list 1..%d files" % _MAX_FILES)
    total = m.get("total")
    if type(total) is not int or not 0 <= total <= max_total:
        raise BundleError("manifest total must be an integer of at most %d bytes" % max_total)
    seen = set()
    s = 0
    for f in files:
        if not isinstance(f, dict):
            raise BundleError("manifest file entry is not an object")
        p = f.get("path")
        check_path(p)
        if p in seen:
            raise BundleError("file %r listed twice" % p)
        seen.add(p)
        n = f.get("size")
        if type(n) is not int or n < 0:
            raise BundleError("file %r: size must be a non-negative integer" % p)
        h = f.get("sha256")
        if not isinstance(h, str) or len(h) != 64 or any(c not in _HEX for c in h):
            raise BundleError("file %r: sha256 must be 64 lower-case hex digits" % p)
        s += n
    if s != total:
        raise BundleError("file sizes add up to %d, manifest total says %d" % (s, total))
    return m


def _hex(d):
    out = ""
    for b in d:
        out += _HEX[b >> 4] + _HEX[b & 15]
    return out


class Reader:
    """Incremental bundle reader:

        for ev, val in r.feed(data): ...

    and feed(b"") once the download has ended. Events: (MANIFEST, m) once,
    then per file (FILE, entry), (DATA, memoryview) any number of times,
    (DONE, entry) once its hash matched, and finally (END, m). A short,
    long, oversized or corrupt bundle raises BundleError; after an error
    every feed raises it again."""

    def __init__(self, max_total=MAX_TOTAL):
        self.max_total = max_total
        self._buf = bytearray(_HDR)
        self._n = 0
        self._st = _S_HDR
        self._err = None
        self.manifest = None
        self._files = []  # the manifest's entries
        self._i = 0  # index of the current file
        self._left = 0
        self._hash = hashlib.sha256()  # replaced per file
        self.received = 0  # bundle bytes consumed

    def done(self):
        return self._st == _S_END

    def held(self):
        """Bytes the reader holds between feeds (at most the manifest)."""
        return self._n

    def feed(self, data):
        if self._err:
            raise BundleError(self._err)
        try:
            if not data:
                if self._st != _S_END:
                    raise BundleError("truncated: the bundle ended after %d bytes" % self.received)
            else:
                yield from self._run(memoryview(data))
        except BundleError as e:
            self._st = _S_FAIL
            self._err = e.args[0]
            raise

    def _fill(self, mv, i):
        # copy into _buf until it is full; return the new index
        k = len(self._buf) - self._n
        if k > len(mv) - i:
            k = len(mv) - i
        self._buf[self._n:self._n + k] = mv[i:i + k]
        self._n += k
        self.received += k
        return i + k

    def _run(self, mv):
        i = 0
        n = len(mv)
        while True:
            st = self._st
            if st == _S_DATA:
                if i >= n:
                    return
                k = n - i
                if k > self._left:
                    k = self._left
                chunk = mv[i:i + k]
                self._hash.update(chunk)
                self._left -= k
                self.received += k
                i += k
                yield DATA, chunk
                if not self._left:
                    yield DONE, self._finish()
            elif st == _S_FILE:
                files = self._files
                if self._i == len(files):
                    self._st = _S_END
                    yield END, self.manifest
                    continue
                f = files[self._i]
                self._hash = hashlib.sha256()
                self._left = f["size"]
                self._st = _S_DATA
                yield FILE, f
                if not self._left:
                    yield DONE, self._finish()
            elif i >= n:
                return
            elif st == _S_HDR:
                i = self._fill(mv, i)
                if self._n == _HDR:
                    if bytes(self._buf[:4]) != MAGIC:
                        raise BundleError("not an app bundle: it does not start with RMB1")
                    size = self._buf[4] << 8 | self._buf[5]
                    if not 0 < size <= _MAX_MANIFEST:
                        raise BundleError("manifest of %d bytes; the limit is %d" % (size, _MAX_MANIFEST))
                    self._buf = bytearray(size)
                    self._n = 0
                    self._st = _S_MAN
            elif st == _S_MAN:
                i = self._fill(mv, i)
                if self._n == len(self._buf):
                    try:
                        # MicroPython parses the bytearray in place (no str copy)
                        m = json.loads(self._buf)  # pyright: ignore[reportArgumentType]
                    except (ValueError, UnicodeError, RuntimeError):
                        # RuntimeError: nesting too deep for the parser
                        raise BundleError("manifest is not valid UTF-8 JSON")
                    self._buf = bytearray(0)  # the manifest's bytes are no longer needed
                    self._n = 0
                    self.manifest = check_manifest(m, self.max_total)
                    self._files = m["files"]
                    self._st = _S_FILE
                    yield MANIFEST, self.manifest
            else:
                raise BundleError("%d bytes after the end of the bundle" % (n - i))

    def _finish(self):
        f = self._files[self._i]
        got = _hex(self._hash.digest())
        if got != f["sha256"]:
            raise BundleError("file %r is corrupt: sha256 %s, manifest says %s" % (f["path"], got, f["sha256"]))
        self._i += 1
        self._st = _S_FILE
        return f
