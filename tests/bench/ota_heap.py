"""Heap and speed of the OTA parsers (printed, not asserted; tests/test_ota_heap.py asserts).

Heap: on MicroPython itself (micropython32, 32-bit objects like an ESP32's),
a download is streamed through rainmaker.http.Response (Content-Length and
chunked) and rainmaker.bundle.Reader, 1,460 bytes per read (one TCP segment)
from one reused buffer, as a socket's readinto() would deliver it. Every 64
reads the guest collects and records gc.mem_alloc(); "held" is the largest
of those minus the heap before the parser was made, i.e. what the parser
keeps alive while streaming. Done for a 100 KB and a 1.5 MB download: the
two must match (flat), and the whole run fits in a small -X heapsize.

Speed: CPython, the same parsers over 16 MB in 4 KB reads.

    python -m tests.bench.ota_heap
"""
import hashlib
import subprocess
import sys
import time
from pathlib import Path

from tools.sim.mpboard import default_micropython

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "firmware" / "lib"
MICROPYTHON = default_micropython() or "micropython32"  # $MICROPYTHON, else ../shared/micropython/micropython32
READ = 1460
SIZES = (100 * 1024, 1536 * 1000)
SMALL = "40K"  # the rainmaker package, http and bundle imported as .mpy: ~21 KB of it

# The guest: {mode} is len, chunked or bundle; {n} the body size. A body is
# the 1,460-byte pattern repeated; the bundle's SHA-256 is computed by the host.
GUEST = """
import gc, time
from rainmaker import http, bundle, bundlemf  # bundlemf: the manifest's decoder, code loaded before the baseline
READ = {read}
N = {n}
pat = bytearray(READ)
for i in range(READ):
    pat[i] = (i * 7) & 255
mode = "{mode}"
# every input buffer is made before the baseline: only the parser's own heap is counted
man = b'{{"format":1,"version":"2","total":%d,"files":[{{"path":"big.bin","size":%d,"sha256":"{sha}"}}]}}' % (N, N)
if mode == "bundle":
    head = b"RMB1" + bytes((len(man) >> 8, len(man) & 255)) + man
    frame = pat
elif mode == "len":
    head = b"HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n" % N
    frame = pat
else:
    head = b"HTTP/1.1 200 OK\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n"
    frame = b"%x\\r\\n" % READ + pat + b"\\r\\n"
k = N % READ
tail = (b"%x\\r\\n" % k + pat[:k] + b"\\r\\n" + b"0\\r\\n\\r\\n") if mode == "chunked" else memoryview(pat)[:k]
mv = memoryview(frame)
gc.collect()
base = gc.mem_alloc()
p = bundle.Reader() if mode == "bundle" else http.Response()
got = 0
peak = 0
reads = 0
for ev, v in p.feed(head):
    pass
left = N
t0 = time.ticks_us()
while left > 0:
    chunk = mv if left >= READ else tail
    left -= READ if left >= READ else k
    for ev, v in p.feed(chunk):
        if ev == 2 and mode != "bundle" or ev == 3 and mode == "bundle":
            got += len(v)
    reads += 1
    if reads % 64 == 0:
        gc.collect()
        a = gc.mem_alloc() - base
        if a > peak:
            peak = a
for ev, v in p.feed(b""):
    pass
us = time.ticks_diff(time.ticks_us(), t0)
gc.collect()
print("RESULT", got, peak, gc.mem_alloc() - base, p.done(), us)
"""


_MPY = []


def mpy_lib():
    """firmware/lib as the .mpy files `make deploy` installs on an ESP32 (compiled once)."""
    if not _MPY:
        import tempfile

        from tools.deploy import firmware_files

        d = Path(tempfile.mkdtemp(prefix="ota-heap-"))
        for rel, (data, _mode) in firmware_files(ROOT / "firmware", mpy=True, arch="xtensawin").items():
            if rel.startswith("lib/"):
                (d / rel).parent.mkdir(parents=True, exist_ok=True)
                (d / rel).write_bytes(data)
        _MPY.append(str(d / "lib"))
    return _MPY[0]


def guest(mode, n, heap="64K"):
    sha = hashlib.sha256(_pattern_body(n)).hexdigest() if mode == "bundle" else ""
    code = GUEST.format(read=READ, n=n, mode=mode, sha=sha)
    r = subprocess.run([MICROPYTHON, "-X", "heapsize=" + heap, "-c", code], env={"MICROPYPATH": mpy_lib()},
                       capture_output=True, text=True, timeout=600)
    line = [x for x in r.stdout.splitlines() if x.startswith("RESULT")]
    if r.returncode or not line:
        raise RuntimeError("guest failed: %s %s" % (r.stdout[-500:], r.stderr[-1500:]))
    _, got, peak, after, done, us = line[0].split()
    return int(got), int(peak), int(after), done == "True", int(us)


def _pattern_body(n):
    pat = bytes((i * 7) & 255 for i in range(READ))
    return (pat * (n // READ + 1))[:n]


def throughput():
    sys.path.insert(0, str(LIB))
    import types

    if "micropython" not in sys.modules:
        m = types.ModuleType("micropython")
        m.const = lambda x: x
        sys.modules["micropython"] = m
    from rainmaker import bundle, http

    total = 16 * 1024 * 1024
    body = bytes(4096)
    out = {}
    for mode in ("len", "chunked", "bundle"):
        if mode == "len":
            p, head, frame = http.Response(), b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total, body
        elif mode == "chunked":
            p, head, frame = http.Response(), b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"1000\r\n" + body + b"\r\n"
        else:
            sha = hashlib.sha256(body * (total // 4096)).hexdigest()
            man = b'{"format":1,"version":"2","total":%d,"files":[{"path":"b","size":%d,"sha256":"%s"}]}' % (total, total, sha.encode())
            p, head, frame = bundle.Reader(max_total=total), b"RMB1" + len(man).to_bytes(2, "big") + man, body
        list(p.feed(head))
        t = time.perf_counter()
        for _ in range(total // 4096):
            for _ev in p.feed(frame):
                pass
        dt = time.perf_counter() - t
        out[mode] = total / dt / 1e6
    return out


def report():
    """The report's text (the same as `python -m tests.bench.ota_heap` prints)."""
    out = ["OTA parsers alone: heap on %s (bytes the parser keeps alive while streaming, after gc.collect())"
           % Path(MICROPYTHON).name]
    for mode in ("len", "chunked", "bundle"):
        row = []
        for n in SIZES:
            got, peak, after, done, us = guest(mode, n)
            assert got == n and done, (mode, n, got)
            row.append("%7d B body: held %5d B, after %5d B" % (n, peak, after))
        out.append("  %-8s %s | %s (%.1f MB/s incl. collections)" % (mode, row[0], row[1], n / max(us, 1)))
    for mode in ("len", "chunked", "bundle"):
        guest(mode, SIZES[1], heap=SMALL)
    out.append("  1.5 MB through each parser also runs in -X heapsize=%s (the imports, as .mpy, included)" % SMALL)
    out.append("CPython throughput, 16 MB in 4 KB reads:")
    for mode, mbs in throughput().items():
        out.append("  %-8s %7.1f MB/s" % (mode, mbs))
    return "\n".join(out)


def main():
    print(report())


if __name__ == "__main__":
    main()
