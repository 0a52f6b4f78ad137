"""rainmaker.tz (with sched.wall and the table search of rainmaker.zones)
against CPython's zoneinfo, the independent reference.

zoneinfo answers from each zone's explicit transition list (the system's TZif
files list them up to 2037), rainmaker.tz only from the POSIX string at the
end of the file, so agreement over 2024-2037 checks the parser, the rule
arithmetic and the calendar together. Every zone of the table is checked:
every hour for a day either side of each transition, the seconds around it,
and random instants. Also: the committed table is what tools/zones.py makes
from this database, and tests/core/tz_vectors.txt (which the core tests check
on MicroPython, where there is no zoneinfo) is what zoneinfo says.
"""
import datetime as dt
import random
import zoneinfo
from pathlib import Path

import pytest

import tests.conftest  # noqa: F401 - firmware/lib first on sys.path (also when run as a script)
from rainmaker import sched, tz
from rainmaker import zones as table
from tests.vm import core_on_unix_port
from tools import zones

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "firmware" / "lib" / "rainmaker" / "zones.txt"
VECTORS = ROOT / "tests" / "core" / "tz_vectors.txt"

UTC = dt.timezone.utc
START = int(dt.datetime(2024, 1, 1, tzinfo=UTC).timestamp())
END = int(dt.datetime(2031, 1, 1, tzinfo=UTC).timestamp())
LATE = int(dt.datetime(2037, 1, 1, tzinfo=UTC).timestamp())

# Where the zone's POSIX string does not describe 2024 onwards, and from when
# it does. A POSIX string describes only the times after the database's last
# rule change; these zones changed their rules during 2024-2025.
FROM = {
    "America/Asuncion": "2024-10-07",  # permanent -03 since October 2024
    "America/Coyhaique": "2024-09-09",  # new zone, permanent -03
    "America/Scoresbysund": "2024-03-31",  # moved from -01/+00 to -02/-01
    "Asia/Almaty": "2024-03-01",  # single Kazakh zone, +05
    "Asia/Qostanay": "2024-03-01",
}
# Morocco's and Palestine's DST pauses every Ramadan, listed explicitly until
# 2087: no POSIX string can say that, so the SDK's table (and ours) is an hour
# off then.
NEVER = {"Africa/Casablanca", "Africa/El_Aaiun", "Asia/Gaza", "Asia/Hebron"}


def rows():
    out = []
    for line in TABLE.read_text().splitlines():
        if not line.startswith("#"):
            name, posix = line.split(" ")
            out.append((name, posix))
    return out


ROWS = rows()


def _from(name):
    d = FROM.get(name)
    return int(dt.datetime.fromisoformat(d).replace(tzinfo=UTC).timestamp()) if d else START


def ref_offset(zi, t):
    return int(dt.datetime.fromtimestamp(t, zi).utcoffset().total_seconds())


def ref_local(zi, t):
    d = dt.datetime.fromtimestamp(t, zi)
    return (d.year, d.month, d.day, d.hour, d.minute, d.second, d.weekday(), d.timetuple().tm_yday)


def transitions(zi, lo, hi):
    """Instants t in [lo, hi) where the offset differs from t - 1 (a daily scan, then halving)."""
    out = []
    prev_t, prev = lo, ref_offset(zi, lo)
    for t in range(lo + 86400, hi + 86400, 86400):
        o = ref_offset(zi, t)
        if o != prev:
            a, b = prev_t, t
            while b - a > 1:
                m = (a + b) // 2
                if ref_offset(zi, m) == prev:
                    a = m
                else:
                    b = m
            out.append(b)
        prev_t, prev = t, o
    return out


def test_table_is_what_the_generator_makes_from_this_database():
    head = TABLE.read_text().splitlines()[0]
    if f"tzdata {zones.version()}:" not in head:
        pytest.skip(f"this machine's tz database is {zones.version()}, the table was made from: {head}")
    assert TABLE.read_text() == zones.text(zones.table(), zones.version()), \
        "zones.txt is stale: run python -m tools.zones"


def test_table_is_sorted_for_the_board_search_and_bounded():
    keys = [n.lower().encode() for n, _ in ROWS]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert len(ROWS) > 400
    assert TABLE.stat().st_size < 20_000
    for line in TABLE.read_bytes().splitlines(keepends=True):
        assert len(line) <= table._BUF // 2  # lookup reads a line's end and the next line at once
    for name, posix in ROWS:
        assert len(name) <= table._MAX_NAME and len(posix) <= 64
        assert set(name.lower()) <= set(table._NAME_CHARS)


def test_every_table_entry_parses_and_is_found_by_lookup():
    for name, posix in ROWS:
        assert tz.parse(posix).posix == posix
        assert table.lookup(name) == posix
        assert table.lookup(name.upper().replace("_", " ")) == posix


def test_lookup_matches_a_dictionary_for_fuzzed_names():
    oracle = {n.lower(): p for n, p in ROWS}
    rnd = random.Random(7)
    alphabet = "abzAZ/_-+. 019#\x00\u00e4"
    hits = 0
    for i in range(4000):
        s = list(rnd.choice(ROWS)[0])
        for _ in range(i % 3):
            k = rnd.randrange(len(s) + 1)
            op = rnd.randrange(3)
            if op == 0 and k < len(s):
                del s[k]
            elif op == 1:
                s.insert(k, rnd.choice(alphabet))
            elif k < len(s):
                s[k] = s[k].swapcase()
        name = "".join(s)
        want = oracle.get(name.strip().lower().replace(" ", "_"))
        assert table.lookup(name) == want, name
        hits += want is not None
    assert 1000 < hits < 3900


def test_lookup_in_a_damaged_table_answers_without_crashing(tmp_path):
    # A table cut short, with overlong lines, unsorted, or random bytes: the
    # search gives a string or None, never an exception.
    good = TABLE.read_bytes()
    rnd = random.Random(3)
    damaged = [b"", b"\n", good[:5000], good[:-7], good.replace(b"\n", b" ", 40),
               b"".join(sorted(good.splitlines(keepends=True), key=lambda _: rnd.random())),
               bytes(rnd.randrange(256) for _ in range(3000)), b"Europe/Berlin " + b"x" * 500 + b"\n",
               b"Europe/Berlin \xff\xfe\n"]
    old = tz.path
    try:
        for i, data in enumerate(damaged):
            f = tmp_path / f"z{i}.txt"
            f.write_bytes(data)
            tz.path = str(f)
            for name, _ in ROWS[::25] + [("Europe/Berlin", "")]:
                r = table.lookup(name)
                assert r is None or isinstance(r, str)
    finally:
        tz.path = old


@pytest.mark.parametrize("name,posix", [r for r in ROWS if r[0] not in NEVER], ids=lambda v: v)
def test_offset_local_and_utc_agree_with_zoneinfo(name, posix):
    zi = zoneinfo.ZoneInfo(name)
    z = tz.parse(posix)
    lo = _from(name)
    trans = transitions(zi, lo, END)
    if z.dst is not None:
        assert len(trans) >= 2 * ((END - lo) // (366 * 86400)), "a DST zone changes twice a year"
    instants = set()
    for tr in trans:
        instants.update(range(tr - 26 * 3600, tr + 26 * 3600 + 1, 3600))
        instants.update((tr - 1, tr, tr + 1))
    rnd = random.Random(name)
    instants.update(rnd.randrange(lo, LATE) for _ in range(150))
    for t in sorted(i for i in instants if i >= lo):
        want = ref_local(zi, t)
        assert z.offset(t) == ref_offset(zi, t), (name, t)
        assert z.local(t) == want, (name, t)
        abbr = z.dst if z.dst is not None and z.offset(t) == z.dst_off else z.std
        assert abbr == dt.datetime.fromtimestamp(t, zi).tzname(), (name, t)
        # Back from the wall time: the same instant, unless it is the second
        # time the clock shows it (then the first one, as zoneinfo's fold=0).
        u = sched.wall(z, *want[:6])
        first = int(dt.datetime(*want[:6], tzinfo=zi).timestamp())
        assert u == first, (name, t, u, first)
        assert u == t or (u < t and z.local(u)[:6] == want[:6]), (name, t)


@pytest.mark.parametrize("name,posix", [r for r in ROWS if r[0] not in NEVER and "," in r[1]][::3],
                         ids=lambda v: v)
def test_wall_times_in_a_gap_give_the_end_of_the_gap(name, posix):
    zi = zoneinfo.ZoneInfo(name)
    z = tz.parse(posix)
    gaps = 0
    for tr in transitions(zi, _from(name), END):
        jump = ref_offset(zi, tr) - ref_offset(zi, tr - 1)
        if jump <= 0:
            continue  # an overlap: covered above
        gaps += 1
        start = dt.datetime.fromtimestamp(tr - 1, zi) + dt.timedelta(seconds=1)  # the wall time skipped first
        for k in range(0, jump, 600):
            w = start + dt.timedelta(seconds=k)
            wall = (w.year, w.month, w.day, w.hour, w.minute, w.second)
            # zoneinfo confirms it is skipped: fold 0 and 1 disagree and neither round-trips.
            a = int(dt.datetime(*wall, tzinfo=zi, fold=0).timestamp())
            assert ref_local(zi, a)[:6] != wall
            assert sched.wall(z, *wall) == tr, (name, wall)
    assert gaps >= 6


def test_vectors_for_micropython_are_zoneinfo_s_answers():
    assert VECTORS.read_text() == vectors(), "tests/core/tz_vectors.txt is stale: run python -m tests.test_tz_zoneinfo"


# The zones whose vectors the core tests check on MicroPython: both
# hemispheres, odd offsets, negative DST, transitions at -1 and 26 hours,
# permanent zones, and the date line.
VECTOR_ZONES = [
    "Europe/Berlin", "Europe/London", "Europe/Dublin", "America/New_York", "America/Los_Angeles",
    "America/St_Johns", "America/Godthab", "America/Santiago", "America/Sao_Paulo", "America/Havana",
    "Asia/Kolkata", "Asia/Kathmandu", "Asia/Jerusalem", "Asia/Tehran", "Asia/Shanghai", "Asia/Tokyo",
    "Australia/Sydney", "Australia/Adelaide", "Australia/Lord_Howe", "Australia/Eucla",
    "Pacific/Auckland", "Pacific/Chatham", "Pacific/Kiritimati", "Pacific/Pago_Pago", "Etc/GMT+12",
    "Africa/Cairo", "Antarctica/Troll", "UTC",
]


def vectors():
    """The vector file: Z zone lines, O (offset and local) lines, U (wall time -> utc) lines."""
    table = dict(ROWS)
    out = ["# From CPython's zoneinfo (tests/test_tz_zoneinfo.py); checked on MicroPython by tests/core/test_tz.py\n"]
    for name in VECTOR_ZONES:
        zi = zoneinfo.ZoneInfo(name)
        out.append(f"Z {name} {table[name]}\n")
        rnd = random.Random(name)
        ts = {rnd.randrange(START, LATE) for _ in range(6)}
        for year in (2025, 2030):
            lo = int(dt.datetime(year, 1, 1, tzinfo=UTC).timestamp())
            for tr in transitions(zi, lo, lo + 366 * 86400):
                ts.update((tr - 3601, tr - 1, tr, tr + 1, tr + 3600))
                before = dt.datetime.fromtimestamp(tr - 1, zi)
                jump = ref_offset(zi, tr) - ref_offset(zi, tr - 1)
                # Wall times around, at the edges of and inside the gap (the
                # walls before + 1 .. before + jump) or the overlap (the walls
                # before - |jump| + 1 .. before).
                if jump > 0:
                    ks = (-1, 0, 1, jump // 2, jump, jump + 1)
                else:
                    ks = (jump - 1, jump, jump + 1, jump // 2, 0, 1)
                for k in ks:
                    w = before + dt.timedelta(seconds=k)
                    wall = (w.year, w.month, w.day, w.hour, w.minute, w.second)
                    if jump > 0 and 0 < k <= jump:
                        u = tr  # skipped: the end of the gap
                    else:
                        u = int(dt.datetime(*wall, tzinfo=zi, fold=0).timestamp())
                    out.append("U %d %d %d %d %d %d %d\n" % (wall + (u,)))
        for t in sorted(ts):
            out.append("O %d %d %s\n" % (t, ref_offset(zi, t), " ".join(map(str, ref_local(zi, t)))))
    return "".join(out)


if __name__ == "__main__":
    VECTORS.write_text(vectors())
    print(f"wrote {VECTORS}")


@pytest.mark.parametrize("mod", ["test_tz", "test_time"])
def test_core_tests_in_full_on_the_micropython_unix_port(mod):
    # The 32-bit unix port, like the ESP32: among them, that the table search
    # (rainmaker.zones) and the parser are dropped after every lookup and parse.
    assert core_on_unix_port(mod) >= 10
