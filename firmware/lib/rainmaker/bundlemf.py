# An app bundle's manifest, decoded as it streams in (docs/ota.md#app-bundles).
#
# bundle.Reader loads this module when a bundle's header has arrived, and
# fetch.Bundle drops it once the manifest is read: on a board that loads the
# agent from .mpy files its code takes RAM only while a manifest arrives.
#
# The JSON is cut at its structure (outside strings): each key of the manifest
# object with its value, and each entry of its "files" array, is gathered in
# one small buffer and decoded on its own. So the largest block needed is
# _PIECE bytes, not the manifest's up to 8 KB: one block that size is often
# not to be had in a long-running node's fragmented heap, though the memory
# is. The entries are checked as they arrive and kept packed (bundle.Files), or
# on the board in a file on flash (bundle.Listed).
from micropython import const
import json

from .bundle import BundleError, Files, check_entry, check_top

_PIECE = const(320)  # bytes of one manifest key or file entry (one is ~120)
_MAX_KEYS = const(16)  # in the manifest object: format, version, total, files, chip, arch and a few more

_M_START = const(0)  # before the manifest object
_M_MEMBER = const(1)  # in a key of it (or its value)
_M_ENTRY = const(2)  # in "files": an entry or its end next (in an entry: depth > 2)
_M_COMMA = const(3)  # in "files": a comma or its end next
_M_FILES = const(4)  # after the files' array, before its , or }
_M_END = const(5)  # after the manifest object


def _loads(buf, n):
    # Decoded as UTF-8 first: CPython's json would guess UTF-16 or -32 from bytes.
    try:
        return json.loads(str(memoryview(buf)[:n], "utf-8"))
    except (ValueError, UnicodeError, RuntimeError, IndexError):
        # RuntimeError: nesting too deep for the parser
        raise BundleError("manifest is not valid UTF-8 JSON")


def _blank(c):
    return c == 0x20 or c == 0x0A or c == 0x0D or c == 0x09


class Decoder:
    """One manifest of `size` bytes: feed() it those bytes, in pieces of any
    size; the last feed returns the manifest dict, checked, its "files" the
    `files` given (an empty bundle.Files or bundle.Listed; None: a new
    Files). A broken rule or broken JSON raises BundleError."""

    def __init__(self, size, max_total, files=None):
        self.left = size  # manifest bytes still to come
        self.max_total = max_total
        self.buf = bytearray(_PIECE)
        self.n = 0
        self.depth = 0  # brackets open; 1: in the manifest object
        self.state = _M_START
        self.str = False  # in a string
        self.esc = False  # after a backslash in a string
        self.m = {}
        self.store = files  # where the entries go (None: a Files made for them)
        self.files = None  # the entries, once "files" has started
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
                    self.files = Files() if self.store is None else self.store
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
        check_top(self.m, self.sum, self.max_total)
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
        self.sum += check_entry(f)
        if self.sum > self.max_total:
            raise BundleError("manifest total must be an integer of at most %d bytes (the files add up to more)"
                              % self.max_total)
        files.add(f)
        self.state = _M_COMMA
        self.n = 0
