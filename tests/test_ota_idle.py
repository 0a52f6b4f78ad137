"""The OTA code is in the heap only while it has work to do: once the node is
online and its otafetch acknowledged, rainmaker.ota, rainmaker.update and the
download code are unloaded (on MicroPython a module's bytecode lives in the
heap), and the next otaurl job loads them again and runs as before, also
after a Wi-Fi drop and after the reboot into a new image. End to end on both
backends, and in-process on the CPython sim for what the agent itself holds
(the link's hooks, sources and otaurl handler) and for a job that finds no
memory to load the code.
"""
import json
import os
import sys
import time
import types

import pytest

from tests import esp_image
from tests.ota_rig import NODE, Rig, cloud, server  # noqa: F401 - fixtures
from tests.harness import ROOT

APP = ROOT / "tests" / "apps" / "ota_mods_main.py"
OTA_CODE = {"ota", "update", "otajob", "fetch", "http", "bundle", "bundlemf", "image", "stage"}

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


def settled(rig, since, timeout=25):
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


# -- in-process, on the CPython sim: what the agent holds before and after the drop --


@pytest.fixture
def sim_board(tmp_path, monkeypatch):
    import sys

    from provisioning.ca import ensure_ca
    from tools.sim.runtime import Runtime
    from tools.simulate import prepare_board

    d = tmp_path / "board"
    ensure_ca(tmp_path / "cloud" / "ca")
    prepare_board(tmp_path / "cloud", d, tmp_path / "air.json", "240AC4ABCDE0", 8883)
    monkeypatch.chdir(d)
    for name in [m for m in sys.modules if m == "rainmaker" or m.startswith("rainmaker.")]:
        monkeypatch.delitem(sys.modules, name)
    rt = Runtime(d, air=tmp_path / "air.json", mac="240AC4ABCDE0").install()
    yield rt
    rt.uninstall()


def _agent(rt):
    """An agent for a one-switch node on the sim board, not started."""
    rm = rt.import_module("rainmaker")
    std = rt.import_module("rainmaker.std")
    node = rm.Node("Idle Test", "Test")
    node.add(std.switch("Plug"))
    return rt.import_module("rainmaker.agent").Agent(node)


def _now(coro):
    """Runs a coroutine that must not wait."""
    try:
        coro.send(None)
    except StopIteration:
        return
    raise AssertionError("it waited")


def _loaded():
    import sys

    return {m[10:] for m in sys.modules if m.startswith("rainmaker.")} & OTA_CODE


def _drain(u, now, pid):
    """Everything the job logic has to send at now, each acknowledged at once (pids from pid+1)."""
    u.ota.tick(now, None)
    sent = []
    while True:
        item = u.ota.take(now, 100)
        if item is None:
            return sent
        sent.append(item)
        u.ota.sent(pid + len(sent), now)
        u.ota.puback(pid + len(sent), now + 100)


def _online(a, now):
    a.state = "online"
    a.since = now


def _fetch(a, now):
    """What the keeper's pass at now posts: the otafetch's (payload, done), or None."""
    a._otafetch(now)
    q = a.link.queue
    if not q:
        return None
    assert len(q) == 1 and q[0][0] == "otafetch", q
    _, payload, done = q.pop()
    assert json.loads(payload) == {"node_id": "240AC4ABCDE0", "fw_version": "1.0.0"}, payload
    return payload, done


def _settle(a, now):
    """The boot's otafetch, which the agent sends itself 5 s after the node is
    online, and its PUBACK: the OTA code is not loaded for it."""
    _online(a, now)
    assert _fetch(a, now + 4900) is None
    _, done = _fetch(a, now + 5000)
    done(now + 5100)
    assert a.update is None and not _loaded()
    assert _fetch(a, now + 900000) is None  # acknowledged: no other this boot


def test_the_agent_drops_every_hook_of_the_ota_code_and_a_job_loads_it_again(sim_board):
    a = _agent(sim_board)
    topic = "node/240AC4ABCDE0/otaurl"
    # Nothing to finish from an earlier boot: not loaded at start (not in the
    # heap at connect), only the resident otaurl handler is there.
    assert a.update is None and not _loaded() and a._fetch_at is not None  # the boot's otafetch is wanted
    assert a.link.hooks == [] and a.link.sources == [] and a.link.handlers[topic] == a._otaurl
    _settle(a, 1000)
    assert a.link.hooks == [] and a.link.sources == [] and a.link.handlers[topic] == a._otaurl
    # A job: the resident handler loads the code again and hands the job over.
    a.link.handlers[topic](b'{"ota_job_id":"J9","url":"http://h/f.bin"}', 8000)
    u = a.update
    assert u is not None and {"ota", "update"} <= _loaded()
    assert a.link.hooks == [u.hook] and a.link.sources == [u.ota] and a.link.handlers[topic] == u.ota.message
    u.hook(9000)  # a reconnect: its answer goes out, and no second otafetch this boot
    sent = _drain(u, 20000, 20)
    assert [x[0] for x in sent] == ["otastatus"] and '"J9","status":"failed"' in sent[0][1], sent
    _now(a._ota_tick(21000))
    assert a.update is None and not _loaded() and a.link.hooks == [] and a.link.sources == []
    # The next job, a good one, runs.
    a.link.handlers[topic](b'{"ota_job_id":"J10","url":"https://h/f.bin","file_size":10}', 22000)
    u = a.update
    assert u is not None and u.ota.job == "J10"
    assert u.ota.tick(22000, None)[0][0] == "download"


def test_a_download_checks_its_server_with_the_links_context_unless_another_ca_is_named(sim_board):
    # With the broker's CA (the default) the MQTT link's context serves: a second
    # context would need 1.7 KB in one piece at the heap's most fragmented time.
    import shutil

    a = _agent(sim_board)
    a.link.handlers["node/240AC4ABCDE0/otaurl"](b'{"ota_job_id":"J1","url":"https://h/f.bin"}', 8000)
    u = a.update
    assert a.ctx is not None and u._context() is a.ctx
    a.cfg["ota_ca"] = "certs/ca.der"
    assert u._context() is a.ctx
    shutil.copy("certs/ca.der", "certs/files.der")
    a.cfg["ota_ca"] = "certs/files.der"
    ctx = u._context()
    assert ctx is not a.ctx and ctx is not u._context()  # its own, per download
    a.cfg["ota_ca"] = "certs/none.der"
    with pytest.raises(OSError):
        u._context()


class _NoMemory(types.ModuleType):
    # Stands for the OTA driver's module when there is no memory to load it.
    def __getattr__(self, name):
        raise MemoryError("memory allocation failed, allocating 2048 bytes")


def test_a_job_that_cannot_load_the_ota_code_is_dropped_with_a_clear_error(sim_board, capsys, monkeypatch):
    a = _agent(sim_board)
    _settle(a, 1000)

    monkeypatch.setitem(sys.modules, "rainmaker.update", _NoMemory("rainmaker.update"))
    a.link.handlers["node/240AC4ABCDE0/otaurl"](b'{"ota_job_id":"J9","url":"https://h/f.bin"}', 8000)
    assert "OTA job dropped: the OTA code could not be loaded: memory allocation failed" in capsys.readouterr().out
    assert a.update is None and a.link.handlers["node/240AC4ABCDE0/otaurl"] == a._otaurl
    monkeypatch.delitem(sys.modules, "rainmaker.update")  # memory again: the next job loads it
    a.link.handlers["node/240AC4ABCDE0/otaurl"](b'{"ota_job_id":"J10","url":"https://h/f.bin"}', 9000)
    assert a.update is not None and a.update.ota.job == "J10"


class _NoRoomFor:
    # A meta path finder: importing `name` fails as a board's import does when
    # no block is free for its code.
    def __init__(self, name):
        self.name = name

    def find_spec(self, fullname, path=None, target=None):
        if fullname == self.name:
            raise MemoryError("memory allocation failed, allocating 1280 bytes")
        return None


def test_an_attempt_whose_download_code_cannot_load_fails_and_the_job_goes_on(sim_board, monkeypatch):
    a = _agent(sim_board)
    a.link.handlers["node/240AC4ABCDE0/otaurl"](b'{"ota_job_id":"J1","url":"https://h/f.bin","file_size":10}', 8000)
    u = a.update
    assert u.ota.tick(8000, None)[0][0] == "download"
    monkeypatch.delitem(sys.modules, "rainmaker.fetch", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_NoRoomFor("rainmaker.fetch")] + sys.meta_path)
    u.task = "running"  # as tick() leaves it
    _now(u._download("https://h/f.bin", 10, None, 0))  # it must end, not die with the task
    assert u.task is None
    sent = _drain(u, 9000, 20)
    assert [x[0] for x in sent] == ["otastatus"] * len(sent) and sent, sent
    assert any("Attempt 1/3 failed: out of memory" in x[1] for x in sent), sent
    assert "HTTPS attempt 2/3" in sent[-1][1], sent  # the next attempt is under way


def test_a_failed_attempt_is_reported_even_with_no_room_to_explain_it(sim_board, monkeypatch):
    a = _agent(sim_board)
    a.link.handlers["node/240AC4ABCDE0/otaurl"](b'{"ota_job_id":"J1","url":"https://h/f.bin","file_size":10}', 8000)
    u = a.update
    u.ota.tick(8000, None)
    fetch = sim_board.import_module("rainmaker.fetch")

    async def unreachable(*args):
        raise OSError(113)  # EHOSTUNREACH: diag would say what it means

    monkeypatch.setattr(fetch, "download", unreachable)
    monkeypatch.delitem(sys.modules, "rainmaker.diag", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_NoRoomFor("rainmaker.diag")] + sys.meta_path)
    u.task = "running"
    _now(u._download("https://h/f.bin", 10, None, 0))
    assert u.task is None
    sent = _drain(u, 9000, 20)
    assert any("Attempt 1/3 failed: 113" in x[1] for x in sent), sent


_OTAURL = "node/240AC4ABCDE0/otaurl"


@pytest.fixture
def no_memory_for_a_stored_job(sim_board, capsys, monkeypatch):
    """An agent started with a new image's job to finish (ota.json) and no
    memory for the OTA code; memory comes back (the planted module goes)
    before the test goes on."""
    monkeypatch.setitem(sys.modules, "rainmaker.update", _NoMemory("rainmaker.update"))
    with open("ota.json", "w") as f:
        f.write('{"job":"J1","state":"rebooting-into-new","old":"x"}')
    try:
        b = _agent(sim_board)
        assert "the unfinished job waits for the next boot: the OTA code could not be loaded" in capsys.readouterr().out
        assert b.update is None and b.link.handlers[_OTAURL] == b._otaurl
        monkeypatch.delitem(sys.modules, "rainmaker.update")
        yield b
    finally:
        os.remove("ota.json")


def test_a_stored_job_whose_code_finds_no_memory_at_start_loads_with_the_next_otaurl(no_memory_for_a_stored_job):
    b = no_memory_for_a_stored_job
    b.link.handlers[_OTAURL](b'{"ota_job_id":"J2","url":"https://h/f.bin","file_size":10}', 2000)
    # Loaded at last: the stored job is taken up first (J2 waits, as any
    # job arriving during another).
    assert b.update is not None and b.update.ota.job == "J1"


def test_a_new_image_whose_code_loads_late_while_online_is_confirmed_by_that_connect(sim_board,
                                                                                     no_memory_for_a_stored_job):
    # The new image came online, but its OTA code found no memory at start.
    # An otaurl loads it later, while the link is up: that connect is the
    # proof the image works, so it is confirmed then, not rolled back when
    # its time to verify runs out.
    b = no_memory_for_a_stored_job
    _online(b, 0)
    b.link.state = sim_board.import_module("rainmaker.link").ONLINE
    # (the cloud's answer to the otafetch: the job still in progress)
    b.link.handlers[_OTAURL](b'{"ota_job_id":"J1","url":"https://h/f.bin","file_size":10}', 2000)
    u = b.update
    assert u is not None and u.ota.job == "J1"
    assert [(s[0], s[1]) for s in u.ota._q] == [("J1", "success")]  # not downloaded again
    with open("ota.json") as f:
        assert json.load(f)["state"] == "verified"


def test_an_unacknowledged_otafetch_is_sent_again_as_the_sdk_does(sim_board, capsys):
    # No PUBACK within 60 s: sent again after 30 s * 2^(n-1), n = 1..5, then
    # every 480 s; only while online; a PUBACK ends it.
    a = _agent(sim_board)
    _online(a, 0)
    assert _fetch(a, 5000)
    t = 5000
    for wait in (30, 60, 120, 240, 480, 480):
        t += 60000 + wait * 1000
        assert _fetch(a, t - 1) is None, wait
        if wait == 60:  # offline when it falls due: sent once online again
            a.state = "connecting"
            assert _fetch(a, t) is None
            _online(a, t + 2000)
            t += 2000
        _, done = _fetch(a, t)
    assert "otafetch not acknowledged within 60 s: sent again" in capsys.readouterr().out
    done(t + 100)
    assert _fetch(a, t + 10 ** 7) is None and a.update is None and not _loaded()


def test_a_job_pushed_before_the_otafetch_is_due_means_none_is_sent(sim_board):
    a = _agent(sim_board)
    _online(a, 0)
    a.link.handlers["node/240AC4ABCDE0/otaurl"](b'{"ota_job_id":"J5","url":"http://h/f.bin"}', 1000)
    assert a.update is not None and a._fetch_at is None  # withdrawn by the job logic
    _drain(a.update, 2000, 40)  # the job's answer (refused: http)
    _now(a._ota_tick(3000))
    # The job was the answer: the keeper sends no otafetch from here on (the
    # job logic, loaded for the next job, asks for any other).
    assert a.update is None and not _loaded() and not a.link.queue
    for t in (5000, 6000, 10 ** 6):
        assert _fetch(a, t) is None


def test_a_stored_job_loads_the_ota_code_at_start(sim_board):
    # A job or a new app's trial left by the last boot must be finished from the
    # first connect (the new image is confirmed there), so its code loads at once.
    for name, text in (("ota.json", "{}"), ("ota.json", '{"job":"J1","state":"rebooting-into-new","old":"x"}')):
        with open(name, "w") as f:
            f.write(text)
        a = _agent(sim_board)
        if text == "{}":  # what a finished job leaves: nothing to do
            assert a.update is None
        else:
            assert a.update is not None and a.link.hooks == [a.update.hook]
        assert a._fetch_at is not None  # the boot's otafetch is the agent's either way
        os.remove(name)


def test_a_job_pushed_before_the_boot_load_runs_and_needs_no_otafetch(sim_board):
    a = _agent(sim_board)
    topic = "node/240AC4ABCDE0/otaurl"
    assert a.update is None and a._fetch_at is not None
    a.link.handlers[topic](b'{"ota_job_id":"J7","url":"http://h/f.bin"}', 2000)
    u = a.update
    assert u is not None and a._fetch_at is None and u.ota.job is None  # http: refused
    sent = _drain(u, 3000, 30)
    # The job is answered; no otafetch, whose answer the pushed job already is.
    assert [x[0] for x in sent] == ["otastatus"] and '"J7"' in sent[0][1], sent
    _now(a._ota_tick(4000))
    assert a.update is None and not _loaded()
    _online(a, 5000)
    assert _fetch(a, 10000) is None and _fetch(a, 10 ** 6) is None


# -- the hand-over: the job logic asks, the agent sends (with or without the OTA code) --


def test_a_refetch_the_job_logic_asks_for_is_sent_by_the_agent_after_the_code_is_dropped(sim_board, capsys):
    a = _agent(sim_board)
    _settle(a, 1000)
    topic = "node/240AC4ABCDE0/otaurl"
    # A job with a time constraint while the clock is not set: "delayed", and
    # an otafetch wanted 30 s later.
    a.link.handlers[topic](b'{"ota_job_id":"J8","url":"https://h/f.bin","metadata":{"validity":{"start":1,"end":2}}}', 8000)
    u = a.update
    assert u is not None
    u.utc = lambda: None
    _now(a._ota_tick(9000))
    sent = _drain(u, 9000, 50)
    assert [x[0] for x in sent] == ["otastatus"] and "No time information" in sent[0][1], sent
    _now(a._ota_tick(38999))
    assert a.update is u and _fetch(a, 38999) is None  # the job logic's timer runs: the code stays
    _now(a._ota_tick(39000))
    # Asked for: the job logic has nothing left to do and is dropped; the
    # otafetch is the agent's, sent, and sent again without a PUBACK.
    assert a.update is None and not _loaded() and a.link.hooks == [] and a.link.sources == []
    assert _fetch(a, 39000)
    assert _fetch(a, 39000 + 90000 - 1) is None
    _, done = _fetch(a, 39000 + 90000)
    assert "otafetch not acknowledged within 60 s: sent again" in capsys.readouterr().out
    assert not _loaded()
    done(39000 + 90100)
    assert _fetch(a, 10 ** 7) is None and not _loaded()


def test_each_otafetch_asked_for_starts_the_sdk_schedule_afresh(sim_board):
    a = _agent(sim_board)
    _online(a, 0)
    assert _fetch(a, 5000)  # the boot's, never acknowledged
    assert _fetch(a, 5000 + 90000)
    a.fetch(100000)  # asked for again: sent at once, the backoff from its start
    assert _fetch(a, 100000)
    assert _fetch(a, 100000 + 90000 - 1) is None
    _, done = _fetch(a, 100000 + 90000)
    done(190100)
    assert _fetch(a, 10 ** 7) is None
    a.fetch(10 ** 7)
    a.fetch(None)  # withdrawn (an otaurl came) before it went out
    assert _fetch(a, 10 ** 7 + 1000) is None


def test_an_otafetch_asked_for_waits_until_the_node_is_online_for_5_s(sim_board):
    a = _agent(sim_board)
    _settle(a, 1000)
    a.state = "backoff"
    a.fetch(50000)  # asked for while offline
    assert _fetch(a, 60000) is None
    _online(a, 70000)
    assert _fetch(a, 74999) is None
    assert _fetch(a, 75000)
    # Across the tick clock's wrap (2^30 ms): 5 s of the clock, not of its numbers.
    b = _agent(sim_board)
    _online(b, (1 << 30) - 1000)
    assert _fetch(b, 3999) is None
    assert _fetch(b, 4000)
    # Online for days, the tick difference to the connect wraps: no wait then.
    c = _agent(sim_board)
    _settle(c, 0)
    for t in ((1 << 29) + 10, 3 << 28, (1 << 30) - 1):
        c.fetch(t)
        _, done = _fetch(c, t)
        done(t)


def test_a_stored_job_at_boot_leaves_the_boot_otafetch_to_the_agent(sim_board):
    # The new image confirms itself on the first connect with the OTA code
    # loaded at start; the code is dropped once "success" is acknowledged and
    # the boot's otafetch still goes out 5 s after the connect, from the agent.
    with open("ota.json", "w") as f:
        f.write('{"job":"J1","state":"rebooting-into-new","old":"x"}')
    try:
        a = _agent(sim_board)
        u = a.update
        assert u is not None and u.ota.state == 5  # VERIFYING
        _online(a, 1000)
        u.hook(1000)
        sent = _drain(u, 1100, 60)
        assert [x[0] for x in sent] == ["otastatus"] and '"success"' in sent[0][1], sent
        assert _fetch(a, 1200) is None
        _now(a._ota_tick(1200))
        assert a.update is None and not _loaded()
        assert _fetch(a, 5999) is None
        _, done = _fetch(a, 6000)
        done(6100)
        assert _fetch(a, 10 ** 6) is None
    finally:
        os.remove("ota.json")


def test_a_node_without_ota_sends_no_otafetch(sim_board):
    rm = sim_board.import_module("rainmaker")
    node = rm.Node("No OTA", "Test")
    a = sim_board.import_module("rainmaker.agent").Agent(node, ota=False)
    _online(a, 0)
    assert _fetch(a, 5000) is None and _fetch(a, 10 ** 6) is None
    assert "node/240AC4ABCDE0/otaurl" not in a.link.handlers and a.update is None
