"""Build an app bundle: the agent and the app in one file for an OTA update.

    python -m tools.bundle --version 1.2.0 --chip esp32 -o app.rmb
    python -m tools.bundle --check app.rmb

The bundle holds the same files `make deploy` installs from firmware/:
lib/ compiled with mpy-cross (for the chip's architecture when --chip is
given, plain bytecode otherwise) and main.py kept as source. boot.py is left
out: it is the board's recovery path when an update fails, so an update never
replaces it (the board refuses a bundle that carries it). Files are listed
library first and main.py last, the order a board should commit them in. The format (a magic, a JSON manifest with each file's size and
SHA-256, then the files' bytes) is described in docs/ota.md; the board reads
it with firmware/lib/rainmaker/bundle.py, and --check reads a bundle with
that very reader, so what passes here passes on the board.
"""
import argparse
import hashlib
import json
import struct
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
LAST = ("boot.py", "main.py")


def _reader():
    """The firmware's bundle module (it needs micropython.const, stood in for here)."""
    lib = str(ROOT / "firmware" / "lib")
    if lib not in sys.path:
        sys.path.insert(0, lib)
    if "micropython" not in sys.modules:
        mp = types.ModuleType("micropython")
        mp.const = lambda x: x
        sys.modules["micropython"] = mp
    from rainmaker import bundle

    return bundle


class BundleToolError(Exception):
    """The bundle cannot be built or read; the message says why and what to do."""


def collect(firmware=FIRMWARE, chip=None, mpy=True):
    """[(board path, bytes)] in commit order: library, then boot.py, then main.py."""
    from tools.deploy import DeployError, firmware_files
    from tools.flash import FlashError, arch_for

    try:
        arch = arch_for(chip) if chip and mpy else None
        files = firmware_files(firmware, mpy=mpy, arch=arch)
    except (DeployError, FlashError) as e:
        raise BundleToolError(str(e)) from None
    files.pop("boot.py", None)  # never replaced over the air: see the module's text
    order = sorted(files, key=lambda p: (p in LAST, LAST.index(p) if p in LAST else 0, p))
    return [(p, files[p][0]) for p in order], arch


def build(version, firmware=FIRMWARE, chip=None, mpy=True):
    """The bundle's bytes."""
    b = _reader()
    files, arch = collect(firmware, chip, mpy)
    m = {"format": 1, "version": version, "total": sum(len(d) for _, d in files),
         "files": [{"path": p, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for p, d in files]}
    if chip:
        m["chip"] = chip
    if arch:
        m["arch"] = arch
    try:
        b.check_manifest(m)
    except b.BundleError as e:
        raise BundleToolError(f"the bundle would be refused by the board: {e}") from None
    raw = json.dumps(m, separators=(",", ":")).encode()
    if len(raw) > b._MAX_MANIFEST:
        raise BundleToolError(f"manifest is {len(raw)} bytes, the board reads at most {b._MAX_MANIFEST}: "
                              "ship fewer or shorter-named files")
    return b.MAGIC + struct.pack(">H", len(raw)) + raw + b"".join(d for _, d in files)


def read(data, chunk=1460):
    """Read a bundle with the board's reader: (manifest, {path: bytes})."""
    b = _reader()
    r = b.Reader()
    files = {}
    cur = None
    try:
        pieces = [data[i:i + chunk] for i in range(0, len(data), chunk)] + [b""]  # b"": the end
        for piece in pieces:
            for ev, v in r.feed(piece):
                if ev == b.FILE:
                    cur = files[v["path"]] = bytearray()
                elif ev == b.DATA:
                    cur += v
    except b.BundleError as e:
        raise BundleToolError(f"not a valid bundle: {e}") from None
    return r.manifest, {k: bytes(v) for k, v in files.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m tools.bundle",
        description="Build an app bundle (agent + app) for an OTA update, or check one.\n\n"
                    "The bundle holds what `make deploy` installs: firmware/lib compiled with mpy-cross,\n"
                    "main.py as source (never boot.py: the board's recovery path), each file with its\n"
                    "size and SHA-256, the version first.\n"
                    "Host the file at an https URL and send that URL as an OTA job; the board tells a\n"
                    "bundle from a firmware image by its first bytes. Format: docs/ota.md.",
        epilog="examples:\n  python -m tools.bundle --version 1.2.0 --chip esp32 -o app.rmb\n"
               "  python -m tools.bundle --check app.rmb",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", help="the app version the bundle carries (reported to the cloud after the update)")
    ap.add_argument("--chip", help="target chip (esp32, esp32s3, esp32c3, ...): compiles for its architecture; "
                                   "without it the .mpy files are plain bytecode, which every chip loads")
    ap.add_argument("-o", "--output", help="file to write (default: app-<version>.rmb)")
    ap.add_argument("--firmware", default=str(FIRMWARE), help="folder holding main.py, boot.py and lib/ (default: firmware/)")
    ap.add_argument("--py", action="store_true", help="ship lib/ as .py sources instead of compiling with mpy-cross")
    ap.add_argument("--check", metavar="FILE", help="read FILE with the board's bundle reader and list it, instead of building")
    a = ap.parse_args(argv)
    try:
        if a.check:
            data = Path(a.check).read_bytes()
            m, files = read(data)
            print(f"{a.check}: bundle version {m['version']}, {len(files)} files, {m['total']} bytes"
                  + (f", chip {m['chip']}" if "chip" in m else "") + (f", arch {m['arch']}" if "arch" in m else ""))
            for f in m["files"]:
                print(f"  {f['size']:8d}  {f['sha256'][:16]}  {f['path']}")
            print("ok: every file matched its size and SHA-256")
            return 0
        if not a.version:
            ap.error("--version is required to build a bundle (e.g. --version 1.2.0)")
        data = build(a.version, a.firmware, a.chip, not a.py)
        out = Path(a.output or f"app-{a.version}.rmb")
        out.write_bytes(data)
        m, files = read(data)
        print(f"wrote {out}: version {a.version}, {len(files)} files, {len(data)} bytes")
        return 0
    except (BundleToolError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
