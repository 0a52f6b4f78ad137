"""Synthetic ESP-IDF application images for tests: small, but valid in every
field esptool checks (tests/test_image.py proves it with esptool's own
image-info).

    build(chip="esp32", version="1.0.0", project="micropython", ...) -> bytes

Layout: the 24-byte image header, then segments (8-byte header + data, each a
multiple of 4 bytes). The first segment is mapped from flash (DROM) and starts
with the 256-byte app description, as a real app's does; its load address
keeps the flash offset and the address equal modulo 64 KB (the MMU page), as
esptool expects of mapped segments. After the segments: zero padding so that
the checksum byte (0xEF XOR every data byte) ends a 16-byte block, then, when
the header's flag says so, the SHA-256 of everything before it.
"""
import hashlib
import struct

# chip -> (image chip id, start of the flash-mapped data region, a DRAM address)
CHIPS = {
    "esp32": (0, 0x3F400000, 0x3FFB0000),
    "esp32s2": (2, 0x3F000000, 0x3FFB0000),
    "esp32c3": (5, 0x3C000000, 0x3FC88000),
    "esp32s3": (9, 0x3C000000, 0x3FC88000),
    "esp32c6": (13, 0x42800000, 0x40800000),
}
APP_DESC_MAGIC = 0xABCD5432


def _cstr(s, n):
    b = s.encode() if isinstance(s, str) else s
    assert len(b) <= n
    return b + b"\0" * (n - len(b))


def app_desc(version, project, secure_version=0, idf="v5.2.2", time="12:00:00", date="Nov 28 2026"):
    """The 256-byte application description."""
    d = struct.pack("<II8x", APP_DESC_MAGIC, secure_version)
    d += _cstr(version, 32) + _cstr(project, 32) + _cstr(time, 16) + _cstr(date, 16) + _cstr(idf, 32)
    d += hashlib.sha256(project.encode() + version.encode()).digest()  # stands in for the ELF's hash
    d += b"\0" * (256 - len(d))
    assert len(d) == 256
    return d


def header(chip_id, segments, min_rev=0, max_rev=399, hashed=True, entry=0x40080000):
    # magic, segment count, flash mode DIO (2), 4 MB / 40 MHz (0x20), entry,
    # WP pin disabled (0xEE), pin drive 0, chip id, old min rev, min/max rev, reserved, hash flag
    return struct.pack("<BBBBIB3sHBHH4sB", 0xE9, segments, 2, 0x20, entry, 0xEE, b"\0\0\0",
                       chip_id, min_rev // 100, min_rev, max_rev, b"\0" * 4, 1 if hashed else 0)


def build(chip="esp32", version="1.0.0", project="micropython", size=4096, secure_version=0,
          min_rev=0, max_rev=399, hashed=True, chip_id=None):
    """A whole image of about `size` bytes for `chip`."""
    cid, drom, dram = CHIPS[chip]
    if chip_id is not None:
        cid = chip_id
    desc = app_desc(version, project, secure_version)
    body = desc + bytes((i * 7) & 0xFF for i in range(max(0, size - 512)))
    body += b"\0" * (-len(body) % 4)
    ram = b"\x5a\xa5" * 32
    segs = [(drom + 0x20, body), (dram, ram)]
    out = bytearray(header(cid, len(segs), min_rev, max_rev, hashed))
    csum = 0xEF
    for addr, data in segs:
        out += struct.pack("<II", addr, len(data)) + data
        for b in data:
            csum ^= b
    out += b"\0" * (15 - len(out) % 16)
    out.append(csum)
    if hashed:
        out += hashlib.sha256(out).digest()
    return bytes(out)
