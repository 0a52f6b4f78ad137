"""OTA: throughput against a raw download, heap during an OTA, bytes over the air.

Printed, never asserted. One local cloud (broker and the HTTPS file server,
tools/otaserver.py) serves every board in the run; the boards are the
simulator's (tests/harness.Board) running the bench app tests/bench/ota_main.py
(the OTA test app's plug, plus an opt-in heap sampler).

1. Throughput. A ~1 MB firmware image (tests/esp_image.py) goes to a fresh
   board as an OTA job, and the same file is downloaded raw by the same
   interpreter over the same kind of link, alternately: raw, OTA, raw, OTA, raw.
   - MicroPython board: micropython32 running the firmware (lib/ as .mpy, as
     `make deploy` installs it); its sockets reach the file server through the
     board's radio relay (tools/sim/relay.py). Raw: a small script run by
     micropython32 that connects to the same relay port, does TLS with
     MicroPython's own ssl against the same CA, sends the GET and reads the
     body with readinto() into one reused 1,024-byte buffer (the firmware's
     read size), discarding it.
   - CPython board: the firmware on CPython (tools/sim/board.py, the sim's
     socket/ssl layer); raw: the same script run by this Python, straight to
     the file server, as the CPython board is.
   Both are timed from the file server's record of the GET (written when the
   request head has been read: after TCP connect and the TLS handshake) to
   the end. OTA end: the "Firmware Image download complete" status arriving
   at the cloud, so it includes the MD5 check, the last sector's write and one
   MQTT publish (a few ms); raw end: the script's line arriving on its stdout.
   The OTA side also includes the job's progress statuses and the writes to
   the simulated flash (a file per partition, written by Python code in the
   guest: an ESP32's flash erase and program times are not modelled). Left
   out: Wi-Fi, an ESP32's CPU (both run at host speed), the job's MQTT
   delivery, the reboot and the image validation after the download.
   Ratio = OTA throughput / raw throughput (medians); target >= 0.8.
   One more MicroPython row says where time can go: the raw download read
   through MicroPython's asyncio stream for every read (each read then waits
   on the SSL socket through the scheduler's poll, which polls every socket
   of the board). fetch.py reads 4 KB at a time and takes what TLS already
   holds straight from the socket, through the scheduler every 8th read.

2. Heap during an OTA, MicroPython board (lib/ as .mpy, -X heapsize=HEAP),
   with the sampler on (gc.collect() then gc.mem_alloc() every 100 ms): the
   heap in use at the last sample before the download task starts, and the
   largest during it, one fresh board per update: a firmware image of
   ~100 KB and of ~1.5 MB, an app bundle as tools/bundle.py builds it
   (~140 KB: the agent alone is more than 100 KB) and padded to ~1.5 MB with
   a data file. The difference includes what the OTA path imports on first use
   (fetch, http, image or bundle and stage: bytecode and names) and the TLS
   context and socket objects; not mbedTLS's own buffers (libc on the unix
   port, the IDF heap on an ESP32). Samples every 100 ms can miss a short
   peak between them. Then the smallest -X heapsize at which a fresh board
   still takes a 1.5 MB image to "download complete" (skip it: `nomin`).

3. Bytes over the air for a one-line change in main.py: the app bundle
   (tools/bundle.py, lib/ as .mpy) against a MicroPython firmware app image.
   No official firmware is fetched (no network here beyond package
   registries): its size is assumed, see FIRMWARE_APP.

Then the parsers' own heap and speed (tests/bench/ota_heap.py).

    python -m tests.bench ota          python -m tests.bench.ota [nomin]
"""
import hashlib
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests import esp_image
from tests.bench import ota_heap
from tests.harness import MICROPYTHON, Board, Cloud
from tools import bundle as tb
from tools.deploy import firmware_files
from tools.otaserver import OtaServer
from tools.sim.relay import free_port

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"
APP = Path(__file__).with_name("ota_main.py")
THROUGHPUT_SIZE = 1024 * 1024
HEAP_SIZES = (100 * 1024, 1536 * 1000)
HEAP = "256K"
# A MicroPython ESP32_GENERIC-OTA application image (the .app-bin an OTA job
# carries, not the combined flash image) is about 1.6 MB for v1.2x: assumed,
# not measured here.
FIRMWARE_APP = 1600 * 1024
FINAL = ("success", "rejected")
MIN_GRID = list(range(120, 257, 8))  # KB, for the smallest heap that still takes a 1.5 MB image (the node
# alone needs ~116K: README)

# The raw download, for CPython and MicroPython alike. With ASYNC (MicroPython
# only) the body is read through MicroPython's asyncio stream, as the firmware
# reads it, rather than by blocking reads.
RAW = r"""
import socket, ssl
HOST, PORT, PATH, CA, SIZE, ASYNC = %r, %d, %r, %r, %d, %r
with open(CA, "rb") as f:
    der = f.read()
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.verify_mode = ssl.CERT_REQUIRED
ctx.load_verify_locations(cadata=der)
ai = socket.getaddrinfo(HOST, PORT, 0, socket.SOCK_STREAM)[0]
s = socket.socket(ai[0], ai[1], ai[2])
s.connect(ai[-1])
t = ctx.wrap_socket(s, server_hostname=HOST)
(t.sendall if hasattr(t, "sendall") else t.write)(b"GET " + PATH.encode() + b" HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\nConnection: close\r\n\r\n")
buf = bytearray(1024)
mv = memoryview(buf)


def body():
    # fed each read's byte count; yields True while it wants more
    head = b""
    got = 0
    while got < SIZE:
        n = yield True
        if not n:
            break
        if head is not None:
            head += bytes(mv[:n])
            i = head.find(b"\r\n\r\n")
            if i < 0:
                continue
            got = len(head) - i - 4
            head = None
        else:
            got += n
    print("RAW", got)
    yield False


if ASYNC:
    import asyncio

    async def main():
        t.setblocking(False)
        r = asyncio.StreamReader(t)
        g = body()
        g.send(None)
        while g.send(await r.readinto(buf)):
            pass

    asyncio.run(main())
else:
    rd = t.recv_into if hasattr(t, "recv_into") else t.readinto
    g = body()
    g.send(None)
    while g.send(rd(buf)):
        pass
t.close()
"""


def _version_app(version):
    return APP.read_text().replace('fw_version="1.0.0"', 'fw_version="%s"' % version)


class Rig:
    """The local cloud and file server, and the boards of one run."""

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="bench-ota-"))
        self.cloud = Cloud(self.root / "cloud").start()
        self.server = OtaServer(self.root / "files", self.cloud.workdir).start()
        self.mpy = {rel: data for rel, (data, _) in firmware_files(FIRMWARE, mpy=True, arch="xtensawin").items()
                    if rel.startswith("lib/")}
        self.boards = []
        self.jobs = 0

    def stop(self):
        for b in self.boards:
            b.stop()
        self.server.stop()
        self.cloud.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def board(self, backend, node, name, heapsize=None, sample=False, timeout=40, read=None):
        args, port = [], self.server.port
        if backend == "micropython":  # its sockets reach the file server through its radio relay
            port = free_port()
            args = ["--relay", "%d=127.0.0.1:%d" % (port, self.server.port)]
            if heapsize:
                args += ["--heapsize", heapsize]
        b = Board(self.cloud, self.root / name, node, main=APP, keepalive=30, backend=backend, args=args)
        b.ota_port = port
        if backend == "micropython":  # lib/ as `make deploy` installs it on an ESP32
            for src in (b.dir / "lib").rglob("*.py"):
                src.unlink()
            for rel, data in self.mpy.items():
                (b.dir / rel).parent.mkdir(parents=True, exist_ok=True)
                (b.dir / rel).write_bytes(data)
        if read:  # this board only: fetch.py with another read size, as source
            src = (FIRMWARE / "lib" / "rainmaker" / "fetch.py").read_text()
            if "_READ = const(1024)" not in src:
                raise RuntimeError("fetch.py's read size is no longer _READ = const(1024): update the bench")
            (b.dir / "lib" / "rainmaker" / "fetch.mpy").unlink(missing_ok=True)
            (b.dir / "lib" / "rainmaker" / "fetch.py").write_text(src.replace("_READ = const(1024)", "_READ = const(%d)" % read))
        if sample:
            (b.dir / "bench.sample").write_text("1")
        self.boards.append(b)
        b.start()
        try:
            b.wait_line("online as " + node, timeout=timeout)
        except AssertionError:
            b.stop()
            self.boards.remove(b)
            raise
        return b

    def _offset(self):
        return time.time() - time.monotonic()  # server records are wall time; cloud messages monotonic

    def _get(self, path, mark):
        for r in self.server.requests[mark:]:
            if r["path"] == path and r["method"] == "GET":
                return r
        raise RuntimeError("the file server saw no GET %s" % path)

    def ota(self, b, name, data, version=None, timeout=120, until="success", fail_fast=False):
        """(seconds from the GET to "download complete", statuses, board log mark) of one job.
        until="complete": return at "download complete" (the MD5 has been checked),
        without waiting for the reboot into the new image and its "success".
        fail_fast: give up at the first failed attempt rather than the third."""
        self.jobs += 1
        job = "bench%d" % self.jobs
        (self.server.root / name).write_bytes(data)
        doc = {"ota_job_id": job, "url": "https://127.0.0.1:%d/%s" % (b.ota_port, name),
               "file_size": len(data), "file_md5": hashlib.md5(data).hexdigest()}
        if version:
            doc["fw_version"] = version
        since, mark, lines = self.cloud.mark(), len(self.server.requests), b.mark()
        self.cloud.publish("node/%s/otaurl" % b.node_id, doc)
        done, st = None, []
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            st = []
            with self.cloud._cond:
                msgs = list(self.cloud.messages[since:])
            for topic, payload, t in msgs:
                if topic.endswith(b.node_id + "/otastatus"):
                    d = json.loads(payload)
                    if d.get("ota_job_id") == job:
                        st.append((d["status"], d["additional_info"]))
                        if d["additional_info"] == "Firmware Image download complete" and done is None:
                            done = t
            if st and (st[-1][0] in FINAL or st[-1][0] == "failed" and "Attempt 3/" in st[-1][1]):
                break
            if until == "complete" and done is not None or fail_fast and st and st[-1][0] == "failed":
                break
            time.sleep(0.05)
        if done is None if until == "complete" else (not st or st[-1][0] != "success"):
            raise RuntimeError("OTA job %s on %s did not succeed: %s\n%s" % (
                job, b.node_id, st[-3:], "\n".join(b.lines()[-15:])))
        reqs = [r for r in self.server.requests[mark:] if r["path"] == "/" + name and r["method"] == "GET"]
        if len(reqs) != 1:
            raise RuntimeError("OTA job %s took %d GETs (a resumed download is no throughput sample)" % (job, len(reqs)))
        start = reqs[0]["time"] - self._offset()
        return done - start, st, lines

    def raw(self, interp, port, name, size, ca, use_async=False):
        """Seconds from the GET to the last byte, for a plain download by interp."""
        mark = len(self.server.requests)
        code = RAW % ("127.0.0.1", port, "/" + name, str(ca), size, use_async)
        p = subprocess.Popen([str(interp), "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = p.stdout.readline()
        t = time.monotonic()
        _, err = p.communicate(timeout=60)
        if line.split() != ["RAW", str(size)]:
            raise RuntimeError("raw download by %s failed: %r %s" % (Path(interp).name, line, err[-500:]))
        return t - (self._get("/" + name, mark)["time"] - self._offset())


# ---------------------------------------------------------------- 1. throughput

def throughput(rig, rounds=2):
    """{label: {"ota": [s...], "raw": [s...], "async": [s...], "size": n}} for the ~1 MB image.

    Each OTA sample is a fresh board, stopped at "download complete" (its reboot
    into the image is not timed; tests/test_ota_e2e.py follows jobs to success)."""
    out = {}
    backends = [("CPython board", "cpython", sys.executable)]
    if MICROPYTHON:
        backends.append(("MicroPython board", "micropython", MICROPYTHON))
    img = esp_image.build("esp32", "2.0.0", size=THROUGHPUT_SIZE)
    (rig.server.root / "raw.bin").write_bytes(img)
    for label, backend, interp in backends:
        s = {"ota": [], "raw": [], "async": [], "ota4k": [], "size": len(img)}
        for i in range(rounds + 1):
            b = rig.board(backend, "240AC4BE%04X" % (0x30 + 16 * (backend == "micropython") + i), "tp-%s-%d" % (backend, i))
            ca = b.dir / "certs" / "ca.der"
            s["raw"].append(rig.raw(interp, b.ota_port, "raw.bin", len(img), ca))
            if backend == "micropython":
                s["async"].append(rig.raw(interp, b.ota_port, "raw.bin", len(img), ca, use_async=True))
            if i < rounds:
                s["ota"].append(rig.ota(b, "tp.bin", img, until="complete")[0])
            b.stop()
        out[label] = s
    return out


# ---------------------------------------------------------------- 2. heap

def _bench_bundle(rig, version, size):
    """An app bundle as tools/bundle.py builds it (lib .mpy for the esp32, the
    bench app as main.py), padded to `size` bytes with a data file before
    main.py when it is smaller (the agent's bundle alone is ~140 KB)."""
    fw = rig.root / ("fw-" + version)
    shutil.copytree(FIRMWARE, fw, ignore=shutil.ignore_patterns("__pycache__"))
    (fw / "main.py").write_text(_version_app(version))
    files, arch = tb.collect(fw, "esp32", True)
    pad = size - len(tb.build(version, firmware=fw, chip="esp32")) - 110  # ~110: the pad's manifest entry
    if pad > 0:
        files.insert(len(files) - 1, ("lib/pad.bin", (bytes(range(256)) * (pad // 256 + 1))[:pad]))
    m = {"format": 1, "version": version, "total": sum(len(d) for _, d in files), "chip": "esp32", "arch": arch,
         "files": [{"path": p, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for p, d in files]}
    tb._reader().check_manifest(m)  # as the board will
    raw = json.dumps(m, separators=(",", ":")).encode()
    return tb._reader().MAGIC + len(raw).to_bytes(2, "big") + raw + b"".join(d for _, d in files)


def _reading(b, since):
    """{"before", "heap", "peak", "minfree", "samples"} from the bench app's lines."""
    time.sleep(0.3)  # the last samples' lines on their way
    out = {"peak": 0, "minfree": None, "samples": 0}
    for line in b.lines(since):
        if "BENCH ota before=" in line:
            out.update({k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)})
        elif "BENCH ota used=" in line:
            d = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}
            out["peak"] = max(out["peak"], d["used"])
            out["minfree"] = d["free"] if out["minfree"] is None else min(out["minfree"], d["free"])
            out["samples"] += 1
    if "before" not in out or not out["samples"]:
        raise RuntimeError("no heap samples from the bench app during the download:\n" + "\n".join(b.lines(since)[-15:]))
    return out


def heap(rig):
    """{(kind, size): reading}: one fresh MicroPython board (-X heapsize=HEAP) per update."""
    out = {}
    jobs = [("image", esp_image.build("esp32", "2.0.0", size=n)) for n in HEAP_SIZES]
    jobs += [("bundle", _bench_bundle(rig, "2.0.%d" % i, n)) for i, n in enumerate(HEAP_SIZES)]
    if len(jobs[2][1]) == len(jobs[3][1]):
        raise RuntimeError("the padded bundle came out the size of the plain one")
    for i, (kind, data) in enumerate(jobs):
        b = rig.board("micropython", "240AC4BE%04X" % (0x60 + i), "heap-%d" % i, heapsize=HEAP, sample=True)
        _, _, mark = rig.ota(b, "heap%d.%s" % (i, "bin" if kind == "image" else "rmb"), data, until="complete")
        out[(kind, len(data))] = _reading(b, mark)
        b.stop()
    return out


def smallest(rig, image):
    """(smallest KB of MIN_GRID at which a fresh board takes `image` to
    "download complete" with no MemoryError, the largest failing (KB, why), probes)."""
    probes = [0]

    def ok(kb):
        probes[0] += 1
        node = "240AC4BE2%03X" % probes[0]
        try:
            b = rig.board("micropython", node, "min-%d" % probes[0], heapsize="%dK" % kb, timeout=20)
        except AssertionError as e:
            tail = [l.strip() for l in str(e).splitlines()[1:] if l.strip()]
            return False, "not online within 20 s (last line: %s)" % (tail[-1][:100] if tail else "none")
        try:
            # Up to "download complete": the image is on flash and its MD5 checked.
            # Not the reboot: the sim's set_boot() validates the image in Python,
            # in the board's heap, where an ESP32 does it in C.
            rig.ota(b, "min.bin", image, timeout=60, until="complete", fail_fast=True)
            time.sleep(0.2)
            bad = [l for l in b.lines() if "MemoryError" in l or "Traceback" in l]
            return (False, bad[0].strip()[:100]) if bad else (True, None)
        except (RuntimeError, AssertionError) as e:
            bad = [l for l in b.lines() if "MemoryError" in l or "out of memory" in l]
            return False, (bad[0].strip()[:100] if bad else str(e).splitlines()[0][:160])
        finally:
            b.stop()
            rig.boards.remove(b)
            shutil.rmtree(rig.root / ("min-%d" % probes[0]), ignore_errors=True)

    lo, hi, failed = -1, len(MIN_GRID) - 1, None
    good, why = ok(MIN_GRID[hi])
    if not good:
        return None, (MIN_GRID[hi], why), probes[0]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        good, why = ok(MIN_GRID[mid])
        if good:
            hi = mid
        else:
            lo, failed = mid, (MIN_GRID[mid], why)
    # Near the edge, heap layout and timing decide: confirm on a second fresh
    # board, one step up after a failed confirmation (at most twice).
    for _ in range(2):
        good, why = ok(MIN_GRID[hi])
        if good or hi == len(MIN_GRID) - 1:
            break
        failed = (MIN_GRID[hi], why + " (on the confirming board)")
        hi += 1
    else:
        good, why = ok(MIN_GRID[hi])
    if not good:
        return None, (MIN_GRID[hi], why), probes[0]
    return MIN_GRID[hi], failed, probes[0]


# ---------------------------------------------------------------- 3. bytes over the air

def air_bytes(root):
    """Sizes, in bytes, of what a one-line change of the example app sends."""
    fw = Path(root) / "fw-air"
    shutil.copytree(FIRMWARE, fw, ignore=shutil.ignore_patterns("__pycache__"))
    main = (fw / "main.py").read_text()
    changed = main.replace("rm.run(", "print('hello')\nrm.run(", 1)
    assert changed != main, "firmware/main.py has no rm.run( line to change"
    (fw / "main.py").write_text(changed)
    data = tb.build("1.0.1", firmware=fw, mpy=True, chip="esp32")
    files = json.loads(data[6:6 + int.from_bytes(data[4:6], "big")])["files"]
    lib = sum(f["size"] for f in files if f["path"].startswith("lib/"))
    return {"bundle": len(data), "files": len(files), "lib": lib, "main": len(changed.encode()),
            "manifest": int.from_bytes(data[4:6], "big")}


# ---------------------------------------------------------------- report

def _ms(xs):
    return "/".join("%.0f" % (x * 1000) for x in xs)


def _n(x):
    return "{:,}".format(x)


def report(find_min=True):
    lines = []
    rig = Rig()
    res = {}
    try:
        t = time.monotonic()
        tp = throughput(rig)
        res["throughput"] = tp
        size = next(iter(tp.values()))["size"]
        lines.append("OTA throughput: a %s-byte firmware image as an OTA job vs a raw HTTPS download of the same file by"
                     % _n(size))
        lines.append("the same interpreter over the same link, alternated on fresh boards; GET to last byte, ms per sample:")
        for label, s in tp.items():
            o, r = statistics.median(s["ota"]), statistics.median(s["raw"])
            res[label] = r / o
            lines.append("  %-18s OTA %s ms, raw %s ms: OTA/raw throughput %.3fx" % (label, _ms(s["ota"]), _ms(s["raw"]), r / o))
            if s["async"]:
                a = statistics.median(s["async"])
                res[label + " async"] = a / o
                lines.append("  %-18s raw through MicroPython's asyncio stream (1 KB reads, as fetch.py): %s ms: OTA/that %.2fx"
                             % ("", _ms(s["async"]), a / o))
            if s["ota4k"]:
                k = statistics.median(s["ota4k"])
                res[label + " 4k"] = r / k
                lines.append("  %-18s OTA with 4 KB reads (fetch.py's _READ changed on that board only): %s ms: OTA/raw %.3fx, %.1fx the 1 KB OTA"
                             % ("", _ms(s["ota4k"]), r / k, o / k))
        lines.append("  (target >= 0.8x. OTA: the job's download, the MD5, the sim flash's erase and writes, the progress")
        lines.append("   statuses, up to \"download complete\" at the cloud; raw: blocking 1 KB reads, bytes discarded.")
        lines.append("   MicroPython through the board's radio relay. Host CPU, no Wi-Fi, no real flash timing.)")
        lines.append("  (%.0f s)" % (time.monotonic() - t))
        if MICROPYTHON:
            t = time.monotonic()
            h = heap(rig)
            res["heap"] = h
            lines.append("Heap during an OTA on micropython32 (lib .mpy, -X heapsize=%s), gc.collect() then gc.mem_alloc() every"
                         % HEAP)
            lines.append("100 ms; before: the last sample before the download task, peak: the largest while it runs, bytes:")
            for (kind, n), r in h.items():
                lines.append("  %-6s %9s B: before %7s, peak %7s (+%6s), least free %7s of %7s, %3d samples" % (
                    kind, _n(n), _n(r["before"]), _n(r["peak"]), _n(r["peak"] - r["before"]), _n(r["minfree"]),
                    _n(r["heap"]), r["samples"]))
            lines.append("  (the rise includes the OTA modules imported on first use and the TLS context and socket")
            lines.append("   objects; not mbedTLS's buffers, outside the GC heap; a peak between two samples is missed)")
            if find_min:
                big = esp_image.build("esp32", "2.0.0", size=HEAP_SIZES[1])
                kb, failed, probes = smallest(rig, big)
                res["min"] = (kb, failed)
                s = ("none up to %dK (%s)" % failed) if kb is None else "%dK" % kb
                if kb is not None and failed:
                    s += "; %dK failed: %s" % failed
                lines.append("  smallest -X heapsize at which a fresh board (no sampler) comes online and takes a %s-byte image"
                             % _n(len(big)))
                lines.append("  to \"download complete\" (on flash, MD5 checked) with no MemoryError: %s" % s)
                lines.append("  (bisected over %d..%dK in 8K steps, confirmed on a second board, %d boards. The reboot after is"
                             % (MIN_GRID[0], MIN_GRID[-1], probes))
                lines.append("   not probed: the sim's set_boot() validates the image in Python in the board's heap, C on an ESP32)")
            lines.append("  (%.0f s)" % (time.monotonic() - t))
        else:
            lines.append("Heap during an OTA: skipped, no micropython32 ($MICROPYTHON)")
    finally:
        rig.stop()
    with tempfile.TemporaryDirectory(prefix="bench-air-") as d:
        a = air_bytes(d)
    res["air"] = a
    lines.append("Bytes over the air for a one-line change in main.py:")
    lines.append("  app bundle (tools/bundle.py --chip esp32: %d files, lib .mpy %s B, manifest %s B): %s B" % (
        a["files"], _n(a["lib"]), _n(a["manifest"]), _n(a["bundle"])))
    lines.append("  MicroPython ESP32_GENERIC-OTA app image, assumed ~1.6 MB (not fetched): %s B, %.0fx the bundle" % (
        _n(FIRMWARE_APP), FIRMWARE_APP / a["bundle"]))
    lines.append("  main.py alone: %s B, %.1f%% of the bundle: not possible yet, a bundle carries every file" % (
        _n(a["main"]), 100 * a["main"] / a["bundle"]))
    t = time.monotonic()
    lines.append(ota_heap.report())
    lines.append("  (%.0f s)" % (time.monotonic() - t))
    return "\n".join(lines), res


if __name__ == "__main__":
    print(report(find_min="nomin" not in sys.argv[1:])[0])
