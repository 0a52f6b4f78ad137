# Checks the head of an ESP-IDF application image before any of it is written
# to flash, so a wrong download is refused at its first bytes rather than after
# 1.5 MB. Layout (all little-endian, from ESP-IDF's image format):
#
#   0   image header, 24 bytes: magic 0xE9, segment count, flash mode/speed/size,
#       entry address, WP pin, pin drive, chip id (u16 at 12), old min revision
#       (u8 at 14), min/max chip revision as major*100+minor (u16 at 15, 17),
#       4 reserved bytes, "SHA-256 appended" flag (at 23)
#   24  first segment header, 8 bytes: load address, data length
#   32  the application description, 256 bytes, at the start of the first
#       segment: magic 0xABCD5432, secure version (u32 at +4), 8 reserved bytes,
#       version[32] at +16, project_name[32] at +48, time[16] at +80,
#       date[16] at +96, idf_ver[32] at +112, app_elf_sha256[32] at +144
#
# The refusal texts are the ones the RainMaker SDK reports, so the cloud shows
# the same reasons whatever runs on the node. The full image (its checksum and
# appended SHA-256) is verified by ESP-IDF when Partition.set_boot() selects the
# new slot; this module only decides whether downloading is worth it.
from micropython import const
import struct

HEAD = const(288)  # bytes check() needs: header + first segment header + app description
MAGIC = const(0xE9)
_DESC_MAGIC = const(0xABCD5432)
_MAX_SEGMENTS = const(16)

# chip name -> the image header's chip id
CHIPS = {
    "esp32": 0, "esp32s2": 2, "esp32c3": 5, "esp32s3": 9, "esp32c2": 12,
    "esp32c6": 13, "esp32h2": 16, "esp32p4": 18, "esp32c5": 23,
}


class ImageError(ValueError):
    """The image is refused; the text is the reason reported to the cloud."""


def _name(chip_id):
    for k in CHIPS:
        if CHIPS[k] == chip_id:
            return k
    return "an unknown chip"


def _text(b):
    # a NUL-terminated char array
    i = b.find(b"\0")
    if i >= 0:
        b = b[:i]
    try:
        return b.decode()
    except UnicodeError:
        raise ImageError("Image description is not text")


def _rev(r):
    return "v%d.%d" % (r // 100, r % 100)


def info(head):
    """Parse the head: dict with chip_id, segments, min_rev, max_rev, hashed,
    secure_version, version, project, time, date, idf. Raises ImageError if
    it is not an app image."""
    if len(head) < HEAD:
        raise ImageError("Image head too short: %d of %d bytes" % (len(head), HEAD))
    if head[0] != MAGIC:
        raise ImageError("Not an ESP app image (first byte 0x%02x, expected 0xe9)" % head[0])
    segs = head[1]
    if not 0 < segs <= _MAX_SEGMENTS:
        raise ImageError("Image has %d segments, expected 1..%d" % (segs, _MAX_SEGMENTS))
    chip_id, _old, min_rev, max_rev = struct.unpack_from("<HBHH", head, 12)
    if head[23] > 1:
        raise ImageError("Image header's hash flag is %d, expected 0 or 1" % head[23])
    _addr, seglen = struct.unpack_from("<II", head, 24)
    if seglen < 256:
        raise ImageError("First segment too short (%d bytes) to hold the app description" % seglen)
    magic, secure = struct.unpack_from("<II", head, 32)
    if magic != _DESC_MAGIC:
        raise ImageError("No app description in the image (magic 0x%08x); is it a bootloader or a combined flash image?" % magic)
    return {
        "chip_id": chip_id, "segments": segs, "min_rev": min_rev, "max_rev": max_rev,
        "hashed": head[23] == 1, "secure_version": secure,
        "version": _text(bytes(head[48:80])), "project": _text(bytes(head[80:112])),
        "time": _text(bytes(head[112:128])), "date": _text(bytes(head[128:144])),
        "idf": _text(bytes(head[144:176])),
    }


def check(head, chip, running_version, running_project, chip_rev=None, secure_version=None):
    """(version, project) of the image whose first HEAD bytes are `head` if
    this board should take it, else ImageError with the reason. chip: 'esp32',
    'esp32s3', ...; chip_rev: this chip's revision as major*100+minor, if
    known; secure_version: this chip's anti-rollback counter, if any."""
    want = CHIPS.get(chip)
    if want is None:
        raise ImageError("Unknown chip %r; expected one of %s" % (chip, ", ".join(sorted(CHIPS))))
    d = info(head)
    got = d["chip_id"]
    if got != want:
        raise ImageError("Chip mismatch: image is for %s (chip id %d), this board is %s (chip id %d)"
                         % (_name(got), got, chip, want))
    if d["project"] != running_project:
        raise ImageError("Project Name mismatch: image is %r, running %r" % (d["project"], running_project))
    if d["version"] == running_version:
        raise ImageError("Same version received: %s" % running_version)
    if secure_version is not None and d["secure_version"] < secure_version:
        raise ImageError("Lower secure version received: %d < %d" % (d["secure_version"], secure_version))
    if chip_rev is not None:
        lo, hi = d["min_rev"], d["max_rev"]
        # a maximum of 0 (old images) or 0xFFFF (the default) sets no upper bound
        if chip_rev < lo or (hi not in (0, 0xFFFF) and chip_rev > hi):
            raise ImageError("Chip revision mismatch: image needs %s..%s, chip is %s"
                             % (_rev(lo), "any" if hi in (0, 0xFFFF) else _rev(hi), _rev(chip_rev)))
    return d["version"], d["project"]
