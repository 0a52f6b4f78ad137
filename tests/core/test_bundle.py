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
        assert r.held() <= 320  # bundle._PIECE
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


def test_streaming_holds_no_file_data():
    big = b"z" * 50000
    data = make([("big.bin", big)])
    r = bundle.Reader()
    n = 0
    for i in range(0, len(data), 512):
        for ev, v in r.feed(data[i:i + 512]):
            if ev == DATA:
                n += len(v)
        assert r.held() <= 320
    assert n == 50000 and r.done() and r.held() == 0


# ---------------------------------------------------------------- the manifest, streamed

PIECE = 320  # bundle._PIECE: the most the reader holds of a manifest


def entries(n, size=1):
    return [("lib/app/mod%02d.mpy" % i, bytes([i]) * size) for i in range(n)]


def test_manifest_never_held_whole():
    # 64 files make a ~7 KB manifest; the reader holds one key or entry of it
    # at a time (it used to hold all of it, then decode it in one go).
    files = entries(64)
    data = make(files, chip="esp32", arch="xtensawin")
    assert struct.unpack(">H", data[4:6])[0] > 6000
    for step in (97, 1460):
        r = bundle.Reader()
        most = 0
        for i in range(0, len(data), step):
            for _ in r.feed(data[i:i + step]):
                pass
            most = max(most, r.held())
        for _ in r.feed(b""):
            pass
        assert r.done() and most <= PIECE and r.held() == 0


def raw_manifest(text, files=(("a.py", b"abc"),)):
    """A bundle whose manifest is exactly `text` (str), with the files' bytes after it."""
    return make(list(files), manifest=text.encode())


def good_text():
    return '{"format": 1, "version": "1", "total": 3, "files": [{"path": "a.py", "size": 3, "sha256": "%s"}]}' % (
        hexdigest(b"abc"))


def plain(m):
    """The reader's manifest with its files as a list of dicts, as json.loads gives them."""
    d = dict(m)
    d["files"] = list(m["files"])
    return d


def test_manifest_any_layout_and_order():
    h = hexdigest(b"abc")
    texts = [
        good_text(),
        # files first, blanks everywhere, pretty-printed
        '\n {\r\n\t"files" : [ \n {"sha256":"%s", "size":3,"path":"a.py"} \n ] ,\n "total":3, "version" : "1","format":1 }\n  ' % h,
        # informational keys with nested values, brackets and escapes inside strings
        '{"format":1,"version":"1 \\"}]\\\\","total":3,"build":{"a":[1,{"b":"]}[{"}],"c":null},'
        '"files":[{"path":"a.py","size":3,"sha256":"%s","note":["}",{"x":"\\u005d"}]}],"tags":[]}' % h,
        # a non-ASCII version
        '{"format":1,"version":"caf\u00e9 \u2603","total":3,"files":[{"path":"a.py","size":3,"sha256":"%s"}]}' % h,
    ]
    for t in texts:
        want = json.loads(t)
        # an entry's other keys are not kept (no use on the board, and memory)
        want["files"] = [{"path": f["path"], "size": f["size"], "sha256": f["sha256"]} for f in want["files"]]
        for step in (0, 1, 3, 64):
            m, got, order, ended = read(raw_manifest(t), step)
            assert ended and got == {"a.py": b"abc"}
            assert plain(m) == want, (m, want)


def test_manifest_garbled_refused():
    h = hexdigest(b"abc")
    e = '{"path":"a.py","size":3,"sha256":"%s"}' % h
    top = '"format":1,"version":"1","total":3'
    bad = [
        '', ' ', '{', '}', '[]', '"x"', '1', 'null', '{}', '{,}', '{' + top + '}',
        '{' + top + ',"files":[' + e + ']',  # the object never closes
        '{' + top + ',"files":[' + e + ']}}',  # closes twice
        '{' + top + ',"files":[' + e + ']} x',  # something after it
        '{' + top + ',"files":[' + e + ',]}',  # trailing comma in the list
        '{' + top + ',"files":[' + e + '],}',  # trailing comma in the object
        '{' + top + ',,"files":[' + e + ']}',
        '{' + top + ' "files":[' + e + ']}',  # a comma missing
        '{' + top + ',"files":[' + e + ' ' + e + ']}',
        '{' + top + ',"files":[' + e + '] 1}',  # something after the list
        '{' + top + ',"files":[,' + e + ']}',
        '{' + top + ',"files":["a.py"]}',  # not an object
        '{' + top + ',"files":[[' + e + ']]}',
        '{' + top + ',"files":[' + e + '}',  # the list never closes
        '{' + top + ',"files":{' + e[1:] + '}',
        '{' + top + ',"files":[' + e[:-1] + ']}',  # an entry never closes
        '{' + top + ',"files":[' + e + '],"files":[' + e + ']}',  # twice
        '{' + top + ',"files":[' + e + '],"files":1}',
        '{"files":1,' + top + ',"files":[' + e + ']}',
        '{' + top + ',"format":1,"files":[' + e + ']}',  # a key twice
        '{' + top + ',"files":[' + e + '],"x":"' + 'y' * 400 + '"}',  # a key longer than a piece
        '{' + top + ',"files":[{"path":"a.py","size":3,"sha256":"%s","pad":"%s"}]}' % (h, "p" * 400),
        '{' + top + ',"files":[' + e + ']' + ''.join(',"k%d":0' % i for i in range(13)) + '}',  # 17 keys
        '{' + top + ',"files":[' + e + '],"x":"unterminated}',
        '{' + top + ',"files":[' + e + '],"x":[1,2}',
        '{' + top + ',"files":[' + e + '],"x":tru}',
        '{' + top + ',"files":[' + e + '],"x":' + '[' * 200 + ']' * 200 + '}',  # fits a piece: the parser's nesting
        '{' + top + ',"files":[' + e + '],"x":' + '[' * 400 + ']' * 400 + '}',
        '{' + top + ',"files":[' + e + ']]',
        '{' + top + ',"files":[' + e + '}]}',
    ]
    for i, t in enumerate(bad):
        try:
            read(raw_manifest(t), (0, 1, 5)[i % 3])  # one split each: see tests/vm.py on many raises per VM
        except bundle.BundleError as x:
            assert str(x)
            continue
        raise AssertionError("accepted: %r" % t)


def test_manifest_length_must_match_its_json():
    t = good_text()
    raw = t.encode()
    rest = b"abc"
    # the declared length cuts the JSON short, or takes in a file's first bytes
    for n in (len(raw) - 1, len(raw) - 20, len(raw) + 1, len(raw) + 3):
        data = b"RMB1" + struct.pack(">H", n) + raw + rest
        raises(bundle.BundleError, read, data)
    # blanks after the JSON, within the length, are allowed (as json.loads allows them)
    data = b"RMB1" + struct.pack(">H", len(raw) + 2) + raw + b"\n " + rest
    assert read(data)[3]


def test_manifest_checked_entry_by_entry():
    # A bad entry, or files adding up to more than the limit, is refused
    # before the rest of the manifest (or any file) has arrived.
    files = entries(20, 100)
    data = make(files)
    head = data[:6 + 400]  # the top keys and the first entries
    r = bundle.Reader(max_total=150)
    e = raises(bundle.BundleError, lambda: list(r.feed(head)))
    assert "150" in str(e)
    bad = dict(manifest(), files=[{"path": "a.py", "size": 3, "sha256": "x"}] + [manifest()["files"][0]] * 3)
    data = make([("a.py", b"abc")], manifest=bad)
    r = bundle.Reader()
    e = raises(bundle.BundleError, lambda: list(r.feed(data[:6 + 120])))
    assert "sha256" in str(e)


def test_manifest_file_listed_twice_anywhere():
    files = entries(10)
    m = {"format": 1, "version": "1", "total": 11,
         "files": [{"path": p, "size": len(d), "sha256": hexdigest(d)} for p, d in files + [files[3]]]}
    e = raises(bundle.BundleError, read, make(files + [files[3]], manifest=m))
    assert "twice" in str(e) and files[3][0] in str(e)


def test_check_manifest_same_rules():
    # tools/bundle.py checks a manifest it builds with check_manifest: the rules the reader applies
    assert bundle.check_manifest(manifest()) == manifest()
    for m in ([1], manifest(files=[]), manifest(total=4), manifest(format=2), manifest(files=[1]),
              manifest(files=manifest()["files"] * 2, total=6)):
        raises(bundle.BundleError, bundle.check_manifest, m)


# ---------------------------------------------------------------- the file list on flash (Listed)

import io  # noqa: E402 - the section's own


def entry(p, d):
    return {"path": p, "size": len(d), "sha256": hexdigest(d)}


def listed(n=0, room=64):
    f = io.BytesIO()
    lst = bundle.Listed(f, room)
    for p, d in entries(n, 3):
        lst.add(entry(p, d))
    return lst, f


def test_listed_keeps_entries_in_its_file_not_in_ram():
    lst, f = listed(10)
    assert len(lst) == 10 and len(f.getvalue()) == 10 * 133  # fixed-size records
    for i, (p, d) in enumerate(entries(10, 3)):
        assert lst[i] == entry(p, d) and lst.digest(i) == hashlib.sha256(d).digest()
    assert lst[-1]["path"] == "lib/app/mod09.mpy"
    assert [e["path"] for e in lst] == [p for p, _ in entries(10)]
    raises(IndexError, lambda: lst[10])
    raises(IndexError, lambda: lst[-11])
    long = "d/" * 47 + "xy"  # 96 characters: the longest path
    lst.add(entry(long, b""))
    assert lst[10] == entry(long, b"") and lst.digest(10) == hashlib.sha256(b"").digest()


def test_listed_same_entries_as_files():
    a = bundle.Files()
    b, _ = listed()
    for p, d in FILES + entries(20, 7):
        a.add(entry(p, d))
        b.add(entry(p, d))
    assert list(a) == list(b) and len(a) == len(b)
    assert [a.digest(i) for i in range(len(a))] == [b.digest(i) for i in range(len(b))]


def test_listed_refuses_a_path_twice_and_a_full_list():
    lst, f = listed(10)
    e = raises(bundle.BundleError, lst.add, entry("lib/app/mod03.mpy", b"other"))
    assert "twice" in str(e) and "mod03" in str(e)
    # paths whose one-byte hashes collide are still told apart by their records
    seen = {}
    for i in range(300):
        p = "x%d.py" % i
        h = len(p)
        for c in p.encode():
            h = (h * 31 + c) & 0xFF
        seen.setdefault(h, []).append(p)
    pair = [v for v in seen.values() if len(v) > 1][0]
    lst.add(entry(pair[0], b""))
    lst.add(entry(pair[1], b""))
    raises(bundle.BundleError, lst.add, entry(pair[1], b""))
    assert len(lst) == 12 and len(f.getvalue()) == 12 * 133
    small, _ = listed(3, room=3)
    e = raises(bundle.BundleError, small.add, entry("z.py", b""))
    assert "64" in str(e) and len(small) == 3


def test_listed_damaged_file_is_an_error_not_an_entry():
    lst, f = listed(3)
    raw = f.getvalue()
    for bad, why in ((raw[:2 * 133 + 50], "cut short"),  # power cut, or a shorter file
                     (raw[:2 * 133 + 36] + b"\x00" + raw[2 * 133 + 37:], "damaged"),  # no path
                     (raw[:2 * 133 + 36] + b"\x80" + raw[2 * 133 + 37:], "damaged"),  # longer than 96
                     (raw[:2 * 133 + 37] + b"../" + raw[2 * 133 + 40:], "damaged"),  # a path outside the app
                     (raw[:2 * 133 + 37] + b"\xff" + raw[2 * 133 + 38:], "damaged")):  # not UTF-8
        f2 = io.BytesIO(bad)
        lst2 = bundle.Listed(f2)
        for e in lst:
            lst2._n += 1  # the entries the reader wrote before the damage
        assert lst2[0] == lst[0] and lst2[1] == lst[1]
        e = raises(bundle.BundleError, lambda: lst2[2])
        assert why in str(e) and "start over" in str(e)
        if why == "cut short":
            raises(bundle.BundleError, lst2.digest, 2)


def test_reader_keeps_the_manifest_in_the_list_it_is_given():
    files = entries(20, 5) + FILES
    data = make(files)
    for step in (0, 7):
        lst, f = listed()
        m, got, order, ended = read(data, step, files=lst)
        assert ended and m["files"] is lst and order == [p for p, _ in files] and got == dict(files)
        assert len(f.getvalue()) == len(files) * 133


def test_reader_with_a_list_applies_the_same_checks():
    # a path twice, too many files, a corrupt file
    m = {"format": 1, "version": "1", "total": 15,
         "files": [entry(p, d) for p, d in entries(3, 5)] + [entry(*entries(3, 5)[1])]}
    e = raises(bundle.BundleError, read, make(entries(3, 5) + [entries(3, 5)[1]], manifest=m), 0, True,
               files=listed()[0])
    assert "twice" in str(e)
    e = raises(bundle.BundleError, read, make(entries(65)), 0, True, files=listed()[0])
    assert "64" in str(e)
    data = bytearray(make(FILES))
    data[-1] ^= 1
    e = raises(bundle.BundleError, read, bytes(data), 0, True, files=listed()[0])
    assert "corrupt" in str(e) and FILES[-1][0] in str(e)
