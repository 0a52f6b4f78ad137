"""Heap of the whole firmware on MicroPython itself: the unix port, 32-bit (micropython32).

The board is the simulator's MicroPython backend (tools/sim/mpboard.py): the real
firmware, MicroPython's own asyncio, socket and mbedTLS, online over mutual TLS
against the local Mosquitto. Its main.py is the bench app tests/bench/heap_main.py,
which runs the example app (firmware/main.py, unmodified, deployed beside it as
example.py: light, temperature sensor, button) plus one task that prints
gc.mem_alloc() after gc.collect() when asked. Measured:

  online     the node online and settled: config, full params and the Connected
             re-report (5 s after the SUBACK) published and acknowledged;
  1,000      after 1,000 remote writes, each echoed before the next;
  minimum    the smallest -X heapsize (32K..256K, 4K steps, bisected, a fresh
             board each probe) at which the node comes online and echoes 200
             writes with no MemoryError, no traceback, no reboot.

lib/ is loaded either as .mpy, the very files `make deploy` installs on an ESP32
(tools.deploy.firmware_files with -march=xtensawin: the firmware has no native
code, so they are bytecode only and this i386 binary loads them), or as .py
compiled on import. The bench app reports where rainmaker came from, and the run
stops if it is not what was deployed.

The binary is $MICROPYTHON (default ../shared/micropython/micropython32), so a
build of one's own is measured the same way: MICROPYTHON=/path/to/build python -m
tests.bench.mpheap. With --frozen, the one column is the agent frozen into that
binary (firmware/manifest.py in its FROZEN_MANIFEST): lib/ on the board holds only
what `make deploy ARGS=--app-only` puts there (the time zone table), and the run
stops if rainmaker was not loaded from the binary. Its bytecode, names and string
constants are then in the binary (flash on an ESP32), not in the heap.

In the figure: the interpreter's own state, the sim's boot driver and boot.py,
the bench app (its bytecode and one task), MicroPython's frozen asyncio and ssl
(their objects; the bytecode is in the binary, as in an ESP32's flash), the
rainmaker modules (bytecode, functions, interned names), the example app and its
node, the agent's live state (session, sync, link, buffers, asyncio tasks) and the
simulated hardware modules (machine, network, esp32 and the world model behind
them, Python here, C in flash on an ESP32, including the flash model behind
esp32.Partition, which the bench app loads up front): "start" and "sim hw" are
printed so they can be taken off. Not in it: mbedTLS's buffers and contexts (malloc'd from
libc on the unix port, from the IDF heap on an ESP32; not measured here), the
socket, thread stacks and the C stack. The TLS objects' fixed parts (the
SSLContext and SSL socket structs) are GC objects on both and so are counted.
Floats are doubles here (singles on an ESP32); object sizes are otherwise
the ESP32's, since both are 32-bit.
"""
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.harness import Board, Cloud, MICROPYTHON
from tests.bench.roundtrip import Requester, direct, lift_budget
from tools.deploy import firmware_files

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"
APP = Path(__file__).with_name("heap_main.py")
NODE = "240AC4BE0010"
BAD = ("MemoryError", "out of memory", "Traceback", "board is at the REPL", "task_wdt", "rm E ")
KB_LO, KB_HI, KB_STEP = 32, 256, 4


class Deploy:
    """The lib/ files a real ESP32 gets from `make deploy`, compiled once per run."""

    def __init__(self):
        self.mpy = {rel: data for rel, (data, _) in firmware_files(FIRMWARE, mpy=True, arch="xtensawin").items()
                    if rel.startswith("lib/")}

    def board(self, cloud, root, node, lib, heapsize=None, wifi=True, args=()):
        """A board with lib/ as LIBS[lib] says (the board starts with lib/ as .py).
        wifi=False: no credentials, the board starts in provisioning; args: more
        tools.sim.mpboard options (a --relay for a file server)."""
        args = (["--heapsize", heapsize] if heapsize else []) + list(args)
        b = Board(cloud, root, node, backend="micropython", args=args, wifi=wifi)
        direct(b, cloud)  # the radio relay adds delayed-ACK stalls (see roundtrip.py)
        lift_budget(b)
        if lib != "py":
            for src in (b.dir / "lib").rglob("*.py"):
                src.unlink()
        if lib == "mpy":
            for rel, data in self.mpy.items():
                (b.dir / rel).parent.mkdir(parents=True, exist_ok=True)
                (b.dir / rel).write_bytes(data)
        (b.dir / "example.py").write_bytes((FIRMWARE / "main.py").read_bytes())
        (b.dir / "main.py").write_bytes(APP.read_bytes())
        return b


def bad_line(board, since=0, boots=1, skip=None):
    """The first sign of trouble in the board's log since `since`: a BAD line
    (but none that skip(line) excuses), more than `boots` boots, or the board
    gone; None if there is none."""
    for line in board.lines(since):
        if skip and skip(line):
            continue
        if any(word in line for word in BAD):
            return line.strip().split(";")[0][:100]
    if board.count("MicroPython v", since) > boots:
        return "the board rebooted"
    if board.proc and board.proc.poll() is not None:
        return "the board exited (status %s)" % board.proc.returncode
    return None


def context(board):
    """The board's log around its first bad line (BAD): three lines before it,
    then a traceback whole up to its exception line, or eight lines after; the
    last lines when there is no bad line. Long lines are cut at 200 characters."""
    lines = [l if len(l) <= 200 else l[:200] + "..." for l in board.lines()]
    for i, line in enumerate(lines):
        if any(word in line for word in BAD):
            end = i + 9
            if "Traceback" in line:
                end = i + 1
                while end < len(lines) and lines[end].startswith(" "):
                    end += 1
                end += 1  # the exception
            return lines[max(0, i - 3):end]
    return lines[-12:]


def wait_online(board, node, timeout):
    """None once online, else why not (fails fast on a crash or a MemoryError)."""
    end = time.monotonic() + timeout
    while True:
        if board.count("online as " + node):
            return None
        why = bad_line(board)
        if why:
            return why
        if time.monotonic() > end:
            tail = [l for l in board.lines() if l.strip()][-1:]
            return "not online within %d s (last: %s)" % (timeout, tail[0][:80] if tail else "nothing")
        time.sleep(0.05)


_seq = [0]


def heap_reading(board, timeout=10):
    """The bench app's reading: {'used', 'free', 'start', 'hw', 'writes', 'state', 'files'}."""
    _seq[0] += 1
    seq = _seq[0]
    tmp = board.dir / "bench.req.tmp"
    tmp.write_text(str(seq))
    os.replace(tmp, board.dir / "bench.req")
    line = board.wait_line("BENCH heap %d " % seq, timeout=timeout)
    out = dict(re.findall(r"(\w+)=(\S+)", line))
    for k in ("used", "free", "start", "hw", "writes"):
        out[k] = int(out[k])
    return out


# The columns: where the board's rainmaker modules come from.
LIBS = {"mpy": "lib .mpy", "py": "lib .py", "frozen": "frozen"}


def _from_binary(f):
    # A frozen module's __file__ is its name in the manifest ("rainmaker/agent.py");
    # one loaded from a file has the MICROPYPATH entry before it, which is an
    # absolute path on a board and "lib/" in the import-table VM.
    return not f.startswith("/") and not f.startswith("lib/")


def agent_frozen(binary=None):
    """True if the rainmaker package is frozen into the binary ($MICROPYTHON by
    default): imported with only the binary's own modules on the path."""
    with tempfile.TemporaryDirectory(prefix="bench-frozen-") as d:
        r = subprocess.run([str(binary or MICROPYTHON), "-c", "import rainmaker; print(rainmaker.__file__)"],
                           cwd=d, env=dict(os.environ, MICROPYPATH=".frozen"), capture_output=True, text=True,
                           timeout=30)
    return r.returncode == 0 and _from_binary(r.stdout.strip())


def check_binary(lib, binary=None):
    """Stop unless the binary suits the lib/ mode: the agent frozen in for "frozen";
    not frozen in for "mpy" and "py", where '.frozen', before lib/ on the path,
    would shadow what the board has in lib/."""
    frozen = agent_frozen(binary)
    if lib == "frozen" and not frozen:
        raise RuntimeError("rainmaker is not frozen into %s: build MicroPython with a FROZEN_MANIFEST that "
                           "includes firmware/manifest.py and point $MICROPYTHON at it" % (binary or MICROPYTHON))
    if lib != "frozen" and frozen:
        raise RuntimeError("%s has rainmaker frozen in, which shadows lib/ %s: measure it with --frozen, or "
                           "point $MICROPYTHON at a binary without the agent" % (binary or MICROPYTHON, LIBS[lib]))


def check_files(reading, lib):
    files = reading["files"].split(",")
    if lib == "frozen":
        ok = all(_from_binary(f) for f in files)
    else:
        ok = all(f.endswith("." + lib) and not _from_binary(f) for f in files)
    if not ok:
        raise RuntimeError("rainmaker was not loaded from %s: %s%s" % (
            LIBS[lib], files, " (is it frozen into $MICROPYTHON?)" if lib == "frozen" else ""))


def writes(req, node, n, timeout=5.0, start=0):
    for i in range(n):
        if req.once(node, (start + i * 7) % 100 + 1, timeout) is None:
            return i
    return n


def measure(dep, cloud, req, root, lib, n=1000):
    node = NODE[:-1] + str(list(LIBS).index(lib))
    b = dep.board(cloud, root / ("full-" + lib), node, lib)
    m = cloud.mark()
    b.start()
    try:
        why = wait_online(b, node, 30)
        if why:
            hint = " (is rainmaker frozen into $MICROPYTHON?)" if lib == "frozen" else ""
            raise RuntimeError("MicroPython board not online: " + why + hint)
        # Settled: the Connected re-report comes 5 s after the SUBACK, and the
        # boot's otafetch 5 s after the node is online (sent by the agent: the
        # OTA code is loaded only for a job).
        cloud.wait("params/local", node, since=m, timeout=15, where=lambda p: b'"Connected":true' in p)
        cloud.wait("otafetch", node, since=m, timeout=30)
        time.sleep(1.0)
        online = heap_reading(b)
        check_files(online, lib)
        done = writes(req, node, n)
        if done != n:
            raise RuntimeError("MicroPython board echoed %d of %d writes: %s" % (done, n, bad_line(b)))
        after = heap_reading(b)
        if online["state"] != "online" or after["state"] != "online":
            raise RuntimeError("MicroPython board not online at a reading: %s, %s" % (online["state"], after["state"]))
        why = bad_line(b)
        if why:
            raise RuntimeError("MicroPython board: " + why)
        return online, after
    finally:
        b.stop()


def fits(dep, cloud, req, root, lib, kb, idx, n=200):
    """(ok, why not, heap reading) for one fresh board with -X heapsize=<kb>K."""
    node = "240AC4BE1%03X" % idx
    b = dep.board(cloud, root / ("probe-%d" % idx), node, lib, heapsize="%dK" % kb)
    b.start()
    try:
        why = wait_online(b, node, 10)
        if why:
            return False, why, None
        done = writes(req, node, n, timeout=3.0)
        why = bad_line(b)
        if why or done != n:
            return False, why or "echoed %d of %d writes" % (done, n), None
        reading = heap_reading(b, timeout=5)
        why = bad_line(b)
        return (False, why, None) if why else (True, None, reading)
    except AssertionError as e:  # no heap reading: the probe task did not run
        return False, str(e).splitlines()[0][:120], None
    finally:
        b.stop()
        shutil.rmtree(root / ("probe-%d" % idx), ignore_errors=True)


def bisect(grid, probe, confirms=3):
    """The smallest size of grid (ascending) at which probe(size) -> (ok, why,
    reading) passes: bisected, then confirmed on a fresh board (near the edge,
    heap layout and timing decide; a failed confirmation moves one step up, at
    most `confirms` times, and the size it lands on must pass twice).
    Returns (size or None, its reading, largest failing (size, why) or None)."""
    ok, why, reading = probe(grid[-1])
    if not ok:
        return None, None, (grid[-1], why)
    lo, hi = -1, len(grid) - 1  # grid[lo] fails (lo = -1: below the grid, not probed), grid[hi] passes
    best, failed = reading, None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        ok, why, reading = probe(grid[mid])
        if ok:
            hi, best = mid, reading
        else:
            lo, failed = mid, (grid[mid], why)
    need, moves = 1, 0  # passes still owed at grid[hi] (the bisection's was one); steps moved up
    while need:
        ok, why, reading = probe(grid[hi])
        if ok:
            need -= 1
            best = best or reading
            continue
        failed = (grid[hi], why + " (on the confirming board)")
        if hi == len(grid) - 1 or moves == confirms:
            # Not "nothing fits": sizes passed, but none on two boards in a row.
            return None, None, (grid[hi], "unsteady: no size from %dK to %dK passed on two boards in a row; "
                                          "at %dK: %s" % (grid[hi - moves], grid[hi], grid[hi], why))
        hi, moves, need, best = hi + 1, moves + 1, 2, None
    return grid[hi], best, failed


def smallest(dep, cloud, req, root, lib, start_idx):
    """bisect() over the -X heapsize grid with fresh boards (fits()). Returns
    (smallest passing KB or None, its reading, largest failing (KB, why) or
    None, probes)."""
    grid = list(range(KB_LO, KB_HI + 1, KB_STEP))
    idx = [start_idx]

    def probe(kb):
        idx[0] += 1
        return fits(dep, cloud, req, root, lib, kb, idx[0])

    return bisect(grid, probe) + (idx[0] - start_idx,)


# ---------------------------------------------------------------- import cost

# In the order a board loads them (what comes first is charged for the name pool's chunks).
_IMPORTS = ("asyncio", "ssl", "rainmaker", "rainmaker.log", "rainmaker.conf", "rainmaker.std", "rainmaker.tz",
            "rainmaker.tzparse", "rainmaker.zones", "rainmaker.keeper", "rainmaker.sched", "rainmaker.topics",
            "rainmaker.mqtt", "rainmaker.session", "rainmaker.sync", "rainmaker.budget", "rainmaker.store",
            "rainmaker.series", "rainmaker.config", "rainmaker.link", "rainmaker.dial", "rainmaker.agent",
            "rainmaker.ota", "rainmaker.update", "rainmaker.system", "rainmaker.diag")

_IMPORT_CODE = r"""
import gc, sys
gc.collect()
for name in NAMES:
    gc.collect()
    a = gc.mem_alloc()
    __import__(name)
    gc.collect()
    print("ROW", name, gc.mem_alloc() - a, sys.modules[name].__file__ if hasattr(sys.modules[name], "__file__") else "frozen")
"""


def import_costs(dep, lib):
    """{module: bytes retained by importing it}, each after the ones before it, in a bare VM."""
    with tempfile.TemporaryDirectory(prefix="bench-imports-") as d:
        d = Path(d)
        (d / "stub").mkdir()
        (d / "stub" / "network.py").write_text("STA_IF = 0\nAP_IF = 1\nSTAT_IDLE = 0\n")  # agent imports it
        if lib == "mpy":
            for rel, data in dep.mpy.items():
                (d / rel).parent.mkdir(parents=True, exist_ok=True)
                (d / rel).write_bytes(data)
        elif lib == "py":
            shutil.copytree(FIRMWARE / "lib", d / "lib", ignore=shutil.ignore_patterns("__pycache__"))
        (d / "run.py").write_text("NAMES = %r\n" % (_IMPORTS,) + _IMPORT_CODE)
        # lib/ before .frozen, so the file is the one measured even if the binary has the agent
        env = dict(os.environ, MICROPYPATH="stub:lib:.frozen" if lib != "frozen" else "stub:.frozen")
        r = subprocess.run([MICROPYTHON, "run.py"], cwd=d, env=env, capture_output=True, text=True, timeout=60)
    rows = {}
    for line in r.stdout.splitlines():
        if line.startswith("ROW "):
            _, name, n, f = line.split()
            if name.startswith("rainmaker") and (_from_binary(f) != (lib == "frozen") or
                                                 lib == "mpy" and not f.endswith(".mpy")):
                raise RuntimeError("import table: %s came from %s, not %s" % (name, f, LIBS[lib]))
            rows[name] = int(n)
    if len(rows) != len(_IMPORTS):
        raise RuntimeError("import table run failed: " + (r.stdout + r.stderr)[-500:])
    return rows


# ---------------------------------------------------------------- report

def run(libs=("mpy", "py")):
    dep = Deploy()
    root = Path(tempfile.mkdtemp(prefix="bench-mpheap-"))
    cloud = Cloud(root / "cloud", engine="mosquitto").start()
    req = Requester(cloud, "bench-heap-requester")
    res = {}
    try:
        for lib in libs:
            online, after = measure(dep, cloud, req, root, lib)
            kb, best, failed, probes = smallest(dep, cloud, req, root, lib, 100 * list(LIBS).index(lib))
            res[lib] = {"online": online, "after": after, "min_kb": kb, "min_reading": best,
                        "failed": failed, "probes": probes, "imports": import_costs(dep, lib)}
        return res
    finally:
        req.stop()
        cloud.stop()
        shutil.rmtree(root, ignore_errors=True)


def report_lines(res):
    """The report, one column per LIBS key in res (in its order); the first one's
    reading gives the sim hw, the loaded modules and the resident total."""
    cols = [res[k] for k in res]
    m = cols[0]

    def row(label, f, note=""):
        return f"  {label:<46}" + "".join(f" {f(r):>9,d}" for r in cols) + note

    def share(r):
        return r["used"] - r["start"] - r["hw"]

    lines = [
        "Heap of the whole firmware on MicroPython v1.28, unix port, 32-bit (%s): the example" % _binary(),
        "node (firmware/main.py) online over mutual TLS to Mosquitto; gc.mem_alloc() after gc.collect(), bytes:",
        f"  {'':<46}" + "".join(f" {LIBS[k]:>9}" for k in res),
        row("online, settled: heap in use", lambda r: r["online"]["used"]),
        row("after 1,000 remote writes echoed", lambda r: r["after"]["used"],
            "   (writes applied: %s)" % ", ".join("%d" % r["after"]["writes"] for r in cols)),
        row("  - start (interpreter, boot driver, bench app)", lambda r: r["after"]["start"]),
        row("  - sim hw (machine/network/esp32 in Python)", lambda r: r["after"]["hw"]),
        row("  = firmware's own, online", lambda r: share(r["online"])),
        row("  = firmware's own, after 1,000 writes", lambda r: share(r["after"]), "   (target <= 32,768)"),
    ]

    def smallest_text(r):
        if r["min_kb"] is None:
            return "none up to %dK (%s)" % (KB_HI, r["failed"][1])
        at = "<= " if r["min_kb"] == KB_LO else ""
        s = "%s%dK, %s bytes in use there" % (at, r["min_kb"], "{:,}".format(r["min_reading"]["used"]))
        if r["failed"]:
            s += "; %dK: %s" % r["failed"]
        return s

    lines += [
        "  smallest -X heapsize at which a fresh board comes online and echoes 200 writes with no MemoryError,",
        "  twice (bisected over %d..%dK in %dK steps; after it, the largest size that failed and why):"
        % (KB_LO, KB_HI, KB_STEP),
    ]
    lines += ["    %-10s%s  (%d probes)" % (LIBS[k] + ":", smallest_text(r), r["probes"]) for k, r in res.items()]
    lines += [
        "    (the minimum includes the sim hw modules, %s bytes, C in flash on an ESP32: less them, %s)"
        % ("{:,}".format(m["after"]["hw"]), _less_hw(m)),
        "  rainmaker modules loaded on the board: " + m["after"]["mods"].replace(",", ", "),
        "  Not counted: mbedTLS buffers (libc here, the IDF heap on an ESP32), sockets, stacks.",
        "Import cost on %s (bare VM, a stub network module), each after the ones above it, bytes" % _binary(),
        "(the interned-name pool grows in chunks, so a module may be charged ~2 KB its successor uses):",
        f"  {'module':<20}" + "".join(f" {_HEAD[k]:>7}" for k in res) + "  on the board after 1,000 writes",
    ]
    loaded = set(m["after"].get("mods", "").split(","))
    totals = [0] * len(cols)
    res_m = 0
    for name in _IMPORTS:
        costs = [r["imports"][name] for r in cols]
        label = {"rainmaker": "rainmaker (+node)", "asyncio": "asyncio (frozen)", "ssl": "ssl (frozen)"}.get(name, name)
        short = name[10:] if name.startswith("rainmaker.") else None
        where = "" if short is None else "resident" if short in loaded else "not loaded (" + _WHEN.get(short, "when needed") + ")"
        lines.append(f"  {label:<20}" + "".join(f" {c:7,d}" for c in costs) + f"  {where}")
        if name.startswith("rainmaker"):
            totals = [t + c for t, c in zip(totals, costs)]
            if short is None or short in loaded:
                res_m += costs[0]
    lines.append(f"  {'rainmaker, all':<20}" + "".join(f" {t:7,d}" for t in totals))
    lines.append(f"  {'rainmaker, resident':<20} {res_m:7,d}")
    return lines


_HEAD = {"mpy": ".mpy", "py": ".py", "frozen": "frozen"}


def _binary():
    # The shared binary by its name; a build of one's own ($MICROPYTHON) by its path.
    return str(MICROPYTHON) if os.environ.get("MICROPYTHON") else "micropython32"


def _less_hw(r):
    # What the minimum comes to without the simulated hardware, which is
    # allocated first and stays: roughly the heap an ESP32 would need.
    if r["min_kb"] is None:
        return "-"
    return "about %dK" % ((r["min_kb"] * 1024 - r["after"]["hw"] + 1023) // 1024)


# Why a module is not in the heap of a node that is online and settled.
_WHEN = {
    "conf": "for the config JSON, dropped after",
    "std": "builds the node, dropped by run()",
    "tzparse": "to parse a TZ string, dropped after",
    "zones": "for a zone name's lookup, dropped after",
    "sched": "while a schedule has work",
    "config": "start-up: TLS context, clock, first join",
    "ota": "while an OTA job has work",
    "update": "while an OTA job has work",
    "system": "once a System action is asked for",
    "diag": "after a failure",
}


def report(frozen=False):
    """(text, figures): lib/ as .mpy and as .py, or with frozen=True the agent
    frozen into $MICROPYTHON (see the module's docstring)."""
    if not MICROPYTHON:
        return "Heap on micropython32: skipped, no MicroPython binary ($MICROPYTHON)", {}
    res = run(("frozen",) if frozen else ("mpy", "py"))
    return "\n".join(report_lines(res)), res


def main(argv=None):
    import argparse

    ap = argparse.ArgumentParser(prog="python -m tests.bench.mpheap", description=__doc__.split("\n\n")[0],
                                 epilog="The binary is $MICROPYTHON (now: %s)." % MICROPYTHON)
    ap.add_argument("--frozen", action="store_true",
                    help="measure the agent frozen into $MICROPYTHON (built with firmware/manifest.py), "
                         "not deployed in lib/; stops if rainmaker is not loaded from the binary")
    args = ap.parse_args(argv)
    print(report(frozen=args.frozen)[0])


if __name__ == "__main__":
    main()
