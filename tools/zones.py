"""Build firmware/lib/rainmaker/zones.txt: IANA zone name -> POSIX TZ string.

The board looks names up in this file by binary search on flash
(rainmaker.zones.lookup), so the lines are sorted by lowercased name, one
`Name POSIX` per line. The POSIX string of each zone is the footer of its
TZif file (version 2 and later end with a newline-enclosed TZ string that
describes all times after the last listed transition), read from the time
zone database CPython's zoneinfo uses (the system's /usr/share/zoneinfo or
the tzdata package). Zones without a footer cannot be described by a POSIX
string and are left out, as are the posix/ and right/ copies.

    python -m tools.zones            # rewrite the committed file
    python -m tools.zones --check    # exit 1 if it differs from the database
"""
import argparse
import sys
import zoneinfo
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "firmware" / "lib" / "rainmaker" / "zones.txt"


def _open(name):
    """The TZif bytes of zone `name` from the first place zoneinfo looks."""
    for base in zoneinfo.TZPATH:
        p = Path(base) / name
        if p.is_file():
            return p.read_bytes()
    try:
        from importlib import resources

        return resources.files("tzdata.zoneinfo").joinpath(*name.split("/")).read_bytes()
    except (ImportError, FileNotFoundError, ModuleNotFoundError):
        raise FileNotFoundError(f"no TZif file for {name} in {zoneinfo.TZPATH} or the tzdata package") from None


def footer(data):
    """The POSIX TZ string at the end of a TZif v2+ file ('' if none)."""
    if data[:4] != b"TZif":
        raise ValueError("not a TZif file")
    if data[4:5] in (b"\0", b""):
        return ""  # version 1: no footer
    if not data.endswith(b"\n"):
        raise ValueError("TZif v2+ file does not end with a newline")
    start = data.rindex(b"\n", 0, len(data) - 1)
    return data[start + 1:-1].decode("ascii")


def table():
    """[(name, posix)] sorted as the board searches them; names with no footer left out."""
    rows = []
    for name in zoneinfo.available_timezones():
        if name.startswith(("posix/", "right/")) or name in ("localtime", "Factory"):
            continue
        posix = footer(_open(name))
        if posix:
            rows.append((name, posix))
    rows.sort(key=lambda r: r[0].lower().encode())
    keys = [r[0].lower() for r in rows]
    dup = {k for k in keys if keys.count(k) > 1}
    if dup:
        raise SystemExit(f"zone names that differ only in case: {sorted(dup)}")
    for name, posix in rows:
        if " " in name or " " in posix:
            raise SystemExit(f"space in {name!r} {posix!r}: the table is space-separated")
        if len(name) + len(posix) + 2 > 80:
            # rainmaker.zones.lookup reads two lines at a time into 160 bytes
            raise SystemExit(f"line for {name} longer than 80 bytes")
    return rows


def version():
    """The database's version ("2025b"), from tzdata.zi where zoneinfo looks, or the tzdata package."""
    for base in zoneinfo.TZPATH:
        p = Path(base) / "tzdata.zi"
        if p.is_file():
            with p.open() as f:
                first = f.readline().split()
            if first[:2] == ["#", "version"]:
                return first[2]
    try:
        import tzdata

        return tzdata.IANA_VERSION
    except ImportError:
        return "unknown"


def text(rows, ver):
    # The header sorts before every name ('#' is below all characters a name
    # may hold), so the board's search passes over it.
    head = f"# tzdata {ver}: python -m tools.zones\n"
    return head + "".join(f"{name} {posix}\n" for name, posix in rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed file instead of writing it")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args(argv)
    rows = table()
    new = text(rows, version())
    if a.check:
        old = a.out.read_text() if a.out.exists() else ""
        if old != new:
            print(f"{a.out} is out of date with the time zone database; run python -m tools.zones", file=sys.stderr)
            return 1
        print(f"{a.out}: {len(rows)} zones, up to date")
        return 0
    a.out.write_text(new)
    print(f"wrote {a.out}: {len(rows)} zones, {len(new.encode())} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
