"""The heap bench's bookkeeping (tests/bench/mpheap.py), without boards: where it
accepts rainmaker as loaded from (lib .mpy, lib .py, frozen into the binary) and
the report's columns. The measurement itself needs Mosquitto and micropython32
and is run by hand (python -m tests.bench.mpheap [--frozen])."""
import pytest

from tests.bench import mpheap

BOARD = "/tmp/bench-mpheap-x/full-mpy/board/lib/"
MPY = ",".join(BOARD + f for f in ("rainmaker/__init__.mpy", "rainmaker/node.mpy", "rainmaker/agent.mpy",
                                   "rainmaker/link.mpy"))
PY = MPY.replace(".mpy", ".py")
FROZEN = "rainmaker/__init__.py,rainmaker/node.py,rainmaker/agent.py,rainmaker/link.py"


@pytest.mark.parametrize("lib,files", [("mpy", MPY), ("py", PY), ("frozen", FROZEN)])
def test_check_files_accepts_where_it_was_deployed(lib, files):
    mpheap.check_files({"files": files}, lib)


@pytest.mark.parametrize("lib,files", [
    ("mpy", PY), ("mpy", FROZEN), ("py", MPY),
    ("py", FROZEN),  # a binary with the agent frozen shadows lib/ (.frozen is first on the path)
    ("frozen", MPY), ("frozen", PY),
    ("frozen", FROZEN.replace("rainmaker/link.py", BOARD + "rainmaker/link.py")),  # one module from lib/
    ("mpy", MPY + ",-"),  # a module the app did not load
])
def test_check_files_rejects_any_other_source(lib, files):
    with pytest.raises(RuntimeError, match="not loaded from " + mpheap.LIBS[lib]):
        mpheap.check_files({"files": files}, lib)


def test_frozen_hint_names_the_fix():
    with pytest.raises(RuntimeError, match=r"frozen into \$MICROPYTHON"):
        mpheap.check_files({"files": MPY}, "frozen")


def _col(used, imports):
    reading = {"used": used, "free": 1000, "start": 8000, "hw": 40000, "writes": 1000, "state": "online",
               "files": "-", "mods": "agent,link,log"}
    return {"online": dict(reading), "after": dict(reading, used=used + 100), "min_kb": 96,
            "min_reading": dict(reading), "failed": (92, "MemoryError"), "probes": 8,
            "imports": {n: imports for n in mpheap._IMPORTS}}


def test_report_has_one_column_per_source():
    two = mpheap.report_lines({"mpy": _col(60000, 1000), "py": _col(61000, 2000)})
    one = mpheap.report_lines({"frozen": _col(50000, 100)})
    assert "lib .mpy" in two[2] and "lib .py" in two[2] and "frozen" not in two[2]
    assert one[2].split() == ["frozen"]
    own = [line for line in two + one if "firmware's own, online" in line]
    assert own[0].split()[-2:] == ["12,000", "13,000"] and own[1].split()[-1] == "2,000"
    assert any(line.startswith("    frozen:   96K,") for line in one)
    assert any(line.startswith("    lib .py:  96K,") for line in two)
    agent = [line for line in one if line.startswith("  rainmaker.agent ")]
    assert agent[0].split()[1:] == ["100", "resident"]
    total = [line for line in two if line.startswith("  rainmaker, all")]
    n = sum(1 for name in mpheap._IMPORTS if name.startswith("rainmaker"))
    assert total[0].split()[-2:] == ["{:,}".format(1000 * n), "{:,}".format(2000 * n)]
