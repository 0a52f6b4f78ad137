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


# ---- the binary check and the failure context, shared with tests/bench/ota.py and provfit.py

def _fake_binary(tmp_path, out, rc):
    """A stand-in for $MICROPYTHON that answers the frozen-agent question."""
    exe = tmp_path / "fake-micropython"
    exe.write_text("#!/bin/sh\necho '%s'\nexit %d\n" % (out, rc))
    exe.chmod(0o755)
    return exe


def test_agent_frozen_reads_where_the_binary_loads_rainmaker_from(tmp_path):
    assert mpheap.agent_frozen(_fake_binary(tmp_path, "rainmaker/__init__.py", 0))
    assert not mpheap.agent_frozen(_fake_binary(tmp_path, "ImportError: no module named 'rainmaker'", 1))
    # found, but on the filesystem: not frozen in
    assert not mpheap.agent_frozen(_fake_binary(tmp_path, "lib/rainmaker/__init__.mpy", 0))


def test_check_binary_stops_on_a_binary_that_does_not_suit_the_mode(tmp_path):
    frozen = _fake_binary(tmp_path, "rainmaker/__init__.py", 0)
    mpheap.check_binary("frozen", frozen)
    with pytest.raises(RuntimeError, match="shadows lib/ lib .mpy: measure it with --frozen"):
        mpheap.check_binary("mpy", frozen)
    plain = _fake_binary(tmp_path, "", 1)
    mpheap.check_binary("mpy", plain)
    with pytest.raises(RuntimeError, match="not frozen into .*FROZEN_MANIFEST"):
        mpheap.check_binary("frozen", plain)


class _Log:
    def __init__(self, lines):
        self._lines = lines

    def lines(self):
        return list(self._lines)


def test_context_keeps_a_whole_traceback_and_its_exception():
    lines = ["boot", "a", "b", "c", "Traceback (most recent call last):", '  File "main.py", line 1, in <module>',
             '  File "lib/rainmaker/log.py", line 24, in log', "MemoryError: memory allocation failed, allocating 1280 bytes",
             "after"]
    assert mpheap.context(_Log(lines)) == lines[1:8]


def test_context_of_an_error_line_and_of_a_clean_log():
    lines = ["l%d" % i for i in range(20)]
    assert mpheap.context(_Log(lines)) == lines[-12:]
    lines[5] = "rm E ota: OTA job dropped: " + "x" * 300
    got = mpheap.context(_Log(lines))
    assert got[0] == "l2" and got[3].endswith("...") and len(got[3]) == 203 and got[-1] == "l13"


def test_bisect_finds_the_edge_and_confirms_it_on_another_board():
    from tests.bench.mpheap import bisect

    grid = list(range(64, 257, 4))
    seen = []

    def probe(kb, flaky=()):
        seen.append(kb)
        ok = kb >= 120 and not (kb in flaky and seen.count(kb) == 2)
        return ok, None if ok else "no memory at %d" % kb, {"kb": kb} if ok else None

    assert bisect(grid, probe) == (120, {"kb": 120}, (116, "no memory at 116"))
    assert seen[0] == 256 and seen.count(120) == 2  # bisected, then confirmed
    # The confirming board fails at the edge: one step up, which must pass again.
    seen.clear()
    kb, reading, failed = bisect(grid, lambda kb: probe(kb, flaky=(120,)))
    assert (kb, reading) == (124, {"kb": 124}) and failed == (120, "no memory at 120 (on the confirming board)")
    # Nothing passes: the largest size's failure.
    assert bisect(grid, lambda kb: (False, "never", None)) == (None, None, (256, "never"))
    # Every size passes on its first board only: not "nothing fits" but unsteady, said so.
    seen.clear()

    def once(kb):
        seen.append(kb)
        ok = kb >= 120 and seen.count(kb) == 1
        return ok, None if ok else "failed at %d" % kb, {"kb": kb} if ok else None

    assert bisect(grid, once) == (None, None, (132, "unsteady: no size from 120K to 132K passed on two boards "
                                                    "in a row; at 132K: failed at 132"))
    assert seen[-6:] == [120, 124, 124, 128, 128, 132] and seen.count(132) == 2
