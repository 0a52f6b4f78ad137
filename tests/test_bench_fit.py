"""Bookkeeping of the heap-fit benches (tests/bench/ota.py --fit/--at and
tests/bench/provfit.py), without boards: the measurements need Mosquitto, the
file server and a MicroPython binary and are run by hand."""
import hashlib

import pytest

from tests.bench import ota, provfit


def test_provfit_randoms_avoid_the_cli_security2_quirk_and_differ():
    seen = set()
    for i in range(600):  # seed 523 hits the quirk: the walk past it is covered
        r = provfit._random(i)
        assert len(r) == 64
        assert hashlib.sha512(b"wifiprov:" + r[:4].hex().encode()).digest()[0] != 0
        seen.add(r)
    assert len(seen) == 600


def test_ota_grid_reaches_below_the_nodes_smallest_heap():
    assert ota.MIN_GRID[0] <= 64 and ota.MIN_GRID[-1] >= 256 and ota.MIN_GRID[1] - ota.MIN_GRID[0] == 4


@pytest.mark.parametrize("argv", [["--grid", "64:128:4"], ["--kind", "image"]])
def test_ota_options_of_the_probes_alone_are_refused_for_the_full_report(argv, capsys):
    with pytest.raises(SystemExit):
        ota.main(argv)
    assert "apply to --fit and --at" in capsys.readouterr().err


def test_the_version_bump_finds_each_app():
    assert 'fw_version="2.0.1"' in ota._version_app("2.0.1", "example")
    assert 'fw_version="2.0.1"' in ota._version_app("2.0.1", "plug")


@pytest.mark.parametrize("argv,says", [(["--retry"], "--retry applies to --at"),
                                       (["--fit", "--trace"], "--trace applies to --at with the example app"),
                                       (["--at", "96", "--app", "plug", "--trace"], "--trace applies to --at")])
def test_ota_diagnostic_options_name_where_they_apply(argv, says, capsys):
    with pytest.raises(SystemExit):
        ota.main(argv)
    assert says in capsys.readouterr().err


def test_the_provisioning_benchs_flow_runs_against_the_firmware_as_it_is():
    # make bench is not part of make test: this keeps its provisioning flow in
    # step with the firmware's API (a changed signature once broke it unseen).
    import shutil

    from tests.bench import prov

    root = prov._root()
    try:
        heap = prov.flow(root, prov._verifier())
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert 0 < heap["code"] < heap["built"] <= heap["peak_live"] and heap["after"] < heap["code"]


def test_ota_probe_counts_the_attempt_that_took_the_job_from_the_agents_texts():
    assert ota.attempts([("in-progress", "Downloading"), ("success", "done")]) == 1
    st = [("failed", "OTA Attempt 1/3 failed: out of memory"), ("in-progress", "Downloading"),
          ("failed", "OTA Attempt 2/3 failed: out of memory"), ("failed", "another job is running"),
          ("in-progress", "Downloaded")]
    assert ota.attempts(st) == 3  # the "failed" that is no attempt's is not counted
