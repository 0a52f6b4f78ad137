"""End to end: power cuts at every stage of an OTA job, and a new firmware or app
that never reaches the broker.

A power cut is Board.stop() (the board's process is killed: nothing is flushed,
no `finally` runs) and Board.start() again on the same folders. The cloud side
behaves as the RainMaker cloud does with a job still in progress: every otafetch
the node sends (5 s after it connects) is answered with the same job, until the
job has a final status (`Refetch`). After every cut the board must boot (the
simulated bootloader finds a bootable slot) and come online, and each job must
end with its true outcome: `success` only with the new image (or app) running,
`rejected` "Firmware rolled back" only with the old one running again.

Cut points: firmware images on the CPython backend (the download, stalled by the
file server or cut at a random moment; after the last block; around set_boot();
right after it; in the reboot wait; the new image's first boot before it is
confirmed); app bundles on the MicroPython backend (the download, the plan written
before the reboot, and boot.py's file switch at boot, made slow with --fs-delay so
that cuts land inside it). Every cut is counted in CUTS; the summary is printed at the
end of the module.

The two "never reaches the broker" tests run the verify window at 20 s
(rainmaker.json "ota_verify"; the SDK's 90 s otherwise) and take about 35 s each;
the whole module about 3 minutes.
"""
import json
import os
import random
import threading
import time

import pytest

from tests import esp_image
from tests.ota_rig import NODE, FINAL, Rig, bundle, app_main, cloud, server  # noqa: F401 - fixtures
from tools.otaserver import parse_fault

SEED = int(os.environ.get("OTA_POWER_SEED", time.time_ns() % 100000))
CUTS = []  # (test, cut point) of every power cut in this module
BRICKED = []  # cuts after which the board did not come back
ONLINE = "online as " + NODE
VERIFIED = ("success", "OTA Upgrade finished and verified successfully")
ROLLED_BACK = ("rejected", "Firmware rolled back")


@pytest.fixture(scope="module", autouse=True)
def summary(request):
    yield
    # Shown without -s too: through the terminal reporter, not the captured stdout.
    lines = ["", "OTA power cuts: %d cut points tried, %d bricked (seed %d)" % (len(CUTS), len(BRICKED), SEED)]
    lines += ["  %-7s %-70s %s" % c for c in CUTS]
    cap = request.config.pluginmanager.getplugin("capturemanager")
    tr = request.config.pluginmanager.getplugin("terminalreporter")
    if cap is None or tr is None:
        print("\n".join(lines))
        return
    with cap.global_and_fixture_disabled():
        for line in lines:
            tr.write_line(line)


def _final(st):
    return bool(st) and (st[-1][0] in FINAL or st[-1][0] == "failed" and not st[-1][1].startswith(
        ("OTA Attempt 1/", "OTA Attempt 2/")))


class Refetch:
    """The cloud's answer to otafetch: the current job again while it is not over."""

    def __init__(self, rig):
        self.rig = rig
        self.doc = None
        self.since = 0
        self.answered = 0  # otafetch requests answered with the job
        self._stop = threading.Event()
        self._seen = rig.cloud.mark()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def follow(self, doc, since):
        self.doc, self.since = doc, since

    def _run(self):
        c = self.rig.cloud
        while not self._stop.is_set():
            with c._cond:
                c._cond.wait(0.2)
                new = c.messages[self._seen:]
                self._seen += len(new)
            for topic, _, _ in new:
                doc = self.doc
                if topic.endswith(NODE + "/otafetch") and doc is not None:
                    if not _final(self.rig.statuses(self.since, doc["ota_job_id"])):
                        c.publish(f"node/{NODE}/otaurl", doc)
                        self.answered += 1

    def stop(self):
        self._stop.set()
        self._t.join(5)


class Cutter:
    """Pushes jobs (a new version each), cuts the power at the points given, checks
    every job's outcome against what the board's flash and files hold."""

    def __init__(self, rig, test, kind, tmp):
        self.rig, self.test, self.kind, self.tmp = rig, test, kind, tmp
        self.board = rig.board
        self.refetch = Refetch(rig)
        self.resent = 0  # jobs re-sent in answer to otafetch, over all of this test's Refetch
        self.n = 0
        self.job = None  # (job id, version, since)
        self.running = "1.0.0"  # the version that runs (image: the boot slot's; bundle: main.py's)
        self.outcomes = []  # (job, version, status, info)
        self.switch_cuts = 0  # cuts that left boot.py's switch unfinished (bundles)

    # -- jobs ------------------------------------------------------------------

    def push(self):
        self.n += 1
        version = "2.0.%d" % self.n
        job = "%s-%d" % (self.kind, self.n)
        if self.kind == "image":
            data = esp_image.build("esp32", version, size=256 * 1024)
            name = job + ".bin"
        else:
            data = bundle(self.tmp / job, version, app_main(version), mpy=self.rig.backend == "micropython")
            name = job + ".rmb"
        since, doc = self.rig.push(name, data, job, version=version)
        self.refetch.follow(doc, since)
        self.job = (job, version, since)
        self.size = len(data)

    def over(self):
        """True (and the outcome checked) once the current job has a final status."""
        if self.job is None:
            return True
        job, version, since = self.job
        st = self.rig.statuses(since, job)
        if not _final(st):
            return False
        self.check(job, version, st)
        self.job = None
        return True

    def check(self, job, version, st):
        status, info = st[-1]
        # Never a success for an image that does not run, never a rollback
        # reported with the new one running.
        assert (status, info) in (VERIFIED, ROLLED_BACK), (job, st)
        assert all(x == st[-1] for x in st if x[0] in FINAL), st  # a final status only repeated
        assert not any(s == "failed" for s, _ in st), st  # a cut is no failed attempt
        runs = self.runs()
        if (status, info) == VERIFIED:
            assert runs == version, (job, "success reported but %s runs" % runs, st)
            self.running = version
        else:
            assert runs == self.running, (job, "rolled back but %s runs, not %s" % (runs, self.running), st)
        self.outcomes.append((job, version, status, info))

    def runs(self):
        """The version the board runs now."""
        if self.kind == "image":
            fl = self.board.flash()
            p = fl.boot_partition()
            assert fl.state(p) == "VALID", (p[0], fl.state(p))
            return fl.app_desc(p)[0]
        text = (self.board.dir / "main.py").read_text()
        st = json.loads((self.board.dir / "ota" / "state.json").read_text())
        assert st["step"] in ("confirmed", "reverted"), st  # nothing left on trial
        return text.split('fw_version="')[1].split('"')[0]

    # -- cuts -------------------------------------------------------------------

    def wait(self, text, since, timeout=60):
        """Until the board logs `text` after line `since`; a job that ends meanwhile is
        followed by a new one. Returns the line's index."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = self.board.lines()
            for i in range(since, len(lines)):
                if text in lines[i]:
                    return i
            if self.over():
                self.push()
            time.sleep(0.02)
        raise AssertionError("board never logged %r; last lines:\n%s" % (text, "\n".join(self.board.lines()[-30:])))

    def cut(self, point):
        """The power goes (the board's process is killed)."""
        self.board.stop()
        CUTS.append((self.test, point, self.disk()))

    def disk(self):
        """What the cut left on the board: the OTA state file, the boot slot or the app switch."""
        d = self.board.dir
        try:
            ota = json.loads((d / "ota.json").read_text()).get("state") or "-"
        except (OSError, ValueError):
            ota = "-"
        if self.kind == "image":
            fl = self.board.flash()
            p = fl.boot_partition()
            return "ota.json %s; boot slot %s %s" % (ota, p[0], fl.state(p))
        try:
            step = json.loads((d / "ota" / "state.json").read_text()).get("step")
        except (OSError, ValueError):
            step = "-"
        left = sum(len(f) for _, _, f in os.walk(d / "ota" / "new"))
        return "ota.json %s; app switch %s, %d files still staged" % (ota, step, left)

    def on(self, until=ONLINE):
        """The power comes back: the board must boot and log `until` ("online as":
        it reached the broker). Returns the line index the boot started at."""
        m = self.board.mark()
        self.board.start()
        try:
            self.board.wait_line(until, since=m, timeout=60)
        except AssertionError:
            BRICKED.append((self.test, CUTS[-1][1] if CUTS else None))
            raise
        return m

    def finish(self, timeout=90):
        """The last job's outcome (the cloud still answers its otafetch)."""
        deadline = time.monotonic() + timeout
        while not self.over():
            assert time.monotonic() < deadline, (self.job, self.rig.statuses(self.job[2], self.job[0]),
                                                 "\n".join(self.board.lines()[-30:]))
            time.sleep(0.1)
        self.refetch.stop()
        self.resent += self.refetch.answered


def _index(board, text, since):
    lines = board.lines()
    return next(i for i in range(since, len(lines)) if text in lines[i])


def _stall(server, at):
    """The next download stops after `at` bytes (the connection held open).
    Returns what _stalled() waits on."""
    server.add_fault(parse_fault("stall:%d,once" % at))
    return len(server.requests)


def _stalled(server, since, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(r.get("stalled") for r in list(server.requests)[since:]):
            return
        time.sleep(0.02)
    raise AssertionError("the file server never stalled a download")


# -- firmware images, CPython ------------------------------------------------------


def test_power_cuts_at_every_stage_of_a_firmware_image_update(cloud, server, tmp_path):
    server.clear()
    rng = random.Random(SEED)
    rig = Rig(cloud, server, "cpython", tmp_path / "b")
    c = Cutter(rig, "image", "image", tmp_path)
    b = rig.board

    def cut_and_on(point):
        c.cut(point)
        c.on()

    def stall(at, line):
        n = _stall(server, at)
        m = b.mark()
        if c.over():
            c.push()
        c.wait(line, m)
        _stalled(server, n)

    def first_boot(point, text):
        # The power comes back into the new image's first boot (it is on trial,
        # PENDING_VERIFY) and goes again at `text`, before it reached the broker.
        m = c.on(until=text)
        job = c.job
        c.cut(point)
        connected = any(ONLINE in x for x in b.lines(m))
        c.on()
        c.finish(timeout=40)
        # Any reset of an image on trial makes the bootloader go back to the
        # old one: the true outcome is a rollback, unless it got online first.
        want = VERIFIED if connected else ROLLED_BACK
        assert c.outcomes[-1] == (job[0], job[1]) + want, (c.outcomes, connected)
        c.refetch = Refetch(rig)

    try:
        # 1-3: the download stalls at a known byte (the image head incomplete,
        # inside a sector, on a sector boundary); the power goes then.
        stall(200, "Starting OTA Upgrade")
        time.sleep(0.3)
        cut_and_on("download: stalled at byte 200 (image head incomplete)")
        stall(int(c.size * 0.45), "Downloaded 40%")
        cut_and_on("download: stalled at 45 % ('Downloaded 40%')")
        stall(16 * 4096, "Downloaded 20%")
        time.sleep(0.1)
        cut_and_on("download: stalled on a sector boundary (64 KiB)")
        # 4-5: at a progress line, and at a random moment after the start
        # (in the download or just after: the list printed at the end says)
        m = b.mark()
        c.wait("Downloaded 20%", m)
        cut_and_on("download: at 'Downloaded 20%'")
        m = b.mark()
        c.wait("Starting OTA Upgrade", m)
        d = rng.uniform(0, 0.06)  # the 256 KiB take about that long here
        time.sleep(d)
        cut_and_on("random: %.3f s after 'Starting OTA Upgrade'" % d)
        # 6-7: after the last block, before or around set_boot()
        m = b.mark()
        c.wait("Firmware Image download complete", m)
        cut_and_on("after the last block: at 'Firmware Image download complete'")
        m = b.mark()
        c.wait("Firmware Image download complete", m)
        d = rng.uniform(0, 0.03)
        time.sleep(d)
        cut_and_on("around set_boot(): %.3f s after 'download complete'" % d)
        # 8-9: right after set_boot(), then in the new image's first boot once
        # it is up to its 90 s wait for the broker
        m = b.mark()
        c.wait("Rebooting into new firmware", m)
        c.cut("right after set_boot(): at 'Rebooting into new firmware'")
        first_boot("new image's first boot: at 'waiting up to 90 s for the broker'", "for the broker")
        # 10-11: in the 10 s reboot wait, then in the new image's first boot at its banner
        m = b.mark()
        c.wait("Rebooting into new firmware", m)
        d = rng.uniform(1, 9)
        time.sleep(d)
        c.cut("in the reboot wait: %.1f s after 'Rebooting into new firmware'" % d)
        first_boot("new image's first boot: at its banner", "MicroPython v")
        # 12: the new image's first connect, around its confirmation
        m = b.mark()
        i = c.wait("Rebooting into new firmware", m)
        c.wait(ONLINE, i + 1)
        d = rng.uniform(0, 0.02)
        time.sleep(d)
        cut_and_on("new image's first connect: %.3f s after 'online as'" % d)
        c.finish()
        got = [st for _, _, st, _ in c.outcomes]
        assert "success" in got and "rejected" in got, c.outcomes
        assert c.resent >= 5  # every cut download went on only because the cloud re-sent the job
        assert len([x for x in CUTS if x[0] == "image"]) >= 12 and not BRICKED
    finally:
        c.refetch.stop()
        rig.stop()


def _need_micropython():
    from tools.sim.mpboard import default_micropython

    if not default_micropython():
        pytest.skip("no MicroPython unix-port binary (set MICROPYTHON)")


def test_power_cuts_in_a_firmware_image_download_on_micropython(cloud, server, tmp_path):
    # The image written by MicroPython itself through esp32.Partition
    _need_micropython()
    server.clear()
    rng = random.Random(SEED + 2)
    rig = Rig(cloud, server, "micropython", tmp_path / "b")
    c = Cutter(rig, "mp-img", "image", tmp_path)
    b = rig.board
    try:
        n = _stall(server, 100000)
        c.push()
        m = b.mark()
        c.wait("Downloaded 30%", m)
        _stalled(server, n)
        c.cut("download: stalled at byte 100000")
        c.on()
        m = b.mark()
        c.wait("Starting OTA Upgrade", m)
        d = rng.uniform(0, 0.5)
        time.sleep(d)
        c.cut("download: %.2f s after 'Starting OTA Upgrade'" % d)
        c.on()
        c.finish()
        assert c.outcomes == [("image-1", "2.0.1") + VERIFIED], c.outcomes
        assert not BRICKED
    finally:
        c.refetch.stop()
        rig.stop()


# -- app bundles, MicroPython ---------------------------------------------------------


def test_power_cuts_in_an_app_bundle_update_and_its_file_switch(cloud, server, tmp_path):
    _need_micropython()
    server.clear()
    rng = random.Random(SEED + 1)
    # 20 ms per rename/remove/mkdir (a LittleFS commit on the chip takes about
    # that): boot.py's switch of the ~45 files then takes seconds, and cuts land in it.
    rig = Rig(cloud, server, "micropython", tmp_path / "b", args=["--fs-delay", "20"])
    c = Cutter(rig, "bundle", "bundle", tmp_path)
    b = rig.board
    state = b.dir / "ota" / "state.json"

    def switching():
        try:
            return json.loads(state.read_text()).get("step") == "switch"
        except (OSError, ValueError):
            return False

    try:
        # 1-2: the download
        n = _stall(server, 30000)
        c.push()
        m = b.mark()
        c.wait("Downloaded 20%", m)
        _stalled(server, n)
        c.cut("download: stalled at byte 30000")
        c.on()
        m = b.mark()
        c.wait("Starting OTA Upgrade", m)
        d = rng.uniform(0, 0.4)
        time.sleep(d)
        c.cut("download: %.2f s after 'Starting OTA Upgrade'" % d)
        c.on()
        # 3: the agent writing the plan, or waiting to reboot with it written
        # (boot.py switches the files at the next boot)
        m = b.mark()
        c.wait("Firmware Image download complete", m)
        d = rng.uniform(0.2, 0.8)
        time.sleep(d)
        c.cut("the plan, before the reboot: %.2f s after 'download complete'" % d)
        c.switch_cuts += switching()
        # 4-5: boot.py finishing the switch at the next boots
        for n in (1, 2):
            c.on(until="MicroPython v")
            d = rng.uniform(0.05, 0.4)
            time.sleep(d)
            c.cut("boot.py's switch at boot: %.2f s after the banner" % d)
            c.switch_cuts += switching()
        # 6: the new app's first boot before it reached the broker: the app
        # stays on trial across resets (up to 3 boots), so it boots again
        c.on(until="for the broker")
        c.cut("new app's first boot: at 'waiting up to 90 s for the broker'")
        c.on()
        c.finish()
        assert c.outcomes[-1][2:] == VERIFIED, c.outcomes
        assert c.switch_cuts >= 1, "no cut landed inside the switch: make --fs-delay longer"
        # 7: a cut right after the new app saved "verified", before it was
        # confirmed (the disk as that cut leaves it: made from a cut at
        # 'Rebooting', one trial boot counted, ota.json saying "verified")
        c.refetch = Refetch(rig)
        c.push()
        job = c.job
        m = b.mark()
        c.wait("Rebooting into new firmware", m)
        c.cut("new app's first connect: after saving 'verified', before the confirm")
        st = json.loads(state.read_text())
        assert st["step"] == "switch"  # the plan: boot.py switches the files in at the next boot
        _switch(b.dir)  # as that boot does
        st = json.loads(state.read_text())
        assert st["step"] == "trial"
        st["boots"] = 1
        state.write_text(json.dumps(st))
        ota = json.loads((b.dir / "ota.json").read_text())
        assert ota["state"] == "rebooting-into-new"
        ota["state"] = "verified"
        (b.dir / "ota.json").write_text(json.dumps(ota))
        c.on()
        c.finish()
        assert c.outcomes[-1] == (job[0], job[1]) + VERIFIED, c.outcomes
        # 8-10: the reported success holds: the app was confirmed, no later
        # reset reverts it
        for n in (1, 2, 3):
            c.cut("idle after the success (%d)" % n)
            c.on()
            assert c.runs() == job[1]
        assert json.loads(state.read_text())["step"] == "confirmed"
        # 11: the next bundle's download, cut: the node still knows which app
        # runs (the cloud then drops that job and sends the running version:
        # refused as such, not installed again)
        n = _stall(server, 30000)
        c.push()
        m = b.mark()
        c.wait("Downloaded 20%", m)
        _stalled(server, n)
        c.refetch.follow(None, 0)
        c.cut("download of the next bundle: stalled at byte 30000")
        c.on()
        c.job = None
        since, _ = rig.push("same.rmb", bundle(tmp_path / "same", job[1], app_main(job[1]), mpy=True), "same")
        st = rig.outcome(since, "same")
        assert st[-1] == ("rejected", "Same version received"), st
        assert c.runs() == job[1]
        assert len([x for x in CUTS if x[0] == "bundle"]) >= 9 and not BRICKED
    finally:
        c.refetch.stop()
        rig.stop()


def _switch(board_dir):
    # firmware/boot.py's switch, run on the board's folder by CPython (it
    # needs only os and json): the files put in place, the app on trial.
    import subprocess
    import sys

    from tests.harness import ROOT

    r = subprocess.run([sys.executable, "-c", "import boot; boot.switch()"], cwd=board_dir,
                       env=dict(os.environ, PYTHONPATH=str(ROOT / "firmware")), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr


# -- a new firmware or app that never reaches the broker ------------------------------------


@pytest.mark.parametrize("kind", ["image", "bundle"])
def test_a_new_firmware_or_app_that_never_reaches_the_broker_is_rolled_back(cloud, server, tmp_path, kind):
    """Slow (about 45 s each): the 10 s reboot wait and the 20 s verify window."""
    server.clear()
    rig = Rig(cloud, server, "cpython", tmp_path / "b", cfg={"ota_verify": 20})
    b = rig.board
    try:
        if kind == "image":
            data = esp_image.build("esp32", "2.0.0", size=64 * 1024)
            since, _ = rig.push("never.bin", data, "never-" + kind, version="2.0.0")
        else:
            data = bundle(tmp_path, "2.0.0", app_main("2.0.0"), mpy=False)
            since, _ = rig.push("never.rmb", data, "never-" + kind, version="2.0.0")
        m = b.mark()
        b.wait_line("Rebooting into new firmware", since=m, timeout=40)
        cloud.broker_down()
        try:
            b.wait_line("waiting up to 20 s for the broker", since=m, timeout=30)
            b.wait_line("did not reach the broker within 20 s: rolling back", since=m, timeout=40)
            if kind == "bundle":  # boot.py put the old files back
                b.wait_line("app update rolled back: the new app did not reach the broker within 20 s",
                            since=m, timeout=30)
            b.wait_line("was rolled back to", since=m, timeout=30)  # the old one runs again
        finally:
            cloud.broker_up()
        b.wait_line(ONLINE, since=_index(b, "was rolled back to", m), timeout=60)
        st = rig.outcome(since, "never-" + kind, timeout=60)
        assert st[-1] == ROLLED_BACK, st
        assert not any(s == "success" for s, _ in st), st
        fl = b.flash()
        assert fl.boot_partition()[0] == "ota_0" and fl.state(fl.get("ota_0")) == "VALID"
        _, conf = cloud.wait("config", NODE, since, timeout=40)
        assert json.loads(conf)["info"]["fw_version"] == "1.0.0"
        if kind == "image":
            assert fl.state(fl.get("ota_1")) in ("ABORTED", "INVALID")
        else:
            assert 'fw_version="1.0.0"' in (b.dir / "main.py").read_text()
            assert json.loads((b.dir / "ota" / "state.json").read_text())["step"] == "reverted"
    finally:
        rig.stop()
