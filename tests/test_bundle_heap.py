"""An app bundle's manifest is read in a fragmented heap (MicroPython itself,
micropython32): a long-running node has free memory but not in one piece, and
the reader must not need the manifest's size in one block (it did: ~7 KB for
64 files, then the decoded JSON on top). Also: what the reader keeps of the
manifest per file."""
import hashlib
import json
import struct
import subprocess
from pathlib import Path

import pytest

from tests.bench import ota_heap

pytestmark = pytest.mark.skipif(not Path(ota_heap.MICROPYTHON).exists(), reason="no MicroPython binary")

HOLE = 512  # bytes of each free block the guest leaves

GUEST = """
import gc
from rainmaker import bundle, bundlemf  # code loaded first: the data's blocks are what is tested
with open("{path}", "rb") as f:
    data = f.read()
mv = memoryview(data)
gc.collect()
base = gc.mem_alloc()
hold = []
try:
    while {frag}:
        hold.append(bytearray({hole} - 16))  # with its object: {hole} bytes
except MemoryError:
    pass
for i in range(0, len(hold), 2):
    hold[i] = None  # every other one freed: free memory, in {hole}-byte holes
gc.collect()
free = gc.mem_free()
try:
    x = bytearray(2048)
    big = True
except MemoryError:
    big = False
x = None
r = bundle.Reader({args})
out = "ok"
kept = 0
try:
    for i in range(0, len(data), 1460):
        for ev, v in r.feed(mv[i:i + 1460]):
            if ev == bundle.MANIFEST:
                hold = None
                gc.collect()
                kept = gc.mem_alloc() - base
    for ev, v in r.feed(b""):
        pass
except MemoryError as e:
    out = "MemoryError"
print("RESULT", out, big, free, kept, r.done())
"""


def bundle_bytes(n=64, size=16):
    files = [("lib/rainmaker/module%02d.mpy" % i, bytes([i]) * size) for i in range(n)]
    m = {"format": 1, "version": "1.2.0", "total": n * size, "chip": "esp32", "arch": "xtensawin",
         "files": [{"path": p, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for p, d in files]}
    raw = json.dumps(m, separators=(",", ":")).encode()
    return b"RMB1" + struct.pack(">H", len(raw)) + raw + b"".join(d for _, d in files), len(raw)


def guest(tmp_path, heap="64K", frag=True, listed=False):
    data, man = bundle_bytes()
    p = tmp_path / "b.rmb"
    p.write_bytes(data)
    args = "files=bundle.Listed(open(%r, 'w+b'))" % str(tmp_path / "ota.lst") if listed else ""
    r = subprocess.run([ota_heap.MICROPYTHON, "-X", "heapsize=" + heap, "-c",
                        GUEST.format(path=p, hole=HOLE, frag=frag, args=args)],
                       env={"MICROPYPATH": ota_heap.mpy_lib()}, capture_output=True, text=True, timeout=300)
    line = [x for x in r.stdout.splitlines() if x.startswith("RESULT")]
    assert not r.returncode and line, (r.stdout[-1000:], r.stderr[-2000:])
    _, out, big, free, kept, done = line[0].split()
    return out, big == "True", int(free), int(kept), done == "True", man


def test_manifest_read_in_a_fragmented_heap(tmp_path):
    out, big, free, kept, done, man = guest(tmp_path)
    assert man > 6000 and free > 2 * man  # enough memory: just not in one piece
    assert not big  # the heap really has no 2 KB block
    assert out == "ok" and done


def test_manifest_kept_packed(tmp_path):
    # 64 entries: path, size and SHA-256 each in ~80 bytes (decoded JSON: ~190)
    out, _big, _free, kept, done, _man = guest(tmp_path, heap="256K", frag=False)
    assert out == "ok" and done
    assert kept <= 64 * 96 + 1024, kept


def test_manifest_kept_on_flash_takes_no_heap_per_file(tmp_path):
    # The board's list (bundle.Listed): a record per file in a file, one
    # buffer and a byte per file in RAM, whatever the paths. (What the reader
    # keeps with 64 entries: ~1.6 KB, the manifest's other keys, the hash and
    # the reader itself included; as bundle.Files: ~6.7 KB.)
    out, _big, _free, kept, done, _man = guest(tmp_path, heap="256K", frag=False, listed=True)
    assert out == "ok" and done
    assert (tmp_path / "ota.lst").stat().st_size == 64 * 133
    assert kept <= 2048, kept
    out, big, free, kept, done, man = guest(tmp_path, listed=True)  # and in the fragmented heap
    assert out == "ok" and done and not big
