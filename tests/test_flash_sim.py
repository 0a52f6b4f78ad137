"""The simulated board's flash: partitions, otadata, the bootloader's OTA rollback.

The model (tools/sim/mpy/simworld/flash.py, and bootloader.py beside it) is shared by both backends, so every
board-level test here runs on the CPython sim and on MicroPython itself (`backend`
fixture). Firmware scripts drive it through esp32.Partition, as real firmware would:
an update is erase + write of 4096-byte blocks into get_next_update(), set_boot(),
machine.reset(); the tests then cut the power (kill the process), reset, starve the
watchdog or confirm the image, and check which slot and which version runs.

The test images come from _image() below, written here from the image format (not
from the model's own builder), so the model's loader is checked against the format.
"""
import hashlib
import os
import random
import struct
import subprocess
import sys
import threading
import time

import pytest

from tests.harness import MICROPYTHON, ROOT
from tools.sim.mpy.simworld import bootloader as F
from tools.sim.mpy.simworld import flash as FLASH
from tools.simulate import board_command

CHIP_IDS = {"esp32": 0, "esp32s2": 2, "esp32c3": 5, "esp32s3": 9, "esp32c6": 13}


def _image(chip, version, project="micropython", body=0, chip_id=None):
    """An ESP-IDF app image: 24-byte header (magic 0xE9, chip id at 12, hash appended),
    one segment starting with the 256-byte esp_app_desc_t, `body` more bytes, the XOR
    checksum (seed 0xEF) at the end of a 16-byte block, then the SHA-256 of it all."""
    desc = struct.pack("<IIII32s32s16s16s32s32s", 0xABCD5432, 0, 0, 0, version.encode(), project.encode(),
                       b"12:00:00", b"Nov 28 2026", b"v5.4.1", bytes(32))
    seg = desc + bytes(256 - len(desc)) + bytes((i * 7) & 0xFF for i in range(body))
    seg += bytes(-len(seg) % 4)
    cid = CHIP_IDS[chip] if chip_id is None else chip_id
    img = struct.pack("<BBBBIBBBBHBHH4sB", 0xE9, 1, 2, 0x20, 0x40080000, 0xEE, 0, 0, 0, cid, 0, 0, 0xFFFF,
                      bytes(4), 1)
    img += struct.pack("<II", 0x3F400020, len(seg)) + seg
    checksum = 0xEF
    for b in seg:
        checksum ^= b
    img += bytes(15 - len(img) % 16) + bytes([checksum])
    return img + hashlib.sha256(img).digest()


# -- a board in a child process -----------------------------------------------------


class Run:
    """One power-on of a board: its log lines; kill() is a power cut."""

    def __init__(self, backend, tmp, args=(), ota=True, app_version=None):
        cmd = board_command(tmp / "board", tmp / "air.json", "240AC4000F01",
                            MICROPYTHON if backend == "micropython" else None, ota=ota,
                            app_version=app_version) + list(args)
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1)
        self.lines = []
        self.done = False
        self.cond = threading.Condition()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.done = True
            self.cond.notify_all()

    def wait(self, text, timeout=60):
        """The last line starting with text, once there is one."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = [ln for ln in self.lines if ln.startswith(text)]
                if found:
                    return found[-1]
                left = deadline - time.monotonic()
                if left <= 0 or self.done:
                    raise AssertionError("no %r (board %s):\n%s" % (
                        text, "ended" if self.done else "still running", "\n".join(self.lines[-30:])))
                self.cond.wait(left)

    def kill(self):
        self.proc.kill()
        self.proc.wait(10)

    def end(self, timeout=60):
        self.proc.wait(timeout)
        with self.cond:
            while not self.done:
                self.cond.wait(5)
            return list(self.lines)

    def tagged(self):
        with self.cond:
            return [ln for ln in self.lines if ln.split(" ", 1)[0] in TAGS]


TAGS = ("BOOT", "SET", "HANG", "RESET", "SOFT", "WDT", "VALID", "DONE")

# The firmware of the update tests: at each boot it says which slot and which app
# version (from the running partition's esp_app_desc_t) runs and why it booted, then
# does the next step of steps.txt.
UPDATER = r'''
import esp32, machine, time
P = esp32.Partition


def version(p):
    d = bytearray(48)
    p.readblocks(0, d, 32)  # esp_app_desc_t: magic, secure_version, reserved, version[32]
    return bytes(d[16:48]).split(b"\0")[0].decode()


def records():
    # otadata as firmware can read it: (ota_seq, ota_state) of both sectors
    od = P("otadata")
    out = []
    for i in (0, 1):
        b = bytearray(28)
        od.readblocks(i, b)
        out.append("%d/%d" % (int.from_bytes(b[0:4], "little"), int.from_bytes(b[24:28], "little")))
    return " ".join(out)


run = P(P.RUNNING)
print("BOOT", run.info()[4], version(run), machine.reset_cause())
try:
    with open("steps.txt") as f:
        steps = f.read().split("\n")
except OSError:
    steps = []
with open("steps.txt", "w") as f:
    f.write("\n".join(steps[1:]))
step = steps[0].split() if steps else []
if step and step[0] == "update":
    with open(step[1], "rb") as f:
        img = f.read()
    nxt = run.get_next_update()
    for i in range(0, len(img), 4096):
        blk = img[i:i + 4096]
        if len(blk) < 4096:
            blk += b"\xff" * (4096 - len(blk))  # whole sectors: a plain write erases them first
        nxt.writeblocks(i // 4096, blk)
    nxt.set_boot()
    print("SET", nxt.info()[4], P(P.BOOT).info()[4])
    machine.reset()
elif step and step[0] == "stream":  # an update too big for the heap: 4 KB at a time
    nxt = run.get_next_update()
    blk = bytearray(4096)
    i = 0
    with open(step[1], "rb") as f:
        while True:
            k = f.readinto(blk)
            if not k:
                break
            for j in range(k, 4096):
                blk[j] = 0xFF
            nxt.writeblocks(i, blk)
            i += 1
    nxt.set_boot()
    print("SET", nxt.info()[4], P(P.BOOT).info()[4])
    machine.reset()
elif step and step[0] == "hang":
    print("HANG")
    while True:
        time.sleep_ms(100)
elif step and step[0] == "reset":
    print("RESET")
    machine.reset()
elif step and step[0] == "soft":
    print("SOFT")
    machine.soft_reset()
elif step and step[0] == "wdt":
    print("WDT")
    machine.WDT(timeout=300)
    while True:
        time.sleep_ms(100)
elif step and step[0] == "valid":
    P.mark_app_valid_cancel_rollback()
    print("VALID")
    machine.reset()
else:
    print("DONE", records())
'''


def _board(tmp, main, steps=(), images=None):
    board = tmp / "board"
    board.mkdir(exist_ok=True)
    (board / "main.py").write_text(main)
    (board / "steps.txt").write_text("\n".join(steps))
    for name, data in (images or {}).items():
        (board / name).write_bytes(data)
    return board


def _host_flash(tmp, layout="ota", chip="esp32"):
    return F.Flash(str(tmp / "flash"), layout, chip)


def test_an_update_runs_on_trial_and_any_reset_before_confirming_rolls_it_back(tmp_path, backend):
    images = {"v%d.bin" % v: _image("esp32", "%d.0.0" % v, body=9000) for v in (2, 3, 4, 5, 6)}
    _board(tmp_path, UPDATER, ["update v2.bin", "soft", "hang"], images)

    # 1. New image; a soft reset (only the VM restarts: no bootloader, the trial goes on);
    #    then a power cut while it runs on trial.
    run = Run(backend, tmp_path)
    run.wait("HANG")
    assert run.tagged() == ["BOOT ota_0 1.0.0 1", "SET ota_1 ota_1", "BOOT ota_1 2.0.0 2", "SOFT",
                            "BOOT ota_1 2.0.0 5", "HANG"]
    fl = _host_flash(tmp_path)
    assert fl.state(fl.get("ota_1")) == "PENDING_VERIFY"
    assert fl.state(fl.get("ota_0")) == "VALID"  # set by the bootloader on the first boot of a fresh flash
    run.kill()
    # A fresh flash costs what was written: no file for an untouched partition.
    files = sorted(os.listdir(tmp_path / "flash"))
    assert files == ["layout", "ota_0.bin", "ota_1.bin", "otadata.bin"], files
    assert os.path.getsize(tmp_path / "flash" / "ota_1.bin") == 3 * 4096
    assert (tmp_path / "flash" / "ota_1.bin").read_bytes()[:len(images["v2.bin"])] == images["v2.bin"]

    # 2. Power on: rolled back. Then a machine.reset() on trial, a watchdog reset on
    #    trial (both roll back), and an update that confirms itself and stays.
    _board(tmp_path, UPDATER, ["update v3.bin", "reset", "update v4.bin", "wdt", "update v5.bin", "valid"])
    run = Run(backend, tmp_path)
    run.wait("DONE")
    assert run.tagged()[:-1] == [
        "BOOT ota_0 1.0.0 1",   # the power cut ended v2's trial
        "SET ota_1 ota_1", "BOOT ota_1 3.0.0 2", "RESET",
        "BOOT ota_0 1.0.0 2",   # machine.reset() ended v3's trial
        "SET ota_1 ota_1", "BOOT ota_1 4.0.0 2", "WDT",
        "BOOT ota_0 1.0.0 3",   # so did the watchdog (WDT_RESET)
        "SET ota_1 ota_1", "BOOT ota_1 5.0.0 2", "VALID",
        "BOOT ota_1 5.0.0 2",   # confirmed: it stays
    ], run.lines
    assert run.tagged()[-1] == "DONE 1/2 2/2"  # otadata: seq 1 (ota_0) and seq 2 (ota_1), both VALID
    assert run.end() and run.proc.returncode == 0
    fl = _host_flash(tmp_path)
    assert fl.state(fl.get("ota_1")) == "VALID"
    assert fl.boot_partition()[0] == "ota_1"

    # 3. Still there after a power cycle; the next update goes to the other slot (ota_0).
    _board(tmp_path, UPDATER, ["update v6.bin", "valid"])
    run = Run(backend, tmp_path)
    run.wait("DONE")
    assert run.tagged() == ["BOOT ota_1 5.0.0 1", "SET ota_0 ota_0", "BOOT ota_0 6.0.0 2", "VALID",
                            "BOOT ota_0 6.0.0 2", "DONE 3/2 2/2"], run.lines


def test_a_large_update_fits_an_esp32_sized_heap(tmp_path, backend):
    """A 1.2 MB image streamed in 4 KB blocks, checked by set_boot() and booted, with the
    MicroPython backend's heap at 112K, about what an ESP32 without PSRAM gives Python: the
    model must not need more than the chip. (At 96K it passed or not depending on the length of
    the checkout's path: the modules' file names live in the same heap, and a 4 KB block must
    still be found in one piece.)"""
    images = {"big.bin": _image("esp32", "8.0.0", body=1200000)}
    _board(tmp_path, UPDATER, ["stream big.bin"], images)
    run = Run(backend, tmp_path, args=["--heapsize", "112K"] if backend == "micropython" else [])
    run.wait("DONE")
    assert run.tagged()[:3] == ["BOOT ota_0 1.0.0 1", "SET ota_1 ota_1", "BOOT ota_1 8.0.0 2"], run.lines
    assert (tmp_path / "flash" / "ota_1.bin").read_bytes()[:len(images["big.bin"])] == images["big.bin"]


FLASH_OPS = r'''
import esp32, machine, binascii, os
P = esp32.Partition


def show(tag, fn):
    try:
        r = fn()
        print(tag, "ok", r)
    except OSError as e:
        print(tag, "OSError", e.args[0], e.args[1] if len(e.args) > 1 else "")
    except Exception as e:
        print(tag, type(e).__name__)


def hexof(p, block, n, offset=0):
    b = bytearray(n)
    p.readblocks(block, b, offset)
    return binascii.hexlify(b).decode()


if "panicked" in os.listdir():
    print("AFTER", machine.reset_cause(), P(P.RUNNING).info()[4])
    raise SystemExit
n = P(P.RUNNING).get_next_update()
print("INFO", n.info(), repr(n))
print("IOCTL", n.ioctl(1, 0), n.ioctl(2, 0), n.ioctl(3, 0), n.ioctl(4, 0), n.ioctl(5, 0), n.ioctl(99, 0))
print("BLANK", hexof(n, 1, 8))
n.writeblocks(1, b"\x0f" * 8, 0)
n.writeblocks(1, b"\xf1\xf1\xf1\xf1", 2)  # no erase between: bits only clear
print("AND", hexof(n, 1, 8))
print("ERASE", n.ioctl(6, 1), hexof(n, 1, 8))
n.writeblocks(1, bytes(range(256)) * 16)  # three arguments: erase, then write
n.writeblocks(1, b"\x00" * 4, 4)
print("PLAIN", hexof(n, 1, 8), hexof(n, 1, 4, 4092))
s = P(n.info()[4], 512)  # a smaller block size: a plain write keeps the rest of the sector
print("SMALL", s.ioctl(4, 0), s.ioctl(5, 0), s.ioctl(6, 0))
s.writeblocks(9, b"\xaa" * 512)  # bytes 4608..5119: sector 1
print("KEPT", hexof(n, 1, 4, 508), hexof(n, 1, 4, 512), hexof(n, 1, 4, 1024))
show("UNALIGNED", lambda: n.writeblocks(0, b"x" * 100))
show("PASTEND", lambda: n.readblocks(n.ioctl(4, 0), bytearray(1)))
show("BEYOND", lambda: n.readblocks(n.ioctl(4, 0) + 1, bytearray(1)))
show("BYTESBUF", lambda: n.readblocks(0, b"abcd"))
show("NOLABEL", lambda: P("nope"))
show("BADID", lambda: P(7))
show("KEYWORD", lambda: P("ota_0", block_size=512))
show("NOTANIMAGE", lambda: n.set_boot())  # block 0 is still erased
n.writeblocks(0, b"\xe9\x01\x02\x20" + b"\x00" * 4092)
show("CORRUPT", lambda: n.set_boot())
show("DATA", lambda: P("nvs").set_boot())
show("CONFIRM", lambda: P.mark_app_valid_cancel_rollback())
print("FIND", [p.info()[4] for p in P.find()], [p.info()[4] for p in P.find(P.TYPE_DATA)],
      [p.info()[4] for p in P.find(P.TYPE_APP, 0x11)], P.find(label="vfs"),
      [p.info()[4] for p in P.find(type=P.TYPE_DATA, label="vfs")])
with open("panicked", "w") as f:
    f.write("1")
print("WRITE-RUNNING")
P(P.RUNNING).writeblocks(0, b"\x00" * 4096)  # ESP-IDF aborts: the chip resets
print("NOT REACHED")
'''


def test_partition_calls_and_flash_semantics(tmp_path, backend):
    _board(tmp_path, FLASH_OPS)
    run = Run(backend, tmp_path)
    run.wait("AFTER")
    out = {ln.split(" ", 1)[0]: ln.split(" ", 1)[1] for ln in run.end() if " " in ln}
    assert out["INFO"].startswith("(0, 17, 1638400, 1572864, 'ota_1', False) <Partition type=0, subtype=17, "
                                  "address=1638400, size=1572864, label=ota_1, encrypted=0>"), out
    assert out["IOCTL"] == "0 0 0 384 4096 None"
    assert out["BLANK"] == "ff" * 8
    assert out["AND"] == "0f0f" + "01" * 4 + "0f0f"  # 0x0f AND 0xf1, as the chip does
    assert out["ERASE"] == "0 " + "ff" * 8
    assert out["PLAIN"] == "00010203" + "00000000" + " " + "fcfdfeff"
    assert out["SMALL"] == "3072 512 -22"  # no native erase at 512: -EINVAL
    assert out["KEPT"] == "fcfdfeff aaaaaaaa 00010203"
    assert out["UNALIGNED"] == "OSError -260 ESP_ERR_INVALID_SIZE"
    assert out["PASTEND"] == "OSError -260 ESP_ERR_INVALID_SIZE"
    assert out["BEYOND"] == "OSError -258 ESP_ERR_INVALID_ARG"
    assert out["BYTESBUF"] == "TypeError"
    assert out["NOLABEL"].startswith("OSError 2 ")
    assert out["BADID"] == "ValueError"
    assert out["KEYWORD"] == "TypeError"
    assert out["NOTANIMAGE"] == "OSError -5379 ESP_ERR_OTA_VALIDATE_FAILED"
    assert out["CORRUPT"] == "OSError -5379 ESP_ERR_OTA_VALIDATE_FAILED"
    assert out["DATA"] == "OSError -5379 ESP_ERR_OTA_VALIDATE_FAILED"
    assert out["CONFIRM"] == "ok None"
    assert out["FIND"] == "['ota_0', 'ota_1'] ['nvs', 'otadata', 'phy_init', 'vfs'] ['ota_1'] [] ['vfs']"
    assert "NOT" not in out
    assert out["AFTER"] == "2 ota_0"  # the abort reset the chip; the running app was not touched
    assert any("abort() was called" in ln for ln in run.lines)


NO_OTA = r'''
import esp32
P = esp32.Partition


def show(tag, fn):
    try:
        print(tag, "ok", fn())
    except OSError as e:
        print(tag, "OSError", e.args[0], e.args[1] if len(e.args) > 1 else "")


r = P(P.RUNNING)
print("RUNNING", r.info())
print("APPS", [p.info()[4] for p in P.find()], [p.info()[4] for p in P.find(P.TYPE_DATA)])
show("NEXT", lambda: r.get_next_update())
show("BOOTP", lambda: P(P.BOOT))
show("CONFIRM", lambda: P.mark_app_valid_cancel_rollback())
show("SETBOOT", lambda: r.set_boot())
d = bytearray(48)
r.readblocks(0, d, 32)
print("VERSION", bytes(d[16:48]).split(b"\0")[0].decode())
'''


def test_without_ota_partitions_there_is_no_update_slot(tmp_path, backend):
    _board(tmp_path, NO_OTA)
    run = Run(backend, tmp_path, ota=False, app_version="v1.24.1")
    lines = run.end()
    out = {ln.split(" ", 1)[0]: ln.split(" ", 1)[1] for ln in lines if " " in ln}
    assert out["RUNNING"] == "(0, 0, 65536, 2031616, 'factory', False)", lines
    assert out["APPS"] == "['factory'] ['nvs', 'phy_init', 'vfs']"
    assert out["NEXT"].startswith("OSError 2 ")  # no OTA slot: ENOENT, as esp32_partition.c raises
    assert out["BOOTP"].startswith("OSError 2 ")  # no otadata: no boot partition either
    assert out["CONFIRM"] == "OSError -261 ESP_ERR_NOT_FOUND"
    assert out["SETBOOT"] == "OSError -261 ESP_ERR_NOT_FOUND"
    assert out["VERSION"] == "v1.24.1"
    # The flash folder remembers its table: another one needs a reflash (a new folder).
    run = Run(backend, tmp_path)
    lines = run.end()
    assert run.proc.returncode == 2
    assert any("serial reflash" in ln for ln in lines), lines


LOOP = r'''
import esp32
P = esp32.Partition
a = P("ota_0")
b = P("ota_1")
print("LOOP")
while True:
    b.set_boot()
    P.mark_app_valid_cancel_rollback()
    a.set_boot()
'''


def test_a_power_cut_during_otadata_updates_never_bricks_the_board(tmp_path, backend):
    _board(tmp_path, LOOP)
    fl = _host_flash(tmp_path)
    fl.prepare()
    p = fl.get("ota_1")
    img = _image("esp32", "2.0.0")
    assert fl.erase(p, 0, 4096) == 0 and fl.write(p, 0, img) == 0
    rnd = random.Random(7)
    seen = set()
    for _ in range(6):
        run = Run(backend, tmp_path)
        run.wait("LOOP")
        time.sleep(rnd.uniform(0.05, 0.4))
        run.kill()
        ota = fl.otadata()
        assert all(crc_ok or seq == 0xFFFFFFFF for seq, _, crc_ok in ota), ota
        assert fl.boot_partition() is not None
        seen.add(fl.boot_partition()[0])
    # The board still boots, into one of its two good images.
    (tmp_path / "board" / "main.py").write_text(UPDATER)
    run = Run(backend, tmp_path)
    line = run.wait("DONE")
    assert run.tagged()[0] in ("BOOT ota_0 1.0.0 1", "BOOT ota_1 2.0.0 1"), run.lines
    assert line.startswith("DONE")


def test_the_bootloader_skips_an_image_it_cannot_load(tmp_path, backend):
    """otadata selects ota_1, which holds an image for another chip: the bootloader says
    so and boots ota_0; the firmware sees ota_0 running and ota_1 as the boot partition."""
    _board(tmp_path, UPDATER)
    fl = _host_flash(tmp_path)
    fl.prepare("1.2.3")
    p = fl.get("ota_1")
    assert fl.write(p, 0, _image("esp32c3", "9.9.9")) == 0
    fl._put(1, 2, F.VALID)  # as if it had been selected and confirmed on another chip
    run = Run(backend, tmp_path)
    run.wait("DONE")
    assert run.tagged()[0] == "BOOT ota_0 1.2.3 1", run.lines
    assert any("E (" in ln and "OTA slot 1" in ln and "not bootable" in ln for ln in run.lines), run.lines
    assert any("chip id 5" in ln for ln in run.lines), run.lines


# -- the model alone (CPython; the board tests above run it on MicroPython too) --------


@pytest.fixture
def fresh(tmp_path):
    fl = F.Flash(str(tmp_path / "flash"), "ota", "esp32")
    fl.prepare("1.0.0")
    assert fl.boot() == "ota_0"
    return fl


def _put_image(fl, label, img):
    p = fl.get(label)
    for at in range(0, len(img) + 4095, 4096):
        if at < fl.get(label)[4]:
            assert fl.erase(p, at, 4096) == 0
    assert fl.write(p, 0, img) == 0


@pytest.mark.parametrize("chip", sorted(CHIP_IDS))
def test_the_loader_accepts_images_built_from_the_format(tmp_path, chip):
    fl = F.Flash(str(tmp_path / "flash"), "ota", chip)
    fl.prepare()
    for body in (0, 1, 14, 15, 16, 4000, 9001):
        img = _image(chip, "2.0.%d" % body, body=body)
        _put_image(fl, "ota_1", img)
        assert fl.verify(fl.get("ota_1")) is None, (chip, body)
        assert fl.app_desc(fl.get("ota_1")) == ("2.0.%d" % body, "micropython")
    assert F.image(chip, "1.0.0") != img and fl.verify(fl.get("ota_0")) is None


def test_the_loader_rejects_every_damaged_image(fresh):
    img = bytearray(_image("esp32", "2.0.0", body=5000))
    p = fresh.get("ota_1")
    cases = {
        "blank": b"",
        "magic": b"\xe8" + bytes(img[1:]),
        "other chip": bytes(_image("esp32s3", "2.0.0")),
        "truncated": bytes(img[:3000]),
        "no hash": bytes(img[:-32]),
        "segments": bytes(img[:1]) + b"\x11" + bytes(img[2:]),
        "huge segment": bytes(img[:28]) + struct.pack("<I", 0x200000) + bytes(img[32:]),
    }
    for at in (40, 300, 2000, len(img) - 33, len(img) - 1):  # one flipped bit anywhere
        bad = bytearray(img)
        bad[at] ^= 0x10
        cases["bit %d" % at] = bytes(bad)
    for name, data in cases.items():
        _put_image(fresh, "ota_1", data)
        assert fresh.verify(p) is not None, name
        assert fresh.set_boot(p) == F.ERR_OTA_VALIDATE_FAILED, name
    _put_image(fresh, "ota_1", bytes(img))
    assert fresh.verify(p) is None


def test_set_boot_and_the_bootloader_agree_over_many_updates(fresh):
    """Alternate updates, some confirmed, some abandoned: the slot set_boot() picks boots
    next (on trial), and an abandoned one leaves the last confirmed slot running."""
    rnd = random.Random(3)
    confirmed = "ota_0"
    for n in range(40):
        nxt = fresh.next_update(fresh.running_partition())
        assert nxt[0] != fresh.running
        _put_image(fresh, nxt[0], _image("esp32", "2.%d" % n))
        assert fresh.set_boot(nxt) == 0
        assert fresh.boot_partition() == nxt
        assert fresh.boot() == nxt[0]
        assert fresh.state(nxt) == "PENDING_VERIFY"
        if rnd.random() < 0.5:
            assert fresh.mark_valid() == 0
            confirmed = nxt[0]
            assert fresh.boot() == confirmed and fresh.state(nxt) == "VALID"
        else:
            assert fresh.boot() == confirmed
            assert fresh.state(nxt) == "ABORTED"
        assert fresh.running == confirmed
        if confirmed == nxt[0]:
            assert fresh.app_desc(fresh.running_partition())[0] == "2.%d" % n


def test_the_bootloader_survives_any_otadata(fresh):
    """Random otadata (garbage, or records with good CRCs and any state): boot() always
    picks a slot holding a loadable image, and never raises."""
    _put_image(fresh, "ota_1", _image("esp32", "2.0.0"))
    od = fresh.get("otadata")
    rnd = random.Random(11)
    states = [F.NEW, F.PENDING_VERIFY, F.VALID, F.INVALID, F.ABORTED, F.UNDEFINED, 7]
    for i in range(300):
        if i % 3 == 0:
            raw = bytes(rnd.getrandbits(8) for _ in range(64))
            recs = [raw[:32], raw[32:]]
        else:
            recs = [F.entry(rnd.choice([1, 2, 3, 4, 0, 0xFFFFFFFF, rnd.getrandbits(32)]), rnd.choice(states))
                    for _ in range(2)]
        fresh._replace(od, recs[0] + b"\xff" * (4096 - 32) + recs[1] + b"\xff" * (4096 - 32))
        before = fresh.otadata()
        got = fresh.boot()
        assert got in ("ota_0", "ota_1")
        assert fresh.verify(fresh.get(got)) is None
        for (seq, was, _), (_, now, _) in zip(before, fresh.otadata()):
            if was == F.PENDING_VERIFY and seq != 0xFFFFFFFF:  # (an all-0xFF seq is "erased" and rewritten)
                assert now == F.ABORTED  # a trial never survives a reset
            if now == F.PENDING_VERIFY:
                assert was == F.NEW  # and only a new image starts one
        # and an update from any such state selects its slot
        target = fresh.next_update(fresh.running_partition())
        assert fresh.set_boot(target) == 0 and fresh.boot_partition() == target
    # Nothing loadable anywhere: the chip would reset forever; boot() says None.
    fresh.running = None
    for label in ("ota_0", "ota_1"):
        _put_image(fresh, label, b"\x00" * 64)
    lines = []
    assert fresh.boot(lines.append) is None
    assert lines[-1].endswith("No bootable app partitions in the partition table")


def test_a_fresh_ota_flash_boots_ota_0_and_records_it(tmp_path):
    fl = F.Flash(str(tmp_path / "flash"), "ota", "esp32")
    assert fl.prepare("1.0.0") is True and fl.prepare("7.7.7") is False  # made once
    assert fl.otadata() == [[0xFFFFFFFF, 0xFFFFFFFF, False], [0xFFFFFFFF, 0xFFFFFFFF, False]]
    assert fl.boot_partition()[0] == "ota_0"
    assert fl.mark_valid() == F.ESP_FAIL  # esptool-flashed, before the bootloader ran
    assert fl.boot() == "ota_0"
    assert fl.otadata()[0] == [1, F.VALID, True]  # the bootloader's "initial contents" record
    assert fl.mark_valid() == 0
    assert fl.app_desc(fl.get("ota_0")) == ("1.0.0", "micropython")
    with pytest.raises(ValueError, match="reflash"):
        F.Flash(str(tmp_path / "flash"), "factory", "esp32").prepare()


def test_flash_bounds_and_erase_rules(fresh):
    p = fresh.get("ota_1")
    size = p[4]
    assert fresh.read(p, size, 0) == (0, b"")
    assert fresh.read(p, size + 1, 0)[0] == F.ERR_INVALID_ARG
    assert fresh.read(p, size - 1, 2)[0] == F.ERR_INVALID_SIZE
    assert fresh.read(p, -1, 1)[0] == F.ERR_INVALID_ARG
    assert fresh.write(p, size - 1, b"ab") == F.ERR_INVALID_SIZE
    assert fresh.erase(p, 4096, 100) == F.ERR_INVALID_SIZE
    assert fresh.erase(p, 100, 4096) == F.ERR_INVALID_ARG
    assert fresh.erase(p, size - 4096, 8192) == F.ERR_INVALID_SIZE
    # Writing far into a fresh slot costs the distance, in 0xFF (erased), not zeros.
    assert fresh.write(p, 10000, b"\x12") == 0
    assert fresh.read(p, 9998, 4) == (0, b"\xff\xff\x12\xff")
    assert os.path.getsize(fresh.path(p)) == 10001
    # An erase past the end of what was ever written writes nothing.
    assert fresh.erase(p, 0x100000, 0x80000) == 0
    assert os.path.getsize(fresh.path(p)) == 10001


class _Cut(Exception):
    """The power goes: raised in the middle of a write."""


def test_a_cut_in_the_middle_of_any_otadata_write_leaves_a_bootable_board(fresh, monkeypatch):
    """Cut the power at the k-th write (after half of its bytes) of an update cycle:
    set_boot, the trial boot, mark valid, a boot; then the next boot must still load
    one of the two good images and otadata must read as records or as erased."""
    _put_image(fresh, "ota_1", _image("esp32", "2.0.0"))
    real_open = open
    budget = [0]

    class CutFile:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            budget[0] -= 1
            if budget[0] == 0:
                self.f.write(bytes(data)[:len(data) // 2])
                self.f.close()
                raise _Cut()
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def cut_open(path, mode="r", *a):
        f = real_open(path, mode, *a)
        return CutFile(f) if ("w" in mode or "+" in mode) else f

    monkeypatch.setattr(FLASH, "open", cut_open, raising=False)  # where the flash files are written
    monkeypatch.setattr(F, "open", cut_open, raising=False)
    cycle = [lambda: fresh.set_boot(fresh.get("ota_1")), fresh.boot, fresh.mark_valid,
             lambda: fresh.set_boot(fresh.get("ota_0")), fresh.boot]
    cuts = 0
    for k in range(1, 12):
        for start in range(len(cycle)):
            fresh.running = None  # this is flash-level: no running app to protect
            budget[0] = k
            try:
                for op in cycle[start:] + cycle[:start]:
                    op()
            except _Cut:
                cuts += 1
            budget[0] = -1
            ota = fresh.otadata()
            assert all(crc_ok or seq == 0xFFFFFFFF for seq, _, crc_ok in ota), (k, start, ota)
            assert fresh.boot() in ("ota_0", "ota_1"), (k, start)
    assert cuts > 20  # the cuts really landed inside the cycle


# The same model run by both interpreters on the same steps must say the same things.
SCENARIO = r'''
import sys
from simworld import bootloader as B
fl = B.Flash(sys.argv[1], "ota", "esp32c3")
print("prepare", fl.prepare("1.0.0"), fl.boot(), fl.otadata())
P = B.partition_class(fl)
nxt = P(P.RUNNING).get_next_update()
img = B.image("esp32c3", "2.0.0", body=b"\x5a" * 5000)
for i in range(0, len(img), 4096):
    blk = img[i:i + 4096]
    nxt.writeblocks(i // 4096, blk + b"\xff" * (4096 - len(blk)))
nxt.set_boot()
print("update", fl.otadata(), P(P.BOOT).info()[4])
print("trial", fl.boot(), fl.state(fl.get("ota_1")))
print("rollback", fl.boot(), fl.state(fl.get("ota_1")), fl.otadata())
nxt.set_boot()
print("again", fl.boot(), fl.state(fl.get("ota_1")))
P.mark_app_valid_cancel_rollback()
print("kept", fl.boot(), fl.state(fl.get("ota_1")), fl.app_desc(fl.get("ota_1")))
o = P("ota_0")
o.ioctl(6, 5)
o.writeblocks(5, b"\x3c" * 4, 0)
o.writeblocks(5, b"\x0f" * 4, 0)
b = bytearray(4)
o.readblocks(5, b)
print("and", list(b))
o.writeblocks(0, b"\0" * 4096)
print("broken", fl.verify(o._p), fl.boot_partition()[0])
for bad in (B.image("esp32", "x"), img[:-1] + bytes([img[-1] ^ 1])):
    o.writeblocks(0, bad + b"\xff" * (-len(bad) % 4096))
    try:
        o.set_boot()
    except OSError as e:
        print("reject", e.args[0])
'''


def test_the_model_says_the_same_on_cpython_and_micropython(tmp_path):
    if not MICROPYTHON:
        pytest.skip("no MicroPython unix-port binary (set MICROPYTHON)")
    script = tmp_path / "scenario.py"
    script.write_text(SCENARIO)
    mpy = ROOT / "tools" / "sim" / "mpy"
    outs = []
    for name, cmd, env in (
            ("cpython", [sys.executable, str(script), str(tmp_path / "cp")], dict(os.environ, PYTHONPATH=str(mpy))),
            ("micropython", [MICROPYTHON, str(script), str(tmp_path / "mp")], dict(os.environ, MICROPYPATH=str(mpy)))):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
        assert r.returncode == 0, (name, r.stdout, r.stderr)
        outs.append(r.stdout.replace("OSError(", "(").splitlines())
    assert outs[0] == outs[1]
    got = dict(ln.split(" ", 1) for ln in outs[0] if ln.split(" ", 1)[0] != "reject")
    assert got["prepare"] == "True ota_0 [[1, 2, True], [4294967295, 4294967295, False]]"
    assert got["trial"] == "ota_1 PENDING_VERIFY"
    assert got["rollback"].startswith("ota_0 ABORTED")
    assert got["kept"] == "ota_1 VALID ('2.0.0', 'micropython')"
    assert got["and"] == "[12, 12, 12, 12]"
    assert got["broken"].startswith("invalid magic") and got["broken"].endswith("ota_1")
    assert [ln for ln in outs[0] if ln.startswith("reject")] == ["reject -5379"] * 2


def test_partition_calls_fail_cleanly_on_any_arguments(fresh):
    """Random blocks, offsets, lengths and buffers: every call either works or raises the
    port's OSError / TypeError, and a read after a failed call still sees the flash as the
    successful calls left it."""
    P = F.partition_class(fresh)
    part = P("ota_1")
    small = P("ota_1", 512)
    shadow = bytearray(b"\xff" * part.info()[3])  # what the flash should hold
    rnd = random.Random(5)
    blocks = [-2, -1, 0, 1, 2, 383, 384, 385, 1 << 20]
    history = []
    for _ in range(600):
        p = rnd.choice([part, small])
        bs = p.ioctl(5, 0)
        blk = rnd.choice(blocks)
        n = rnd.choice([0, 1, 7, 512, 4096, 4097, 8192])
        off = rnd.choice([None, 0, 1, -1, 4095, 4096, 1 << 22])
        op = rnd.choice(["read", "write", "erase"])
        data = bytes(rnd.getrandbits(8) for _ in range(n))
        history.append((op, p.ioctl(5, 0), blk, n, off))
        try:
            if op == "read":
                buf = bytearray(n)
                (p.readblocks(blk, buf) if off is None else p.readblocks(blk, buf, off))
                at = blk * bs + (off or 0)
                assert bytes(buf) == bytes(shadow[at:at + n]), history[-5:]
            elif op == "write":
                if off is None:
                    p.writeblocks(blk, data)
                    at = blk * bs
                    lo, hi = at // 4096 * 4096, -(-(at + n) // 4096) * 4096
                    if bs >= 4096:
                        lo, hi = at, at + n
                    kept = bytes(shadow[lo:hi])
                    shadow[lo:hi] = b"\xff" * (hi - lo)
                    if bs < 4096:  # the sectors around a small-block write keep their bytes
                        shadow[lo:at] = kept[:at - lo]
                        shadow[at + n:hi] = kept[at + n - lo:]
                else:
                    p.writeblocks(blk, data, off)
                    at = blk * bs + off
                shadow[at:at + n] = bytes(a & b for a, b in zip(shadow[at:at + n], data))
            else:
                r = p.ioctl(6, blk)
                if r == 0:
                    shadow[blk * 4096:blk * 4096 + 4096] = b"\xff" * 4096
                else:
                    assert bs != 4096 and r == -22
        except OSError as e:
            assert e.args[0] in (-258, -260), e.args
        chk = bytearray(len(shadow))
        part.readblocks(0, chk)
        assert chk == shadow, history[-1]
    whole = bytearray(len(shadow))
    part.readblocks(0, whole)
    assert whole == shadow
