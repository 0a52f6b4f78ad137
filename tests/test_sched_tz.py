"""Schedules against an independent clock: CPython's datetime and zoneinfo.

The engine (firmware/lib/rainmaker/sched.py) computes next-fire times with its
own integer calendar and a zone object. Here the zone is CPython's zoneinfo,
wrapped to the firmware's zone API, and every expected time is found by brute
force: walk the local calendar day by day with datetime, keep the days the
trigger names, resolve the wall-clock time in the zone. The test zone of
tests/core/test_sched.py is checked against zoneinfo too, and the core tests
are run in full on the MicroPython unix port.
"""
import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from rainmaker import sched
from test_sched import EuZone
from tests.vm import core_on_unix_port

ZONES = ("Europe/Berlin", "America/New_York", "Australia/Sydney", "Asia/Kolkata", "Pacific/Chatham",
         "America/Sao_Paulo", "UTC")
T_MIN = int(dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc).timestamp())
T_MAX = int(dt.datetime(2034, 1, 1, tzinfo=dt.timezone.utc).timestamp())


class ZI:
    """zoneinfo behind the firmware's zone API.

    The engine takes local(), offset() and the zone's two offsets (std_off,
    dst_off; dst None without daylight time), from which sched.wall() finds
    wall time -> UTC; every zone in ZONES has kept its rules from T_MIN to
    T_MAX, so two offsets describe it. utc() is zoneinfo's own answer, for
    the expected times (gap: the instant it ends; overlap: the first).
    """

    def __init__(self, name):
        self.z = ZoneInfo(name)
        year = [self.offset(int(dt.datetime(2027, m, 1, tzinfo=dt.timezone.utc).timestamp())) for m in range(1, 13)]
        self.std_off, self.dst_off = min(year), max(year)
        self.dst = "DST" if self.std_off != self.dst_off else None

    def _wall(self, t):
        return dt.datetime.fromtimestamp(t, self.z).replace(tzinfo=None)

    def local(self, t):
        d = dt.datetime.fromtimestamp(t, self.z)
        return d.year, d.month, d.day, d.hour, d.minute, d.second, d.weekday(), d.timetuple().tm_yday

    def offset(self, t):
        return int(dt.datetime.fromtimestamp(t, self.z).utcoffset().total_seconds())

    def utc(self, y, m, d, h, mi, s=0):
        naive = dt.datetime(y, m, d, h, mi, s)
        t0 = int(naive.replace(tzinfo=self.z, fold=0).timestamp())
        t1 = int(naive.replace(tzinfo=self.z, fold=1).timestamp())
        ok = [t for t in {t0, t1} if self._wall(t) == naive]
        if ok:
            return min(ok)
        lo, hi = min(t0, t1), max(t0, t1)  # the gap's end lies between the two readings
        while lo < hi:
            mid = (lo + hi) // 2
            if self._wall(mid) >= naive:
                hi = mid
            else:
                lo = mid + 1
        return lo


def expected(trig, base, zone, start=0, end=0):
    """The first occurrence of trig after base, found day by day; None if none."""
    if start and base < start - 1:
        base = start - 1
    h, mi = divmod(trig["m"], 60)
    day = dt.datetime.fromtimestamp(base, zone.z).date()
    base_year = day.year
    for _ in range(15 * 366):  # the engine looks 9 years past the first year it may match
        ok = False
        if "d" in trig:
            ok = trig["d"] == 0 or bool(trig["d"] >> day.weekday() & 1)
        else:
            dd, mm, yy, r = trig["dd"], trig.get("mm", 0), trig.get("yy", 0), bool(trig.get("r", False))
            if dd == 0:
                ok = True
            elif day.day == dd:
                if mm == 0:
                    ok = yy == 0 or day.year == yy
                elif mm >> (day.month - 1) & 1:
                    if yy and not r:
                        ok = day.year == yy
                    elif yy and r:
                        ok = day.year >= yy
                    elif not r:
                        ok = day.year == base_year
                    else:
                        ok = True
        if ok:
            t = zone.utc(day.year, day.month, day.day, h, mi)
            if t > base:
                return None if end and t > end else t
        day += dt.timedelta(days=1)
    return None


def random_trigger(rnd):
    m = rnd.choice((0, 30, 90, 120, 150, 179, 180, 210, 1439, rnd.randint(0, 1439)))
    k = rnd.randint(0, 5)
    if k <= 1:
        return {"m": m, "d": rnd.choice((0, 127, 31, 96, 1, 64, rnd.randint(0, 127)))}
    dd = rnd.choice((1, 15, 28, 29, 30, 31, rnd.randint(1, 31)))
    if k == 2:
        return {"m": m, "dd": dd, "yy": rnd.choice((0, 0, 2026, 2027, 2030))}
    if k == 3:
        return {"m": m, "dd": dd, "mm": rnd.randint(1, 4095), "r": True}
    if k == 4:
        return {"m": m, "dd": dd, "mm": rnd.randint(1, 4095), "yy": rnd.choice((0, 2026, 2028)), "r": False}
    return {"m": m, "dd": 0}


def add(eng, trig, now, validity=None):
    eng.schedules.list = []
    e = {"operation": "add", "id": "t", "name": "T", "triggers": [trig], "action": {"L": {"P": True}}}
    if validity:
        e["validity"] = validity
    assert eng.schedules.write([e], now) == []
    s = eng.schedules.get("t")
    return s.due if s.enabled else None


def test_the_core_tests_zone_is_central_european_time():
    import random

    rnd = random.Random(5)
    eu, ber = EuZone(), ZI("Europe/Berlin")
    for _ in range(3000):
        t = rnd.randint(T_MIN, T_MAX)
        assert eu.local(t) == ber.local(t), t
        assert eu.offset(t) == ber.offset(t), t
        lt = ber.local(t)
        for h in (lt[3], 2, 3):  # 02:xx and 03:xx are where the gaps and overlaps are
            assert eu.utc(lt[0], lt[1], lt[2], h, lt[4]) == ber.utc(lt[0], lt[1], lt[2], h, lt[4]), (t, h)
            assert sched.wall(eu, lt[0], lt[1], lt[2], h, lt[4]) == ber.utc(lt[0], lt[1], lt[2], h, lt[4]), (t, h)


def test_calendar_against_datetime():
    import random

    rnd = random.Random(6)
    for _ in range(20000):
        n = rnd.randint(-1000, 80000)
        d = dt.date(1970, 1, 1) + dt.timedelta(days=n)
        assert sched.date(n) == (d.year, d.month, d.day)
        assert sched.days(d.year, d.month, d.day) == n
        assert sched.mdays(d.year, d.month) == ((d.replace(day=28) + dt.timedelta(days=4)).replace(day=1) - dt.timedelta(days=1)).day
    for t in (0, T_MIN, T_MAX, 951782400, 1774440000):
        u = dt.datetime.fromtimestamp(t, dt.timezone.utc)
        assert sched.UTC.local(t) == (u.year, u.month, u.day, u.hour, u.minute, u.second, u.weekday(),
                                      u.timetuple().tm_yday)
        assert sched.wall(sched.UTC, u.year, u.month, u.day, u.hour, u.minute, u.second) == t


@pytest.mark.parametrize("name", ZONES)
def test_next_fire_matches_an_independent_computation(name):
    import random

    rnd = random.Random(name)
    zone = ZI(name)
    eng = sched.Engine(zone=zone)
    for _ in range(250):
        now = rnd.randint(T_MIN, T_MAX)
        trig = random_trigger(rnd)
        validity = None
        start = end = 0
        if rnd.randint(0, 4) == 0:
            start = now + rnd.randint(-DAYS, 40 * DAYS) if rnd.randint(0, 1) else 0
            end = now + rnd.randint(0, 60 * DAYS) if rnd.randint(0, 1) else 0
            if start and end and end < start:
                start, end = end, start
            validity = {k: v for k, v in (("start", start), ("end", end)) if v} or None
        got = add(eng, trig, now, validity)
        want = expected(trig, now, zone, start, end)
        assert got == want, (name, trig, now, validity, got, want)
        if got is not None:
            # reported as the trigger's ts
            assert eng.schedules.report()[0]["triggers"][0]["ts"] == got


DAYS = 86400


@pytest.mark.parametrize("name", ZONES)
def test_firing_sequence_across_dst(name):
    """Poll only at next_due(): the instants fired are exactly the occurrences, in order."""
    import random

    rnd = random.Random("seq" + name)
    zone = ZI(name)
    for _ in range(12):
        trig = random_trigger(rnd)
        if "d" in trig and trig["d"] == 0:
            trig["d"] = 127
        # start near a DST change of the zone (March/April, October/November) or anywhere
        y = rnd.randint(2021, 2030)
        now = int(dt.datetime(y, rnd.choice((3, 4, 10, 11)), rnd.randint(1, 28), tzinfo=zone.z).timestamp())
        eng = sched.Engine(zone=zone)
        add(eng, trig, now)
        fired, want = [], []
        once = trig.get("d") == 0 or ("dd" in trig and not trig.get("mm"))
        t = now
        for _ in range(1 if once else 8):
            nxt = expected(trig, t, zone)
            if nxt is None:
                break
            want.append(nxt)
            t = nxt
        t = now
        for _ in range(8):
            due = eng.next_due()
            if due == 0:  # a change waits to be published: poll now
                assert eng.poll(t) == []
                due = eng.next_due()
            if due is None:
                break
            assert due > t
            for _payload, _source in eng.poll(due):
                fired.append(due)
            t = due
        assert fired == want, (name, trig, now)


def test_core_tests_in_full_on_the_micropython_unix_port():
    assert core_on_unix_port("test_sched", ["m.ROUNDS = 400"]) >= 20
