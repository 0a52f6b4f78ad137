"""Param round trip through the broker with mutual TLS, against a baseline.

Agent:    the cloud client writes {"Light":{"Brightness":n}} to params/remote;
          the simulated board (the real firmware under CPython) validates it,
          calls the app, and echoes on params/local; the time until the echo
          arrives is one sample.
Baseline: the same requester and broker, but the echo comes from a plain
          paho client that republishes every params/remote message as is.

Both run in the same process and run interleaved, so machine noise hits
both; the figure that matters is the ratio.
"""
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import socket

import paho.mqtt.client as paho

from tests.harness import Cloud, Board
from tools.broker import console_tls_context

NODE = "240AC4BE0001"
ECHO = "240AC4BE0002"


class Requester:
    def __init__(self, cloud):
        self.got = threading.Event()
        self.expect = None
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-requester")
        c.tls_set_context(console_tls_context(cloud.workdir))
        ready = threading.Event()
        c.on_connect = lambda cl, *a: cl.subscribe([(f"node/{NODE}/params/local", 1), (f"node/{ECHO}/params/local", 1)])
        c.on_subscribe = lambda *a: ready.set()
        c.on_message = self._on_message
        c.connect(cloud.broker.host, cloud.broker.port)
        nodelay(c)
        c.loop_start()
        assert ready.wait(10)
        self.c = c

    def _on_message(self, client, userdata, msg):
        if self.expect and self.expect in msg.payload:
            self.got.set()

    def once(self, node, n):
        body = json.dumps({"Light": {"Brightness": n}}, separators=(",", ":"))
        self.expect = b'"Brightness":%d}' % n
        self.got.clear()
        t = time.perf_counter()
        self.c.publish(f"node/{node}/params/remote", body, qos=1)
        if not self.got.wait(5):
            raise RuntimeError(f"no echo from {node} for {body}")
        return (time.perf_counter() - t) * 1000


def echo_client(cloud):
    """The baseline peer: a plain MQTT client that echoes writes back."""
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-echo")
    c.tls_set_context(console_tls_context(cloud.workdir))
    ready = threading.Event()
    c.on_connect = lambda cl, *a: cl.subscribe(f"node/{ECHO}/params/remote", 1)
    c.on_subscribe = lambda *a: ready.set()
    c.on_message = lambda cl, ud, msg: cl.publish(f"node/{ECHO}/params/local", msg.payload, qos=1)
    c.connect(cloud.broker.host, cloud.broker.port)
    nodelay(c)
    c.loop_start()
    assert ready.wait(10)
    return c


def nodelay(client):
    # paho leaves Nagle on; the baseline should be as fast as a client can be.
    client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def measure(n=300):
    root = Path(tempfile.mkdtemp(prefix="bench-rt-"))
    cloud = Cloud(root / "cloud", engine="mosquitto").start()
    board = Board(cloud, root / "board", NODE)
    # The publish budget (100 messages, then one per 5 s) would throttle a
    # burst of 600 echoes; the benchmark measures latency, so lift it.
    cfg = json.loads((board.dir / "rainmaker.json").read_text())
    cfg["budget"] = [100000, 100000, 5000]
    (board.dir / "rainmaker.json").write_text(json.dumps(cfg))
    board.start()
    echo = None
    try:
        board.wait_line("online as " + NODE, timeout=30)
        echo = echo_client(cloud)
        req = Requester(cloud)
        for i in range(20):  # warm up both paths
            req.once(NODE, i % 100)
            req.once(ECHO, i % 100)
        agent, base = [], []
        for i in range(n):
            v = (i * 7) % 100 + 1
            agent.append(req.once(NODE, v))
            base.append(req.once(ECHO, v))
        return agent, base, cloud.broker.engine
    finally:
        if echo:
            echo.loop_stop()
        board.stop()
        cloud.stop()


def report(n=300):
    agent, base, engine = measure(n)
    a50, a99 = statistics.median(agent), pct(agent, 99)
    b50, b99 = statistics.median(base), pct(base, 99)
    lines = [
        f"Param round trip through {engine} with mutual TLS, {n} writes each, interleaved:",
        f"  agent (simulated board) p50 {a50:6.2f} ms  p99 {a99:6.2f} ms",
        f"  plain echo client       p50 {b50:6.2f} ms  p99 {b99:6.2f} ms",
        f"  ratio                   p50 {a50 / b50:5.2f}x    p99 {a99 / b99:5.2f}x   (target <= 1.5x)",
    ]
    return "\n".join(lines), {"p50": a50, "p99": a99, "base_p50": b50, "base_p99": b99}
