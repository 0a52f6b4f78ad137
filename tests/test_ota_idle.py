"""The OTA code is in the heap only while it has work to do: once the node is
online and its otafetch acknowledged, rainmaker.ota, rainmaker.update and the
download code are unloaded (on MicroPython a module's bytecode lives in the
heap), and the next otaurl job loads them again and runs as before, also
after a Wi-Fi drop and after the reboot into a new image.
"""
import os
import time

import pytest

from tests import esp_image
from tests.ota_rig import NODE, Rig, cloud, server  # noqa: F401 - fixtures
from tests.harness import ROOT

APP = ROOT / "tests" / "apps" / "ota_mods_main.py"
OTA_CODE = {"ota", "update", "otajob", "fetch", "http", "bundle", "image", "stage"}

_seq = [0]


def reading(board, timeout=10):
    """(heap in use or -1, the rainmaker modules loaded) on the running board (its probe task answers)."""
    _seq[0] += 1
    tmp = board.dir / "mods.req.tmp"
    tmp.write_text(str(_seq[0]))
    os.replace(tmp, board.dir / "mods.req")
    line = board.wait_line("MODS %d " % _seq[0], timeout=timeout)
    _, _, used, mods = line.split()[-4:]
    return int(used), set(mods.split(","))


def modules(board):
    return reading(board)[1]


def dropped(board):
    """Waits (up to 5 s) for the OTA code to be dropped; returns the last reading."""
    end = time.monotonic() + 5
    while True:
        r = reading(board)
        if not r[1] & OTA_CODE or time.monotonic() > end:
            return r
        time.sleep(0.2)


def settled(rig, since, timeout=15):
    """Waits for the otafetch after a connect and for the OTA code to be dropped; returns the modules."""
    rig.cloud.wait("otafetch", NODE, since, timeout=timeout)
    return dropped(rig.board)[1]


@pytest.fixture(params=["micropython", "cpython"])
def idle_rig(cloud, server, request, tmp_path):  # noqa: F811
    server.clear()
    since = cloud.mark()
    r = Rig(cloud, server, request.param, tmp_path, main=APP)
    r.since = since
    yield r
    r.stop()


def test_the_ota_code_is_unloaded_once_settled_and_a_later_job_still_runs(idle_rig):
    rig = idle_rig
    board = rig.board
    mods = settled(rig, rig.since)
    assert not mods & OTA_CODE, mods
    assert {"agent", "link", "session"} <= mods  # the probe does see the firmware's modules
    # A Wi-Fi drop while idle: the reconnect does not need the OTA code.
    lines = board.mark()
    board.set_air(up=False)
    time.sleep(4)
    board.set_air(up=True)
    board.wait_line("online as " + NODE, lines, timeout=60)
    mods = modules(board)
    assert not mods & OTA_CODE, mods
    # A job after all that: the otaurl handler loads the OTA code again.
    image = esp_image.build("esp32", "2.0.0", size=40 * 1024)
    since, _ = rig.push("fw-idle.bin", image, "idle1", version="2.0.0")
    st = rig.outcome(since, "idle1")
    assert st[0] == ("in-progress", "Starting OTA Upgrade (HTTPS attempt 1/3)"), st
    assert st[-1] == ("success", "OTA Upgrade finished and verified successfully"), st
    fl = board.flash()
    assert fl.boot_partition()[0] == "ota_1" and fl.state(fl.get("ota_1")) == "VALID"
    assert fl.read(fl.get("ota_1"), 0, len(image))[1] == image
    # The new image confirmed itself, reported success and fetched: idle again.
    mods = settled(rig, since)
    assert not mods & OTA_CODE, mods
    # Jobs that end at once (same version) are still answered, on the job's own
    # id, and each leaves the heap where it was: nothing of the OTA code stays
    # referenced once it is dropped.
    used = [dropped(board)[0]]
    for job in ("idle2", "idle3", "idle4"):
        since, _ = rig.push("fw-idle.bin", image, job)
        st = rig.outcome(since, job)
        assert st[-1][0] == "rejected" and st[-1][1].startswith("Same version received"), st
        u, mods = dropped(board)
        assert not mods & OTA_CODE, mods
        used.append(u)
    if rig.backend == "micropython":
        print("heap in use, idle, before and after each job:", used)
        assert max(used[1:]) - min(used[1:]) <= 256, used
