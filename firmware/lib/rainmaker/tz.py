# Time zones for a port without them (docs/protocol.md#time-service): POSIX TZ
# strings parsed and evaluated here, and the IANA name table read from flash.
#
# Every time in this module is Unix seconds (since 1970-01-01 UTC), whatever
# the port's own epoch is (2000 on the ESP32): the caller converts once. The
# calendar arithmetic is our own because MicroPython has no timegm and its
# time module follows the port's epoch.
#
# The Time service sets `current`; readers look it up through the module
# every time (tz.current.local(t)), never keep it, so a new zone takes effect
# at once.
from micropython import const
from .node import Device, Param, READ, WRITE, PERSIST

_DAY = const(86400)
_MAX_NAME = const(48)  # the longest IANA name is 32 chars
_BUF = const(160)  # twice the longest line of the table (78 bytes) and more
_NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789/_+-."

# Where lookup() finds the table: next to this module when it is a file, else
# where deploy puts it (a frozen agent has no file of its own), else relative
# to the working directory (a simulated board runs in its board folder).
path = ""
_TABLE = "rainmaker/zones.txt"


def _days(y, m, d):
    """Days from 1970-01-01 to y-m-d (proleptic Gregorian; d may run past the month)."""
    # Count from March of a 400-year era, so that the leap day is the last day
    # of a counted year and month lengths follow a fixed 153-days-per-5 pattern.
    if m <= 2:
        y -= 1
        m += 9
    else:
        m -= 3
    era = y // 400
    yoe = y - era * 400
    doe = yoe * 365 + yoe // 4 - yoe // 100 + (153 * m + 2) // 5 + d - 1
    return era * 146097 + doe - 719468


def _civil(n):
    """(year, month, day) of day n after 1970-01-01: the inverse of _days."""
    n += 719468
    era = n // 146097
    doe = n - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (yoe * 365 + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    y = yoe + era * 400
    if mp < 10:
        return y, mp + 3, d
    return y + 1, mp - 9, d


def _leap(y):
    return y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)


def _mdays(y, m):
    if m == 2:
        return 29 if _leap(y) else 28
    return 30 if m in (4, 6, 9, 11) else 31


def _rule_day(r, y):
    """The day (since 1970) on which rule r falls in year y."""
    kind = r[0]
    if kind == 0:  # Jn: 1..365, February 29 never counted
        n = r[1]
        return _days(y, 1, n + (1 if n > 59 and _leap(y) else 0))
    if kind == 1:  # n: 0..365, February 29 counted
        return _days(y, 1, 1) + r[1]
    m, w, wd = r[1], r[2], r[3]  # Mm.w.d: day wd (0 = Sunday) of week w (5 = last)
    first = _days(y, m, 1)
    d = 1 + (wd - (first + 4)) % 7 + (w - 1) * 7  # 1970-01-01 was a Thursday
    last = _mdays(y, m)
    while d > last:
        d -= 7
    return first + d - 1


class Zone:
    """A POSIX TZ rule. Offsets are seconds east of UTC (the TZ string counts west)."""

    def __init__(self, posix, std, std_off, dst=None, dst_off=0, start=None, end=None):
        self.posix = posix
        self.std = std
        self.std_off = std_off
        self.dst = dst  # None: no daylight saving time
        self.dst_off = dst_off
        self.start = start  # (kind, a, b, c, seconds after local midnight)
        self.end = end

    def __repr__(self):
        return "Zone(%r)" % self.posix

    def _is_dst(self, utc):
        # The year is taken in local standard time, and both transitions are
        # placed in seconds after that year's start in standard time: small
        # numbers (a Unix time is a heap-allocated int on a 32-bit port).
        days, sec = divmod(int(utc) + self.std_off, _DAY)  # int(): a float time counts too
        y = _civil(days)[0]
        y0 = _days(y, 1, 1)
        x = (days - y0) * _DAY + sec
        s, e = self.start, self.end
        if s is None or e is None:
            return False
        # The start happens on standard time, the end on daylight time.
        a = (_rule_day(s, y) - y0) * _DAY + s[4]
        b = (_rule_day(e, y) - y0) * _DAY + e[4] - (self.dst_off - self.std_off)
        if a < b:
            return a <= x < b
        return not b <= x < a  # southern hemisphere: daylight time spans the new year

    def offset(self, utc):
        """Seconds east of UTC in effect at the instant utc."""
        if self.dst is not None and self._is_dst(utc):
            return self.dst_off
        return self.std_off

    def name(self, utc):
        """The abbreviation in effect at utc ("CET", "+0530")."""
        if self.dst is not None and self._is_dst(utc):
            return self.dst
        return self.std

    def local(self, utc):
        """(year, month, mday, hour, minute, second, weekday 0=Monday, yearday 1..366) at utc."""
        utc = int(utc)
        days, sec = divmod(utc + self.offset(utc), _DAY)
        y, m, d = _civil(days)
        return (y, m, d, sec // 3600, sec // 60 % 60, sec % 60, (days + 3) % 7,
                days - _days(y, 1, 1) + 1)

    def utc(self, year, month, mday, hour, minute, second=0):
        """Unix seconds at which the local wall clock shows this time.

        Fields may run over (mday 32, hour 24, minute -5): they are counted on.
        Two wall times have no single answer:
        - a time the clock skips (spring forward) gives the instant the gap
          ends, when the clock jumps past it: a 02:30 alarm on a day that goes
          from 02:00 to 03:00 fires at 03:00, not an hour later or never;
        - a time the clock shows twice (fall back) gives the first one: a
          01:30 alarm on a day that repeats 01:00-02:00 fires once, at the
          first 01:30.
        """
        if not 1 <= month <= 12:
            raise ValueError("month %r is not 1..12" % (month,))
        wall = _days(year, month, mday) * _DAY + hour * 3600 + minute * 60 + second
        t1 = wall - self.std_off
        if self.dst is None:
            return t1
        t2 = wall - self.dst_off
        ok1 = self.offset(t1) == self.std_off
        ok2 = self.offset(t2) == self.dst_off
        if ok1 and ok2:
            return min(t1, t2)
        if ok1:
            return t1
        if ok2:
            return t2
        # In a gap: the transition lies in (lo, hi]; find it by halving.
        lo, hi = min(t1, t2), max(t1, t2)
        before = self.offset(lo)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.offset(mid) == before:
                lo = mid
            else:
                hi = mid
        return hi


def parse(posix):
    """A Zone from a POSIX TZ string; ValueError saying what is wrong if malformed."""
    # The parser is a module of its own, loaded for the few parses a boot
    # needs (the stored zone, a written one) and dropped after: its code
    # would otherwise stay in the heap for nothing.
    from . import tzparse
    from .node import unload

    try:
        return tzparse.parse(posix)
    finally:
        unload("tzparse")


def now():
    """Unix seconds now, on any port (the ESP32's time.time() counts from 2000)."""
    import time

    t = int(time.time())  # a float on the unix port
    return t + 946684800 if time.gmtime(0)[0] == 2000 else t


UTC = Zone("UTC0", "UTC", 0)
current = UTC  # set by the Time service (std.time_service)


def _table():
    global path
    here = globals().get("__file__") or ""
    if path:
        cands = [path]
    else:
        cands = ["/lib/" + _TABLE, "lib/" + _TABLE]
        if "/" in here:
            cands.insert(0, here.rsplit("/", 1)[0] + "/zones.txt")
    for c in cands:
        try:
            f = open(c, "rb")
        except OSError:
            continue
        path = c
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


# -- the Time service's params (docs/protocol.md#time-service) ------------------
# Their code lives here, with the zone they set, so that std.py (which builds
# the service) holds nothing the running node needs.

class _Posix(Param):
    # The TZ-POSIX param: only a parseable POSIX TZ string (or "", meaning
    # UTC) passes check(), and every value it takes, whether written,
    # restored from flash at boot or set locally, becomes `current` at once.

    def check(self, v):
        err, v = Param.check(self, v)
        if err is None and v:
            try:
                parse(v)
            except ValueError as e:
                return str(e), None
        return err, v

    @property
    def value(self):
        return self._v

    @value.setter
    def value(self, v):
        global current
        self._v = v
        old = current
        if not v:
            current = UTC
        elif old.posix != v:  # the restored or echoed zone is often the one in effect
            current = parse(v)
        if current is not old:
            _rezone()


def _rezone():
    # Schedules armed in the old zone fire at the wrong wall time: have them
    # re-armed at the next poll rather than at their next due time. Looked
    # up, not imported: a node without schedules never loads that module.
    import sys

    k = getattr(sys.modules.get("rainmaker.keeper"), "_keeper", None)
    if k is not None:
        k.rezone()


def _time_write(dev, values, source):
    # A TZ name is looked up and, if known, both params change; a TZ-POSIX
    # written in the same message wins, as the SDK applies it second.
    out = {}
    name = values.get("TZ")
    if name is not None:
        from . import log

        try:
            posix = lookup(name)
        except OSError as e:
            posix = None
            log.error("time", str(e))
        else:
            if posix is None:
                log.warn("time", "unknown time zone %r: give an IANA name such as Europe/Berlin, "
                         "or write TZ-POSIX" % (name,))
        if posix is not None:
            out["TZ"] = name
            out["TZ-POSIX"] = posix
    if "TZ-POSIX" in values:
        out["TZ-POSIX"] = values["TZ-POSIX"]
    return out


def service(default=""):
    """The Time service (std.time_service() builds it through this)."""
    posix = (lookup(default) or "") if default else ""
    if default and not posix:
        raise ValueError("default time zone %r is not in the IANA table" % (default,))
    d = Device("Time", "esp.service.time", _time_write, service=True)
    d.add(Param("TZ", default if posix else "", "string", "esp.param.tz", READ | WRITE | PERSIST))
    d.add(_Posix("TZ-POSIX", posix, "string", "esp.param.tz_posix", READ | WRITE | PERSIST))
    return d
