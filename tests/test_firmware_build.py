"""tools/firmware.py: MicroPython built with the agent frozen in (make firmware).

The checks and the make commands are tested here on every run. The build
itself needs a MicroPython source tree with its submodules (and ESP-IDF for
an ESP32), which a CI machine does not have: with MICROPYTHON_SRC pointing at
one, test_the_unix_build_runs_the_agent_from_the_binary builds the unix port
and runs the frozen agent.
"""
import os
import subprocess
from pathlib import Path

import pytest

from tests.test_mip import run_manifest
from tools import firmware

ROOT = Path(__file__).resolve().parents[1]


def tree(tmp_path, major=1, minor=28, ports=("esp32", "unix"), parens=False):
    src = tmp_path / "micropython"
    (src / "py").mkdir(parents=True)
    f = "#define MICROPY_VERSION_%s (%d)\n" if parens else "#define MICROPY_VERSION_%s %d\n"
    (src / "py" / "mpconfig.h").write_text("// version\n" + "".join(
        f % (k, v) for k, v in (("MAJOR", major), ("MINOR", minor), ("MICRO", 0))))
    for p in ports:
        (src / "ports" / p).mkdir(parents=True)
    return src


@pytest.mark.parametrize("parens", [False, True])
def test_the_version_is_read_from_the_tree(tmp_path, parens):
    assert firmware.version(tree(tmp_path, 1, 23, parens=parens)) == (1, 23, 0)


def test_what_is_missing_is_named_with_its_fix(tmp_path, monkeypatch, capsys):
    def err(*argv):
        assert firmware.main(list(argv)) == 1
        return capsys.readouterr().err

    assert "does not exist: git clone https://github.com/micropython/micropython" in err(
        "--micropython", str(tmp_path / "none"))
    (tmp_path / "empty").mkdir()
    assert "is not a MicroPython source tree (no py/mpconfig.h)" in err("--micropython", str(tmp_path / "empty"))
    old = tree(tmp_path / "old", 1, 22)
    assert "MicroPython 1.22.0 is too old: the agent needs 1.23 or newer" in err("--micropython", str(old))
    src = tree(tmp_path, ports=("unix",))
    assert "has no ports/esp32" in err("--micropython", str(src))
    src = tree(tmp_path / "t2")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no idf.py anywhere
    e = err("--micropython", str(src))
    assert "ESP-IDF is not set up in this shell (no idf.py on PATH)" in e and "export.sh" in e


def test_the_esp32_build_freezes_the_manifest_into_the_board_asked_for(tmp_path, capsys):
    src = tree(tmp_path)
    assert firmware.main(["--micropython", str(src), "--dry-run", "-j", "3"]) == 0
    out = capsys.readouterr().out
    assert "MicroPython 1.28.0 in %s; frozen: firmware/manifest.py" % src in out
    assert ("esp32 port: make -C %s/ports/esp32 BOARD=ESP32_GENERIC BOARD_VARIANT=OTA FROZEN_MANIFEST=%s -j3"
            % (src, ROOT / "firmware" / "manifest.py")) in out
    assert "mpy-cross: make -C %s/mpy-cross -j3" % src in out
    assert "submodules" not in out  # not a git checkout: an archive carries them
    (src / ".git").mkdir()
    assert firmware.main(["--micropython", str(src), "--dry-run", "--board", "ESP32_GENERIC_C3"]) == 0
    out = capsys.readouterr().out
    assert "BOARD=ESP32_GENERIC_C3 FROZEN_MANIFEST=" in out and "BOARD_VARIANT" not in out
    assert "submodules: make -C %s/ports/esp32 BOARD=ESP32_GENERIC_C3" % src in out


def test_the_unix_build_is_the_binary_the_tests_run_with_the_agent_frozen(tmp_path, capsys):
    src = tree(tmp_path)
    manifest = firmware.BUILD / "unix-manifest.py"
    before = manifest.read_text() if manifest.exists() else None
    assert firmware.main(["--micropython", str(src), "--port", "unix", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert (manifest.read_text() if manifest.exists() else None) == before  # a dry run writes nothing
    for arg in ("VARIANT=standard", "MICROPY_FORCE_32BIT=1", "MICROPY_PY_FFI=0", "MICROPY_PY_BTREE=0",
                "LDFLAGS_EXTRA=-static", "'CFLAGS_EXTRA=-DMICROPY_PY_CRYPTOLIB_CTR=1 -DMICROPY_PY_CRYPTOLIB_CONSTS=1'",
                "BUILD=build-rainmaker", "FROZEN_MANIFEST=%s" % manifest):
        assert " " + arg in out, arg
    text = firmware.unix_manifest()
    assert 'include("$(PORT_DIR)/variants/standard/manifest.py")' in text
    assert "include(%r, port=False)" % str(ROOT / "firmware" / "manifest.py") in text
    assert "include(%r)" % str(ROOT / "tools" / "sim" / "mpy" / "manifest.py") in text
    assert firmware.main(["--micropython", str(src), "--port", "unix", "--bits", "64", "--dry-run"]) == 0
    assert "MICROPY_FORCE_32BIT" not in capsys.readouterr().out


def test_a_build_compiles_the_agent_afresh_whatever_the_cache_holds(tmp_path):
    # MicroPython's build keeps a cached frozen .mpy whose source is not newer:
    # a build from another checkout (older files) would freeze the last agent.
    out = tmp_path / "ports" / "unix" / "build-rainmaker" / "micropython"
    cache = out.parent / "frozen_mpy"
    for f in ("rainmaker/link.mpy", "rainmaker/prov/srp.mpy", "asyncio/core.mpy", "ssl.mpy"):
        (cache / f).parent.mkdir(parents=True, exist_ok=True)
        (cache / f).write_bytes(b"M")
    assert firmware.forget_frozen(out) == cache
    assert not cache.exists()
    assert firmware.forget_frozen(out) is None  # nothing cached: nothing to do
    assert firmware.forget_frozen(tmp_path / "build-ESP32_GENERIC-OTA" / "firmware.bin") is None


def test_the_manifest_freezes_the_package_and_the_port_list_unless_told_not_to():
    def calls(**options):
        return [(n, a, k) for n, a, k in run_manifest(**options) if n != "metadata"]

    assert calls() == [("include", ("$(PORT_DIR)/boards/manifest.py",), {}),
                       ("package", ("rainmaker",), {"base_path": "lib"})]
    assert calls(port=False) == [("package", ("rainmaker",), {"base_path": "lib"})]


def test_the_unix_build_freezes_every_hardware_module_of_the_simulated_board():
    hw = ROOT / "tools" / "sim" / "mpy"
    calls = run_manifest("tools/sim/mpy/manifest.py")
    assert ("package", ("simworld",), {}) in calls
    modules = sorted(a[0] for n, a, _ in calls if n == "module")
    assert modules == sorted(p.name for p in hw.glob("*.py") if p.name not in ("__init__.py", "manifest.py"))
    assert [n for n, _, _ in calls] == ["module"] * len(modules) + ["package"]


@pytest.mark.skipif(not os.environ.get("MICROPYTHON_SRC"),
                    reason="needs MICROPYTHON_SRC: a MicroPython source tree with its submodules")
def test_the_unix_build_runs_the_agent_from_the_binary(tmp_path):
    src = Path(os.environ["MICROPYTHON_SRC"])
    r = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-m", "tools.firmware", "--micropython", str(src),
                        "--port", "unix"], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    binary = src / "ports" / "unix" / "build-rainmaker" / "micropython"
    assert "Measure it: MICROPYTHON=%s" % binary in r.stdout
    # Nothing on the path but the binary itself: the agent comes from it.
    p = subprocess.run([str(binary), "-c", "import rainmaker.link as m; print(m.__file__)"],
                       cwd=tmp_path, env=dict(os.environ, MICROPYPATH=".frozen"), capture_output=True, text=True)
    assert p.stdout.strip() == "rainmaker/link.py", p.stdout + p.stderr
