# The Schedule and Scenes services (docs/protocol.md#schedules), without I/O.
#
# Writes to the "Schedules" / "Scenes" params are lists of operations; the
# engine applies them one element at a time (a bad element is refused with a
# logged reason, the others still apply) and answers with the full list, which
# is both what is reported and what is persisted. Time comes in as `now`
# (Unix seconds, UTC); local wall-clock times come from a zone object as
# rainmaker.tz makes them: local(utc), offset(utc) and its two offsets
# (std_off, dst_off; dst None when it has no daylight time), from which wall()
# here finds the instant of a wall time. Integer maths only: the ESP32's
# floats are single precision.
#
# Firing rules (why: a schedule must neither fire twice nor silently vanish
# when the clock moves):
# - Nothing is armed or fired while the clock is unset (before 2019).
# - Each enabled schedule keeps `due`, its next occurrence not yet handled;
#   it is reported (and so persisted) as the trigger's "ts". After a reboot the
#   persisted ts says which occurrence is next, so one that fired is not fired
#   again and one that fell due during the reboot is still known.
# - An occurrence is fired if it is found at most CATCHUP (10 min) late: a
#   reboot or NTP step; an older one is skipped and logged (a light switching
#   on hours late surprises more than one that did not switch).
# - A clock that steps back keeps `due`, so nothing fires twice; only a step
#   back of more than a day (the clock was wrong when `due` was computed)
#   re-arms from the corrected time.
# - A change of time zone re-arms every schedule from now.
#
# This module is large and is not kept in the heap: the Keeper (keeper.py) loads it for
# a piece of work (serve(), at the end) and drops it. Each time, the engine is
# rebuilt from the params, whose values are the lists with every ts; so the
# rules above hold across loads as across reboots.
import json
import sys
from micropython import const
from . import log

CLOCK_SET = const(1546300800)  # 2019-01-01: an earlier clock has not been set
CATCHUP = const(600)
MAX = const(10)  # schedules, and scenes, per node
_DAY = const(86400)
_ID = const(8)
_NAME = const(32)
_INFO = const(128)
_SCENE_INFO = const(100)
_OP = const(10)
_ACTION = const(1024)  # JSON text of one action
_TRIGGERS = const(8)  # only the first is used; more is a malformed write
_QUEUE = const(10)  # scene actions waiting for the driver
_INT32 = const(2147483647)
_TS_MAX = const(4102444800)  # 2100-01-01: any later epoch is garbage
_YEAR_MAX = const(2099)


# -- calendar (proleptic Gregorian, days since 1970-01-01) ----------------------

def days(y, m, d):
    """Days from 1970-01-01 to y-m-d."""
    if m <= 2:
        y -= 1
        m += 12
    # Counting from 1 March makes the leap day the last day of the year.
    return 365 * y + y // 4 - y // 100 + y // 400 + (153 * (m - 3) + 2) // 5 + d - 719469


def date(n):
    """(year, month, day) of day n since 1970-01-01."""
    n += 719468  # days since 0000-03-01
    era = n // 146097
    doe = n - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (m <= 2), m, d


def mdays(y, m):
    if m == 2:
        return 29 if (y % 4 == 0 and y % 100 != 0) or y % 400 == 0 else 28
    return 30 if m in (4, 6, 9, 11) else 31


class Utc:
    """The zone used when no time zone is known: local time is UTC."""

    std_off = dst_off = 0
    dst = None

    def local(self, t):
        n = t // _DAY
        s = t - n * _DAY
        y, m, d = date(n)
        return y, m, d, s // 3600, s // 60 % 60, s % 60, (n + 3) % 7, n - days(y, 1, 1) + 1

    def offset(self, t):
        return 0


UTC = Utc()


def wall(z, y, m, d, h, mi, s=0):
    """Unix seconds at which zone z's wall clock shows this time.

    Here, not in rainmaker.tz, because only this engine needs it: the zone
    that stays loaded keeps only what local() and offset() need.
    Fields may run over (d 32, h 24, mi -5): they are counted on.
    Two wall times have no single answer:
    - a time the clock skips (spring forward) gives the instant the gap
      ends, when the clock jumps past it: a 02:30 alarm on a day that goes
      from 02:00 to 03:00 fires at 03:00, not an hour later or never;
    - a time the clock shows twice (fall back) gives the first one: a
      01:30 alarm on a day that repeats 01:00-02:00 fires once, at the
      first 01:30.
    """
    if not 1 <= m <= 12:
        raise ValueError("month %r is not 1..12" % (m,))
    w = days(y, m, d) * _DAY + h * 3600 + mi * 60 + s
    std = z.std_off
    t1 = w - std
    if z.dst is None:
        return t1
    dst = z.dst_off
    t2 = w - dst
    ok1 = z.offset(t1) == std
    ok2 = z.offset(t2) == dst
    if ok1 and ok2:
        return min(t1, t2)
    if ok1:
        return t1
    if ok2:
        return t2
    # In a gap: the transition lies in (lo, hi]; find it by halving.
    lo, hi = min(t1, t2), max(t1, t2)
    before = z.offset(lo)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if z.offset(mid) == before:
            lo = mid
        else:
            hi = mid
    return hi


def _int(v, lo, hi):
    return type(v) is int and lo <= v <= hi


def _flag(v):
    # JSON true/false, and 1/0 as the SDK itself reports "r".
    if v is True or v is False:
        return v
    if type(v) is int and v in (0, 1):
        return v == 1
    return None


def _op(v, ops):
    """The operation named by v: the SDK takes any prefix ("en" is enable)."""
    if not isinstance(v, str) or not 0 < len(v) <= _OP:
        return None
    for o in ops:
        if o.startswith(v):
            return o
    return None


def _text(e, key, limit, need):
    """(error, value) of an optional/required bounded string field."""
    v = e.get(key)
    if v is None:
        return ("%s is required" % key if need else None), None
    if not isinstance(v, str):
        return "%s must be a string" % key, None
    if len(v) > limit:
        return "%s is longer than %d chars" % (key, limit), None
    if need and not v:
        return "%s must not be empty" % key, None
    return None, v


def _action(e, need):
    v = e.get("action")
    if v is None:
        return ("action is required" if need else None), None
    if not isinstance(v, dict) or not v:
        return "action must be a non-empty object of devices", None
    try:
        n = len(json.dumps(v))
    except (TypeError, ValueError):
        return "action is not valid JSON", None
    if n > _ACTION:
        return "action is %d bytes, more than %d" % (n, _ACTION), None
    return None, v


def _common(e, s, add, info_max):
    """Set name, info, flags and action of s (a Sched or Scene) from e; an error text or None."""
    err, name = _text(e, "name", _NAME, add)
    if err:
        return err
    err, info = _text(e, "info", info_max, False)
    if err:
        return err
    f = e.get("flags", s.flags)
    if not _int(f, -_INT32 - 1, _INT32):
        return "flags must be a 32-bit integer"
    err, action = _action(e, add)
    if err:
        return err
    if name:
        s.name = name
    if info is not None:
        s.info = info  # "" removes it
    s.flags = f
    if action is not None:
        s.action = action
    return None


_FIELDS = ("name", "enabled", "info", "flags", "start", "end", "action", "kind", "m", "d", "dd", "mm",
           "yy", "r", "rsec", "due", "restored")


class Sched:
    # One schedule. kind: "r" relative, "d" days of week, "dd" date.
    def __init__(self, id):
        self.id = id
        self.name = ""
        self.enabled = True
        self.info = ""
        self.flags = 0
        self.start = 0
        self.end = 0
        self.action = {}
        self.kind = ""
        self.m = 0
        self.d = 0
        self.dd = 0
        self.mm = 0
        self.yy = 0
        self.r = False
        self.rsec = 0
        self.due = 0  # next occurrence not yet handled; 0 = not armed
        self.restored = False  # due came from flash: check it against the clock

    def copy(self):
        # An edit is built on a copy, so a refused edit leaves the original.
        # (MicroPython's instance __dict__ cannot be updated wholesale.)
        c = Sched(self.id)
        for k in _FIELDS:
            setattr(c, k, getattr(self, k))
        return c

    def once(self):
        return self.kind == "r" or (self.kind == "d" and not self.d) or (self.kind == "dd" and not self.mm)

    def trigger(self):
        k = self.kind
        if k == "r":
            t = {"rsec": self.rsec}
        elif k == "d":
            t = {"m": self.m, "d": self.d}
        else:
            t = {"m": self.m, "dd": self.dd, "mm": self.mm, "yy": self.yy, "r": int(self.r)}
        # The SDK reports ts only for one-shots; every trigger has it here,
        # because it is what survives a reboot (see the top of this file).
        t["ts"] = self.due
        return t

    def report(self):
        o = {"name": self.name, "id": self.id, "enabled": self.enabled}
        if self.info:
            o["info"] = self.info
        if self.flags:
            o["flags"] = self.flags
        if self.start or self.end:
            v = {}
            if self.start:
                v["start"] = self.start
            if self.end:
                v["end"] = self.end
            o["validity"] = v
        o["action"] = self.action
        o["triggers"] = [self.trigger()]
        return o

    # -- next occurrence ------------------------------------------------------

    def after(self, base, z):
        """The first occurrence later than base (Unix s), or None if none is left."""
        if self.kind == "r":
            return None  # a countdown is armed once, in arm()
        if self.start and base < self.start - 1:
            base = self.start - 1
        h = self.m // 60
        mi = self.m % 60
        lt = z.local(base)
        n = days(lt[0], lt[1], lt[2])
        t = None
        if self.kind == "d" or not self.dd:
            # Days of week, or the all-wildcard date (the next HH:MM).
            mask = self.d if self.kind == "d" else 0
            for k in range(9):
                if mask and not mask >> ((n + k + 3) % 7) & 1:
                    continue
                y, m, d = date(n + k)
                c = wall(z, y, m, d, h, mi)
                if c > base:
                    t = c
                    break
        else:
            t = self._date(base, lt, z, h, mi)
        if t is None or (self.end and t > self.end):
            return None
        return t

    def _date(self, base, lt, z, h, mi):
        y = lt[0]
        m = lt[1]
        last = None  # last year that may match
        if self.yy:
            if y > self.yy and not (self.r and self.mm):
                return None
            if y < self.yy:
                y = self.yy
                m = 1
            if not self.r:
                last = self.yy
        elif self.mm and not self.r:
            last = y  # a month mask alone covers the current year only
        # 9 years of months: Feb 29 is at most 8 years from the next one.
        for _ in range(108):
            if last is not None and y > last:
                return None
            if (not self.mm or self.mm >> (m - 1) & 1) and self.dd <= mdays(y, m):
                c = wall(z, y, m, self.dd, h, mi)
                if c > base:
                    return c
            m += 1
            if m > 12:
                m = 1
                y += 1
        return None


def parse_trigger(ts, s):
    """Fill s's trigger from a "triggers" list; returns an error text or None."""
    if not isinstance(ts, list) or not ts:
        return "triggers must be a non-empty list"
    if len(ts) > _TRIGGERS:
        return "triggers has %d elements; only 1 is used" % len(ts)
    t = ts[0]
    if not isinstance(t, dict):
        return "triggers[0] must be an object"
    if "sr" in t or "ss" in t:
        return "sunrise/sunset triggers are not supported by this node; use a time of day"
    if "rsec" in t:
        if not _int(t["rsec"], 1, _INT32):
            return "rsec must be a positive integer of seconds"
        s.kind = "r"
        s.rsec = t["rsec"]
        return None
    if "d" not in t and "dd" not in t:
        return "a trigger needs rsec, d (days of week) or dd (date)"
    m = t.get("m")
    if not _int(m, 0, 1439):
        return "m must be minutes since midnight, 0..1439"
    d = t.get("d")
    if d is not None and not _int(d, 0, 127):
        return "d must be a weekday mask 0..127 (bit 0 = Monday)"
    if "dd" in t:
        dd = t["dd"]
        mm = t.get("mm", 0)
        yy = t.get("yy", 0)
        r = _flag(t.get("r", False))
        if not _int(dd, 0, 31):
            return "dd must be a day of the month, 1..31"
        if not _int(mm, 0, 4095):
            return "mm must be a month mask 0..4095 (bit 0 = January)"
        if not (yy == 0 or _int(yy, 1970, _YEAR_MAX)):
            return "yy must be 0 or a year 1970..%d" % _YEAR_MAX
        if r is None:
            return "r must be true or false"
        if d:
            return "d and dd cannot both be set; use two schedules"
        if not dd and (mm or yy or r):
            return "dd is required with mm, yy or r"
        if r and not mm:
            return "r (every year) needs a month mask mm"
        s.kind = "dd"
        s.m, s.dd, s.mm, s.yy, s.r, s.d = m, dd, mm, yy, r, 0
        return None
    s.kind = "d"
    s.m, s.d = m, d
    return None


class _Part:
    """What the Schedules and Scenes params share: a list of elements with ids,
    rebuilt from the param value, reported whole after each write."""

    what = tag = pname = ""  # "schedule", its log tag and its param's name, in texts

    def __init__(self):
        self.list = []
        self.param = None  # bound by std.schedule_service() / scenes_service()
        self.device = None
        self.seen = None  # the param value this list was built from or gave
        self.changed = False  # the report differs from what the param holds

    def get(self, id):
        for s in self.list:
            if s.id == id:
                return s
        return None

    def _sync(self):
        # The param may have been restored from flash (silently, by the param
        # sync) after this object was made: rebuild from it.
        p = self.param
        if p is not None and p.value is not self.seen:
            self.list = []
            self.apply(p.value, None, True)
            self.seen = p.value
            self.changed = False

    def apply(self, ops, now, init=False):
        errs = []
        if not isinstance(ops, list):
            errs.append("%s must be a list of operations" % self.pname)
        elif len(ops) > MAX:
            errs.append("%d operations in one write; at most %d" % (len(ops), MAX))
        else:
            for i in range(len(ops)):
                e = ops[i]
                try:
                    err = self._one(e, now, init)
                except MemoryError:
                    err = "out of memory"
                if err:
                    eid = e.get("id") if isinstance(e, dict) else None
                    errs.append("%s %d (%s): %s" % (self.what, i, eid if isinstance(eid, str) else "?", err))
        for e in errs:
            log.warn(self.tag, ("stored " if init else "") + e)
        return errs

    def write(self, ops, now=None):
        """Apply a write (list of operations). Returns the refusals (texts)."""
        self._sync()
        return self.apply(ops, now)

    def _one(self, e, now, init):
        return "not an engine"  # each kind of list has its own

    def _find(self, e, init, ops):
        """(error, op, old) of an element: its checked id and operation, and the
        element it names (None exactly when op is "add")."""
        if not isinstance(e, dict):
            return "must be an object", None, None
        id = e.get("id")
        if not isinstance(id, str) or not 0 < len(id) <= _ID:
            return "id must be a string of 1..%d chars" % _ID, None, None
        old = self.get(id)
        op = "add" if init else _op(e.get("operation"), ops)  # stored elements are added
        if op is None:
            return "operation must be %s or %s" % (", ".join(ops[:-1]), ops[-1]), None, None
        if op == "edit" and old is None:
            op = "add"  # as the SDK: editing an unknown id adds it
        if op == "add":
            if old is not None:
                return "id already exists; use edit", None, None
            if len(self.list) >= MAX:
                return "already %d %ss, the most this node keeps; remove one first" % (MAX, self.what), None, None
        elif old is None:
            return "no %s with this id" % self.what, None, None
        elif op == "remove":
            self.list.remove(old)
            self.changed = True
        return None, op, old

    def report(self):
        return [s.report() for s in self.list]

    def answer(self, ops):
        """A write from the param sync: apply it, return the list to store and report."""
        self.write(ops)
        rep = self.report()
        self.changed = False
        self.seen = rep
        return rep


class Schedules(_Part):
    """The Schedules param's engine (docs/protocol.md#schedules)."""

    what = "schedule"
    tag = "sched"
    pname = "Schedules"

    def __init__(self, engine):
        _Part.__init__(self)
        self.engine = engine
        self.last = None  # the last polled now
        self._zone = None  # the zone the schedules were armed in
        self.rezone = False  # set when the zone changed in place: re-arm at the next poll

    def write(self, ops, now=None):
        """Apply a write (list of operations). Returns the refusals (texts)."""
        self._sync()
        if now is None:
            now = self.engine.now()
        return self.apply(ops, now)

    def _one(self, e, now, init):
        err, op, old = self._find(e, init, ("add", "edit", "remove", "enable", "disable"))
        if err or op == "remove":
            return err
        if old is None:
            return self._set(e, Sched(e["id"]), None, now, init)
        if op == "edit":
            return self._set(e, old.copy(), old, now, init)
        old.enabled = op == "enable"
        old.due = 0
        old.restored = False
        if old.enabled:
            self._arm(old, now)
        self.changed = True
        return None

    def _set(self, e, s, old, now, init):
        # Fill s (new, or a copy of old) from an add/edit element, then put it
        # in the list; a refused element changes nothing.
        add = old is None
        err = _common(e, s, add, _INFO)
        if err:
            return err
        if "validity" in e:
            v = e["validity"]
            if not isinstance(v, dict):
                return "validity must be an object {start, end}"
            # As the SDK: a bound left out of an edit keeps its value.
            st = v.get("start", s.start)
            en = v.get("end", s.end)
            if not _int(st, 0, _TS_MAX) or not _int(en, 0, _TS_MAX):
                return "validity start/end must be Unix times (seconds)"
            if st and en and en < st:
                return "validity ends before it starts"
            s.start, s.end = st, en
        if add or "triggers" in e:
            err = parse_trigger(e.get("triggers"), s)
            if err:
                return err
        s.due = 0
        s.restored = False
        if init:
            en = _flag(e.get("enabled", True))
            s.enabled = en is not False
            ts = e["triggers"][0].get("ts", 0)
            if s.enabled and _int(ts, CLOCK_SET, _TS_MAX):
                s.due = ts
                s.restored = True
        elif add:
            s.enabled = True
        if s.enabled and not s.due:
            self._arm(s, now)
        if old is None:
            self.list.append(s)
        else:
            self.list[self.list.index(old)] = s
        self.changed = True
        return None

    # -- time -------------------------------------------------------------------

    def _arm(self, s, now):
        """Set s.due from now; a schedule with nothing left is disabled."""
        if now is None or now < CLOCK_SET:
            s.due = 0  # armed by poll() once the clock is set
            return
        if s.kind == "r":
            base = now if now >= s.start else s.start
            t = base + s.rsec
            if s.end and t > s.end:
                t = None
        else:
            t = s.after(now, self.engine.zone_now())
        if t is None:
            log.warn("sched", "schedule %s has no occurrence left (past its date or validity); disabled" % s.id)
            s.enabled = False
            t = 0
        s.due = t
        self.changed = True

    def poll(self, now):
        """The (id, action) of every schedule due at now. Call at next_due() or sooner."""
        self._sync()
        out = []
        if now < CLOCK_SET:
            return out
        z = self.engine.zone_now()
        rezone = self.rezone or (self._zone is not None and z is not self._zone)
        self.rezone = False
        self._zone = z
        back = self.last is not None and now < self.last
        self.last = now
        for s in self.list:
            if not s.enabled:
                continue
            if rezone or not s.due:
                if rezone:
                    log.info("sched", "time zone changed: schedule %s re-armed" % s.id)
                s.restored = False
                self._arm(s, now)
                continue
            if back or s.restored:
                s.restored = False
                self._check(s, now, z)
            if s.due <= now:
                self._due(s, now, z, out)
        return out

    def _check(self, s, now, z):
        # A due far ahead of the clock was computed by a clock that was ahead:
        # up to a day back is an ordinary step and keeps due (nothing fires twice).
        if s.kind == "r":
            bad = s.due - now > s.rsec + _DAY
        else:
            nxt = s.after(now + _DAY, z)
            bad = nxt is not None and s.due > nxt
        if bad:
            log.warn("sched", "schedule %s was armed by a clock that ran ahead; re-armed" % s.id)
            self._arm(s, now)

    def _due(self, s, now, z, out):
        late = now - s.due
        fire = s.due if late <= self.engine.catchup else None
        if fire is None and not s.once():
            # The latest occurrence within the catch-up window, if any.
            c = s.after(max(s.due, now - self.engine.catchup - 1), z)
            if c is not None and c <= now:
                fire = c
        if fire is None:
            log.warn("sched", "schedule %s missed by %d s (over %d s late): skipped" % (s.id, late, self.engine.catchup))
        else:
            out.append((s.id, s.action))
        if s.once():
            s.enabled = False
            s.due = 0
        else:
            s.due = s.after(now, z) or 0
            if not s.due:
                log.info("sched", "schedule %s has no occurrence left; disabled" % s.id)
                s.enabled = False
        self.changed = True

    def next_due(self):
        """Unix time of the next occurrence; 0 if poll() is wanted now; None if nothing is armed."""
        self._sync()
        t = None
        for s in self.list:
            if s.enabled:
                if not s.due or s.restored:
                    return 0
                if t is None or s.due < t:
                    t = s.due
        return t

    def publish(self):
        """Put a changed report into the bound param (reported and persisted by the param sync)."""
        if not self.changed:
            return None
        rep = self.report()
        self.changed = False
        if self.device is not None and self.param is not None:
            self.device.update(self.param.name, rep)
            self.seen = self.param.value
        return rep


class Scene:
    def __init__(self, id):
        self.id = id
        self.name = ""
        self.info = ""
        self.flags = 0
        self.action = {}

    def report(self):
        o = {"name": self.name, "id": self.id}
        if self.info:
            o["info"] = self.info
        if self.flags:
            o["flags"] = self.flags
        o["action"] = self.action
        return o


class Scenes(_Part):
    """The Scenes param's engine (docs/protocol.md#scenes)."""

    what = "scene"
    tag = "scenes"
    pname = "Scenes"

    def __init__(self, deactivation=False):
        _Part.__init__(self)
        self.deactivation = deactivation
        self.queue = []  # (action, source) for the driver

    def _one(self, e, now, init):
        err, op, old = self._find(e, init, ("add", "edit", "remove", "activate", "deactivate"))
        if err or op == "remove":
            return err
        if old is None or op == "edit":
            s = Scene(e["id"])
            if old is not None:
                s.name, s.info, s.flags, s.action = old.name, old.info, old.flags, old.action
            err = _common(e, s, old is None, _SCENE_INFO)
            if err:
                return err
            if old is None:
                self.list.append(s)
            else:
                self.list[self.list.index(old)] = s
            self.changed = True
            return None
        if op == "deactivate" and not self.deactivation:
            return "this node does not support deactivating scenes"
        if len(self.queue) >= _QUEUE:
            return "too many scene activations waiting"
        self.queue.append((old.action, "Scene Activate" if op == "activate" else "Scene Deactivate"))
        return None


def payload(action):
    """An action as the params-write bytes the param sync takes."""
    return json.dumps(action).encode()


class Engine:
    """What the driver calls: poll(now) for the writes to apply, next_due() for when.

    zone: a zone as rainmaker.tz makes them (see wall()); None = rainmaker.tz.current
    when that module is loaded, else UTC. clock: a function returning Unix
    seconds, used when a write arrives (a new schedule's first occurrence);
    without it the schedule is armed at the next poll().
    """

    def __init__(self, zone=None, clock=None, catchup=CATCHUP, deactivation=False):
        self.zone = zone
        self.clock = clock
        self.catchup = catchup
        self.schedules = Schedules(self)
        self.scenes = Scenes(deactivation)

    def zone_now(self):
        z = self.zone
        if z is None:
            m = sys.modules.get("rainmaker.tz")
            z = getattr(m, "current", None) if m is not None else None
        return z or UTC

    def rezone(self):
        """The time zone changed (the same zone object, new rules): re-arm every schedule."""
        self.schedules.rezone = True

    def now(self):
        if self.clock is not None:
            return self.clock()
        return None

    def poll(self, now):
        """[(params-write bytes, source)] to hand to the param sync, in order."""
        out = [(payload(a), "Schedule") for _, a in self.schedules.poll(now)]
        self.schedules.publish()
        q = self.scenes.queue
        if q:
            self.scenes.queue = []
            out += [(payload(a), src) for a, src in q]
        return out

    def next_due(self):
        """Unix time at which poll() is next needed; 0 = now; None = nothing armed."""
        if self.scenes.queue or self.schedules.changed or self.schedules.rezone:
            return 0
        return self.schedules.next_due()


def serve(k, now=None, name=None, ops=None):
    """Do the work of std's resident keeper k: poll at now, or answer a write of
    ops to the param name. An engine is built for it from the params, which hold
    every schedule and its next occurrence (ts), and from the little k keeps
    between runs; what it must keep goes back into k, and the engine is dropped.
    Returns what the poll or the write returns."""
    d = k.scenes
    e = Engine(clock=k.clock, deactivation=d is not None and ("deactivation_support", "yes") in d.attrs)
    sc = e.schedules
    for part, d in ((sc, k.schedules), (e.scenes, k.scenes)):
        if d is not None:
            part.device = d
            part.param = d.params[0]
            part._sync()
    if k.last is not None:
        # A poll has checked these ts against the clock since boot; the
        # keeper has seen every pass since (a clock step back included).
        for s in sc.list:
            s.restored = False
        sc.last = k.last
        sc._zone = UTC if k.zone is None else k.zone
    sc.rezone = k.moved
    e.scenes.queue = k.queue
    if name is None:
        out = e.poll(now)
        if now is not None and now >= CLOCK_SET:  # (before, poll() checked nothing)
            z = sc._zone
            k.zone = None if z is UTC else z  # no object of this module may stay
            k.last = now
    else:
        out = (sc if name == "Schedules" else e.scenes).answer(ops)
        sc.param = None  # the param takes the answer after this returns: the list is newer
    k.moved = sc.rezone
    k.queue = e.scenes.queue
    k.at = e.next_due()
    return out
