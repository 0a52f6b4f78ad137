"""The Time service end to end: the apps' write of the phone's zone reaches the
board over the real broker, both params come back, the zone is in effect on the
board (the app prints it), an unknown name is refused, and the zone survives a
power cycle. On both backends: the CPython sim and MicroPython itself (whose
agent reads the zone table deployed to the board's flash)."""
import json

import pytest

from tests.harness import Cloud, Board, ROOT

NODE = "240AC4E2E0A1"
BERLIN = "CET-1CEST,M3.5.0,M10.5.0/3"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    c = Cloud(tmp_path_factory.mktemp("cloud")).start()
    yield c
    c.stop()


def test_phone_zone_is_applied_reported_refused_and_kept(cloud, backend, tmp_path):
    since = cloud.mark()
    b = Board(cloud, tmp_path, NODE, main=ROOT / "tests" / "apps" / "time_main.py", backend=backend).start()
    try:
        b.wait_line("online as " + NODE, timeout=30)
        b.wait_line("zone UTC0 local 00:00")
        _, cfg = cloud.wait("config", NODE, since)
        assert [s["name"] for s in json.loads(cfg)["services"]][:1] == ["Time"]
        _, init = cloud.wait("params/local/init", NODE, since)
        assert json.loads(init)["Time"] == {"TZ": "", "TZ-POSIX": ""}

        lsince, since = b.mark(), cloud.mark()
        cloud.write(NODE, {"Time": {"TZ": "Europe/Berlin"}})
        _, echo = cloud.wait("params/local", NODE, since)
        assert json.loads(echo) == {"Time": {"TZ": "Europe/Berlin", "TZ-POSIX": BERLIN}}
        b.wait_line("zone %s local 02:00" % BERLIN, lsince)

        lsince, since = b.mark(), cloud.mark()
        cloud.write(NODE, {"Time": {"TZ": "Europe/Atlantis"}})
        _, echo = cloud.wait("params/local", NODE, since)
        assert json.loads(echo) == {"Time": {"TZ": "Europe/Berlin"}}
        b.wait_line("unknown time zone 'Europe/Atlantis'", lsince)

        lsince, since = b.mark(), cloud.mark()
        b.power_cycle()
        b.wait_line("online as " + NODE, lsince, timeout=30)
        b.wait_line("zone %s local 02:00" % BERLIN, lsince)
        _, init = cloud.wait("params/local/init", NODE, since)
        assert json.loads(init)["Time"] == {"TZ": "Europe/Berlin", "TZ-POSIX": BERLIN}
        assert "Traceback" not in "\n".join(b.lines())
        # The table search is loaded for each lookup (the writes above, the
        # stored zone's is none) and dropped after.
        assert not [ln for ln in b.lines() if "(zones kept)" in ln]
    finally:
        b.stop()
