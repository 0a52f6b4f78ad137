"""The bundle reader decodes its manifest a key or a file entry at a time
(rainmaker.bundle._Manifest). Here it is held to the obvious reference, the
whole manifest decoded with json.loads and checked with check_manifest: on
layouts the board will meet and on mutated manifests, split at every place.
Where the two may differ, the reader is the stricter one, and says why."""
import hashlib
import json
import random
import struct

from rainmaker import bundle as rb

STRICTER = ("twice", "more than 320 bytes", "more than 16 keys")  # the reader's own bounds and rules


def _nodup(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise ValueError("duplicate key")
        d[k] = v
    return d


def reference(raw):
    """The manifest as check_manifest(json.loads(...)) sees it, entries cut to
    the three keys the reader keeps; or the error text."""
    try:
        m = rb.check_manifest(json.loads(raw.decode("utf-8"), object_pairs_hook=_nodup))
    except (ValueError, RecursionError, rb.BundleError) as e:
        return None, str(e)
    m = dict(m)
    m["files"] = [{"path": f["path"], "size": f["size"], "sha256": f["sha256"]} for f in m["files"]]
    return m, None


def streamed(raw, files, step):
    """(manifest with its files as a list, None) or (None, error) from the reader, fed `step` bytes at a time."""
    data = b"RMB1" + struct.pack(">H", len(raw)) + raw + b"".join(files)
    r = rb.Reader()
    try:
        for i in range(0, len(data), step):
            for ev, v in r.feed(data[i:i + step]):
                if ev == rb.MANIFEST:
                    m = dict(v)
                    m["files"] = list(v["files"])
                    return m, None
            assert r.held() <= 320
    except rb.BundleError as e:
        assert str(e)
        return None, str(e)
    return None, "no manifest"


def agree(raw, files, steps=(1, 2, 3, 7, 64, 9000)):
    want, why = reference(raw)
    outs = set()
    for step in steps:
        got, err = streamed(raw, files, step)
        if got is not None:
            assert want is not None, ("reader took what json.loads + check_manifest refuse", raw, why)
            assert got == want, (raw, got, want)
            outs.add("ok")
        else:
            assert want is None or any(s in err for s in STRICTER), ("reader refused a good manifest", raw, err)
            outs.add("refused")
    assert len(outs) == 1, (raw, outs)  # the same verdict however the bytes arrive
    return outs.pop()


def bundle_files(rng, n):
    files = [bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40))) for _ in range(n)]
    entries = [{"path": "lib/m%d.mpy" % i, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
               for i, d in enumerate(files)]
    return files, entries


def layouts(rng, m):
    """The same manifest written several ways: compact, spaced, indented, keys shuffled."""
    yield json.dumps(m, separators=(",", ":"))
    yield json.dumps(m)
    yield json.dumps(m, indent=1)
    keys = list(m)
    rng.shuffle(keys)
    yield json.dumps({k: m[k] for k in keys}, indent="\t", ensure_ascii=False)


def test_reader_matches_json_on_good_manifests():
    rng = random.Random(1)
    for i in range(30):
        files, entries = bundle_files(rng, rng.randrange(1, 6))
        m = {"format": 1, "version": rng.choice(["1.2.%d" % i, "v\u00e9r \"q\" \\ %d" % i, "]}[{,:%d" % i]),
             "total": sum(len(d) for d in files), "files": entries}
        if i % 2:
            m["chip"] = "esp32"
            m["build"] = {"by": "ci", "flags": [1, 2.5, None, True, {"x": "}"}]}
        for text in layouts(rng, m):
            assert agree(text.encode(), files) == "ok", text


def test_reader_matches_json_on_mutated_manifests():
    rng = random.Random(2)
    outcomes = {"ok": 0, "refused": 0}
    alphabet = b'{}[],:" \\\n0123456789abcdefxtrue-.'
    for _ in range(400):
        files, entries = bundle_files(rng, rng.randrange(1, 4))
        m = {"format": 1, "version": "1.0", "total": sum(len(d) for d in files), "files": entries,
             "chip": "esp32"}
        raw = bytearray(rng.choice(list(layouts(rng, m))).encode())
        for _ in range(rng.randrange(1, 3)):
            if not raw:
                break
            i = rng.randrange(len(raw))
            op = rng.randrange(5)
            if op == 0:
                raw[i] = rng.randrange(256)
            elif op == 1:
                del raw[i]
            elif op == 2:
                raw.insert(i, rng.choice(alphabet))
            elif op == 3:
                raw[i] = rng.choice(alphabet)
            else:
                del raw[i:]
        if raw:
            outcomes[agree(bytes(raw), files, steps=(1, 5, 9000))] += 1
    assert outcomes["refused"] > 200 and outcomes["ok"] > 10, outcomes
