"""Build MicroPython with the RainMaker agent frozen in (`make firmware`).

Loaded from the filesystem, even as .mpy, the agent's bytecode, names and
messages are read into the heap; frozen into the firmware they stay in flash.
The example node then keeps about 25 KB of heap instead of about 60 KB, and
comes online in a much smaller heap (`make bench`; README, Benchmarks).

What is frozen is firmware/manifest.py: the port's usual frozen modules
(asyncio, ...) and lib/rainmaker. boot.py and main.py are not: the app stays
on the filesystem, updatable with `make deploy ARGS=--app-only`.

1. check the MicroPython source tree (v1.23 or newer) and, for the ESP32,
   the ESP-IDF environment (`idf.py` on PATH);
2. build mpy-cross, the port's submodules (ESP32) and the port, each a
   `make` command, printed and then run with its own output;
3. say where the firmware is and what to do with it.

--port unix builds the 32-bit unix binary that the heap bench measures
(MICROPYTHON=<it> python -m tests.bench.mpheap --frozen): the unix port
with the options of the binaries the tests use, the agent frozen, and the
simulated board's hardware modules frozen too, as an ESP32 has its own in
flash (tools/sim/mpy/manifest.py; the simulator runs them from the binary).

CLI: ``python -m tools.firmware --help``.
"""
import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "firmware" / "manifest.py"
SIM_MANIFEST = ROOT / "tools" / "sim" / "mpy" / "manifest.py"
BUILD = ROOT / "build"  # (git-ignored) the unix port's manifest is written here
MIN_VERSION = (1, 23)
SOURCE_URL = "https://github.com/micropython/micropython"
# The unix binary the tests run (ffi and btree left out: no libffi or
# berkeley-db submodule needed; cryptolib's AES-CTR for provisioning).
UNIX_ARGS = ["VARIANT=standard", "MICROPY_PY_FFI=0", "MICROPY_PY_BTREE=0", "LDFLAGS_EXTRA=-static",
             "CFLAGS_EXTRA=-DMICROPY_PY_CRYPTOLIB_CTR=1 -DMICROPY_PY_CRYPTOLIB_CONSTS=1",
             "BUILD=build-rainmaker"]


class FirmwareError(Exception):
    pass


def version(src):
    """MicroPython's version (major, minor, micro) from a source tree's py/mpconfig.h."""
    try:
        text = (src / "py" / "mpconfig.h").read_text()
    except OSError:
        raise FirmwareError(f"{src} is not a MicroPython source tree (no py/mpconfig.h): "
                            f"git clone {SOURCE_URL} and pass its folder with --micropython")
    parts = []
    for name in ("MAJOR", "MINOR", "MICRO"):
        m = re.search(r"#define MICROPY_VERSION_%s \(?(\d+)" % name, text)
        if not m:
            raise FirmwareError(f"{src}/py/mpconfig.h names no MICROPY_VERSION_{name}: is it a MicroPython tree?")
        parts.append(int(m.group(1)))
    return tuple(parts)


def check(src, port, idf=True):
    """The tree's version; raises FirmwareError naming the fix for what is missing."""
    if not src.is_dir():
        raise FirmwareError(f"{src} does not exist: git clone {SOURCE_URL} (v1.23 or newer) and pass its "
                            f"folder with --micropython")
    v = version(src)
    if v[:2] < MIN_VERSION:
        raise FirmwareError("MicroPython %d.%d.%d is too old: the agent needs 1.23 or newer "
                            "(git checkout a newer tag in %s)" % (v + (src,)))
    if not (src / "ports" / port).is_dir():
        raise FirmwareError(f"{src} has no ports/{port}")
    if port == "esp32" and idf and not shutil.which("idf.py"):
        raise FirmwareError("ESP-IDF is not set up in this shell (no idf.py on PATH): install the ESP-IDF "
                            "version named in ports/esp32/README.md, then run `. $IDF_PATH/export.sh` "
                            "(or build the unix port: --port unix)")
    return v


def unix_manifest():
    """The manifest for the unix port: its standard variant's frozen modules
    (asyncio, ssl...), the agent without the ESP32 ports' own list, and the
    simulated board's hardware modules, which are C in flash on an ESP32
    (tools/sim/mpy/manifest.py)."""
    return ('# Written by tools/firmware.py: the unix port\'s standard variant, the agent\n'
            '# and the simulated board\'s hardware.\n'
            'include("$(PORT_DIR)/variants/standard/manifest.py")\n'
            'include(%r, port=False)\n'
            'include(%r)\n' % (str(MANIFEST), str(SIM_MANIFEST)))


def plan(src, port, board, variant, jobs, bits32=True):
    """([(what, argv)] of the make commands, the firmware's path, {path: text}
    of the files to write first)."""
    j = ["-j%d" % jobs]
    steps = [("mpy-cross", ["make", "-C", str(src / "mpy-cross")] + j)]
    if port == "unix":
        args = UNIX_ARGS + (["MICROPY_FORCE_32BIT=1"] if bits32 else [])
        manifest = BUILD / "unix-manifest.py"
        args.append("FROZEN_MANIFEST=%s" % manifest)
        if (src / ".git").exists():
            steps.append(("submodules", ["make", "-C", str(src / "ports" / "unix")] + args + ["submodules"]))
        steps.append(("unix port", ["make", "-C", str(src / "ports" / "unix")] + args + j))
        return steps, src / "ports" / "unix" / "build-rainmaker" / "micropython", {manifest: unix_manifest()}
    args = ["BOARD=%s" % board] + (["BOARD_VARIANT=%s" % variant] if variant else [])
    args.append("FROZEN_MANIFEST=%s" % MANIFEST)
    if (src / ".git").exists():  # (a source archive carries them already)
        steps.append(("submodules", ["make", "-C", str(src / "ports" / "esp32")] + args + ["submodules"]))
    steps.append(("esp32 port", ["make", "-C", str(src / "ports" / "esp32")] + args + j))
    out = "build-%s-%s" % (board, variant) if variant else "build-%s" % board
    return steps, src / "ports" / "esp32" / out / "firmware.bin", {}


def forget_frozen(out):
    """Remove the cached frozen .mpy files from the build folder of `out`.
    MicroPython's build compiles a frozen module again only when its source is
    newer than the cached .mpy, so a build from another checkout, whose files
    may be older, would keep the last build's agent (or simulated hardware).
    They all compile again in about a second. Returns what it removed."""
    stale = out.parent / "frozen_mpy"
    if not stale.is_dir():
        return None
    shutil.rmtree(stale)
    return stale


def run(steps, log=print):
    for i, (what, argv) in enumerate(steps, 1):
        log("[%d/%d] %s: %s" % (i, len(steps), what, shlex.join(argv)), flush=True)
        try:
            r = subprocess.run(argv)
        except FileNotFoundError:
            raise FirmwareError(f"{argv[0]} not found: install make and a C compiler (build-essential)")
        if r.returncode:
            hint = ""
            if "32BIT" in " ".join(argv):
                hint = " (a 32-bit build needs gcc-multilib; --bits 64 builds without it)"
            raise FirmwareError(f"{what} failed (make exit {r.returncode}): see its output above{hint}")


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m tools.firmware", description=__doc__.split("\n\n")[0],
        epilog="Then, for an ESP32: make flash PORT=... FIRMWARE=<the .bin printed>, and "
               "make deploy PORT=... ARGS=--app-only (the app, credentials and the time zone table; "
               "the agent is in the firmware).")
    ap.add_argument("--micropython", required=True, type=Path, metavar="DIR",
                    help="a MicroPython source tree, v1.23 or newer (git clone %s)" % SOURCE_URL)
    ap.add_argument("--port", choices=("esp32", "unix"), default="esp32",
                    help="esp32 (needs ESP-IDF), or unix: the binary the heap bench measures (default esp32)")
    ap.add_argument("--board", default="ESP32_GENERIC",
                    help="MicroPython board name, e.g. ESP32_GENERIC_S3, ESP32_GENERIC_C3 (default ESP32_GENERIC)")
    ap.add_argument("--variant", default=None,
                    help="board variant (default: OTA for ESP32_GENERIC, so that over-the-air updates "
                         "work; none for the others; '' for none)")
    ap.add_argument("--bits", type=int, choices=(32, 64), default=32,
                    help="unix port only: 32 (like the ESP32; needs gcc-multilib) or 64 (default 32)")
    ap.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1, help="parallel make jobs")
    ap.add_argument("--dry-run", action="store_true", help="print the make commands, run nothing")
    args = ap.parse_args(argv)
    variant = args.variant
    if variant is None:
        variant = "OTA" if args.board == "ESP32_GENERIC" else ""
    src = args.micropython.expanduser().resolve()
    try:
        v = check(src, args.port, idf=not args.dry_run)
        steps, out, files = plan(src, args.port, args.board, variant, args.jobs, args.bits == 32)
        print("MicroPython %d.%d.%d in %s; frozen: %s" % (v + (src, MANIFEST.relative_to(ROOT))))
        if args.dry_run:
            for path, text in files.items():
                print("%s would hold:\n%s" % (path, text))
            for what, cmd in steps:
                print("%s: %s" % (what, shlex.join(cmd)))
            return 0
        for path, text in files.items():
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
        if forget_frozen(out):
            print("Frozen modules are compiled afresh (the agent from %s)" % MANIFEST.parent)
        run(steps)
        if not out.is_file():
            raise FirmwareError(f"the build ended without {out}")
    except FirmwareError as e:
        print("error: %s" % e, file=sys.stderr)
        return 1
    print("Built %s (%d bytes)." % (out, out.stat().st_size))
    if args.port == "unix":
        print("Measure it: MICROPYTHON=%s python -m tests.bench.mpheap --frozen" % out)
    else:
        print("Flash it: make flash PORT=<port> FIRMWARE=%s" % out)
        print("Then: make deploy PORT=<port> ARGS=--app-only")
    return 0


if __name__ == "__main__":
    sys.exit(main())
