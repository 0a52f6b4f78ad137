# The app bundle reader: events, bounds, path rules and corruption, fed whole
# and in pieces. Runs on CPython and MicroPython.
import hashlib
import json
import struct

from rainmaker import bundle
from util import raises

MANIFEST, FILE, DATA, DONE, END = bundle.MANIFEST, bundle.FILE, bundle.DATA, bundle.DONE, bundle.END


def hexdigest(b):
    return "".join("%02x" % x for x in hashlib.sha256(b).digest())


def make(files, version="1.2.0", manifest=None, **extra):
    """A bundle of [(path, bytes)]; `manifest` replaces the computed one."""
    m = manifest
    if m is None:
        m = {"format": 1, "version": version, "total": sum(len(d) for _, d in files),
             "files": [{"path": p, "size": len(d), "sha256": hexdigest(d)} for p, d in files]}
        m.update(extra)
    raw = json.dumps(m).encode() if not isinstance(m, bytes) else m
    return b"RMB1" + struct.pack(">H", len(raw)) + raw + b"".join(d for _, d in files)


def read(data, step=0, eof=True, **kw):
    """Events as [(kind, value)], DATA joined per file: returns (manifest, {path: bytes}, order, ended)."""
    r = bundle.Reader(**kw)
    pieces = [data] if not step else [data[i:i + step] for i in range(0, len(data), step)]
    if eof:
        pieces.append(b"")
    got = {}
    order = []
    m = None
    cur = None
    ended = False
    for p in pieces:
        for ev, v in r.feed(p):
            assert not ended
            if ev == MANIFEST:
                assert m is None
                m = v
            elif ev == FILE:
                assert cur is None and m is not None
                cur = v["path"]
                got[cur] = bytearray()
            elif ev == DATA:
                assert isinstance(v, memoryview)
                got[cur] += v
            elif ev == DONE:
                assert v["path"] == cur
                order.append(cur)
                cur = None
            else:
                assert ev == END and v is m and cur is None
                ended = True
        assert r.held() <= 8192
    return m, dict((k, bytes(v)) for k, v in got.items()), order, ended


FILES = [("main.py", b"print('hi')\n"), ("lib/rainmaker/x.mpy", bytes(range(256)) * 3), ("empty.txt", b""),
         ("lib/app/data.json", b"{}")]


def test_roundtrip_every_split():
    data = make(FILES, chip="esp32", arch="xtensawin")
    for step in (0, 1, 2, 5, 100, 4096):
        m, got, order, ended = read(data, step)
        assert ended and m["version"] == "1.2.0" and m["chip"] == "esp32"
        assert order == [p for p, _ in FILES]
        assert got == dict(FILES)


def test_kind_tells_image_from_bundle():
    assert bundle.kind(b"\xe9\x05") == "image"
    assert bundle.kind(b"RMB1\x00") == "bundle"
    assert bundle.kind(b"RM") is None and bundle.kind(b"") is None
    e = raises(bundle.BundleError, bundle.kind, b"<html>")
    assert "0xe9" in str(e) and "RMB1" in str(e)
    raises(bundle.BundleError, bundle.kind, b"RMX")


def test_truncated_anywhere():
    data = make(FILES)
    for cut in (0, 3, 6, 20, len(data) - 1, len(data) - 300):
        e = raises(bundle.BundleError, read, data[:cut], 7)
        assert "truncated" in str(e)


def test_extra_bytes_refused():
    e = raises(bundle.BundleError, read, make(FILES) + b"x")
    assert "after the end" in str(e)


def test_corrupt_file_names_it():
    data = bytearray(make(FILES))
    data[-1] ^= 1  # the last byte of the last file, lib/app/data.json
    e = raises(bundle.BundleError, read, bytes(data))
    assert "lib/app/data.json" in str(e) and "corrupt" in str(e)


def test_bad_magic_and_sizes():
    raises(bundle.BundleError, read, b"RMB2\x00\x02{}")
    e = raises(bundle.BundleError, read, b"RMB1\x20\x01" + b" " * 8193)
    assert "8192" in str(e)
    raises(bundle.BundleError, read, b"RMB1\x00\x00")
    raises(bundle.BundleError, read, b"RMB1\x00\x03{x}")
    raises(bundle.BundleError, read, b"RMB1\x00\x02\xff\xfe")
    deep = b"[" * 3000 + b"]" * 3000
    raises(bundle.BundleError, read, b"RMB1" + struct.pack(">H", len(deep)) + deep)


def manifest(**kw):
    d = b"abc"
    m = {"format": 1, "version": "1", "total": 3, "files": [{"path": "a.py", "size": 3, "sha256": hexdigest(d)}]}
    m.update(kw)
    return m


def test_manifest_rules():
    ok = manifest()
    assert read(make([("a.py", b"abc")], manifest=ok))[3]
    entry = ok["files"][0]
    bad = [
        manifest(format=2), manifest(version=""), manifest(version="v" * 33), manifest(version=1),
        manifest(total=4), manifest(total=-1), manifest(total="3"), manifest(total=3.0), manifest(files=[]),
        manifest(files={}), manifest(files=[entry, entry], total=6),
        manifest(files=[dict(entry, size=-3)]), manifest(files=[dict(entry, size="3")]),
        manifest(files=[dict(entry, sha256="00")]), manifest(files=[dict(entry, sha256="G" * 64)]),
        manifest(files=[dict(entry, sha256=entry["sha256"].upper())]), manifest(files=["a.py"]),
        manifest(files=[dict(entry, size=True)]), [1, 2],
    ]
    for m in bad:
        e = raises(bundle.BundleError, read, make([("a.py", b"abc")], manifest=m))
        assert str(e)


def test_file_count_and_total_bounds():
    files = [("lib/app/file%02d.mpy" % i, b"") for i in range(65)]
    e = raises(bundle.BundleError, read, make(files))
    assert "64" in str(e)
    assert read(make(files[:64]))[3]
    e = raises(bundle.BundleError, read, make([("a", b"x" * 100)]), 0, True, max_total=99)
    assert "99" in str(e)


def test_path_rules():
    for p in ("a.py", "lib/x/y.mpy", "a-b_c.d", "x" * 96):
        bundle.check_path(p)
    for p in ("", "/abs.py", "../up.py", "a/../b", "a//b", "./a", "a/./b", "dir/", "a b", "a\\b", "a:b",
              "caf\u00e9.py", "x" * 97, None, 5, "a\x00b", "~/x"):
        raises(bundle.BundleError, bundle.check_path, p)
    m = manifest(files=[dict(manifest()["files"][0], path="../boot.py")])
    e = raises(bundle.BundleError, read, make([("a.py", b"abc")], manifest=m))
    assert "../boot.py" in str(e)


def test_error_is_sticky():
    r = bundle.Reader()
    raises(bundle.BundleError, lambda: list(r.feed(b"XXXX\x00\x01{")))
    raises(bundle.BundleError, lambda: list(r.feed(make(FILES))))


def test_streaming_holds_nothing_but_the_manifest():
    big = b"z" * 50000
    data = make([("big.bin", big)])
    r = bundle.Reader()
    n = 0
    for i in range(0, len(data), 512):
        for ev, v in r.feed(data[i:i + 512]):
            if ev == DATA:
                n += len(v)
        assert r.held() <= 8192
    assert n == 50000 and r.done() and r.held() == 0
