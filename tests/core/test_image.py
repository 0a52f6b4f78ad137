# The ESP app image head check. Heads are built here with struct (this file
# also runs on MicroPython); tests/test_image.py checks whole images that
# esptool itself accepts.
import struct

from rainmaker import image
from util import raises


def head(chip_id=0, version="1.0.0", project="micropython", segs=2, seglen=0x1000, min_rev=0,
         max_rev=399, secure=0, magic=0xE9, desc_magic=0xABCD5432, hashed=1):
    h = struct.pack("<BBBBIB3sHBHH4sB", magic, segs, 2, 0x20, 0x40080000, 0xEE, b"\0\0\0",
                    chip_id, min_rev // 100, min_rev, max_rev, b"\0" * 4, hashed)
    h += struct.pack("<II", 0x3F400020, seglen)
    d = struct.pack("<II8x", desc_magic, secure)
    for s, n in ((version, 32), (project, 32), ("12:00:00", 16), ("Nov 28 2026", 16), ("v5.2.2", 32)):
        b = s.encode()
        d += b + b"\0" * (n - len(b))
    d += b"\x11" * 32
    return h + d + b"\0" * (256 - len(d))


def test_head_size():
    assert len(head()) == image.HEAD == 288


def test_accepts_a_new_version():
    assert image.check(head(version="1.1.0"), "esp32", "1.0.0", "micropython") == ("1.1.0", "micropython")
    assert image.check(head(chip_id=9, version="2"), "esp32s3", "1", "micropython") == ("2", "micropython")
    # only the first HEAD bytes matter; more may be given
    assert image.check(head(version="2") + b"\xff" * 100, "esp32", "1", "micropython")[0] == "2"


def test_info_fields():
    d = image.info(head(version="v1.28.0", project="mp", secure=3, min_rev=100, max_rev=301))
    assert d["version"] == "v1.28.0" and d["project"] == "mp" and d["secure_version"] == 3
    assert d["min_rev"] == 100 and d["max_rev"] == 301 and d["idf"] == "v5.2.2" and d["hashed"]
    assert d["date"] == "Nov 28 2026" and d["time"] == "12:00:00" and d["segments"] == 2


def test_full_length_strings():
    v = "v" * 32  # no NUL terminator when the array is full
    assert image.info(head(version=v))["version"] == v


def test_refusal_reasons_are_the_sdks():
    e = raises(image.ImageError, image.check, head(project="other"), "esp32", "1.0.0", "micropython")
    assert str(e).startswith("Project Name mismatch")
    e = raises(image.ImageError, image.check, head(version="1.0.0"), "esp32", "1.0.0", "micropython")
    assert str(e).startswith("Same version received")
    e = raises(image.ImageError, image.check, head(secure=1), "esp32", "0", "micropython", secure_version=2)
    assert str(e).startswith("Lower secure version received")
    e = raises(image.ImageError, image.check, head(min_rev=300), "esp32", "0", "micropython", chip_rev=100)
    assert str(e).startswith("Chip revision mismatch") and "v3.0" in str(e) and "v1.0" in str(e)
    e = raises(image.ImageError, image.check, head(max_rev=199), "esp32", "0", "micropython", chip_rev=300)
    assert str(e).startswith("Chip revision mismatch")


def test_revision_bounds():
    ok = lambda h, rev: image.check(h, "esp32", "0", "micropython", chip_rev=rev)
    assert ok(head(min_rev=100, max_rev=399), 100)
    assert ok(head(min_rev=100, max_rev=399), 399)
    assert ok(head(min_rev=0, max_rev=0xFFFF), 5000)  # the default maximum means none
    assert ok(head(min_rev=0, max_rev=0), 301)  # old images carry no maximum


def test_wrong_chip_names_both():
    e = raises(image.ImageError, image.check, head(chip_id=9), "esp32", "0", "micropython")
    s = str(e)
    assert "esp32s3" in s and "this board is esp32" in s and "chip id 9" in s
    e = raises(image.ImageError, image.check, head(chip_id=77), "esp32c3", "0", "micropython")
    assert "unknown chip" in str(e) and "esp32c3" in str(e)
    e = raises(image.ImageError, image.check, head(), "esp8266", "0", "micropython")
    assert "esp8266" in str(e)


def test_not_an_image():
    for h, word in ((head(magic=0x00), "0xe9"), (head(segs=0), "segments"), (head(segs=17), "segments"),
                    (head(desc_magic=0x12345678), "app description"), (head(seglen=100), "too short"),
                    (head(hashed=7), "hash"), (head()[:287], "too short"), (b"", "too short")):
        e = raises(image.ImageError, image.check, h, "esp32", "0", "micropython")
        assert word in str(e), (word, str(e))


def test_binary_garbage_in_strings():
    h = bytearray(head())
    h[32 + 16:32 + 20] = b"\xff\xfe\xfd\xfc"
    raises(image.ImageError, image.check, bytes(h), "esp32", "0", "micropython")
