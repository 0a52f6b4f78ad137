"""tools/bundle.py builds what the board's reader accepts, and the reader
survives hostile bundles (fuzz: mutated bundles fed at every split)."""
import hashlib
import json
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from rainmaker import bundle as rb
from tools import bundle as tb
from tools.sim.mpboard import default_micropython

ROOT = Path(__file__).resolve().parent.parent
MICROPYTHON = default_micropython() or "micropython32"


@pytest.fixture(scope="module")
def built():
    return tb.build("1.2.0", chip="esp32")


def test_bundle_holds_what_deploy_installs(built):
    m, files = tb.read(built)
    assert m["version"] == "1.2.0" and m["chip"] == "esp32" and m["arch"] == "xtensawin"
    paths = [f["path"] for f in m["files"]]
    assert paths[-1] == "main.py"  # committed last
    assert "boot.py" not in paths  # the recovery path is never replaced over the air
    assert "lib/rainmaker/http.mpy" in paths and "lib/rainmaker/prov/sec1.mpy" in paths
    assert not any(p.endswith(".py") for p in paths[:-1])
    assert "lib/rainmaker/zones.txt" in paths  # the time-zone table travels with the agent
    assert files["main.py"] == (ROOT / "firmware" / "main.py").read_bytes()
    n = len(list((ROOT / "firmware" / "lib" / "rainmaker").rglob("*.py")))
    assert len(paths) == n + 2  # + zones.txt and main.py
    assert files["lib/rainmaker/http.mpy"][:2] == b"M\x06"  # .mpy v6
    assert rb.kind(built[:4]) == "bundle"


def test_bundle_runs_on_micropython(built, tmp_path):
    """Unpack the bundle as a board would and import the agent from its .mpy files."""
    if not Path(MICROPYTHON).exists():
        pytest.skip("no MicroPython binary")
    m, files = tb.read(built)
    for p, data in files.items():
        (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / p).write_bytes(data)
    r = subprocess.run([MICROPYTHON, "-c", "import rainmaker.http, rainmaker.bundle, rainmaker.mqtt; "
                        "print(rainmaker.http.__file__)"],
                       env={"MICROPYPATH": str(tmp_path / "lib")}, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("http.mpy")


def test_py_sources_and_no_chip():
    data = tb.build("2", mpy=False)
    m, files = tb.read(data)
    assert "chip" not in m and "arch" not in m
    assert files["lib/rainmaker/http.py"] == (ROOT / "firmware" / "lib" / "rainmaker" / "http.py").read_bytes()


def test_cli_build_check_and_errors(tmp_path):
    out = tmp_path / "a.rmb"
    run = lambda *a: subprocess.run([sys.executable, "-m", "tools.bundle", *a], cwd=ROOT, capture_output=True, text=True, timeout=120)
    r = run("--version", "3.0", "--chip", "esp32c3", "-o", str(out))
    assert r.returncode == 0 and "wrote" in r.stdout, r.stderr
    r = run("--check", str(out))
    assert r.returncode == 0 and "bundle version 3.0" in r.stdout and "arch rv32imc" in r.stdout
    bad = tmp_path / "bad.rmb"
    data = bytearray(out.read_bytes())
    data[-1] ^= 0xFF
    bad.write_bytes(bytes(data))
    r = run("--check", str(bad))
    assert r.returncode == 1 and "main.py" in r.stderr and "corrupt" in r.stderr
    r = run("--chip", "esp32")
    assert r.returncode == 2 and "--version" in r.stderr
    r = run("--version", "1", "--chip", "esp8266", "-o", str(out))
    assert r.returncode == 1 and "not a chip" in r.stderr
    r = run("--help")
    assert r.returncode == 0 and "docs/ota.md" in r.stdout


def test_build_refuses_what_the_board_would(tmp_path):
    with pytest.raises(tb.BundleToolError, match="version"):
        tb.build("v" * 40)
    fw = tmp_path / "fw"
    (fw / "lib").mkdir(parents=True)
    (fw / "main.py").write_text("pass\n")
    (fw / "lib" / "bad name.py").write_text("x = 1\n")
    with pytest.raises(tb.BundleToolError, match="bad name"):
        tb.build("1", firmware=fw, mpy=False)


# ---------------------------------------------------------------- fuzz

def small_bundle(rng):
    files = [("lib/a%d.mpy" % i, bytes(rng.randrange(256) for _ in range(rng.randrange(0, 60)))) for i in range(rng.randrange(1, 4))]
    m = {"format": 1, "version": "1.%d" % rng.randrange(9), "total": sum(len(d) for _, d in files),
         "files": [{"path": p, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for p, d in files]}
    raw = json.dumps(m, separators=(",", ":")).encode()
    return b"RMB1" + struct.pack(">H", len(raw)) + raw + b"".join(d for _, d in files), dict(files)


def feed(pieces):
    r = rb.Reader()
    got = {}
    cur = None
    try:
        for p in list(pieces) + [b""]:
            for ev, v in r.feed(p):
                if ev == rb.FILE:
                    cur = got[v["path"]] = bytearray()
                elif ev == rb.DATA:
                    cur += v
            assert r.held() <= 320  # one piece of the manifest (bundle._PIECE), never all of it
    except rb.BundleError as e:
        assert str(e)
        return None
    assert r.done()
    return {k: bytes(v) for k, v in got.items()}


def splits(data):
    yield [data]
    for i in range(1, len(data), 3):
        yield [data[:i], data[i:]]
    yield [data[i:i + 1] for i in range(len(data))]


def test_fuzz_valid_bundles_every_split():
    rng = random.Random(7)
    for _ in range(20):
        data, files = small_bundle(rng)
        for pieces in splits(data):
            assert feed(pieces) == files


def test_fuzz_mutated_bundles_only_bundle_errors():
    rng = random.Random(8)
    outcomes = {"ok": 0, "refused": 0}
    for _ in range(300):
        data, files = small_bundle(rng)
        data = bytearray(data)
        for _ in range(rng.randrange(1, 3)):
            i = rng.randrange(len(data))
            op = rng.randrange(4)
            if op == 0:
                data[i] = rng.randrange(256)
            elif op == 1:
                del data[i]
            elif op == 2:
                data.insert(i, rng.randrange(256))
            else:
                del data[i:]
        results = set()
        for pieces in splits(bytes(data)):
            res = feed(pieces)
            results.add(None if res is None else tuple(sorted(res.items())))
        assert len(results) == 1
        # a bundle that still reads whole must carry exactly the files its manifest vouches for
        res = results.pop()
        outcomes["refused" if res is None else "ok"] += 1
    assert outcomes["refused"] > 200


def test_check_refuses_a_truncated_bundle_whatever_its_length(built, tmp_path):
    for cut in (1, 100, 1460, 1461, 5000):
        with pytest.raises(tb.BundleToolError, match="truncated"):
            tb.read(built[:-cut])
