# The second-stage bootloader and the flashing tools around the flash model
# (flash.py): what runs on the host side of a simulated board, before the
# firmware's interpreter starts (tools/sim/board.py, tools/sim/mpboard.py) and in
# tests. Kept apart from flash.py so the MicroPython backend, which loads flash.py
# into the firmware's heap for esp32.Partition, does not pay for it. Written in the
# subset both interpreters run, like the rest of simworld.
#
# Flash here is flash.Flash plus:
#   prepare()   a new flash folder is a freshly flashed board (app image in the first
#               app partition, otadata erased);
#   boot()      ESP-IDF's bootloader with rollback: settle otadata, pick the slot, load
#               the image or fall back;
#   state()     esp_ota_get_state_partition, for tests (the esp32 module has no call);
#   app_desc()  the (version, project_name) of the image in a partition.
# image() builds a small image ESP-IDF's loader accepts.
import hashlib
import struct

try:
    import os
except ImportError:  # pragma: no cover
    import uos as os

from . import flash as _f
from .flash import (ABORTED, ANY, CHIP_IDS, ESP_FAIL, ERR_INVALID_ARG, ERR_INVALID_SIZE, ERR_NOT_FOUND,
                    ERR_OTA_VALIDATE_FAILED, FACTORY, IMAGE_MAGIC, INVALID, LAYOUTS, NEW, PENDING_VERIFY,
                    SECTOR, TYPE_APP, TYPE_DATA, UNDEFINED, VALID, entry, partition_class)

# What the host side uses, in one place: this module's own names and flash.py's.
__all__ = ["Flash", "image", "STATES", "ABORTED", "ANY", "CHIP_IDS", "ESP_FAIL", "ERR_INVALID_ARG",
           "ERR_INVALID_SIZE", "ERR_NOT_FOUND", "ERR_OTA_VALIDATE_FAILED", "FACTORY", "INVALID", "LAYOUTS",
           "NEW", "PENDING_VERIFY", "SECTOR", "TYPE_APP", "TYPE_DATA", "UNDEFINED", "VALID", "entry",
           "partition_class"]

DESC_MAGIC = 0xABCD5432
DESC_AT = 32  # esp_app_desc_t follows the 24-byte image header and the first segment's header
STATES = {NEW: "NEW", PENDING_VERIFY: "PENDING_VERIFY", VALID: "VALID", INVALID: "INVALID",
          ABORTED: "ABORTED", UNDEFINED: "UNDEFINED"}
OTA_MIN = _f.OTA_MIN
OTA_MAX = _f.OTA_MAX


def image(chip, version, project="micropython", body=b"", secure_version=0):
    """A small app image that ESP-IDF's loader accepts for `chip`: one segment holding
    the esp_app_desc_t (version, project name) and `body`, the checksum and the
    appended SHA-256."""
    desc = struct.pack("<III", DESC_MAGIC, secure_version, 0) + b"\0" * 4
    desc += _field(version, 32) + _field(project, 32) + _field("00:00:00", 16) + _field("Jan  1 2026", 16)
    desc += _field("v5.4", 32) + b"\0" * 32
    desc += b"\0" * (256 - len(desc))
    data = desc + bytes(body)
    data += b"\0" * (-len(data) % 4)
    head = struct.pack("<BBBBIBBBBHBHH4sB", IMAGE_MAGIC, 1, 2, 0x20, 0x40080000, 0xEE, 0, 0, 0,
                       CHIP_IDS[chip], 0, 0, 0xFFFF, b"\0" * 4, 1)
    img = head + struct.pack("<II", 0x3F400020, len(data)) + data
    pad = (len(img) + 1 + 15) // 16 * 16 - len(img) - 1
    img += b"\0" * pad + bytes([_f._xor(data) ^ 0xEF])
    return img + hashlib.sha256(img).digest()


def _field(text, n):
    b = text.encode() if isinstance(text, str) else bytes(text)
    if len(b) >= n:
        raise ValueError("%r does not fit in %d bytes" % (text, n - 1))
    return b + b"\0" * (n - len(b))


def _cstr(b):
    i = b.find(b"\0")
    return (b if i < 0 else b[:i]).decode()


class Flash(_f.Flash):
    """The flash with the bootloader and the host-side tools (see the top)."""

    def _replace(self, p, raw):
        """Replace partition p's file with raw, atomically (tests set otadata so)."""
        path = self.path(p)
        with open(path + ".tmp", "wb") as f:
            f.write(raw)
        os.rename(path + ".tmp", path)

    def state(self, p):
        """ESP-IDF's esp_ota_get_state_partition: the OTA state name of app slot p,
        or None (not an OTA slot, or no record names it). For tests and logs: the
        esp32 module has no call for it."""
        ota = self.otadata()
        slots = self.ota_slots()
        if ota is None or not slots or p is None or not (OTA_MIN <= p[2] < OTA_MAX):
            return None
        want = p[2] - OTA_MIN
        for seq, st, crc_ok in ota:
            if crc_ok and (seq - 1) % len(slots) == want and seq != 0xFFFFFFFF:
                return STATES.get(st, "0x%x" % st)
        return None

    # -- the image loader --------------------------------------------------------

    def app_desc(self, p):
        """(version, project_name) from the esp_app_desc_t of the image in p, or None."""
        err, d = self.read(p, DESC_AT, 256)
        if err or struct.unpack("<I", d[:4])[0] != DESC_MAGIC:
            return None
        return _cstr(d[16:48]), _cstr(d[48:80])

    # -- the bootloader ------------------------------------------------------------

    def prepare(self, version="1.0.0", project="micropython"):
        """A new flash folder is a freshly flashed board: the app image (`version`) in
        the first app partition, everything else erased. An existing one must have
        the same layout (changing the partition table takes a serial reflash)."""
        mark = self.folder + "/layout"
        try:
            with open(mark) as f:
                had = f.read().strip()
        except OSError:
            had = None
        if had is not None:
            if had != self.layout:
                raise ValueError("flash folder %s holds the %r partition layout, not %r: changing the "
                                 "partition table is a serial reflash; delete the folder to start anew"
                                 % (self.folder, had, self.layout))
            return False
        try:
            os.mkdir(self.folder)
        except OSError:
            pass
        app = self.first(TYPE_APP, FACTORY) or self.ota_slots()[0]
        img = image(self.chip, version, project)
        f = open(self.path(app), "wb")
        try:
            f.write(img)
        finally:
            f.close()
        with open(mark + ".tmp", "w") as f:
            f.write(self.layout + "\n")
        os.rename(mark + ".tmp", mark)
        return True

    def boot(self, log=None):
        """What the second-stage bootloader does at a reset: settle otadata, pick the
        app, load it or fall back. Sets and returns self.running (None: nothing is
        bootable, the chip resets forever). log(line) gets its warnings and errors
        (MicroPython's bootloader logs at WARN)."""
        ms = [28]

        def say(level, text):
            if log is not None:
                log("%s (%d) boot: %s" % (level, ms[0], text))
                ms[0] += 1

        slots = self.ota_slots()
        factory = self.first(TYPE_APP, FACTORY)
        start = -1  # index -1 is the factory app, 0.. the OTA slots
        initial = False
        ota = self.otadata()
        if ota is not None:
            for i in (0, 1):  # a reset while an image is on trial ends the trial
                if ota[i][1] == PENDING_VERIFY:
                    ota[i][1] = ABORTED
                    self._put(i, ota[i][0], ABORTED)
            if (self._invalid(ota[0]) and self._invalid(ota[1])) or not slots:
                if factory is None:
                    start = 0
                    initial = all(e[0] == 0xFFFFFFFF or not e[2] for e in ota)
            else:
                a = self._active(ota)
                if a != -1:
                    start = (ota[a][0] - 1) % len(slots)
                    if ota[a][1] == NEW:
                        ota[a][1] = PENDING_VERIFY
                        self._put(a, ota[a][0], PENDING_VERIFY)
                else:
                    say("E", "ota data partition invalid, trying every app partition")
        order = list(range(start, -2, -1)) + list(range(start + 1, len(slots)))
        for index in order:
            p = factory if index < 0 else (slots[index] if index < len(slots) else None)
            if p is None:
                continue
            why = self.verify(p)
            if why is None:
                if index >= 0 and initial:
                    self._put(0, index + 1, VALID)
                self.running = p[0]
                return p[0]
            say("E", "image at 0x%x: %s" % (p[3], why))
            say("E", "%s app partition is not bootable" % ("Factory" if index < 0 else "OTA slot %d" % index))
        say("E", "No bootable app partitions in the partition table")
        self.running = None
        return None

    # -- esp_ota_ops, as the app calls them ---------------------------------------------
