"""App updates on the board's filesystem: rainmaker.stage writes the plan,
firmware/boot.py switches the files in, and reverts them when the new app
fails. A power cut after every filesystem change of the switch and of the
revert is finished by the next boot, on CPython and on MicroPython itself."""
import subprocess
import sys

import pytest

from tests.harness import ROOT

SCRIPT = ROOT / "tests" / "apps" / "appswap.py"


def _interpreter(vm):
    """sys.executable, or the MicroPython unix-port binary (the test is skipped without one)."""
    if vm == "cpython":
        return sys.executable
    from tools.sim.mpboard import default_micropython

    exe = default_micropython()
    if not exe:
        pytest.skip("no MicroPython unix-port binary (set MICROPYTHON)")
    return exe


@pytest.mark.parametrize("vm", ["cpython", "micropython"])
def test_every_power_cut_during_a_switch_or_revert_is_finished_by_the_next_boot(vm, tmp_path):
    exe = _interpreter(vm)
    r = subprocess.run([str(exe), str(SCRIPT), str(ROOT / "firmware")], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    last = (r.stdout.strip().splitlines() or ["(nothing)"])[-1]
    assert last.startswith("OK "), r.stdout[-2000:] + r.stderr[-2000:]
    assert int(last.split()[1]) >= 15  # cut points tried: every rename, remove and mkdir


@pytest.mark.parametrize("path,ok", [
    ("main.py", True), ("app.py", True), ("lib/rainmaker/agent.mpy", True), ("lib/sensors/bme.py", True),
    ("boot.py", False), ("wifi.json", False), ("rainmaker.json", False), ("certs/node.key.der", False),
    ("ota/state.json", False), ("params.json", False), ("data/x.py", False), ("lib/rainmaker/zones.txt", True), ("notes.txt", False),
])
def test_a_bundle_writes_only_code(path, ok):
    from rainmaker.stage import allowed

    assert allowed(path) is ok


def test_a_bundle_with_a_forbidden_path_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    from rainmaker.stage import Stage, StageError

    monkeypatch.chdir(tmp_path)
    (tmp_path / "main.py").write_text("old")
    with pytest.raises(StageError, match="may not write rainmaker.json"):
        Stage().begin({"files": [{"path": "main.py"}, {"path": "rainmaker.json"}], "total": 10})
    assert not (tmp_path / "ota").exists() and (tmp_path / "main.py").read_text() == "old"


@pytest.mark.parametrize("before,version", [
    ({"step": "confirmed", "version": "2.0.0", "files": [["main.py", "put"]], "absent": []}, "2.0.0"),
    ({"step": "reverted", "version": "3.0.0", "prev": "2.0.0", "files": [["main.py", "put"]], "absent": []}, "2.0.0"),
    (None, "-"),
])
def test_staging_or_dropping_a_bundle_keeps_the_version_of_the_app_in_place(tmp_path, monkeypatch, before, version):
    # A power cut during a download (or a bundle refused or failed) must not
    # make the node forget which app runs: it would take that app as new.
    import json

    from rainmaker.stage import Stage, app_version

    monkeypatch.chdir(tmp_path)
    if before:
        (tmp_path / "ota").mkdir()
        (tmp_path / "ota" / "state.json").write_text(json.dumps(before))
    assert app_version() == version
    s = Stage()
    s.begin({"files": [{"path": "main.py", "size": 3}], "total": 3})
    assert app_version() == version  # a power cut now
    s.open({"path": "main.py"})
    s.write(b"new")
    s.abort()
    assert app_version() == version and not (tmp_path / "ota" / "new").exists()
    st = tmp_path / "ota" / "state.json"
    assert not st.exists() if before is None else json.loads(st.read_text()) == {"step": "confirmed", "version": version}


def _bundle(files, version):
    import hashlib
    import json
    import struct

    m = {"format": 1, "version": version, "total": sum(len(d) for _, d in files),
         "files": [{"path": p, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for p, d in files]}
    raw = json.dumps(m).encode()
    return b"RMB1" + struct.pack(">H", len(raw)) + raw + b"".join(d for _, d in files)


def test_the_file_list_is_on_flash_while_a_bundle_downloads_and_gone_once_the_plan_is_written(tmp_path, monkeypatch):
    # The manifest's entries are kept in ota.lst (not the heap), which begin()
    # (it wipes ota/) leaves alone; commit() writes the plan from it, in the
    # format boot.py reads, and removes it.
    import json

    from rainmaker import bundle
    from rainmaker.fetch import Bundle

    monkeypatch.chdir(tmp_path)
    (tmp_path / "main.py").write_text("old")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "c.py").write_text("C1")
    (tmp_path / "ota").mkdir()
    (tmp_path / "ota" / "state.json").write_text(json.dumps({"step": "confirmed", "version": "1.0.0"}))
    (tmp_path / "ota.lst").write_bytes(b"\xff" * 500)  # a leftover of an update a power cut ended
    files = [("main.py", b"new"), ("lib/c.mpy", b"C2"), ("lib/d/e.py", b"")]
    data = _bundle(files, "2.0.0")
    b = Bundle("1.0.0")
    lst = tmp_path / "ota.lst"
    assert lst.exists() and lst.stat().st_size == 0
    cut = data.index(b"]}") + 2  # the manifest whole, no file yet
    b.write(memoryview(data)[:cut])
    assert isinstance(b.reader.manifest["files"], bundle.Listed)
    assert lst.stat().st_size == 3 * 133 and (tmp_path / "ota" / "new").is_dir()
    b.write(memoryview(data)[cut:])
    b.end(None)
    assert lst.exists()
    b.stage.commit("job1")
    assert not lst.exists()
    assert json.loads((tmp_path / "ota" / "state.json").read_text()) == {
        "step": "switch", "version": "2.0.0", "job": "job1", "prev": "1.0.0",
        "files": [["main.py", "put"], ["lib/c.py", "del"], ["lib/c.mpy", "put"], ["lib/d/e.py", "put"]],
        "absent": ["lib/c.mpy", "lib/d/e.py"]}
    assert (tmp_path / "ota" / "new" / "lib" / "c.mpy").read_bytes() == b"C2"


@pytest.mark.parametrize("how", ["refused", "corrupt", "forbidden"])
def test_a_bundle_that_ends_early_leaves_the_app_state_and_no_file_list(tmp_path, monkeypatch, how):
    import json

    from rainmaker import bundle, fetch, stage

    monkeypatch.chdir(tmp_path)
    (tmp_path / "ota").mkdir()
    before = json.dumps({"step": "confirmed", "version": "2.0.0", "files": [["main.py", "put"]], "absent": []})
    (tmp_path / "ota" / "state.json").write_text(before)
    files = [("main.py", b"new"), ("boot.py" if how == "forbidden" else "lib/x.py", b"x" * 100)]
    data = bytearray(_bundle(files, "2.0.0" if how == "refused" else "3.0.0"))
    if how == "corrupt":
        data[-1] ^= 1
    b = fetch.Bundle(stage.app_version())
    with pytest.raises((fetch.Refused, bundle.BundleError, stage.StageError),
                       match={"refused": "Same version", "corrupt": "corrupt", "forbidden": "boot.py"}[how]):
        b.write(memoryview(data))
    b.abort()  # as fetch.download does
    assert not (tmp_path / "ota.lst").exists()
    assert sorted(p.name for p in (tmp_path / "ota").iterdir()) == ["state.json"]
    want = before if how != "corrupt" else json.dumps({"step": "confirmed", "version": "2.0.0"})
    assert json.loads((tmp_path / "ota" / "state.json").read_text()) == json.loads(want)
    stage.forget()  # and again: nothing to remove is no error


@pytest.mark.parametrize("vm", ["cpython", "micropython"])
def test_the_trial_boot_runs_main_py_without_keeping_its_source(vm, tmp_path):
    # boot.py runs main.py itself on a trial boot (to see it fail), and that
    # call never returns: the source text must not stay in the app's heap.
    exe = _interpreter(vm)
    (tmp_path / "ota").mkdir()
    (tmp_path / "ota" / "state.json").write_text('{"step": "trial", "boots": 0, "files": [], "version": "2"}')
    pad = "# " + "x" * 78 + "\n"
    (tmp_path / "main.py").write_text(pad * 256 + (  # 20 KB of comment
        "import gc, sys\n"
        "gc.collect()\n"
        "held = 0\n"
        "f = sys._getframe(1) if hasattr(sys, '_getframe') else None\n"  # CPython: the callers' locals
        "while f is not None:\n"
        "    held += sum(1 for v in f.f_locals.values() if isinstance(v, str) and len(v) > 10000)\n"
        "    f = f.f_back\n"
        "print('USED', gc.mem_alloc() if hasattr(gc, 'mem_alloc') else 0, held)\n"))
    (tmp_path / "boot.py").write_bytes((ROOT / "firmware" / "boot.py").read_bytes())
    r = subprocess.run([str(exe), "boot.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    line = [l for l in r.stdout.splitlines() if l.startswith("USED")]
    assert line, r.stdout + r.stderr
    used, held = (int(x) for x in line[0].split()[1:])
    assert held == 0  # CPython: no caller (boot.py's _trial) holds the source text
    if vm == "micropython":
        assert used < 20000, used  # the whole heap in use is less than the source alone


def test_the_agent_ends_a_trial_itself_and_boot_py_carries_out_a_revert_at_the_restart(tmp_path, monkeypatch):
    # The agent no longer imports boot.py (compiled from source into the node's
    # heap) to confirm or revert: stage.settle() writes the outcome, and a
    # revert is boot.py's at the next boot, as after a power cut.
    import importlib.util
    import json

    from rainmaker.stage import settle

    monkeypatch.chdir(tmp_path)
    st = tmp_path / "ota" / "state.json"
    assert not settle(True) and not settle(False, "x")  # no state: nothing on trial
    (tmp_path / "ota").mkdir()
    st.write_text("{not json")
    assert not settle(True) and st.read_text() == "{not json"
    plan = {"step": "trial", "boots": 1, "version": "2.0.0", "prev": "1.0.0", "job": "j1",
            "files": [["lib/a.mpy", "put"], ["main.py", "put"]], "absent": ["lib/a.mpy"]}

    def on_trial():
        for p, text in (("main.py", "new"), ("lib/a.mpy", "new"), ("ota/old/main.py", "old"), ("ota/new/x", "")):
            (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / p).write_text(text)
        st.write_text(json.dumps(plan))

    on_trial()
    assert settle(True)
    assert json.loads(st.read_text()) == {"step": "confirmed", "version": "2.0.0"}  # the plan is done with
    assert not (tmp_path / "ota" / "old").exists() and not (tmp_path / "ota" / "new").exists()
    assert (tmp_path / "main.py").read_text() == "new"
    assert not settle(False, "late")  # confirmed: no longer on trial

    on_trial()
    assert settle(False, "the new app did not reach the broker within 90 s")
    got = json.loads(st.read_text())
    assert got["step"] == "revert" and got["why"] == "the new app did not reach the broker within 90 s"
    assert (tmp_path / "main.py").read_text() == "new"  # nothing moved yet: boot.py does it
    spec = importlib.util.spec_from_file_location("board_boot", ROOT / "firmware" / "boot.py")
    boot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(boot)
    boot.finish()  # the next boot
    assert (tmp_path / "main.py").read_text() == "old" and not (tmp_path / "lib" / "a.mpy").exists()
    got = json.loads(st.read_text())
    assert got["step"] == "reverted" and got["why"].startswith("the new app did not reach")


_STATES = [  # (state.json's text, what app_version() makes of it)
    ('{"step": "trial", "version": "2.\\"0\\\\n", "prev": "1", "files": [["a\\"b", "put"], ["step", "del"]],'
     ' "absent": ["version"], "boots": 3, "job": null}', '2."0\\n'),
    ('{"files": [["step", "trial"]], "absent": [], "step": "confirmed", "version": "9"}', "9"),
    ('{"step": "reverted", "prev": null, "version": "3"}', "-"),
    ('{"step": "revert", "prev": "1.0", "version": "3"}', "1.0"),
    ('["step", "trial"]', "-"), ('"step"', "-"), ('{"step": "tri', "-"), ("garbage", "-"), ("", "-"),
]


@pytest.mark.parametrize("vm", ["cpython", "micropython"])
def test_the_state_is_read_without_building_the_plan(vm, tmp_path):
    # app_version() and settle() read only the state's top-level strings
    # (stage._top): nested strings (a path named "step") never count.
    import json

    exe = _interpreter(vm)
    (tmp_path / "ota").mkdir()
    (tmp_path / "states.json").write_text(json.dumps(_STATES))
    code = ("import sys, json\nsys.path.insert(0, %r)\n" % str(ROOT / "firmware" / "lib") +
            "try:\n import micropython\nexcept ImportError:\n"
            " import types; sys.modules['micropython'] = types.SimpleNamespace(const=lambda x: x)\n"
            "from rainmaker import stage\n"
            "for text, _ in json.load(open('states.json')):\n"
            " open('ota/state.json', 'w').write(text)\n"
            " print(json.dumps(stage.app_version()))\n")
    r = subprocess.run([str(exe), "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert [json.loads(l) for l in r.stdout.splitlines()] == [want for _, want in _STATES]
