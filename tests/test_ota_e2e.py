"""End to end: OTA jobs through the local cloud, on both backends. The cloud
publishes an otaurl job, the board downloads from the local HTTPS file server
(tools/otaserver.py), and its otastatus reports are checked against the SDK's
statuses and order. Firmware images land in the simulated flash's other app
slot (tools/sim/mpy/simworld/flash.py); app bundles replace the app's files.
"""
import hashlib
import json
import time

import pytest

from tests import esp_image
from tests.ota_rig import NODE, Rig, bundle as _bundle, app_main as _main, cloud, server, rig  # noqa: F401 - fixtures
from tools.otaserver import parse_fault

# -- firmware images -----------------------------------------------------------


def test_a_firmware_image_goes_from_otaurl_to_success_on_the_other_slot(rig):
    image = esp_image.build("esp32", "2.0.0", size=96 * 1024)
    since, _ = rig.push("fw2.bin", image, "img1", version="2.0.0")
    st = rig.outcome(since, "img1")
    infos = [i for _, i in st]
    assert st[0] == ("in-progress", "Starting OTA Upgrade (HTTPS attempt 1/3)")
    assert st[1] == ("in-progress", "Downloading Firmware Image")
    assert ("in-progress", "Firmware Image download complete") in st
    assert ("in-progress", "Rebooting into new firmware (after 1 HTTPS attempt)") in st
    assert st[-1] == ("success", "OTA Upgrade finished and verified successfully")
    pct = [int(i.split("%")[0].split()[-1]) for i in infos if i.startswith("Downloaded ")]
    assert pct == sorted(pct) and all(0 < p < 100 for p in pct)
    assert infos.index("Firmware Image download complete") < infos.index(
        "Rebooting into new firmware (after 1 HTTPS attempt)") < len(infos) - 1
    fl = rig.board.flash()
    assert fl.boot_partition()[0] == "ota_1" and fl.state(fl.get("ota_1")) == "VALID"
    assert fl.read(fl.get("ota_1"), 0, len(image))[1] == image
    assert fl.app_desc(fl.get("ota_1")) == ("2.0.0", "micropython")


@pytest.mark.parametrize("case", ["same-version", "other-chip", "bad-md5", "404", "truncated", "wrong-ca"])
def test_a_bad_firmware_job_ends_with_a_clear_reason_and_the_board_keeps_its_firmware(rig, case):
    image = esp_image.build("esp32", "2.0.0", size=40 * 1024)
    md5 = True
    name = "fw.bin"
    serve = None
    if case == "same-version":
        image = esp_image.build("esp32", "1.0.0", size=40 * 1024)
    elif case == "other-chip":
        image = esp_image.build("esp32c3", "2.0.0", size=40 * 1024)
    elif case == "bad-md5":
        md5 = "0" * 32
    elif case == "404":
        rig.server.add_fault(parse_fault("status:404,path=/fw.bin"))
    elif case == "truncated":
        serve = image[:-5000]  # the file on the server is shorter than the job says
    elif case == "wrong-ca":
        rig.server.add_fault(parse_fault("wrong-ca"))
    since, _ = rig.push(name, image, "bad-" + case, md5=md5, serve=serve)
    st = rig.outcome(since, "bad-" + case)
    want = {"same-version": ("rejected", "Same version received"),
            "other-chip": ("rejected", "Chip mismatch: image is for esp32c3"),
            "bad-md5": ("failed", "OTA Attempt 3/3 failed: MD5 mismatch"),
            "404": ("failed", "OTA Attempt 3/3 failed: HTTP 404"),
            "truncated": ("failed", "OTA Attempt 3/3 failed: size mismatch"),
            "wrong-ca": ("failed", "OTA Attempt 3/3 failed: ")}[case]
    assert st[-1][0] == want[0] and st[-1][1].startswith(want[1]), st
    if want[0] == "failed":
        fails = [i for s, i in st if s == "failed"]
        assert [f[:15] for f in fails] == ["OTA Attempt 1/3", "OTA Attempt 2/3", "OTA Attempt 3/3"]
        starts = [i for s, i in st if i.startswith("Starting OTA Upgrade")]
        assert starts == ["Starting OTA Upgrade (HTTPS attempt %d/3)" % n for n in (1, 2, 3)]
    assert not any(s == "success" for s, _ in st)
    fl = rig.board.flash()
    assert fl.boot_partition()[0] == "ota_0"
    # still working: a write is echoed
    since = rig.cloud.mark()
    rig.cloud.write(NODE, {"Plug": {"Power": True}})
    rig.cloud.wait("params/local", NODE, since, where=lambda p: b'"Power":true' in p)


def test_a_cut_download_resumes_with_a_range_request_from_the_last_whole_sector(rig):
    image = esp_image.build("esp32", "2.0.0", size=120 * 1024)
    rig.server.add_fault(parse_fault("cut:50000,once,path=/fw-r.bin"))
    since, _ = rig.push("fw-r.bin", image, "resume1")
    st = rig.outcome(since, "resume1")
    assert st[-1][0] == "success", st
    fails = [i for s_, i in st if s_ == "failed"]
    assert len(fails) == 1 and fails[0].startswith("OTA Attempt 1/3 failed: ")
    assert ("in-progress", "Starting OTA Upgrade (HTTPS attempt 2/3)") in st
    assert ("in-progress", "Rebooting into new firmware (after 2 HTTPS attempts)") in st
    reqs = [r for r in rig.server.requests if r["path"] == "/fw-r.bin" and r["method"] == "GET"]
    assert len(reqs) == 2, reqs
    assert reqs[0]["range"] is None and reqs[0]["sent"] == 50000
    # The last whole sector the board wrote: a TLS record cut in flight never
    # arrives, so that can be a sector or so before the 50,000 bytes sent.
    start = int(reqs[1]["range"][len("bytes="):-1])
    assert start % 4096 == 0 and 50000 - 16384 - 4096 <= start <= 50000 // 4096 * 4096, reqs
    assert sum(r["sent"] for r in reqs) == 50000 + len(image) - start  # not the whole file twice
    fl = rig.board.flash()
    assert fl.read(fl.get("ota_1"), 0, len(image))[1] == image


# -- app bundles -------------------------------------------------------------------


def _config(cloud, since):
    _, c = cloud.wait("config", NODE, since, timeout=40)
    return json.loads(c)


def test_an_app_bundle_goes_from_otaurl_to_success_and_the_new_app_runs(rig, tmp_path):
    # .mpy files on MicroPython (they replace the board's .py sources, which
    # are moved aside); sources on the CPython board, which cannot load .mpy.
    data = _bundle(tmp_path, "2.0.0", _main("2.0.0"), mpy=rig.backend == "micropython")
    since, _ = rig.push("app2.rmb", data, "app1", version="2.0.0")
    st = rig.outcome(since, "app1")
    assert st[0] == ("in-progress", "Starting OTA Upgrade (HTTPS attempt 1/3)")
    assert ("in-progress", "Rebooting into new firmware (after 1 HTTPS attempt)") in st
    assert st[-1] == ("success", "OTA Upgrade finished and verified successfully"), st
    assert _config(rig.cloud, since)["info"]["fw_version"] == "2.0.0"
    d = rig.board.dir
    assert "2.0.0" in (d / "main.py").read_text()
    state = json.loads((d / "ota" / "state.json").read_text())
    assert state["step"] == "confirmed" and state["version"] == "2.0.0"
    assert not (d / "ota" / "old").exists()  # confirmed: the old files are gone
    if rig.backend == "micropython":
        assert (d / "lib" / "rainmaker" / "agent.mpy").exists() and not (d / "lib" / "rainmaker" / "agent.py").exists()
    assert rig.board.flash().boot_partition()[0] == "ota_0"  # the firmware was not touched
    # the same bundle again: the same version is refused
    since, _ = rig.push("app2.rmb", data, "app1b")
    st = rig.outcome(since, "app1b")
    assert st[-1] == ("rejected", "Same version received"), st


def test_a_new_app_that_crashes_at_import_is_rolled_back(rig, tmp_path):
    data = _bundle(tmp_path, "2.0.0", _main("2.0.0").replace("rm.run(node)", "import no_such_module\nrm.run(node)"),
                   mpy=rig.backend == "micropython")
    since, _ = rig.push("bad.rmb", data, "app2")
    st = rig.outcome(since, "app2", timeout=120)
    assert st[-1] == ("rejected", "Firmware rolled back"), st
    assert not any(s == "success" for s, _ in st)
    assert rig.board.count("app update rolled back: main.py raised ImportError")
    assert _config(rig.cloud, since)["info"]["fw_version"] == "1.0.0"
    assert 'fw_version="1.0.0"' in (rig.board.dir / "main.py").read_text()
    if rig.backend == "micropython":  # the .py sources are back, no .mpy left to shadow them
        assert (rig.board.dir / "lib" / "rainmaker" / "agent.py").exists()
        assert not (rig.board.dir / "lib" / "rainmaker" / "agent.mpy").exists()


@pytest.mark.parametrize("path", ["rainmaker.json", "boot.py", "certs/ca.der"])
def test_a_bundle_that_would_replace_settings_or_the_recovery_path_is_rejected(rig, tmp_path, path):
    import struct

    from rainmaker import bundle as rb

    body = b"x = 1\n"
    m = {"format": 1, "version": "9.9.9", "total": len(body),
         "files": [{"path": path, "size": len(body), "sha256": hashlib.sha256(body).hexdigest()}]}
    raw = json.dumps(m).encode()
    data = rb.MAGIC + struct.pack(">H", len(raw)) + raw + body
    before = (rig.board.dir / path).read_bytes() if (rig.board.dir / path).exists() else None
    since, _ = rig.push("evil.rmb", data, "evil")
    st = rig.outcome(since, "evil")
    assert st[-1][0] in ("rejected", "failed") and not any(s == "success" for s, _ in st), st
    after = (rig.board.dir / path).read_bytes() if (rig.board.dir / path).exists() else None
    assert after == before


def test_a_download_cut_by_a_wifi_drop_resumes_with_a_range_request(rig):
    image = esp_image.build("esp32", "2.0.0", size=400 * 1024)
    rig.server.add_fault(parse_fault("stall:150000,once,path=/fw-w.bin"))  # the drop happens mid-body
    lsince = rig.board.mark()
    since, _ = rig.push("fw-w.bin", image, "wifi1")
    rig.board.wait_line("Downloaded 30% Firmware Image", lsince, timeout=60)
    rig.board.set_air(up=False)
    time.sleep(8)
    rig.board.set_air(up=True)
    st = rig.outcome(since, "wifi1", timeout=150)
    assert st[-1] == ("success", "OTA Upgrade finished and verified successfully"), st
    reqs = [r for r in rig.server.requests if r["path"] == "/fw-w.bin" and r["method"] == "GET"]
    assert reqs[0]["range"] is None
    resumed = [r for r in reqs[1:] if r["range"]]
    assert resumed, reqs
    start = int(resumed[0]["range"][len("bytes="):-1])
    assert start > 0 and start % 4096 == 0 and start <= 150000
    assert sum(r["sent"] for r in reqs) < len(image) + 150000  # not the whole file twice
    fl = rig.board.flash()
    assert fl.read(fl.get("ota_1"), 0, len(image))[1] == image


def test_a_server_that_stalls_ends_each_attempt_after_ota_timeout(cloud, server, backend, tmp_path):
    server.clear()
    rig = Rig(cloud, server, backend, tmp_path, ota_timeout=5)
    try:
        image = esp_image.build("esp32", "2.0.0", size=40 * 1024)
        rig.server.add_fault(parse_fault("stall:10000,path=/fw-s.bin"))
        since, _ = rig.push("fw-s.bin", image, "stall1")
        st = rig.outcome(since, "stall1", timeout=90)
        fails = [i for s, i in st if s == "failed"]
        assert len(fails) == 3 and fails[-1] == "OTA Attempt 3/3 failed: the server sent nothing for 5 s", st
        assert rig.board.flash().boot_partition()[0] == "ota_0"
    finally:
        rig.stop()
