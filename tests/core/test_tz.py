# Time zones (docs/protocol.md#time-service): the POSIX TZ parser, the rule
# arithmetic, wall time -> UTC in gaps and overlaps (sched.wall, the schedule
# engine's), and the IANA table search (zones.py). The reference answers come from CPython's zoneinfo through
# tz_vectors.txt (made and checked against zoneinfo by tests/test_tz_zoneinfo.py,
# which also compares every zone of the table on CPython); here they are
# checked again on MicroPython, where there is no zoneinfo.
import sys
from rainmaker import sched, tz, tzparse, zones
from util import raises

_HERE = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."


def _vectors():
    with open(_HERE + "/tz_vectors.txt") as f:
        for line in f:
            if not line.startswith("#"):
                yield line.split()


def _check_vectors(part, parts):
    # Zone number part, part + parts, ...: each test function checks a share,
    # so that no single MicroPython run allocates much.
    z = None
    found = offsets = walls = 0
    k = -1
    for v in _vectors():
        if v[0] == "Z":
            k += 1
            z = None
            if k % parts == part:
                assert zones.lookup(v[1]) == v[2], v
                z = tz.parse(v[2])
                found += 1
        elif z is None:
            continue
        elif v[0] == "O":
            n = [int(x) for x in v[1:]]
            t = n[0]
            assert z.offset(t) == n[1], (z, v)
            assert z.local(t) == tuple(n[2:]), (z, v, z.local(t))
            offsets += 1
        else:
            n = [int(x) for x in v[1:]]
            assert sched.wall(z, *n[:6]) == n[6], (z, v, sched.wall(z, *n[:6]))
            walls += 1
    assert found >= 6 and offsets > 60 and walls > 40, (found, offsets, walls)


def test_vectors_from_zoneinfo_1():
    _check_vectors(0, 4)


def test_vectors_from_zoneinfo_2():
    _check_vectors(1, 4)


def test_vectors_from_zoneinfo_3():
    _check_vectors(2, 4)


def test_vectors_from_zoneinfo_4():
    _check_vectors(3, 4)


def test_parse_fields():
    z = tz.parse("IST-5:30")
    assert (z.std, z.std_off, z.dst) == ("IST", 19800, None)
    z = tz.parse("<+0545>-5:45")
    assert (z.std, z.std_off) == ("+0545", 20700)
    z = tz.parse("<-0330>3:30")
    assert z.std_off == -12600
    z = tz.parse("<+0130>-1:30:15")
    assert z.std_off == 5415
    z = tz.parse("CET-1CEST,M3.5.0,M10.5.0/3")
    assert (z.std, z.std_off, z.dst, z.dst_off) == ("CET", 3600, "CEST", 7200)
    assert z.start == (2, 3, 5, 0, 7200) and z.end == (2, 10, 5, 0, 10800)
    z = tz.parse("<-02>2<-01>,M3.5.0/-1,M10.5.0/0")
    assert (z.std, z.dst, z.std_off, z.dst_off) == ("-02", "-01", -7200, -3600)
    assert z.start[4] == -3600 and z.end[4] == 0
    z = tz.parse("IST-2IDT,M3.4.4/26,M10.5.0")
    assert z.start == (2, 3, 4, 4, 93600)
    z = tz.parse("<+1030>-10:30<+11>-11,M10.1.0,M4.1.0")
    assert (z.std_off, z.dst_off) == (37800, 39600)  # half an hour of DST
    z = tz.parse("AAA3BBB,J60/1:30:05,300")
    assert z.start == (0, 60, 0, 0, 5405) and z.end == (1, 300, 0, 0, 7200)
    z = tz.parse("XXX-3YYY,M1.1.0/-167,M12.5.6/167")
    assert z.start[4] == -167 * 3600 and z.end[4] == 167 * 3600
    z = tz.parse("EST+5EDT")  # no rules: the US ones
    assert z.dst_off == -14400 and z.start == (2, 3, 2, 0, 7200) and z.end == (2, 11, 1, 0, 7200)


def _utc(y, m, d, hh=0, mm=0, ss=0):
    return tz._days(y, m, d) * 86400 + hh * 3600 + mm * 60 + ss


def test_calendar_arithmetic():
    assert tz._days(1970, 1, 1) == 0
    assert tz._days(2000, 3, 1) == 11017
    assert tz._days(1969, 12, 31) == -1
    assert tz._days(2024, 1, 32) == tz._days(2024, 2, 1)  # days run over
    assert _utc(2038, 1, 19, 3, 14, 8) == 2 ** 31
    for n in range(-800, 800 * 366, 97):
        assert tz._days(*tz._civil(n)) == n
    assert tz._civil(tz._days(2100, 2, 28) + 1) == (2100, 3, 1)  # not a leap year
    assert tz._civil(tz._days(2000, 2, 28) + 1) == (2000, 2, 29)
    assert tz.UTC.local(0) == (1970, 1, 1, 0, 0, 0, 3, 1)  # a Thursday
    assert tz.UTC.local(_utc(2024, 12, 31, 23, 59, 59)) == (2024, 12, 31, 23, 59, 59, 1, 366)


def test_rule_days():
    # Jn never counts February 29 (J60 is March 1 every year), n does; Mm.5.d
    # is the month's last such weekday, in February of a leap year and in
    # December (whose length comes from the next January) too.
    for y in (2023, 2024, 2100, 2000):
        assert tz._rule_day((0, 1), y) == tz._days(y, 1, 1)
        assert tz._rule_day((0, 59), y) == tz._days(y, 2, 28)
        assert tz._rule_day((0, 60), y) == tz._days(y, 3, 1)
        assert tz._rule_day((0, 365), y) == tz._days(y, 12, 31)
        assert tz._rule_day((1, 59), y) == tz._days(y, 1, 60)
    assert tz._rule_day((2, 2, 5, 4), 2024) == tz._days(2024, 2, 29)  # a Thursday
    assert tz._rule_day((2, 2, 5, 4), 2023) == tz._days(2023, 2, 23)
    assert tz._rule_day((2, 12, 5, 3), 2025) == tz._days(2025, 12, 31)  # a Wednesday
    assert tz._rule_day((2, 12, 5, 0), 2025) == tz._days(2025, 12, 28)
    assert tz._rule_day((2, 12, 1, 1), 2025) == tz._days(2025, 12, 1)  # a Monday


def test_rules_by_hand():
    # Julian J60 is March 1 every year; zero-based 59 is March 1 only in
    # common years.
    z = tz.parse("AAA0BBB,J60/0,J300/0")
    assert z.offset(_utc(2024, 2, 29, 23, 59, 59)) == 0 and z.offset(_utc(2024, 3, 1)) == 3600
    z = tz.parse("AAA0BBB,59/0,J300/0")
    assert z.offset(_utc(2024, 2, 29, 23, 59, 59)) == 3600 and z.offset(_utc(2023, 3, 1)) == 3600
    assert z.offset(_utc(2023, 2, 28, 23, 59, 59)) == 0
    # Daylight time all year: from Jan 1 00:00 to Dec 31 25:00 (Jan 1 01:00 daylight time).
    z = tz.parse("EST5EDT,0/0,J365/25")
    for t in (_utc(2025, 1, 1, 5), _utc(2025, 6, 1), _utc(2025, 12, 31, 23), _utc(2026, 1, 1, 4, 59)):
        assert z.offset(t) == -14400, t
    # The fifth week means the last one: March 2026 has four Sundays after the 1st week's.
    z = tz.parse("CET-1CEST,M3.5.0,M10.5.0/3")
    assert z.offset(_utc(2026, 3, 29, 0, 59, 59)) == 3600 and z.offset(_utc(2026, 3, 29, 1)) == 7200
    assert z.offset(_utc(2026, 10, 25, 0, 59, 59)) == 7200 and z.offset(_utc(2026, 10, 25, 1)) == 3600
    # Southern hemisphere: daylight time across the new year.
    z = tz.parse("NZST-12NZDT,M9.5.0,M4.1.0/3")
    assert z.offset(_utc(2025, 1, 1)) == 46800 and z.offset(_utc(2025, 7, 1)) == 43200
    assert _name(z, _utc(2025, 1, 1)) == "NZDT" and _name(z, _utc(2025, 7, 1)) == "NZST"


def _name(z, t):
    # The abbreviation in effect (the firmware keeps both but needs neither at
    # run time; no zone of the table has a daylight offset equal to its standard one).
    return z.dst if z.dst is not None and z.offset(t) == z.dst_off else z.std


def test_gap_gives_its_end_and_overlap_the_first():
    z = tz.parse("CET-1CEST,M3.5.0,M10.5.0/3")
    # 2025-03-30: 02:00 CET -> 03:00 CEST at 01:00 UTC.
    gap_end = _utc(2025, 3, 30, 1)
    for mm in (0, 1, 30, 59):
        assert sched.wall(z, 2025, 3, 30, 2, mm) == gap_end
    assert sched.wall(z, 2025, 3, 30, 1, 59, 59) == gap_end - 1
    assert sched.wall(z, 2025, 3, 30, 3, 0) == gap_end
    # 2025-10-26: 03:00 CEST -> 02:00 CET at 01:00 UTC; 02:30 happens twice.
    assert sched.wall(z, 2025, 10, 26, 2, 30) == _utc(2025, 10, 26, 0, 30)
    assert z.local(_utc(2025, 10, 26, 1, 30))[3:5] == (2, 30)  # the second one
    assert sched.wall(z, 2025, 10, 26, 3, 0) == _utc(2025, 10, 26, 2)
    # Negative DST (Dublin's winter time is the "daylight" part of its rule).
    z = tz.parse("IST-1GMT0,M10.5.0,M3.5.0/1")
    assert sched.wall(z, 2025, 3, 30, 1, 30) == _utc(2025, 3, 30, 1)
    assert sched.wall(z, 2025, 10, 26, 1, 30) == _utc(2025, 10, 26, 0, 30)
    # Fields run over; a bad month is refused.
    assert sched.wall(tz.UTC, 2025, 1, 31, 24, 0) == _utc(2025, 2, 1)
    raises(ValueError, sched.wall, tz.UTC, 2025, 13, 1, 0, 0)


BAD = [
    "", " ", "UTC", "CET", "C-1", "CE-1", "CET-", "CET-1CE", "CET+", "CET--1", "CET-25",
    "CET-1:60", "CET-1:00:60", "CET-1:", "CET-1::00", "1CET", "<+05", "<+5>-5", "<+0 5>-5",
    "<>0", "CET-1,M3.5.0,M10.5.0", "CET-1CEST,", "CET-1CEST,M3.5.0", "CET-1CEST,M3.5.0,",
    "CET-1CEST,M13.5.0,M10.5.0", "CET-1CEST,M0.5.0,M10.5.0", "CET-1CEST,M3.6.0,M10.5.0",
    "CET-1CEST,M3.0.0,M10.5.0", "CET-1CEST,M3.5.7,M10.5.0", "CET-1CEST,M3.5,M10.5.0",
    "CET-1CEST,M3,M10.5.0", "CET-1CEST,J0,J100", "CET-1CEST,J366,J100", "CET-1CEST,366,100",
    "CET-1CEST,M3.5.0/168,M10.5.0", "CET-1CEST,M3.5.0/,M10.5.0", "CET-1CEST,M3.5.0,M10.5.0/3x",
    "CET-1CEST,M3.5.0,M10.5.0,", "CET-1CEST-2-3", "CET-1 ", " CET-1", "CET-1CEST;M3.5.0,M10.5.0",
    ":Europe/Berlin", "Europe/Berlin", "CET-1CEST,X3.5.0,M10.5.0", "CET-1CEST,M3.5.0/-168,M10.5.0",
    "A" * 65 + "0", "CET-1CEST,M3.5.0/2:3,M10.5.0",
]


def test_bad_strings_are_value_errors_that_say_why():
    for s in BAD:
        e = raises(ValueError, tz.parse, s)
        msg = str(e)
        assert "TZ" in msg, (s, msg)
    for v in (None, 5, b"CET-1", ["CET-1"]):
        assert "string" in str(raises(ValueError, tz.parse, v))
    assert "position 4" in str(raises(ValueError, tz.parse, "CET-25"))
    assert "position 6" in str(raises(ValueError, tz.parse, "CET-1:60"))
    assert "shorter than 3" in str(raises(ValueError, tz.parse, "<+5>-5"))
    assert "1..12" in str(raises(ValueError, tz.parse, "CET-1CEST,M13.5.0,M10.5.0"))


def _fuzz(x, rounds):
    # Mutations of real strings: each parses to a zone that answers for any
    # instant, or is refused with ValueError, never anything else.
    seeds = ["CET-1CEST,M3.5.0,M10.5.0/3", "<-02>2<-01>,M3.5.0/-1,M10.5.0/0", "IST-5:30",
             "EST5EDT,0/0,J365/25", "<+1030>-10:30<+11>-11,M10.1.0,M4.1.0"]
    chars = "<>+-:,./0123456789JMAZ "
    ok = bad = 0
    for i in range(rounds):
        s = list(seeds[i % len(seeds)])
        for _ in range(1 + i % 3):
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF
            pos = x % (len(s) + 1)
            c = chars[(x >> 8) % len(chars)]
            op = (x >> 16) % 3
            if op == 0 and s:
                s[pos % len(s)] = c
            elif op == 1:
                s.insert(pos, c)
            elif s:
                del s[pos % len(s)]
        text = "".join(s)
        try:
            z = tzparse.parse(text)  # not tz.parse: that loads the parser each time
        except ValueError:
            bad += 1
            continue
        ok += 1
        for t in (0, 1700000000, 1900000000, -86400 * 366):
            off = z.offset(t)
            assert -25 * 3600 < off < 26 * 3600
            w = z.local(t)
            assert 1 <= w[1] <= 12 and 1 <= w[2] <= 31 and 0 <= w[6] <= 6
            u = sched.wall(z, *w[:6])
            assert abs(u - t) <= 26 * 3600, (text, t, u)
    assert ok > rounds // 20 and bad > rounds // 2, (ok, bad)


def test_fuzzed_strings_parse_or_fail_cleanly_1():
    _fuzz(12345, 400)


def test_fuzzed_strings_parse_or_fail_cleanly_2():
    _fuzz(999, 400)


def test_fuzzed_strings_parse_or_fail_cleanly_3():
    _fuzz(4242, 400)


def test_lookup_is_case_and_space_tolerant():
    assert zones.lookup("Europe/Berlin") == "CET-1CEST,M3.5.0,M10.5.0/3"
    assert zones.lookup("europe/berlin") == "CET-1CEST,M3.5.0,M10.5.0/3"
    assert zones.lookup("America/New York") == zones.lookup("AMERICA/NEW_YORK") == "EST5EDT,M3.2.0,M11.1.0"
    assert zones.lookup(" Asia/Kolkata ") == "IST-5:30"
    assert zones.lookup("Asia/Calcutta") == "IST-5:30"  # old names are in the table too
    assert zones.lookup("Etc/GMT+5") == "<-05>5"
    assert zones.lookup("Etc/GMT-14") == "<+14>-14"


def test_lookup_finds_both_ends_and_nothing_between():
    names = []
    f = zones._table()
    try:
        for line in f:
            if not line.startswith(b"#"):
                names.append(line.split()[0].decode())
    finally:
        f.close()
    assert len(names) > 400
    for n in (names[0], names[1], names[len(names) // 2], names[-2], names[-1]):
        assert zones.lookup(n), n
    for n in ("Europe/Berli", "Europe/Berlinn", "Europe/", "Africa", "Zulu_", "A", "zzzz", "0",
              "#", "# IANA", "Europe//Berlin", "Europe/Berlin/x", "Europe\\Berlin"):
        assert zones.lookup(n) is None, n
    for n in ("", "   ", None, 5, b"Europe/Berlin", "Europe/Berlin\x00", "Europe/Berlin\n/x",
              "Europe/Ber\u00e4lin", "E" * 49, "Europe/Berlin CET"):
        assert zones.lookup(n) is None, n


def test_missing_table_is_an_os_error_that_names_the_file():
    old = tz.path
    tz.path = "/nonexistent/zones.txt"
    try:
        e = raises(OSError, zones.lookup, "Europe/Berlin")
        assert "zones.txt" in str(e)
    finally:
        tz.path = old
    assert zones.lookup("Europe/Berlin")


def test_parser_is_loaded_only_while_parsing():
    sys.modules.pop("rainmaker.tzparse", None)
    tz.parse("CET-1")
    assert "rainmaker.tzparse" not in sys.modules
    raises(ValueError, tz.parse, "CET")
    assert "rainmaker.tzparse" not in sys.modules


def test_a_float_time_counts_as_its_seconds():
    # time.time() is a float on the unix port.
    z = tz.parse("CET-1CEST,M3.5.0,M10.5.0/3")
    assert z.local(1751328000.75) == z.local(1751328000) and z.offset(1751328000.5) == 7200


def test_utc_zone():
    assert tz.UTC.posix == "UTC0" and tz.UTC.dst is None
    assert tz.UTC.offset(1700000000) == 0 and sched.wall(tz.UTC, 1970, 1, 1, 0, 0) == 0
