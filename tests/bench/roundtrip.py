"""Param round trip through the broker with mutual TLS, against a baseline.

One sample: the cloud-side requester publishes {"Light":{"Brightness":n}} on
node/<id>/params/remote (QoS 1) and waits for the echo carrying that value on
node/<id>/params/local; the time from publish to echo received is the sample.

Peers, all through the same Mosquitto, run interleaved in one loop (one write
to each in turn), so machine noise hits all of them alike; the figures that
matter are the ratios to the baseline:

  CPython board      the real firmware on CPython (tools/sim/board.py) with the
                     simulator's Python socket/ssl layer: validates the write,
                     calls the app, echoes.
  MicroPython board  the same firmware on the MicroPython v1.28 unix port
                     (micropython32, tools/sim/mpboard.py): MicroPython's own
                     asyncio, mbedTLS and socket; lib/ as .py, as the simulator
                     deploys it (.mpy holds the same bytecode, so it runs at the
                     same speed). Its rainmaker.json names the broker itself, not
                     the board's radio relay: the relay only models Wi-Fi loss,
                     and without TCP_NODELAY on its sockets it adds a delayed-ACK
                     stall of about 40 ms to most writes (measured while writing
                     this benchmark), which no real board has.
  plain echo client  the baseline: a paho client that republishes every write
                     as is, with TCP_NODELAY.

Both boards have the publish budget lifted (it would throttle the burst).
Included: the broker's two hops, TLS both ways, the board's parsing, model
check, app callback and echo. Left out: Wi-Fi, the radio, and the ESP32's CPU
(the boards run on this host at full speed), so the ratios compare the agent's
path with a client that does nothing; they are not ESP32 latencies.
"""
import json
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import socket

import paho.mqtt.client as paho

from tests.harness import Cloud, Board, MICROPYTHON
from tools.broker import console_tls_context

NODE = "240AC4BE0001"
ECHO = "240AC4BE0002"
NODE_MP = "240AC4BE0003"


class Requester:
    """The cloud side: writes a param, waits for its echo from that node."""

    def __init__(self, cloud, client_id="bench-requester"):
        self.got = threading.Event()
        self.expect = None
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id)
        c.tls_set_context(console_tls_context(cloud.workdir))
        ready = threading.Event()
        c.on_connect = lambda cl, *a: cl.subscribe("node/+/params/local", 1)
        c.on_subscribe = lambda *a: ready.set()
        c.on_message = self._on_message
        c.connect(cloud.broker.host, cloud.broker.port)
        nodelay(c)
        c.loop_start()
        assert ready.wait(10)
        self.c = c

    def _on_message(self, client, userdata, msg):
        e = self.expect
        if e and msg.topic == e[0] and e[1] in msg.payload:
            self.got.set()

    def once(self, node, n, timeout=5.0):
        """Milliseconds from the write to its echo; None if none came within timeout."""
        body = json.dumps({"Light": {"Brightness": n}}, separators=(",", ":"))
        self.expect = (f"node/{node}/params/local", b'"Brightness":%d}' % n)
        self.got.clear()
        t = time.perf_counter()
        self.c.publish(f"node/{node}/params/remote", body, qos=1)
        ok = self.got.wait(timeout)
        dt = (time.perf_counter() - t) * 1000
        self.expect = None
        return dt if ok else None

    def must(self, node, n, timeout=5.0):
        dt = self.once(node, n, timeout)
        if dt is None:
            raise RuntimeError(f"no echo from {node} for Brightness {n} within {timeout} s")
        return dt

    def stop(self):
        self.c.loop_stop()
        self.c.disconnect()


def echo_client(cloud, node, client_id="bench-echo"):
    """The baseline peer: a plain MQTT client that echoes writes back."""
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id)
    c.tls_set_context(console_tls_context(cloud.workdir))
    ready = threading.Event()
    c.on_connect = lambda cl, *a: cl.subscribe(f"node/{node}/params/remote", 1)
    c.on_subscribe = lambda *a: ready.set()
    c.on_message = lambda cl, ud, msg: cl.publish(f"node/{node}/params/local", msg.payload, qos=1)
    c.connect(cloud.broker.host, cloud.broker.port)
    nodelay(c)
    c.loop_start()
    assert ready.wait(10)
    return c


def nodelay(client):
    # paho leaves Nagle on; the baseline should be as fast as a client can be.
    client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def direct(board, cloud):
    """Point a MicroPython board at the broker itself rather than its radio relay."""
    cfg = json.loads((board.dir / "rainmaker.json").read_text())
    cfg["mqtt_port"] = cloud.broker.port
    (board.dir / "rainmaker.json").write_text(json.dumps(cfg))


def lift_budget(board):
    # The publish budget (100 messages, then one per 5 s) would throttle a
    # burst of echoes; the benchmarks measure latency and heap, so lift it.
    cfg = json.loads((board.dir / "rainmaker.json").read_text())
    cfg["budget"] = [100000, 100000, 5000]
    (board.dir / "rainmaker.json").write_text(json.dumps(cfg))


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def measure(n=300):
    """{peer name: [ms, ...]} for n interleaved writes to each peer, and the broker engine."""
    root = Path(tempfile.mkdtemp(prefix="bench-rt-"))
    cloud = Cloud(root / "cloud", engine="mosquitto").start()
    boards = [("CPython board", NODE, Board(cloud, root / "board", NODE))]
    if MICROPYTHON:
        mp = Board(cloud, root / "mpboard", NODE_MP, backend="micropython")
        direct(mp, cloud)
        boards.append(("MicroPython board", NODE_MP, mp))
    clients, req = [], None
    try:
        for _, _, b in boards:
            lift_budget(b)
            b.start()
        for _, node, b in boards:
            b.wait_line("online as " + node, timeout=30)
        peers = [(name, node) for name, node, _ in boards]
        clients.append(echo_client(cloud, ECHO))
        peers.append(("plain echo client", ECHO))
        req = Requester(cloud)
        for i in range(20):  # warm up every path
            for _, node in peers:
                req.must(node, i % 100)
        samples = {name: [] for name, _ in peers}
        for i in range(n):
            v = (i * 7) % 100 + 1
            for name, node in peers:
                samples[name].append(req.must(node, v))
        return samples, cloud.broker.engine
    finally:
        if req:
            req.stop()
        for c in clients:
            c.loop_stop()
        for _, _, b in boards:
            b.stop()
        cloud.stop()
        shutil.rmtree(root, ignore_errors=True)


def report(n=300):
    samples, engine = measure(n)
    base = samples["plain echo client"]
    b50, b99 = statistics.median(base), pct(base, 99)
    lines = [f"Param round trip, remote write to echo, through {engine} with mutual TLS, "
             f"{n} writes to each peer, interleaved:"]
    out = {"base_p50": b50, "base_p99": b99}
    for name, xs in samples.items():
        p50, p99 = statistics.median(xs), pct(xs, 99)
        ratio = "" if xs is base else f"   ratio p50 {p50 / b50:5.2f}x  p99 {p99 / b99:5.2f}x"
        lines.append(f"  {name:<18} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms{ratio}")
        key = {"CPython board": "", "MicroPython board": "mp_"}.get(name)
        if key is not None:
            out.update({key + "p50": p50, key + "p99": p99})
    lines.append("  (ratios to the plain echo client; target <= 1.5x for a board. The MicroPython board\n"
                 "   talks to the broker directly, not through its simulated radio relay; no Wi-Fi, host CPU)")
    if not MICROPYTHON:
        lines.append("  MicroPython board skipped: no micropython32 binary ($MICROPYTHON)")
    return "\n".join(lines), out
