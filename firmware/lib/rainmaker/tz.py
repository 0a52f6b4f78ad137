# Time zones for a port without them (docs/protocol.md#time-service): the zone
# in effect and what reading it needs (local time, offset from UTC). Kept
# small, as it stays loaded with the Time service: the POSIX TZ parser
# (tzparse.py) and the IANA table search (zones.py) are loaded only for a
# new zone and dropped after; the Time service is built by std.py, wall
# time -> UTC is computed by the schedule engine (sched.wall).
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
from .node import Param

_DAY = const(86400)

# The IANA table (zones.txt) for zones.lookup: "" = found next to zones.py or
# under lib/rainmaker; a frozen agent or a test may set it. Here, not in
# zones.py, because that module is dropped after each lookup.
path = ""


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


def _rule_day(r, y):
    """The day (since 1970) on which rule r falls in year y."""
    kind = r[0]
    if kind == 0:  # Jn: 1..365, February 29 never counted, so J60 is always March 1
        n = r[1]
        return _days(y, 1, n) if n < 60 else _days(y, 3, n - 59)
    if kind == 1:  # n: 0..365, February 29 counted
        return _days(y, 1, 1) + r[1]
    m, w, wd = r[1], r[2], r[3]  # Mm.w.d: day wd (0 = Sunday) of week w (5 = last)
    first = _days(y, m, 1)
    d = 1 + (wd - (first + 4)) % 7 + (w - 1) * 7  # 1970-01-01 was a Thursday
    last = _days(y, m + 1, 1) - first  # the month's length (month 13 is next January)
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

    def offset(self, utc):
        """Seconds east of UTC in effect at the instant utc."""
        std = self.std_off
        s, e = self.start, self.end
        if self.dst is None or s is None or e is None:
            return std
        # The year is taken in local standard time, and both transitions are
        # placed in seconds after that year's start in standard time: small
        # numbers (a Unix time is a heap-allocated int on a 32-bit port).
        days, sec = divmod(int(utc) + std, _DAY)  # int(): a float time counts too
        y = _civil(days)[0]
        y0 = _days(y, 1, 1)
        x = (days - y0) * _DAY + sec
        # The start happens on standard time, the end on daylight time.
        a = (_rule_day(s, y) - y0) * _DAY + s[4]
        b = (_rule_day(e, y) - y0) * _DAY + e[4] - (self.dst_off - std)
        if a < b:
            on = a <= x < b
        else:
            on = not b <= x < a  # southern hemisphere: daylight time spans the new year
        return self.dst_off if on else std

    def local(self, utc):
        """(year, month, mday, hour, minute, second, weekday 0=Monday, yearday 1..366) at utc."""
        utc = int(utc)
        days, sec = divmod(utc + self.offset(utc), _DAY)
        y, m, d = _civil(days)
        return (y, m, d, sec // 3600, sec // 60 % 60, sec % 60, (days + 3) % 7,
                days - _days(y, 1, 1) + 1)


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


UTC = Zone("UTC0", "UTC", 0)
current = UTC  # set by the Time service (std.time_service)


# -- the Time service's params (docs/protocol.md#time-service) ------------------
# The code of the running params lives here, with the zone they set; the
# service is built by std.time_service(), dropped with std once the node is.

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
            # Schedules armed in the old zone fire at the wrong wall time:
            # have them re-armed at the next poll rather than at their next
            # due time. Looked up, not imported: a node without schedules
            # never loads that module.
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
        from . import zones
        from .node import unload

        try:
            posix = zones.written(name)
        finally:
            unload("zones")  # the search code is needed again only for the next name
        if posix is not None:
            out["TZ"] = name
            out["TZ-POSIX"] = posix
    if "TZ-POSIX" in values:
        out["TZ-POSIX"] = values["TZ-POSIX"]
    return out

