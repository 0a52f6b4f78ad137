"""The agent's I/O layer in-process on the simulated board: configuration
errors and rainmaker.status() at the REPL. The networked paths are covered
end to end in test_e2e.py."""
import contextlib
import io
import json
import re

import pytest

from provisioning.ca import ensure_ca
from tools.sim.runtime import Runtime
from tools.simulate import prepare_board


@pytest.fixture
def board(tmp_path, monkeypatch):
    d = tmp_path / "board"
    ensure_ca(tmp_path / "cloud" / "ca")
    prepare_board(tmp_path / "cloud", d, tmp_path / "air.json", "240AC4ABCDEF", 8883)
    monkeypatch.chdir(d)  # the board's root, as tools.sim.board does
    # The host may have imported the firmware package itself (core tests do);
    # the simulator refuses to mix the two, so set the host copies aside.
    import sys

    for name in [m for m in sys.modules if m == "rainmaker" or m.startswith("rainmaker.")]:
        monkeypatch.delitem(sys.modules, name)
    rt = Runtime(d, air=tmp_path / "air.json", mac="240AC4ABCDEF").install()
    yield d, rt
    rt.uninstall()


def _agent(rt):
    rainmaker = rt.import_module("rainmaker")
    agent = rt.import_module("rainmaker.agent")
    std = rt.import_module("rainmaker.std")
    node = rainmaker.Node("Status Test", "Test")
    node.add(std.switch("Plug"))
    return agent, node


def _config_error(rt):
    # config.py is loaded by the agent only while it starts, then dropped.
    return rt.import_module("rainmaker.config").ConfigError


def test_status_before_start_names_every_part(board):
    d, rt = board
    agent, node = _agent(rt)
    agent.Agent(node)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rt.import_module("rainmaker").status()  # diag.status(), loaded on demand
    text = out.getvalue()
    assert "node     240AC4ABCDEF (Status Test, fw 1.0.0)" in text
    assert "wifi     not started" in text
    assert "mqtt     starting for 0 s, 127.0.0.1:8883, 0 connects" in text
    # The config's packet is built at start (link.stage): in flight, one token spent.
    assert "reports  0 pending, 1 in flight, budget 99" in text
    assert "writes   0 accepted, 0 refused, 0 oversized dropped" in text
    assert "heap     " in text


def test_a_board_that_will_provision_builds_its_config_after_provisioning(board):
    # No Wi-Fi credentials: the board provisions first, and the config's
    # packet (the largest) is not built at start, where it would sit in the
    # heap through provisioning; run() builds it before the first connection.
    d, rt = board
    (d / "wifi.json").unlink()
    agent, node = _agent(rt)
    a = agent.Agent(node)
    assert a.sync.config_due and a.session.inflight == {}
    (d / "wifi.json").write_text('{"ssid": "x", "password": ""}')  # as provisioning leaves it
    a.link.stage(0)  # as run() does before the first connection
    assert not a.sync.config_due and len(a.session.inflight) == 1
    (d / "wifi.json").write_text('{"ssid": ""}')  # credentials without a network: provisions too
    assert agent.Agent(node).session.inflight == {}


@pytest.mark.parametrize("error", [MemoryError, RuntimeError, ValueError])
def test_a_config_that_cannot_be_built_at_start_stays_due_and_the_agent_starts(board, error):
    # The config's packet is built at start; whatever fails there (no memory,
    # an app's own config() bug) must not end the agent before its supervisor
    # runs: the config stays due, and run() tries again, reporting what fails.
    d, rt = board
    agent, node = _agent(rt)

    def broken(parts=False):
        raise error("planted")

    node.config = broken
    a = agent.Agent(node)
    assert a.sync.config_due and a.session.inflight == {}
    del node.config
    a.link.stage(0)  # as run() does before each connection
    assert not a.sync.config_due and len(a.session.inflight) == 1


def test_utc_is_unix_seconds_though_the_board_counts_from_2000(board):
    # agent.utc() is the node's one Unix clock (the Keeper's clock, the OTA
    # driver's download windows); the simulated board's time() counts from
    # 2000 as the ESP32's does.
    d, rt = board
    agent = rt.import_module("rainmaker.agent")
    update = rt.import_module("rainmaker.update")
    assert update.utc is agent.utc  # one helper, not a copy
    rt.clock.set(800000000)  # 2025-05-08 in seconds since 2000
    t = agent.utc()
    assert type(t) is int and 0 <= t - (800000000 + 946684800) <= 2, t
    assert 0 <= update.Updater.utc(None) - t <= 2  # (it reads no state)
    rt.clock.set(500000000)  # 2015: the clock is not set yet
    assert 0 <= agent.utc() - (500000000 + 946684800) <= 2 and update.Updater.utc(None) is None


@pytest.mark.parametrize("change,message", [
    (lambda c: c.pop("node_id"), "rainmaker.json has no 'node_id'"),
    (lambda c: c.update(topics="aws"), "topics must be 'plain' or 'ingest'"),
    (lambda c: c.update(mqtt_port=70000), "mqtt_port must be a port number"),
    (lambda c: c.update(keepalive=10), "keepalive must be 30..1200 s"),
    (lambda c: c.update(keepalive=1201), "keepalive must be 30..1200 s"),
    (lambda c: c.update(watchdog=5), "watchdog must be 0 (off) or 30..3600 s"),
    (lambda c: c.update(budget=[1, 2]), "budget must be [start, cap, ms per token]"),
    (lambda c: c.update(ota_verify=19), "ota_verify must be 20..600 s"),
    (lambda c: c.update(ota_verify=601), "ota_verify must be 20..600 s"),
    (lambda c: c.update(ota_verify="90"), "ota_verify must be 20..600 s"),
])
def test_bad_config_is_named(board, change, message):
    d, rt = board
    cfg = json.loads((d / "rainmaker.json").read_text())
    change(cfg)
    (d / "rainmaker.json").write_text(json.dumps(cfg))
    agent, node = _agent(rt)
    with pytest.raises(_config_error(rt), match=re.escape(message)):
        agent.Agent(node)


def test_missing_or_corrupt_config_is_named(board):
    d, rt = board
    agent, node = _agent(rt)
    (d / "rainmaker.json").write_text("{nope")
    with pytest.raises(_config_error(rt), match="rainmaker.json is not valid JSON"):
        agent.Agent(node)
    (d / "rainmaker.json").unlink()
    with pytest.raises(_config_error(rt), match="rainmaker.json not found: deploy a credential bundle"):
        agent.Agent(node)


def test_persisted_param_is_saved_while_offline(board):
    # No Wi-Fi, no broker: the change must still reach params.json.
    d, rt = board
    agent, node = _agent(rt)
    a = agent.Agent(node)
    aio = rt.modules["asyncio"]

    async def main():
        keeper = aio.create_task(a._keeper())
        node.device("Plug").update("Name", "Porch")
        await aio.sleep_ms(600)
        keeper.cancel()

    aio.run(main())
    assert json.loads((d / "params.json").read_text())["Plug"]["Name"] == "Porch"
    assert not (d / "params.json.tmp").exists()


def test_the_driver_gathers_short_packets_in_its_buffer_and_writes_long_ones_as_they_are(board):
    # Agent._flush: short packets leave together (a PUBACK and its echo in
    # one write, one TCP segment: Nagle), never more than the 512-byte buffer
    # in one write; a piece that long is written as it is, the same object.
    # The stream copies what it keeps, so each write is recorded as a copy.
    d, rt = board
    agent, node = _agent(rt)
    a = agent.Agent(node)

    class Writer:
        def __init__(self):
            self.writes = []

        def write(self, buf):
            self.writes.append((buf, bytes(buf)))

    w = a._writer = Writer()
    short = [bytes([0x40, 2, 0, i]) for i in range(3)]
    big = b"y" * 700
    mid = b"m" * 300
    a.link.out = list(short) + [big, mid, mid, short[0]]
    a._flush()
    assert a.link.out == []
    got = [c for _, c in w.writes]
    assert got == [b"".join(short), big, mid, mid + short[0]]
    assert w.writes[1][0] is big  # not copied
    # Many short packets: cut at packet boundaries, each write at most 512 bytes.
    w.writes = []
    pkts = [bytes([0x40, 2, i >> 8, i & 255]) for i in range(300)]
    a.link.out = list(pkts)
    a._flush()
    got = [c for _, c in w.writes]
    assert b"".join(got) == b"".join(pkts)
    assert [len(c) for c in got] == [512, 512, 176]
    # Nothing to write, or no connection: nothing is written, nothing is lost.
    w.writes = []
    a._flush()
    a._writer = None
    a.link.out = [short[1]]
    a._flush()
    assert w.writes == [] and a.link.out == [short[1]]


def test_no_memory_to_start_the_agent_is_named_with_the_fix(board, monkeypatch):
    # Before the supervisor exists nothing can retry: the error says what
    # to change, and the MemoryError still ends the app (main.py's traceback).
    d, rt = board
    agent, node = _agent(rt)

    def starved(*a, **kw):
        raise MemoryError("memory allocation failed, allocating 531 bytes")

    monkeypatch.setattr(agent, "Agent", starved)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(MemoryError):
        agent.run(node)
    line = out.getvalue()
    assert re.search(r"rm E agent: no memory to start \(\d+ bytes free\): a smaller app or node, "
                     r"or the agent frozen into the firmware \(firmware/manifest.py\)", line), line


def test_provisioning_loads_scan_and_user_mapping_on_their_first_request(board):
    # Not in the heap during the Security 2 handshake: the scan and the user
    # mapping (modules and objects) come with their first request.
    import sys

    d, rt = board
    softap = rt.import_module("rainmaker.prov.softap")
    network = softap.network  # the board's, as the firmware sees it
    pb = rt.import_module("rainmaker.prov.pb")
    p = softap.Provisioner({"prov_sec": 1, "random": "ab" * 64}, network.WLAN(network.STA_IF), "240AC4ABCDEF",
                           "wifi.json", "mapping.json")
    assert p.scan is None and p.assoc is None
    assert "rainmaker.prov.scan" not in sys.modules and "rainmaker.prov.assoc" not in sys.modules
    status = pb.decode(p.pc.endpoints["prov-scan"](pb.f_int(1, 2)))
    assert pb.get_int(status, 1) == 3 and p.scan is not None and "rainmaker.prov.scan" in sys.modules
    cmd = pb.f_msg(10, pb.f_bytes(1, b"user") + pb.f_bytes(2, b"secret"))
    out = pb.decode(p.pc.endpoints["cloud_user_assoc"](cmd))
    assert pb.get_int(out, 1) == 1 and p.assoc.mapping == ("user", "secret")
    p._joined("SimNet", "pw")  # the mapping is stored with the credentials
    assert json.loads((d / "mapping.json").read_text()) == {"user_id": "user", "secret_key": "secret"}
