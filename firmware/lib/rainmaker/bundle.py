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
# to its place as it streams in. Nothing is buffered whole, not even the
# manifest: it is decoded a key or a file entry at a time (_Manifest), so the
# largest block the reader needs is _PIECE bytes. Sans-IO: Reader turns bytes
# into events, the caller does the writing.
from micropython import const
import binascii
import hashlib
import json

MAGIC = b"RMB1"
_HDR = const(6)
_MAX_MANIFEST = const(8192)  # 64 entries of ~110 bytes; the agent alone has ~40 files
_MAX_FILES = const(64)
_MAX_PATH = const(96)
_MAX_VERSION = const(32)
MAX_TOTAL = const(1536 * 1024)  # more than the whole filesystem of a 4 MB OTA layout

_PIECE = const(320)  # bytes of one manifest key or file entry (one is ~120)
_MAX_KEYS = const(16)  # in the manifest object: format, version, total, files, chip, arch and a few more

MANIFEST = const(1)  # value: the manifest dict, already checked; its "files" a Files
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

_M_START = const(0)  # before the manifest object
_M_MEMBER = const(1)  # in a key of it (or its value)
_M_ENTRY = const(2)  # in "files": an entry or its end next (in an entry: depth > 2)
_M_COMMA = const(3)  # in "files": a comma or its end next
_M_FILES = const(4)  # after the files' array, before its , or }
_M_END = const(5)  # after the manifest object

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


def check_entry(f):
    """Raise BundleError unless f is a well-formed file entry; return its size."""
    if not isinstance(f, dict):
        raise BundleError("manifest file entry is not an object")
    p = f.get("path")
    check_path(p)
    n = f.get("size")
    if type(n) is not int or n < 0:
        raise BundleError("file %r: size must be a non-negative integer" % p)
    h = f.get("sha256")
    if not isinstance(h, str) or len(h) != 64 or any(c not in _HEX for c in h):
        raise BundleError("file %r: sha256 must be 64 lower-case hex digits" % p)
    return n


def _check_top(m, s, max_total):
    # The manifest's own keys, once its entries are checked and add up to s.
    if m.get("format") != 1:
        raise BundleError("bundle format %r not supported (this agent reads format 1)" % (m.get("format"),))
    v = m.get("version")
    if not isinstance(v, str) or not 0 < len(v) <= _MAX_VERSION:
        raise BundleError("manifest version must be a string of 1..%d characters" % _MAX_VERSION)
    files = m.get("files")
    if not isinstance(files, (list, Files)) or not 0 < len(files) <= _MAX_FILES:
        raise BundleError("manifest must list 1..%d files" % _MAX_FILES)
    total = m.get("total")
    if type(total) is not int or not 0 <= total <= max_total:
        raise BundleError("manifest total must be an integer of at most %d bytes" % max_total)
    if s != total:
        raise BundleError("file sizes add up to %d, manifest total says %d" % (s, total))


def check_manifest(m, max_total=MAX_TOTAL):
    """Raise BundleError unless m (a decoded manifest) is well-formed; return m.
    The Reader applies the same rules while the manifest streams in."""
    if not isinstance(m, dict):
        raise BundleError("manifest is not a JSON object")
    files = m.get("files")
    if not isinstance(files, list) or not 0 < len(files) <= _MAX_FILES:
        raise BundleError("manifest must list 1..%d files" % _MAX_FILES)
    s = 0
    for i, f in enumerate(files):
        s += check_entry(f)
        _unique(files, i)
    _check_top(m, s, max_total)
    return m


def _unique(files, i):
    # A scan instead of a set: at most 64 entries, and no second copy of the paths.
    p = files[i]["path"]
    for j in range(i):
        if files[j]["path"] == p:
            raise BundleError("file %r listed twice" % p)


def _loads(buf, n):
    # Decoded as UTF-8 first: CPython's json would guess UTF-16 or -32 from bytes.
    try:
        return json.loads(str(memoryview(buf)[:n], "utf-8"))
    except (ValueError, UnicodeError, RuntimeError, IndexError):
        # RuntimeError: nesting too deep for the parser
        raise BundleError("manifest is not valid UTF-8 JSON")


def _blank(c):
    return c == 0x20 or c == 0x0A or c == 0x0D or c == 0x09


class _Manifest:
    """The manifest, decoded as it streams in, never held whole.

    The JSON is cut at its structure (outside strings): each top-level member
    ("key": value) and each entry of "files" is gathered in one small buffer
    and decoded on its own, so the largest block is _PIECE bytes, not the
    manifest's up to 8 KB: one block that size often cannot be had in a
    long-running node's fragmented heap. Entries are checked as they arrive,
    the whole manifest once its last byte is in."""

    def __init__(self, size, max_total):
        self.left = size  # manifest bytes still to come
        self.max_total = max_total
        self.buf = bytearray(_PIECE)
        self.n = 0
        self.depth = 0  # brackets open; 1: in the manifest object
        self.state = _M_START
        self.str = False  # in a string
        self.esc = False  # after a backslash in a string
        self.m = {}
        self.files = None  # the entries (Files), once "files" has started
        self.sum = 0  # of their sizes

    def _put(self, c):
        if self.n == _PIECE:
            raise BundleError("manifest has a key or file entry of more than %d bytes" % _PIECE)
        self.buf[self.n] = c
        self.n += 1

    def _start(self, head):
        self.buf[:len(head)] = head
        self.n = len(head)

    def feed(self, mv):
        """Take the manifest's next bytes (at most what is left of it); return
        the manifest dict once it is complete and checked, else None."""
        for c in mv:
            if self.str:
                self._put(c)
                if self.esc:
                    self.esc = False
                elif c == 0x5C:  # backslash
                    self.esc = True
                elif c == 0x22:  # quote
                    self.str = False
                continue
            d = self.depth
            st = self.state
            if d == 0:  # before or after the manifest object
                if _blank(c):
                    continue
                if st != _M_START:
                    raise BundleError("manifest is not valid UTF-8 JSON")
                if c != 0x7B:
                    raise BundleError("manifest is not a JSON object")
                self.depth = 1
                self.state = _M_MEMBER
                self._start(b"{")
            elif d == 1:  # in a member: up to its , or }
                if c == 0x2C or c == 0x7D:
                    self._member(c == 0x7D)
                elif st == _M_FILES:  # only blanks between the files' ] and the , or }
                    if not _blank(c):
                        raise BundleError("manifest is not valid UTF-8 JSON")
                elif c == 0x5B and self._files_key():
                    if self.files is not None or "files" in self.m:
                        raise BundleError("manifest lists 'files' twice")
                    self.files = Files()
                    self.depth = 2
                    self.state = _M_ENTRY
                else:
                    self._put(c)
                    if c == 0x22:
                        self.str = True
                    elif c == 0x7B or c == 0x5B:
                        self.depth = 2
            elif d == 2 and st != _M_MEMBER:  # in "files", between entries
                if _blank(c):
                    continue
                if c == 0x7B and st == _M_ENTRY:
                    self._start(b"{")
                    self.depth = 3
                elif c == 0x2C and st == _M_COMMA:
                    self.state = _M_ENTRY
                elif c == 0x5D and (st == _M_COMMA or not self.files):
                    self.depth = 1
                    self.state = _M_FILES
                else:
                    raise BundleError("manifest file entry is not an object")
            else:  # in a member's value or in an entry
                self._put(c)
                if c == 0x22:
                    self.str = True
                elif c == 0x7B or c == 0x5B:
                    self.depth = d + 1
                elif c == 0x7D or c == 0x5D:
                    self.depth = d - 1
                    if d == 3 and st == _M_ENTRY:
                        self._entry()
        self.left -= len(mv)
        if self.left:
            return None
        if self.state != _M_END:
            raise BundleError("manifest is not valid UTF-8 JSON")
        _check_top(self.m, self.sum, self.max_total)
        return self.m

    def _files_key(self):
        # Is this '[' the value of the key "files"? Decoded with a stand-in value.
        n = self.n
        if n < 9 or n + 2 > _PIECE:  # 9: {"files":
            return False
        self.buf[n] = 0x30
        self.buf[n + 1] = 0x7D
        try:
            d = _loads(self.buf, n + 2)
        except BundleError:
            return False
        return isinstance(d, dict) and len(d) == 1 and d.get("files") == 0

    def _member(self, last):
        # A member ends (at its , or the manifest's }): decode it as {member}.
        if self.state == _M_FILES:  # the files' array, already taken entry by entry
            self.m["files"] = self.files
            self.state = _M_MEMBER
        else:
            self._put(0x7D)
            self._add(_loads(self.buf, self.n), last)
        if last:
            self.depth = 0
            self.state = _M_END
        else:
            self._start(b"{")

    def _add(self, d, last):
        if isinstance(d, dict) and len(d) == 1:
            for k in d:
                if k in self.m or k == "files" and self.files is not None:
                    raise BundleError("manifest lists %r twice" % k)
                if len(self.m) == _MAX_KEYS:
                    raise BundleError("manifest has more than %d keys" % _MAX_KEYS)
                self.m[k] = d[k]
        elif not (last and d == {} and not self.m):  # {} alone: its checks say what is missing
            raise BundleError("manifest is not valid UTF-8 JSON")

    def _entry(self):
        f = _loads(self.buf, self.n)
        files = self.files
        assert files is not None
        if len(files) == _MAX_FILES:
            raise BundleError("manifest must list 1..%d files" % _MAX_FILES)
        self.sum += check_entry(f)
        if self.sum > self.max_total:
            raise BundleError("manifest total must be an integer of at most %d bytes (the files add up to more)"
                              % self.max_total)
        files.add(f)
        self.state = _M_COMMA
        self.n = 0


def _hex(d):
    return binascii.hexlify(d).decode()


class Files:
    """The manifest's file entries, packed: one bytes object per file (its
    SHA-256 digest, its size in 4 bytes, its path), under half the memory of
    the decoded JSON's dict and two strings per file. Indexing or iterating
    gives each entry as a new dict {"path", "size", "sha256"} (hex)."""

    def __init__(self):
        self._r = []

    def __len__(self):
        return len(self._r)

    def __getitem__(self, i):
        r = self._r[i]
        return {"path": r[36:].decode(), "size": int.from_bytes(r[32:36], "big"), "sha256": _hex(r[:32])}

    def __iter__(self):
        for i in range(len(self._r)):
            yield self[i]

    def digest(self, i):
        return self._r[i][:32]

    def add(self, f):
        """Append a checked entry (a dict); BundleError if its path is listed already."""
        p = f["path"].encode()
        k = 36 + len(p)
        for r in self._r:
            if len(r) == k and r[36:] == p:
                raise BundleError("file %r listed twice" % f["path"])
        self._r.append(binascii.unhexlify(f["sha256"]) + f["size"].to_bytes(4, "big") + p)


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
        self._man = None  # the manifest's decoder while it streams in
        self._st = _S_HDR
        self._err = None
        self.manifest = None
        self._files = Files()  # the manifest's entries
        self._cur = None  # the current file's entry
        self._i = 0  # index of the current file
        self._left = 0
        self._hash = hashlib.sha256()  # replaced per file
        self.received = 0  # bundle bytes consumed

    def done(self):
        return self._st == _S_END

    def held(self):
        """Bytes the reader holds between feeds: the header's, then one piece
        of the manifest (at most _PIECE), then none."""
        return self._man.n if self._man else self._n

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
                f = self._cur = files[self._i]
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
                    self._man = _Manifest(size, self.max_total)
                    self._n = 0
                    self._st = _S_MAN
            elif st == _S_MAN:
                man = self._man
                assert man is not None
                k = n - i
                if k > man.left:
                    k = man.left
                m = man.feed(mv[i:i + k])
                i += k
                self.received += k
                if m is not None:
                    self._man = None  # its buffer is no longer needed
                    self.manifest = m
                    self._files = m["files"]
                    self._st = _S_FILE
                    yield MANIFEST, m
            else:
                raise BundleError("%d bytes after the end of the bundle" % (n - i))

    def _finish(self):
        f = self._cur
        assert f is not None
        d = self._hash.digest()
        if d != self._files.digest(self._i):
            raise BundleError("file %r is corrupt: sha256 %s, manifest says %s" % (f["path"], _hex(d), f["sha256"]))
        self._i += 1
        self._cur = None
        self._st = _S_FILE
        return f
