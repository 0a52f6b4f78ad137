"""Provisioning in the node's own heap, on MicroPython itself (32-bit unix port).

A fresh, unprovisioned example board (firmware/main.py, unmodified, run by
tests/bench/heap_main.py as tests/bench/mpheap.py runs it; no wifi.json, so it
starts in Wi-Fi provisioning) at -X heapsize=<K> is provisioned over its HTTP
endpoint, the phone's protocol, by esp-rainmaker-cli's own client code
(tools/provision.py: proto-ver, the Security 2 handshake (SRP, as the example's
config has it, the board's default) or Security 1 with --sec 1,
cloud_user_assoc, a Wi-Fi scan, the credentials, status polls). Then the board
joins the network and comes online over mutual TLS with the local Mosquitto.

A probe passes when the CLI reports success, the board is online, the cloud
has acknowledged its user mapping, it answers the bench app's heap request with
rainmaker loaded from where it was deployed, and its log has no MemoryError,
traceback, error line or reboot. Measured: whether that holds at given heap
sizes (--at), or the smallest -X heapsize at which it does (bisected in 4K
steps, confirmed on a second board), and the heap in use there when the user
mapping has been acknowledged (gc.collect() then gc.mem_alloc(), a few
seconds after the connect: before the node has settled as mpheap.py has it).

What it covers: the board side of provisioning as a phone drives it (the SoftAP
HTTP server, protocomm, the security scheme including making the SRP verifier
on first use, the scan and the credentials store), the unload of the
provisioning code and the first connect after it, in one VM. What it does not:
BLE (the example provisions over SoftAP), the radio's and mbedTLS's own memory
(libc here, the IDF heap on an ESP32), an ESP32's speed. The figures include
the simulated hardware modules' heap (machine, network, esp32 in Python, C in
flash on an ESP32: about 14 KB frozen into the binary as `python -m
tools.firmware --port unix` builds it, about 43 KB run as .py) and the
interpreter and bench app (5-8 KB); the heap reading prints them.

The binary is $MICROPYTHON (default ../shared/micropython/micropython32); with
--frozen the agent is frozen into it and lib/ holds only the zone table, and
the run stops unless rainmaker is loaded from the binary.

    python -m tests.bench.provfit [--frozen] [--at KB ...] [--sec 1|2]
"""
import argparse
import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.bench import mpheap
from tests.harness import MICROPYTHON, ROOT, SIM_PASSWORD, SIM_SSID, Cloud
from tools.simulate import write_json
from tools.sim.relay import free_port

KB_LO, KB_HI, KB_STEP = mpheap.KB_LO, mpheap.KB_HI, mpheap.KB_STEP
USER, SECRET = "bench-user", "bench-secret"


def _random(i):
    """A fixed factory "random" (PoP, service name, salt seed) per probe, one the
    CLI's Security 2 client handles: it fails about 1 in 256 PoPs, those whose
    H(I:P) starts with a zero byte (docs/provisioning.md#security-2)."""
    while True:
        r = hashlib.sha512(b"bench-provfit-%d" % i).digest()
        if hashlib.sha512(b"wifiprov:" + r[:4].hex().encode()).digest()[0] != 0:
            return r
        i += 10000


def _cli(port, qr, timeout):
    """(ok, why not) of tools.provision against the board's provisioning port."""
    try:
        r = subprocess.run([sys.executable, "-m", "tools.provision", "--host", "127.0.0.1:%d" % port,
                            "--poll", "0.3", "--qr", qr, "--ssid", SIM_SSID, "--password", SIM_PASSWORD,
                            "--user-id", USER, "--secret-key", SECRET],
                           cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, "the CLI did not finish within %d s" % timeout
    res = [l for l in r.stdout.splitlines() if l.startswith("RESULT ")]
    if not res:
        tail = [l for l in (r.stdout + r.stderr).splitlines() if l.strip()][-1:]
        return False, "the CLI printed no result (%s)" % (tail[0][:120] if tail else "no output")
    out = json.loads(res[-1][7:])
    if not out["ok"]:
        lines = [l.strip() for l in r.stdout.splitlines() if l.strip() and not l.startswith("RESULT ")]
        return False, "the CLI failed: %s" % (out.get("error") or (lines[-1][:120] if lines else "?"))
    return True, None


def _wait(board, text, since, timeout):
    """None once the board logs text, else why not (fails fast on a bad line)."""
    end = time.monotonic() + timeout
    while True:
        if board.count(text, since):
            return None
        why = mpheap.bad_line(board)
        if why:
            return why
        if time.monotonic() > end:
            tail = [l for l in board.lines() if l.strip()][-1:]
            return "no %r within %d s (last: %s)" % (text, timeout, tail[0][:80] if tail else "nothing")
        time.sleep(0.05)


def probe(dep, cloud, root, lib, kb, idx, sec=None):
    """(ok, why not, heap reading or None, seconds from start to online, the log
    around a failure) for one fresh board provisioned at -X heapsize=<kb>K (see
    the module's docstring)."""
    node = "240AC4BE3%03X" % (idx % 0x1000)
    b = dep.board(cloud, root / ("prov-%d" % idx), node, lib, heapsize="%dK" % kb if kb else None, wifi=False)
    port = free_port()
    cfg = json.loads((b.dir / "rainmaker.json").read_text())
    cfg.update(prov_port=port, random=_random(idx).hex())
    if sec is not None:
        cfg["prov_sec"] = sec
    write_json(b.dir / "rainmaker.json", cfg)
    (b.dir / "wifi.json").unlink(missing_ok=True)
    t = time.monotonic()
    b.start()
    try:
        why, reading, online = _steps(b, node, port, lib, t)
        if why:
            return False, why, None, None, mpheap.context(b)
        why = mpheap.bad_line(b)
        return (False, why, None, None, mpheap.context(b)) if why else (True, None, reading, online, [])
    finally:
        b.stop()
        shutil.rmtree(root / ("prov-%d" % idx), ignore_errors=True)


def _steps(b, node, port, lib, t):
    """(why not or None, heap reading, seconds to online) of one started board."""
    why = _wait(b, "prov: QR ", 0, 30)
    if why:
        return "provisioning did not start: " + why, None, None
    qr = b.wait_line("prov: QR ").split("prov: QR ", 1)[1]
    ok, why = _cli(port, qr, 120)
    if not ok:
        return mpheap.bad_line(b) or why, None, None
    why = _wait(b, "online as " + node, 0, 30)
    if why:
        return "after provisioning: " + why, None, None
    online = time.monotonic() - t
    why = _wait(b, "user mapping for %s acknowledged" % USER, 0, 15)
    if why:
        return "online: " + why, None, None
    try:
        reading = mpheap.heap_reading(b, timeout=5)
    except AssertionError as e:  # its probe task did not answer
        return "no heap reading: " + str(e).splitlines()[0][:100], None, None
    mpheap.check_files(reading, lib)  # the wrong source ends the run (RuntimeError)
    return None, reading, online


def smallest(dep, cloud, root, lib, sec=None, grid=None):
    """(smallest passing KB or None, its reading, largest failing (KB, why) or
    None, probes): bisected, then confirmed on a second fresh board (a failed
    confirmation moves one step up, at most 3 times, and must pass twice)."""
    grid = grid or list(range(KB_LO, KB_HI + 1, KB_STEP))
    n = [0]

    def run(kb):
        n[0] += 1
        ok, why, reading, _, _ = probe(dep, cloud, root, lib, kb, n[0], sec)
        return ok, why, reading

    return mpheap.bisect(grid, run) + (n[0],)


def _where(lib):
    return "%s, %s" % (mpheap._binary(), "agent frozen in" if lib == "frozen" else "lib .mpy")


def _reading(r):
    return "%s B in use at the mapping's ack (sim hw %s B, start %s B)" % (
        "{:,}".format(r["used"]), "{:,}".format(r["hw"]), "{:,}".format(r["start"]))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tests.bench.provfit", description=__doc__.split("\n\n")[0],
                                 epilog="The binary is $MICROPYTHON (now: %s). Needs esp-rainmaker-cli and "
                                        "Mosquitto." % MICROPYTHON)
    ap.add_argument("--frozen", action="store_true",
                    help="the agent frozen into $MICROPYTHON (built with firmware/manifest.py), lib/ holding only "
                         "the zone table; stops unless rainmaker is loaded from the binary")
    ap.add_argument("--at", metavar="KB", type=int, nargs="+",
                    help="probe these -X heapsize values (KB), --tries boards each, instead of bisecting")
    ap.add_argument("--tries", type=int, default=2, help="boards per size with --at (default 2)")
    ap.add_argument("--sec", type=int, choices=(1, 2), default=None,
                    help="provisioning security (default: the board's config, Security 2 for the example)")
    ap.add_argument("--grid", metavar="LO:HI:STEP", default="%d:%d:%d" % (KB_LO, KB_HI, KB_STEP),
                    help="KB grid of the bisection (default %(default)s)")
    args = ap.parse_args(argv)
    if not MICROPYTHON:
        ap.error("no MicroPython binary ($MICROPYTHON)")
    if importlib.util.find_spec("rmaker_tools") is None:
        ap.error("esp-rainmaker-cli is not installed (pip install esp-rainmaker-cli)")
    lib = "frozen" if args.frozen else "mpy"
    mpheap.check_binary(lib)
    lo, hi, step = (int(x) for x in args.grid.split(":"))
    dep = mpheap.Deploy()
    root = Path(tempfile.mkdtemp(prefix="bench-provfit-"))
    cloud = Cloud(root / "cloud", engine="mosquitto").start()
    sec = "Security %d" % args.sec if args.sec else "the config's security (Security 2)"
    lines = []
    try:
        if args.at:
            lines.append("Provisioning at a given -X heapsize (%s): a fresh example board provisioned by" % _where(lib))
            lines.append("esp-rainmaker-cli over its HTTP endpoint, %s, then online and its user mapping acknowledged:"
                         % sec)
            idx = 0
            for kb in args.at:
                for i in range(args.tries):
                    idx += 1
                    t = time.monotonic()
                    ok, why, reading, online, context = probe(dep, cloud, root, lib, kb, 500 + idx, args.sec)
                    lines.append("  %4dK board %d: %s  (%.0f s)" % (
                        kb, i + 1, ("provisioned, online after %.1f s: %s" % (online, _reading(reading)))
                        if ok else "FAILED: " + why, time.monotonic() - t))
                    lines += ["      | " + l for l in context]
        else:
            t = time.monotonic()
            kb, best, failed, probes = smallest(dep, cloud, root, lib, args.sec, list(range(lo, hi + 1, step)))
            if kb is None:
                s = "none up to %dK (%s)" % failed
            else:
                s = ("<= %dK" if kb == lo else "%dK") % kb + ", " + _reading(best)
                if failed:
                    s += "; %dK failed: %s" % failed
            lines += [
                "Smallest -X heapsize at which a fresh, unprovisioned example board (%s) is provisioned" % _where(lib),
                "by esp-rainmaker-cli over its HTTP endpoint (%s), then comes online and has its user" % sec,
                "mapping acknowledged, with no MemoryError (bisected over %d..%dK in %dK steps, confirmed):" % (lo, hi, step),
                "  %s  (%d boards, %.0f s)" % (s, probes, time.monotonic() - t),
                "  (includes the sim hw modules and the interpreter's start, C in flash / not Python on an ESP32)",
            ]
    finally:
        cloud.stop()
        shutil.rmtree(root, ignore_errors=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
