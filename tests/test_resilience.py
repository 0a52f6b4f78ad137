"""A board that never needs a power cycle: end-to-end tests of the failures
that used to stop the agent or leave the cloud wrong.

Each test boots its own board against the real broker with mutual TLS:
a server that accepts TCP and never speaks TLS, sockets across many failed
attempts, reconnects with the publish budget used up, the Connected
re-report, power cuts right after an echo, hostile payloads, unplanned
exceptions, and failures named by their real cause.
"""
import json
import os
import socket
import threading
import time

import pytest

from tests.harness import Cloud, Board, ROOT, write_json
from tools.sim.relay import free_port


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    c = Cloud(tmp_path_factory.mktemp("cloud")).start()
    yield c
    c.stop()


def _config(board, **changes):
    path = board.dir / "rainmaker.json"
    cfg = json.loads(path.read_text())
    cfg.update(changes)
    write_json(path, cfg)


def _pids(pid):
    """pid and all its descendants (the MicroPython board runs under a launcher)."""
    out = [pid]
    for p in out:
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    out += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def _tcp_inodes(port):
    """Inodes of the TCP sockets, in any state, whose remote end is 127.0.0.1:port."""
    inodes = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            cols = line.split()
            rem = cols[2]
            if int(rem.split(":")[1], 16) == port:
                inodes.add(cols[9])
    return inodes


def _open_sockets_to(board, port):
    """How many descriptors of the board's processes are TCP sockets to port."""
    wanted = _tcp_inodes(port)
    n = 0
    for pid in _pids(board.proc.pid):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in wanted:
                n += 1
    return n


def _delays(board, since=0):
    return [int(l.split("retrying in ")[1].split()[0]) for l in board.lines(since) if "retrying in" in l]


class SilentServer:
    """Accepts TCP connections and never says a word (no TLS, no CONNACK)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.closed = []  # indexes of connections the client closed (FIN seen)
        self._stop = False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                pass
            else:
                c.setblocking(False)
                self.conns.append(c)
            for i, c in enumerate(self.conns):
                if i in self.closed:
                    continue
                try:
                    if c.recv(4096) == b"":
                        self.closed.append(i)
                except BlockingIOError:
                    pass
                except OSError:
                    self.closed.append(i)

    def stop(self):
        self._stop = True
        for c in self.conns:
            c.close()
        self.sock.close()


def test_a_server_that_never_answers_tls_cannot_hang_the_agent(cloud, backend, tmp_path):
    srv = SilentServer()
    b = Board(cloud, tmp_path, "240AC4E2E101", backend=backend)
    # The watchdog is on: the event loop keeps running while the handshake
    # is stuck, so it is fed and the board is not reset.
    _config(b, mqtt_port=srv.port, watchdog=30)
    b.start()
    try:
        b.wait_line("connecting to 127.0.0.1:%d" % srv.port, timeout=30)
        line = b.wait_line("retrying in", timeout=40)  # the handshake is bounded (20 s)
        err = [l for l in b.lines() if " E " in l][-1]
        assert "connecting" in err and ("no progress" in err or "no CONNACK" in err), err
        m = b.mark()
        b.wait_line("connecting to", m, timeout=20)
        # The abandoned connection was closed: the server saw our FIN.
        deadline = time.monotonic() + 10
        while 0 not in srv.closed and time.monotonic() < deadline:
            time.sleep(0.1)
        assert 0 in srv.closed, "the first connection was left open"
        assert _open_sockets_to(b, srv.port) <= 1
        assert "Traceback" not in "\n".join(b.lines()), line
        b.wait_line("retrying in", m, timeout=40)  # the second attempt is bounded too
        assert b.count("MicroPython v") == 1, "the board was reset (watchdog not fed?)"
    finally:
        b.stop()
        srv.stop()


def test_one_socket_at_most_after_many_refused_attempts(cloud, backend, tmp_path):
    # Nothing listens on the port: every attempt fails at once. Whatever
    # the path, the socket of a failed attempt is closed.
    port = free_port()
    b = Board(cloud, tmp_path, "240AC4E2E102", backend=backend)
    _config(b, mqtt_port=port)
    b.start()
    try:
        deadline = time.monotonic() + 40
        while len(_delays(b)) < 4 and time.monotonic() < deadline:
            time.sleep(0.2)
        delays = _delays(b)
        assert len(delays) >= 4, b.lines()[-10:]
        assert "nothing accepts connections at 127.0.0.1:%d" % port in "\n".join(b.lines())
        assert all(d >= 1000 for d in delays), delays  # AWS IoT: one CONNECT a second at most
        assert delays[-1] > delays[0], delays  # backing off, not a fixed beat
        # Descriptors of the board's processes: no socket of the failed attempts is left.
        assert _open_sockets_to(b, port) == 0
        fds = sum(len(os.listdir(f"/proc/{p}/fd")) for p in _pids(b.proc.pid))
        m = b.mark()
        b.wait_line("retrying in", m, timeout=30)
        b.wait_line("retrying in", b.mark(), timeout=60)
        assert sum(len(os.listdir(f"/proc/{p}/fd")) for p in _pids(b.proc.pid)) <= fds
    finally:
        b.stop()


def test_every_reconnect_re_reports_the_state_and_connected_whatever_the_budget(cloud, backend, tmp_path):
    node = "240AC4E2E103"
    since = cloud.mark()
    b = Board(cloud, tmp_path, node, backend=backend)
    _config(b, budget=[1, 1, 3600000])  # one token, then one an hour: used up at once
    b.start()
    try:
        b.wait_line("online as " + node, timeout=30)
        cloud.wait("params/local/init", node, since)
        for attempt in range(3):
            lsince, since = b.mark(), cloud.mark()
            b.set_air(up=False)
            b.wait_line("Wi-Fi lost", lsince, timeout=20)
            b.set_air(up=True)
            online = b.wait_line("online as " + node, lsince, timeout=30)
            _, init = cloud.wait("params/local/init", node, since, timeout=15)
            assert json.loads(init)["Connectivity"] == {"Connected": True}, attempt
            # The SDK re-reports Connected about 5 s after each connect, in case
            # the old session's last will reached the cloud after the init.
            # (Here the broker publishes the old session's will when the new
            # one takes over its client id, after the init.)
            cloud.wait("params/local", node, since, timeout=15,
                       where=lambda p: json.loads(p) == {"Connectivity": {"Connected": True}})
            states = [json.loads(p)["Connectivity"]["Connected"] for t_, p, _ in cloud.messages[since:]
                      if t_.endswith(node + "/params/local") and b"Connectivity" in p]
            assert states[-1] is True, (attempt, online, states)
        # Ordinary reports still respect the budget.
        assert b.count("publish budget used up") <= 1
    finally:
        b.stop()


def test_the_echoed_name_survives_a_power_cut(cloud, backend, tmp_path):
    node = "240AC4E2E104"
    b = Board(cloud, tmp_path, node, backend=backend)
    b.start()
    try:
        b.wait_line("online as " + node, timeout=30)
        for round_ in range(3):
            since = cloud.mark()
            stop = threading.Event()

            def writes():
                n = 0
                while not stop.is_set():
                    n += 1
                    cloud.write(node, {"Light": {"Name": "r%d-%04d" % (round_, n)}})
                    time.sleep(0.03)

            t = threading.Thread(target=writes, daemon=True)
            t.start()
            # Cut the power the moment a second echo has gone out.
            cloud.wait("params/local", node, since, where=lambda p: b"Name" in p)
            first = cloud.mark()
            cloud.wait("params/local", node, first, where=lambda p: b"Name" in p)
            b.stop()
            stop.set()
            t.join(5)
            time.sleep(0.5)  # echoes already on the wire still arrive
            echoed = [json.loads(p)["Light"]["Name"] for t_, p, _ in cloud.messages[since:]
                      if t_.endswith(node + "/params/local") and b"Name" in p]
            lsince, isince = b.mark(), cloud.mark()
            b.start()
            b.wait_line("online as " + node, lsince, timeout=30)
            _, init = cloud.wait("params/local/init", node, isince)
            kept = json.loads(init)["Light"]["Name"]
            assert kept >= max(echoed), (round_, kept, echoed)
    finally:
        b.stop()


def test_hostile_payloads_and_unplanned_errors_never_stop_the_agent(cloud, backend, tmp_path):
    node = "240AC4E2E105"
    since = cloud.mark()
    b = Board(cloud, tmp_path, node, main=ROOT / "tests" / "apps" / "flaky_main.py", backend=backend)
    b.start()
    try:
        b.wait_line("out of memory while connecting", timeout=30)
        b.wait_line("unexpected RuntimeError", timeout=30)
        b.wait_line("planted by the test app", timeout=10)  # the traceback is printed
        b.wait_line("online as " + node, timeout=40)
        cloud.wait("config", node, since)
        lsince = b.mark()
        cloud.write(node, b'{"Plug":{"Name":' + b"[" * 3900 + b"}}")
        b.wait_line("nested deeper than", lsince, timeout=10)
        since = cloud.mark()
        cloud.write(node, {"Plug": {"Power": True}})
        _, echo = cloud.wait("params/local", node, since)
        assert json.loads(echo) == {"Plug": {"Power": True}}
    finally:
        b.stop()


def test_a_failure_with_no_memory_left_to_report_it_does_not_stop_the_agent(cloud, backend, tmp_path):
    # Neither the diagnosis code nor the supervisor's one-line fallback finds
    # memory (tests/apps/nomem_report_main.py plants both): the failure goes
    # unsaid, the supervisor retries, and the node comes online.
    node = "240AC4E2E10A"
    since = cloud.mark()
    b = Board(cloud, tmp_path, node, main=ROOT / "tests" / "apps" / "nomem_report_main.py", backend=backend)
    b.start()
    try:
        b.wait_line("retrying in", timeout=30)
        b.wait_line("online as " + node, timeout=40)
        cloud.wait("config", node, since)
        assert b.count("connection failed") == 0 and b.count("raised") == 0
    finally:
        b.stop()


@pytest.mark.parametrize("mutate,expected", [
    (lambda b: _config(b, server_hostname="broker.example"),
     "the broker's certificate is not for 'broker.example': set server_hostname"),
    (lambda b: (b.dir / "certs" / "node.key.der").write_bytes(b"\x30\x03\x02\x01\x00"),
     "certs/node.key.der is not valid"),
    (lambda b: (b.dir / "certs" / "ca.der").write_bytes(b"not a certificate"),
     "broker CA certs/ca.der is not a valid certificate"),
], ids=["host-name", "corrupt-key", "corrupt-ca"])
def test_failures_are_named_by_their_cause(cloud, backend, tmp_path, mutate, expected):
    b = Board(cloud, tmp_path, "240AC4E2E106", backend=backend)
    mutate(b)
    b.start()
    try:
        b.wait_line(expected, timeout=30)
        b.wait_line("retrying in", timeout=10)
        assert b.count("online as") == 0
        assert "Traceback" not in "\n".join(b.lines())
    finally:
        b.stop()


def test_a_board_installed_without_provisioning_says_what_to_do(cloud, backend, tmp_path):
    # mip installs the agent and provisioning as two packages: a board with no
    # Wi-Fi credentials and no provisioning package must say so, not crash.
    import shutil

    b = Board(cloud, tmp_path, "240AC4E2E107", wifi=False, backend=backend)
    shutil.rmtree(b.dir / "lib" / "rainmaker" / "prov")
    b.start()
    try:
        b.wait_line("lib/rainmaker/prov is not installed: install the provisioning package", timeout=30)
        b.wait_line("no credentials in wifi.json", timeout=10)
        assert "Traceback" not in "\n".join(b.lines())
    finally:
        b.stop()
