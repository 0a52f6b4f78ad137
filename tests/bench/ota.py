"""OTA: throughput against a raw download, heap during an OTA, bytes over the air.

Printed, never asserted. One local cloud (broker and the HTTPS file server,
tools/otaserver.py) serves every board in the run; the boards are the
simulator's (tests/harness.Board) running the bench app tests/bench/ota_main.py
(the OTA test app's plug, plus an opt-in heap sampler), or for the smallest
heap the example node.

1. Throughput. A ~1 MB firmware image (tests/esp_image.py) goes to a fresh
   board as an OTA job, and the same file is downloaded raw by the same
   interpreter over the same kind of link, alternately: raw, OTA, raw, OTA, raw.
   - MicroPython board: micropython32 running the firmware (lib/ as .mpy, as
     `make deploy` installs it, or frozen in with --frozen); its sockets reach the file server through the
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

2. Heap during an OTA, MicroPython board (lib/ as .mpy or, --frozen, the
   agent frozen in; -X heapsize=HEAP),
   with the sampler on (gc.collect() then gc.mem_alloc() every 100 ms): the
   heap in use at the last sample before the download task starts, and the
   largest during it, one fresh board per update: a firmware image of
   ~100 KB and of ~1.5 MB, an app bundle as tools/bundle.py builds it
   (~140 KB: the agent alone is more than 100 KB) and padded to ~1.5 MB with
   a data file. The difference includes what the OTA path imports on first use
   (fetch, http, image or bundle and stage: bytecode and names) and the TLS
   context and socket objects; not mbedTLS's own buffers (libc on the unix
   port, the IDF heap on an ESP32). Samples every 100 ms can miss a short
   peak between them.
   Then the smallest -X heapsize (32K..256K in 4K steps, tests/bench/mpheap.py's
   grid; bisected, confirmed on a second fresh board) at which a fresh board of
   the example node (firmware/main.py, run by tests/bench/heap_main.py as
   mpheap.py runs it, so the two smallest heaps compare) comes online, settles
   (Connected re-report and the boot's otafetch sent) and takes a 1.5 MB update
   pushed as an OTA job: a firmware image to "download complete" (on flash,
   MD5 checked), an app bundle padded to the same size to "success" (staged,
   hashes checked, the plan written, the restart, boot.py's switch, the new
   app on trial online and confirmed). A probe fails on a MemoryError, "out of
   memory", a traceback or an error line in the board's log. An image's reboot
   into the update is not probed: the sim's set_boot() validates an image in
   Python in the board's heap, C on an ESP32. The figure includes the sim hw modules' heap
   (C in flash on an ESP32; mpheap.py prints it: about 14 KB with them frozen
   into the binary, as `python -m tools.firmware --port unix` builds it, about
   43 KB run as .py from tools/sim/mpy). Skip it: --nomin.

--frozen: every MicroPython board runs the agent frozen into $MICROPYTHON (a
build with firmware/manifest.py in its FROZEN_MANIFEST); lib/ holds only what
`make deploy ARGS=--app-only` leaves there (the zone table). The run stops
unless the binary has rainmaker frozen in, and the example's boards report
where it was loaded from (the run stops unless that is the binary). Without
--frozen the run stops if the binary has it frozen in (it would shadow lib/).
--fit runs only the smallest-heap probes; --at KB... probes given sizes and
prints the board's log around each failure (--retry: passing within the job's
3 attempts; --trace: the traceback of the MemoryError behind "out of memory").

3. Bytes over the air for a one-line change in main.py: the app bundle
   (tools/bundle.py, lib/ as .mpy) against a MicroPython firmware app image.
   No official firmware is fetched (no network here beyond package
   registries): its size is assumed, see FIRMWARE_APP.

Then the parsers' own heap and speed (tests/bench/ota_heap.py).

    python -m tests.bench ota
    python -m tests.bench.ota [--nomin] [--frozen] [--fit | --at KB...] [--kind image|bundle] [--app example|plug]
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
from tests.bench import mpheap, ota_heap
from tests.harness import MICROPYTHON, Board, Cloud
from tools import bundle as tb
from tools.deploy import firmware_files
from tools.otaserver import OtaServer
from tools.sim.relay import free_port

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"
APP = Path(__file__).with_name("ota_main.py")
HEAP_APP = Path(__file__).with_name("heap_main.py")  # the example app, run as mpheap.py runs it
TRACE = Path(__file__).with_name("ota_trace.py")  # --trace: the traceback of an OTA's MemoryError
THROUGHPUT_SIZE = 1024 * 1024
HEAP_SIZES = (100 * 1024, 1536 * 1000)
HEAP = "256K"
# A MicroPython ESP32_GENERIC-OTA application image (the .app-bin an OTA job
# carries, not the combined flash image) is about 1.6 MB for v1.2x: assumed,
# not measured here.
FIRMWARE_APP = 1600 * 1024
FINAL = ("success", "rejected")
# KB, for the smallest heap that still takes a 1.5 MB image or bundle: the 4K
# steps of tests/bench/mpheap.py's grid, over its whole range.
MIN_GRID = list(range(mpheap.KB_LO, mpheap.KB_HI + 1, mpheap.KB_STEP))
# The app on the boards of the smallest-heap probes: "example" is firmware/main.py,
# the node whose heap tests/bench/mpheap.py measures (run by its bench app, which
# also tells where rainmaker was loaded from); "plug" is the one-switch bench app
# of the throughput and heap-sampling parts.
APPS = ("example", "plug")

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


def _version_app(version, app="plug"):
    src = (APP if app == "plug" else FIRMWARE / "main.py").read_text()
    if 'fw_version="1.0.0"' not in src:
        raise RuntimeError("the %s app has no fw_version=\"1.0.0\" to bump: update the bench" % app)
    return src.replace('fw_version="1.0.0"', 'fw_version="%s"' % version)


class NotOnline(RuntimeError):
    """A board did not come online (the reason is the message, its log around
    the failure in .context)."""

    context = ()


class Rig:
    """The local cloud and file server, and the boards of one run."""

    def __init__(self, lib="mpy"):
        """lib: where a MicroPython board's agent comes from, "mpy" (lib/ as
        `make deploy` installs it) or "frozen" (frozen into $MICROPYTHON; lib/
        holds only what `make deploy ARGS=--app-only` leaves there, the time
        zone table). Stops first if the binary does not suit it."""
        assert lib in ("mpy", "frozen"), lib
        self.lib = lib
        if MICROPYTHON:
            mpheap.check_binary(lib)
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

    def board(self, backend, node, name, heapsize=None, sample=False, timeout=40, read=None, app="plug",
              trace=False):
        """A fresh board, started and online (RuntimeError naming why not, at
        once on a crash or a MemoryError). app: "plug" (ota_main.py) or
        "example" (firmware/main.py through heap_main.py; on MicroPython its
        heap reading then checks where rainmaker was loaded from). trace: the
        example's bench app first imports ota_trace.py (see there)."""
        args, port = [], self.server.port
        if backend == "micropython":  # its sockets reach the file server through its radio relay
            port = free_port()
            args = ["--relay", "%d=127.0.0.1:%d" % (port, self.server.port)]
            if heapsize:
                args += ["--heapsize", heapsize]
        b = Board(self.cloud, self.root / name, node, main=APP if app == "plug" else HEAP_APP, keepalive=30,
                  backend=backend, args=args)
        if app == "example":
            (b.dir / "example.py").write_bytes((FIRMWARE / "main.py").read_bytes())
            if trace:
                (b.dir / "benchtrace.py").write_bytes(TRACE.read_bytes())
                (b.dir / "main.py").write_text("import benchtrace  # noqa: F401\n" + HEAP_APP.read_text())
        elif trace:
            raise ValueError("trace is for the example app")
        b.ota_port = port
        if backend == "micropython":  # lib/ as `make deploy` (or `make deploy ARGS=--app-only`) installs it
            for src in (b.dir / "lib").rglob("*.py"):
                src.unlink()
            if self.lib == "mpy":
                for rel, data in self.mpy.items():
                    (b.dir / rel).parent.mkdir(parents=True, exist_ok=True)
                    (b.dir / rel).write_bytes(data)
        if read:  # this board only: fetch.py with another read size, as source
            if backend == "micropython" and self.lib == "frozen":
                raise RuntimeError("a fetch.py of another read size in lib/ would be shadowed by the frozen one")
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
            why = mpheap.wait_online(b, node, timeout)
            if why:
                raise NotOnline(why)
            if app == "example" and backend == "micropython":
                try:
                    reading = mpheap.heap_reading(b)
                except AssertionError as e:  # its probe task did not answer
                    raise NotOnline("no heap reading from the bench app: " + str(e).splitlines()[0][:100])
                mpheap.check_files(reading, self.lib)  # a RuntimeError that ends the run: wrong source
        except BaseException as e:
            b.stop()
            self.boards.remove(b)
            if isinstance(e, NotOnline):
                time.sleep(0.3)  # the rest of a traceback on its way
                e.context = mpheap.context(b)
            raise
        return b

    def _offset(self):
        return time.time() - time.monotonic()  # server records are wall time; cloud messages monotonic

    def _get(self, path, mark):
        for r in self.server.requests[mark:]:
            if r["path"] == path and r["method"] == "GET":
                return r
        raise RuntimeError("the file server saw no GET %s" % path)

    def ota(self, b, name, data, version=None, timeout=120, until="success", fail_fast=False, abort=None,
            one_get=True):
        """(seconds from the GET to "download complete", statuses, board log mark) of one job.
        until="complete": return at "download complete" (the MD5 has been checked),
        without waiting for the reboot into the new image and its "success".
        fail_fast: give up at the first failed attempt rather than the third.
        abort: called while waiting; a reason it returns ends the wait with a
        RuntimeError (a board that dropped the job publishes no status).
        one_get: a job that took more than one GET is an error (a resumed
        download is no throughput sample)."""
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
            why = abort() if abort else None
            if why:
                raise RuntimeError(why)
            time.sleep(0.05)
        if done is None if until == "complete" else (not st or st[-1][0] != "success"):
            raise RuntimeError("OTA job %s on %s did not succeed: %s\n%s" % (
                job, b.node_id, st[-3:], "\n".join(b.lines()[-15:])))
        reqs = [r for r in self.server.requests[mark:] if r["path"] == "/" + name and r["method"] == "GET"]
        if len(reqs) != 1 and (one_get or not reqs):
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

def _bench_bundle(rig, version, size, app="plug"):
    """An app bundle as tools/bundle.py builds it (lib .mpy for the esp32, the
    app as main.py: the plug bench app or the example), padded to `size` bytes
    with a data file before main.py when it is smaller (the agent's bundle alone
    is ~140 KB)."""
    fw = rig.root / ("fw-" + version)
    shutil.copytree(FIRMWARE, fw, ignore=shutil.ignore_patterns("__pycache__"))
    (fw / "main.py").write_text(_version_app(version, app))
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


def _retried(line):
    # An OTA attempt the agent reports failed for want of memory is no crash:
    # the job tries again (--retry).
    return line.startswith("rm I ota: ") and "Attempt " in line


def attempts(statuses):
    """The attempt that took the job: one past the highest "OTA Attempt N/M failed"
    among its (status, info) reports (other "failed" reports are no attempt's)."""
    n = 0
    for status, info in statuses:
        if status == "failed" and info.startswith("OTA Attempt "):
            try:
                n = max(n, int(info[12:].split("/", 1)[0]))
            except ValueError:
                pass
    return n + 1


def probe(rig, data, kb, app="example", kind="image", trace=False, retry=False):
    """(ok, why not, detail lines, attempts) for one fresh MicroPython board at
    -X heapsize=<kb>K: online, then `data` (an image or bundle, by kind) taken
    as an OTA job at the first attempt, with no MemoryError, traceback or error
    line in its log: an image to "download complete" (on flash, MD5 checked),
    a bundle to "success" (hashes checked, the plan written, the restart, the
    files switched in by boot.py, the new app on trial online and confirmed).
    retry: within the job's 3 attempts, an attempt the agent reports failed
    "out of memory" allowed (a crash, a traceback or an error line is not).

    Not an image's reboot into the update: the sim's set_boot() validates an
    image in Python, in the board's heap, where an ESP32 does it in C."""
    rig.jobs += 1  # a fresh node id and folder per probe
    n = rig.jobs
    node, name = "240AC4BE2%03X" % (n % 0x1000), "min-%d" % n
    since = rig.cloud.mark()
    try:
        b = rig.board("micropython", node, name, heapsize="%dK" % kb, timeout=20, app=app, trace=trace)
    except NotOnline as e:
        return False, "not online: %s" % e, e.context, 0
    image = kind == "image"
    boots = 1 if image else 2  # a bundle restarts into its files
    skip = _retried if retry else None

    def bad():
        return mpheap.bad_line(b, boots=boots, skip=skip)

    try:
        try:
            # Settled first, as tests/bench/mpheap.py measures the node: the
            # Connected re-report (5 s after the SUBACK) and the boot's otafetch
            # (5 s after online) sent; the job then comes as a pushed otaurl.
            rig.cloud.wait("params/local", node, since=since, timeout=15,
                           where=lambda p: b'"Connected":true' in p)
            rig.cloud.wait("otafetch", node, since=since, timeout=30)
            time.sleep(1.0)
            why = mpheap.bad_line(b)
            if why:
                return False, "before the job: " + why, mpheap.context(b), 0
            _, st, _ = rig.ota(b, "min%d.%s" % (n, "bin" if image else "rmb"), data, timeout=90 if image else 150,
                               until="complete" if image else "success", fail_fast=not retry, abort=bad,
                               one_get=not retry)
        except (RuntimeError, AssertionError) as e:
            time.sleep(0.3)  # the rest of a traceback on its way
            why = bad() or str(e).splitlines()[0][:160]
            return False, why, mpheap.context(b), 0
        time.sleep(0.2)
        why = bad()
        n = attempts(st)
        return (False, why, mpheap.context(b), n) if why else (True, None, [], n)
    finally:
        b.stop()
        rig.boards.remove(b)
        shutil.rmtree(rig.root / name, ignore_errors=True)


def smallest(rig, data, app="example", kind="image", grid=None):
    """(smallest KB of grid (default MIN_GRID) at which a fresh board takes
    `data` as far as probe() follows it, the largest failing (KB, why)
    or None, probes). Bisected, then confirmed on a second fresh board: near
    the edge heap layout and timing decide, so a failed confirmation moves one
    step up (mpheap.bisect) and the size it lands on must pass twice."""
    grid = grid or MIN_GRID
    probes = [0]

    def ok(kb):
        probes[0] += 1
        good, why, _, _ = probe(rig, data, kb, app, kind)
        return good, why, None

    kb, _, failed = mpheap.bisect(grid, ok)
    return kb, failed, probes[0]


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


def _fit_data(rig, kind, app):
    """The 1.5 MB update of the smallest-heap probes: a firmware image, or an
    app bundle padded to the same size (its main.py the probed app's)."""
    if kind == "image":
        return esp_image.build("esp32", "2.0.0", size=HEAP_SIZES[1])
    return _bench_bundle(rig, "2.0.9", HEAP_SIZES[1], app)


def _where(rig):
    return "%s, %s" % (mpheap._binary(), "agent frozen in" if rig.lib == "frozen" else "lib .mpy")


def fit_lines(rig, app="example", kinds=("image", "bundle"), grid=None):
    """The smallest heap for each kind of 1.5 MB update, as report lines."""
    grid = grid or MIN_GRID
    lines = ["Smallest -X heapsize at which a fresh board (%s; the %s app, no sampler) comes online, settles"
             % (_where(rig), app),
             "and takes a 1.5 MB update as an OTA job with no MemoryError: an image to \"download complete\" (on flash,",
             "checked), a bundle to \"success\" (switched in at the restart, the new app confirmed online):"]
    for kind in kinds:
        data = _fit_data(rig, kind, app)
        t = time.monotonic()
        kb, failed, probes = smallest(rig, data, app, kind, grid)
        s = ("none up to %dK (%s)" % failed) if kb is None else ("<= %dK" if kb == grid[0] else "%dK") % kb
        if kb is not None and failed:
            s += "; %dK failed: %s" % failed
        lines.append("  %-6s %9s B: %s  (%d boards, %.0f s)" % (kind, _n(len(data)), s, probes, time.monotonic() - t))
    lines.append("  (bisected over %d..%dK in %dK steps, confirmed on a second board. Includes the sim hw modules'"
                 % (grid[0], grid[-1], grid[1] - grid[0]))
    lines.append("   heap, C on an ESP32: tests/bench/mpheap.py prints it. An image's reboot is not probed: the")
    lines.append("   sim's set_boot() validates the image in Python in the board's heap, C on an ESP32)")
    return lines


def at_lines(rig, sizes, app="example", kinds=("image", "bundle"), tries=2, trace=False, retry=False):
    """Each kind of 1.5 MB update at each heap size, on `tries` fresh boards:
    taken or not, and for a failure the board's log around it (with trace,
    the traceback of a MemoryError the agent reports as "out of memory").
    retry: see probe()."""
    lines = ["OTA at a given -X heapsize (%s; the %s app): a fresh board online and settled, then a 1.5 MB"
             % (_where(rig), app),
             "update as an OTA job (an image to \"download complete\", a bundle to \"success\")%s:" % (
                 " within the job's 3 attempts (attempts that ran out of memory allowed)" if retry
                 else " at the first attempt")]
    for kind in kinds:
        data = _fit_data(rig, kind, app)
        for kb in sizes:
            for i in range(tries):
                ok, why, context, attempts = probe(rig, data, kb, app, kind, trace, retry)
                lines.append("  %-6s %4dK board %d: %s" % (
                    kind, kb, i + 1, ("taken at attempt %d" % attempts) if ok else "FAILED: " + why))
                lines += ["      | " + l for l in context]
    return lines


def report(find_min=True, lib="mpy", app="example"):
    """(text, figures): every part; MicroPython boards with the agent as lib
    .mpy or, lib="frozen", frozen into $MICROPYTHON; app: the app of the
    smallest-heap probes."""
    lines = []
    rig = Rig(lib)
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
            lines.append("Heap during an OTA on %s (-X heapsize=%s), gc.collect() then gc.mem_alloc() every"
                         % (_where(rig), HEAP))
            lines.append("100 ms; before: the last sample before the download task, peak: the largest while it runs, bytes:")
            for (kind, n), r in h.items():
                lines.append("  %-6s %9s B: before %7s, peak %7s (+%6s), least free %7s of %7s, %3d samples" % (
                    kind, _n(n), _n(r["before"]), _n(r["peak"]), _n(r["peak"] - r["before"]), _n(r["minfree"]),
                    _n(r["heap"]), r["samples"]))
            lines.append("  (the rise includes the OTA modules imported on first use and the TLS context and socket")
            lines.append("   objects; not mbedTLS's buffers, outside the GC heap; a peak between two samples is missed)")
            if find_min:
                lines += fit_lines(rig, app=app)
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


def main(argv=None):
    import argparse

    ap = argparse.ArgumentParser(prog="python -m tests.bench.ota", description=__doc__.split("\n\n")[0],
                                 epilog="The MicroPython binary is $MICROPYTHON (now: %s)." % MICROPYTHON)
    ap.add_argument("--nomin", action="store_true", help="skip the smallest-heap probes (part 2's last lines)")
    ap.add_argument("--frozen", action="store_true",
                    help="MicroPython boards run the agent frozen into $MICROPYTHON (built with "
                         "firmware/manifest.py); lib/ holds only the zone table. Stops if it is not frozen in")
    ap.add_argument("--fit", action="store_true",
                    help="only the smallest heap for a 1.5 MB image and a 1.5 MB app bundle (no throughput, "
                         "sampling, bytes over the air or parsers)")
    ap.add_argument("--at", metavar="KB", type=int, nargs="+",
                    help="only probe these -X heapsize values (KB), --tries fresh boards each, and print the "
                         "log of each failure")
    ap.add_argument("--tries", type=int, default=2, help="boards per size with --at (default 2)")
    ap.add_argument("--retry", action="store_true",
                    help="with --at: a board passes if the job reaches download complete within its 3 attempts, "
                         "attempts the agent reports out of memory allowed (default: at the first attempt)")
    ap.add_argument("--trace", action="store_true",
                    help="with --at and the example app: print the traceback of a MemoryError in the download "
                         "(tests/bench/ota_trace.py; it imports the OTA modules at boot, so the heap differs)")
    ap.add_argument("--app", choices=APPS, default="example",
                    help="the app of the smallest-heap probes: the example node (default) or the one-switch plug")
    ap.add_argument("--kind", choices=("image", "bundle"), action="append",
                    help="with --fit or --at: only this kind of update (repeatable; default both)")
    ap.add_argument("--grid", metavar="LO:HI:STEP", default="%d:%d:%d" % (MIN_GRID[0], MIN_GRID[-1], MIN_GRID[1] - MIN_GRID[0]),
                    help="KB grid of the smallest-heap bisection (default %(default)s)")
    args = ap.parse_args(argv)
    lib = "frozen" if args.frozen else "mpy"
    lo, hi, step = (int(x) for x in args.grid.split(":"))
    grid = list(range(lo, hi + 1, step))
    kinds = tuple(args.kind or ("image", "bundle"))
    if args.trace and not (args.at and args.app == "example"):
        ap.error("--trace applies to --at with the example app")
    if args.retry and not args.at:
        ap.error("--retry applies to --at")
    if not (args.fit or args.at):
        if args.grid != ap.get_default("grid") or args.kind:
            ap.error("--grid and --kind apply to --fit and --at")
        print(report(find_min=not args.nomin, lib=lib, app=args.app)[0])
        return
    if not MICROPYTHON:
        ap.error("no MicroPython binary ($MICROPYTHON)")
    rig = Rig(lib)
    try:
        if args.at:
            out = at_lines(rig, args.at, args.app, kinds, args.tries, args.trace, args.retry)
        else:
            out = fit_lines(rig, args.app, kinds, grid)
    finally:
        rig.stop()
    print("\n".join(out))


if __name__ == "__main__":
    main()
