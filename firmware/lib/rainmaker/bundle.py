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
# manifest: it is decoded a key or a file entry at a time (bundlemf.py, loaded
# only while a manifest arrives), so the largest block the reader needs is a
# few hundred bytes. Sans-IO: Reader turns bytes into events, the caller does
# the writing.
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

MANIFEST = const(1)  # value: the manifest dict, already checked; its "files" a Files or Listed
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


def check_top(m, s, max_total):
    """Raise BundleError unless the manifest's own keys are right; its
    entries are checked already and their sizes add up to s."""
    if m.get("format") != 1:
        raise BundleError("bundle format %r not supported (this agent reads format 1)" % (m.get("format"),))
    v = m.get("version")
    if not isinstance(v, str) or not 0 < len(v) <= _MAX_VERSION:
        raise BundleError("manifest version must be a string of 1..%d characters" % _MAX_VERSION)
    files = m.get("files")
    if not isinstance(files, (list, _Entries)) or not 0 < len(files) <= _MAX_FILES:
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
    seen = Files()  # its add() refuses a path listed twice, as the Reader's does
    for f in files:
        s += check_entry(f)
        seen.add(f)
    check_top(m, s, max_total)
    return m


def _hex(d):
    return binascii.hexlify(d).decode()


def _entry(b, o, k):
    # An entry as a dict from its record: digest (32), size (4), the path's k bytes at o.
    return {"path": str(memoryview(b)[o:o + k], "utf-8"), "size": b[32] << 24 | b[33] << 16 | b[34] << 8 | b[35],
            "sha256": _hex(memoryview(b)[:32])}


def _size(f):
    # An entry's size in the 4 bytes a record has for it.
    n = f["size"]
    if n > 0xFFFFFFFF:
        raise BundleError("file %r: size must be under 4 GB" % f["path"])
    return n.to_bytes(4, "big")


class _Entries:
    # What Files and Listed share: _n entries, each indexed or iterated as a
    # new dict, negative indexes from the end as for a list.
    _n = 0

    def __len__(self):
        return self._n

    def __getitem__(self, i):  # each kind reads its own records
        raise NotImplementedError

    def __iter__(self):
        for i in range(self._n):
            yield self[i]

    def _at(self, i):
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError("file entry %d of %d" % (i, self._n))
        return i


class Files(_Entries):
    """The manifest's file entries, packed: one bytes object per file (its
    SHA-256 digest, its size in 4 bytes, its path), under half the memory of
    the decoded JSON's dict and two strings per file. Indexing or iterating
    gives each entry as a new dict {"path", "size", "sha256"} (hex). The
    host's tools and check_manifest use it; the board keeps its list on
    flash instead (Listed), which has the same interface."""

    def __init__(self, room=_MAX_FILES):
        # Every slot taken at once: a list grown entry by entry needs a block
        # twice its size, and the last one (256 bytes) comes mid-download,
        # when the heap is at its most fragmented.
        self._r = [b""] * room

    def __getitem__(self, i):
        r = self._r[self._at(i)]
        return _entry(r, 36, len(r) - 36)

    def digest(self, i):
        return self._r[i][:32]

    def add(self, f):
        """Append a checked entry (a dict); BundleError if its path is listed
        already or the list is full."""
        if self._n == len(self._r):
            raise BundleError("manifest must list 1..%d files" % _MAX_FILES)
        p = f["path"].encode()
        k = 36 + len(p)
        for i in range(self._n):
            r = self._r[i]
            if len(r) == k and r[36:] == p:
                raise BundleError("file %r listed twice" % f["path"])
        self._r[self._n] = binascii.unhexlify(f["sha256"]) + _size(f) + p
        self._n += 1


_REC = const(133)  # bytes of a Listed record: digest 32, size 4, path length 1, path up to _MAX_PATH


class Listed(_Entries):
    """The manifest's file entries kept in a file rather than in RAM: a
    bundle of 55 files took ~4.5 KB of heap as Files, which a node at its
    smallest heap does not have mid-download. `f` is a binary stream open
    for reading and writing, empty (stage.py makes it); each entry is one
    fixed-size record in it, read back into one buffer, so the heap this
    takes does not grow with the files. Same interface as Files."""

    def __init__(self, f, room=_MAX_FILES):
        self._f = f
        self._b = bytearray(_REC)
        # One byte per entry, a hash of its path: add() reads back only the
        # records whose path hashes the same when it looks for a path listed twice.
        self._h = bytearray(room)

    def _read(self, i):
        # Record i into the buffer; a short or damaged one is an error, not an entry.
        b = self._b
        f = self._f
        f.seek(i * _REC)
        if f.readinto(b) != _REC:
            raise BundleError("the file list kept on flash is cut short at entry %d; the update must start over" % i)
        k = b[36]
        if not 0 < k <= _MAX_PATH:
            raise BundleError("the file list kept on flash is damaged at entry %d; the update must start over" % i)
        return k

    def __getitem__(self, i):
        i = self._at(i)
        k = self._read(i)
        try:
            e = _entry(self._b, 37, k)
            check_path(e["path"])  # a record damaged on flash must not name a place outside the app
        except (BundleError, UnicodeError):
            raise BundleError("the file list kept on flash is damaged at entry %d; the update must start over" % i)
        return e

    def digest(self, i):
        self._read(i)
        return bytes(memoryview(self._b)[:32])

    def add(self, f):
        """Append a checked entry (a dict); BundleError if its path is listed
        already or the list is full."""
        n = self._n
        if n == len(self._h):
            raise BundleError("manifest must list 1..%d files" % _MAX_FILES)
        p = f["path"].encode()
        k = len(p)
        h = k
        for c in p:
            h = (h * 31 + c) & 0xFF
        for i in range(n):
            if self._h[i] == h and self._read(i) == k and bytes(memoryview(self._b)[37:37 + k]) == p:
                raise BundleError("file %r listed twice" % f["path"])
        b = self._b
        b[:32] = binascii.unhexlify(f["sha256"])
        b[32:36] = _size(f)
        b[36] = k
        b[37:37 + k] = p
        for j in range(37 + k, _REC):
            b[j] = 0
        self._f.seek(n * _REC)
        if self._f.write(b) != _REC:
            raise BundleError("no room on flash for the file list (entry %d)" % n)
        self._h[n] = h
        self._n = n + 1


class Reader:
    """Incremental bundle reader:

        for ev, val in r.feed(data): ...

    and feed(b"") once the download has ended. Events: (MANIFEST, m) once,
    then per file (FILE, entry), (DATA, memoryview) any number of times,
    (DONE, entry) once its hash matched, and finally (END, m). A short,
    long, oversized or corrupt bundle raises BundleError; after an error
    every feed raises it again.

    files: where the manifest's entries are kept, an empty Files (the
    default, made when the manifest's list starts) or Listed (on flash: the
    board's); the manifest's "files" is this object."""

    def __init__(self, max_total=MAX_TOTAL, files=None):
        self.max_total = max_total
        self._store = files
        self._buf = bytearray(_HDR)
        self._n = 0
        self._man = None  # the manifest's decoder while it streams in
        self._st = _S_HDR
        self._err = None
        self.manifest = None
        self._files = Files(0)  # the manifest's entries, once it is in
        self._cur = None  # the current file's entry
        self._i = 0  # index of the current file
        self._left = 0
        self._hash = hashlib.sha256()  # replaced per file
        self.received = 0  # bundle bytes consumed

    def done(self):
        return self._st == _S_END

    def held(self):
        """Bytes the reader holds between feeds: the header's, then one piece
        of the manifest (at most bundlemf's 320), then none."""
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
                    from .bundlemf import Decoder

                    self._man = Decoder(size, self.max_total, self._store)
                    self._store = None  # the decoder's now
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
