# The IANA time zone table (zones.txt, next to this module): name -> POSIX TZ
# string, searched on flash (docs/protocol.md#time-service).
#
# Needed only when a TZ name is written or the Time service is built: the
# caller imports this module for the lookup and drops it again with
# node.unload("zones"), so the search code never stays in the heap. Where the
# table lies is set with rainmaker.tz.path (resident, so a setting survives
# the unloads).
from micropython import const
from . import tz

_MAX_NAME = const(48)  # the longest IANA name is 32 chars
_BUF = const(160)  # twice the longest line of the table (78 bytes) and more
_NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789/_+-."
_TABLE = "rainmaker/zones.txt"


def _table():
    # tz.path when set; else next to this module when it is a file, else
    # where deploy puts it (a frozen agent has no file of its own), else
    # relative to the working directory (a simulated board runs in its board
    # folder). The one found is kept in tz.path for the next lookup.
    here = globals().get("__file__") or ""
    if tz.path:
        cands = [tz.path]
    else:
        cands = ["/lib/" + _TABLE, "lib/" + _TABLE]
        if "/" in here:
            cands.insert(0, here.rsplit("/", 1)[0] + "/zones.txt")
    for c in cands:
        try:
            f = open(c, "rb")
        except OSError:
            continue
        tz.path = c
        return f
    raise OSError("no time zone table: %s not found (deploy lib/%s with the agent)" % (cands[0], _TABLE))


def _line(f, buf, pos):
    """(start, end) in buf of the first line that starts at or after byte pos, or None at the end.

    One read of buf's length from pos - 1: enough for the rest of a line and
    a whole next one, as every line is shorter than half of buf.
    """
    at = pos - 1 if pos else 0
    f.seek(at)
    n = f.readinto(buf)
    i = 0
    if pos:
        while i < n and buf[i] != 10:  # the rest of the line that holds byte pos - 1
            i += 1
        i += 1
    j = i
    while j < n and buf[j] != 10:
        j += 1
    if i >= n or j >= n:
        return None  # past the last line (or a line too long for buf: not in this table)
    return i, j


def _cmp(buf, i, j, key):
    """The line's name (lowercased) compared with key: -1, 0 or 1."""
    k = 0
    nk = len(key)
    while i < j:
        c = buf[i]
        if c == 32:  # the end of the name
            break
        if 65 <= c <= 90:
            c += 32
        if k == nk or c > key[k]:
            return 1
        if c < key[k]:
            return -1
        i += 1
        k += 1
    return -1 if k < nk else 0


def lookup(name):
    """The POSIX TZ string of an IANA zone name ("Europe/Berlin"), or None if unknown.

    Case does not matter, and a space stands for '_' ("america/new york").
    The table is searched on flash with one small buffer, never loaded.
    OSError if the table is not on the board.
    """
    if not isinstance(name, str):
        return None
    key = name.strip().lower().replace(" ", "_")
    if not 0 < len(key) <= _MAX_NAME:
        return None
    for c in key:
        if c not in _NAME_CHARS:
            return None
    key = key.encode()
    buf = bytearray(_BUF)
    f = _table()
    try:
        lo, hi = 0, f.seek(0, 2)
        # Lines are sorted by lowercased name: find the first line whose
        # name is not below key, by the byte position it starts after.
        while lo < hi:
            mid = (lo + hi) // 2
            r = _line(f, buf, mid)
            if r and _cmp(buf, r[0], r[1], key) < 0:
                lo = mid + 1
            else:
                hi = mid
        r = _line(f, buf, lo)
    finally:
        f.close()
    if r and _cmp(buf, r[0], r[1], key) == 0:
        i = r[0] + len(key) + 1
        try:
            return bytes(buf[i:r[1]]).decode()
        except UnicodeError:  # a damaged table; the caller parses what it gets anyway
            return None
    return None


def written(name):
    """lookup() for a TZ name the apps wrote: the POSIX string, or None with the reason logged."""
    from . import log

    try:
        posix = lookup(name)
    except OSError as e:
        log.error("time", str(e))
        return None
    if posix is None:
        log.warn("time", "unknown time zone %r: give an IANA name such as Europe/Berlin, "
                 "or write TZ-POSIX" % (name,))
    return posix
