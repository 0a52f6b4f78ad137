"""The OTA download's image sink (firmware/lib/rainmaker/fetch.py, `Image`) on the
simulated board's flash model, on both backends (CPython sim and MicroPython itself).

The sink holds no sector in RAM: it erases each sector as the image reaches it and
writes the bytes where they belong. These tests feed it an image in pieces of awkward
sizes (1 byte, across the head, across 16-byte blocks and sectors) and check what the
flash model holds, that each sector was erased once, that a refused head leaves the
slot untouched and that a resumed download gives the same slot and MD5.
"""
import hashlib
import shutil

from tests import esp_image
from tests.harness import ROOT
from tests.test_flash_sim import Run, _board

# Drives fetch.Image through a spy on the next slot's Partition that records the
# erases and refuses any write that is not the extended (offset) form or that
# crosses a sector: a plain writeblocks would erase again under the sink's feet.
SCRIPT = r'''
import esp32, hashlib, binascii
from rainmaker import fetch

P = esp32.Partition
slot = P(P.RUNNING).get_next_update()
erased = []


class Spy:
    def ioctl(self, cmd, arg):
        if cmd == 6:
            erased.append(arg)
        return slot.ioctl(cmd, arg)

    def writeblocks(self, block, buf, *off):
        assert len(off) == 1, "a plain write erases"
        assert off[0] + len(buf) <= 4096, "a write across sectors"
        assert block in erased, "a write into a sector not erased"
        slot.writeblocks(block, buf, off[0])

    def readblocks(self, *a):
        slot.readblocks(*a)


with open("img.bin", "rb") as f:
    img = f.read()
md5 = binascii.hexlify(hashlib.md5(img).digest()).decode()
SIZES = (1, 15, 17, 271, 4095, 4097, 16, 3, 8192, 100, 2, 30)


def feed(sink, start, stop):
    i = start
    k = 0
    while i < stop:
        n = min(SIZES[k % len(SIZES)], stop - i)
        sink.write(memoryview(img)[i:i + n])
        i += n
        k += 1


def digest(n):
    h = hashlib.sha256()
    b = bytearray(512)
    for i in range(0, n, 512):
        slot.readblocks(i // 4096, b, i % 4096)
        h.update(memoryview(b)[:min(512, n - i)])
    return binascii.hexlify(h.digest()).decode()


heads = []


def check(h):
    heads.append(bytes(h))


def refuse(h):
    raise fetch.Refused("wrong chip")


# 1. a refused head: nothing erased or written
im = fetch.Image(Spy(), refuse)
try:
    feed(im, 0, 1000)
    print("REFUSED not")
except fetch.Refused as e:
    print("REFUSED", e, len(erased))

# 2. the whole image in awkward pieces
im = fetch.Image(Spy(), check)
feed(im, 0, len(img))
im.end(md5)
print("WHOLE", im.written(), len(heads), heads[0] == img[:288], erased == list(range((len(img) + 4095) // 4096)),
      digest(len(img)))

# 3. cut after 3 sectors and some, then resumed at the last whole sector
for s in range(0, len(img), 4096):
    slot.ioctl(6, s // 4096)
erased[:] = []
im = fetch.Image(Spy(), check)
feed(im, 0, 3 * 4096 + 1234)
im = fetch.Image(Spy(), refuse)  # a resumed download does not check the head again
im.resume(3 * 4096)
feed(im, 3 * 4096, len(img))
im.end(md5)
print("RESUMED", im.written(), digest(len(img)))

# 4. a wrong MD5 is caught
im = fetch.Image(Spy(), check)
feed(im, 0, len(img))
try:
    im.end("0" * 32)
    print("MD5 not")
except fetch.Failed as e:
    print("MD5", e)
print("DONE")
'''


def _run(tmp_path, backend, img):
    board = _board(tmp_path, SCRIPT, images={"img.bin": img})
    shutil.copytree(ROOT / "firmware" / "lib" / "rainmaker", board / "lib" / "rainmaker")
    run = Run(backend, tmp_path)
    run.wait("DONE")
    return {ln.split(" ", 1)[0]: ln.split(" ", 1)[1] for ln in run.end() if " " in ln}


def test_the_image_sink_writes_in_place_erasing_each_sector_once(tmp_path, backend):
    # 5 sectors and 333 bytes: the end is in neither a 16-byte block nor a sector boundary
    img = esp_image.build("esp32", "2.0.0", size=5 * 4096 + 333)
    img += b"\x5a" * (-len(img) % 16 + 7)  # and a tail that is not a 16-byte multiple
    out = _run(tmp_path, backend, img)
    want = hashlib.sha256(img).hexdigest()
    assert out["REFUSED"] == "wrong chip 0", out  # nothing erased for a refused head
    assert out["WHOLE"] == "%d 1 True True %s" % (len(img), want), out
    assert out["RESUMED"] == "%d %s" % (len(img), want), out
    assert out["MD5"].startswith("MD5 mismatch: the file has %s" % hashlib.md5(img).hexdigest()), out
