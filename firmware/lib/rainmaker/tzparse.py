# The POSIX TZ string parser of rainmaker.tz, loaded only while parsing
# (tz.parse imports it and drops it again). The form, as POSIX and RFC 8536
# have it: std offset[dst[offset][,start[/time],end[/time]]], names of 3+
# letters or <quoted> with digits and signs, offsets [+-]hh[:mm[:ss]] counted
# west of UTC, dates Mm.w.d, Jn or n, times -167..167 hours.
from micropython import const
from .tz import Zone

_MAX_TEXT = const(64)  # the longest POSIX string in the table has 44 chars
FORM = "std offset[dst[offset][,start[/time],end[/time]]]"  # as CET-1CEST,M3.5.0,M10.5.0/3


class _Text:
    # A cursor over the TZ string, for error messages that say where.
    def __init__(self, s):
        self.s = s
        self.i = 0
        self.at = 0

    def peek(self):
        return self.s[self.i] if self.i < len(self.s) else ""

    def fail(self, why, at=None):
        raise ValueError("bad POSIX TZ %r at position %d: %s (form: %s)"
                         % (self.s, self.i if at is None else at, why, FORM))

    def digits(self, what, most, least=1):
        # Leaves self.at at the number's first digit, for the range errors.
        j = self.at = self.i
        while j < len(self.s) and self.s[j] in "0123456789" and j - self.i < most:
            j += 1
        if j - self.i < least:
            self.fail("expected %s (%s)" % (what, "a number" if least == 1 else "%d digits" % least))
        n = int(self.s[self.i:j])
        self.i = j
        return n

    def name(self, what):
        s = self.s
        if self.peek() == "<":
            j = s.find(">", self.i)
            if j < 0:
                self.fail("%s name has no closing '>'" % what)
            n = s[self.i + 1:j]
            for c in n:
                if not (c.isalpha() or c in "0123456789+-"):
                    self.fail("%r in the quoted %s name (letters, digits, + and - only)" % (c, what))
            if len(n) < 3:
                self.fail("%s name %r is shorter than 3 characters" % (what, n))
            self.i = j + 1
            return n
        j = self.i
        while j < len(s) and s[j].isalpha() and s[j] != "<":
            j += 1
        if j - self.i < 3:
            self.fail("expected a %s name of 3 or more letters (or <+0530> quoted)" % what)
        n = s[self.i:j]
        self.i = j
        return n

    def hms(self, what, most):
        """[+-]hh[:mm[:ss]] in seconds, hours 0..most."""
        sign = 1
        c = self.peek()
        if c in ("+", "-") and c:
            sign = -1 if c == "-" else 1
            self.i += 1
        h = self.digits(what + " hours", 3)
        if h > most:
            self.fail("%s hours %d out of 0..%d" % (what, h, most), self.at)
        sec = h * 3600
        for unit in ("minutes", "seconds"):
            if self.peek() != ":":
                break
            self.i += 1
            v = self.digits("%s %s" % (what, unit), 2, 2)
            if v > 59:
                self.fail("%s %s %d out of 0..59" % (what, unit, v), self.at)
            sec += v * (60 if unit == "minutes" else 1)
        return sign * sec

    def rule(self):
        c = self.peek()
        if c == "J":
            self.i += 1
            n = self.digits("Julian day", 3)
            if not 1 <= n <= 365:
                self.fail("Julian day J%d out of 1..365" % n, self.at)
            r = [0, n, 0, 0]
        elif c == "M":
            self.i += 1
            m = self.digits("month", 2)
            if not 1 <= m <= 12:
                self.fail("month %d out of 1..12" % m, self.at)
            parts = [m]
            for what, hi in (("week", 5), ("weekday", 6)):
                if self.peek() != ".":
                    self.fail("expected '.' and the %s in Mm.w.d" % what)
                self.i += 1
                v = self.digits(what, 1)
                if v > hi or (what == "week" and v < 1):
                    self.fail("%s %d out of %d..%d" % (what, v, 1 if what == "week" else 0, hi), self.at)
                parts.append(v)
            r = [2, parts[0], parts[1], parts[2]]
        elif c and c in "0123456789":
            n = self.digits("day of year", 3)
            if n > 365:
                self.fail("day of year %d out of 0..365" % n, self.at)
            r = [1, n, 0, 0]
        else:
            self.fail("expected a transition date: Mm.w.d, Jn or n")
        t = 7200  # 02:00 unless given
        if self.peek() == "/":
            self.i += 1
            t = self.hms("transition time", 167)  # RFC 8536 allows -167..167 hours
        r.append(t)
        return tuple(r)


def parse(posix):
    if not isinstance(posix, str):
        raise ValueError("a POSIX TZ must be a string, not %s" % type(posix).__name__)
    if not posix:
        raise ValueError("empty POSIX TZ (form: %s)" % FORM)
    if len(posix) > _MAX_TEXT:
        raise ValueError("POSIX TZ of %d characters is too long (at most %d)" % (len(posix), _MAX_TEXT))
    p = _Text(posix)
    std = p.name("standard time")
    if not p.peek():
        p.fail("the standard time needs a UTC offset, e.g. %s0" % std)
    std_off = -p.hms("UTC offset", 24)
    if not p.peek():
        return Zone(posix, std, std_off)
    if p.peek() == ",":
        p.fail("transition rules need a daylight time name first")
    dst = p.name("daylight time")
    dst_off = std_off + 3600
    c = p.peek()
    if c and c in "+-0123456789":
        dst_off = -p.hms("daylight UTC offset", 24)
    if not p.peek():
        # No rules: the US ones, as newlib and glibc assume.
        return Zone(posix, std, std_off, dst, dst_off, (2, 3, 2, 0, 7200), (2, 11, 1, 0, 7200))
    if p.peek() != ",":
        p.fail("unexpected %r" % p.peek())
    p.i += 1
    start = p.rule()
    if p.peek() != ",":
        p.fail("expected ',' and the end of daylight time")
    p.i += 1
    end = p.rule()
    if p.peek():
        p.fail("unexpected %r after the rules" % p.peek())
    return Zone(posix, std, std_off, dst, dst_off, start, end)
