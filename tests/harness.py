"""End-to-end test harness: a real broker, simulated boards, a cloud-side client.

Cloud   Mosquitto (or the embedded broker) with mutual TLS on 127.0.0.1, and a
        paho client with the console identity that records every message. Boards
        reach the broker through a Gate, which a test closes to take the cloud away.
Board   the firmware files deployed into a folder and booted by the simulator
        in a child process: on CPython (python -m tools.sim.board) or, with
        backend="micropython", on the MicroPython unix port (python -m
        tools.sim.mpboard, its MQTT link through a radio relay); its log lines
        are collected for assertions.
"""
import json
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho

from tools.broker import Broker, console_tls_context
from tools.sim.mpboard import default_micropython
from tools.sim.relay import free_port
from tools.simulate import prepare_board, board_command, write_json, SIM_SSID, SIM_PASSWORD

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ("cpython", "micropython")
MICROPYTHON = default_micropython()  # $MICROPYTHON, or ../shared/micropython/micropython32


class Cloud:
    def __init__(self, workdir, engine="auto"):
        self.workdir = Path(workdir)
        self.broker = Broker(self.workdir, engine=engine)
        self.messages = []
        self._cond = threading.Condition()
        self._client = None
        self.gate = None

    @property
    def node_port(self):
        """The port boards connect to: the gate's."""
        return self.gate.port

    def start(self):
        self.broker.start()
        self.gate = Gate((self.broker.host, self.broker.port))
        self.gate.open()
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="test-cloud")
        c.tls_set_context(console_tls_context(self.workdir))
        c.reconnect_delay_set(min_delay=0.1, max_delay=1)
        ready = threading.Event()

        def on_connect(client, userdata, flags, rc, props=None):
            client.subscribe([("node/#", 1), ("$aws/rules/#", 1)])

        def on_subscribe(*a):
            ready.set()

        def on_message(client, userdata, msg):
            with self._cond:
                self.messages.append((msg.topic, msg.payload, time.monotonic()))
                self._cond.notify_all()

        c.on_connect = on_connect
        c.on_subscribe = on_subscribe
        c.on_message = on_message
        c.connect(self.broker.host, self.broker.port, keepalive=30)
        c.loop_start()
        assert ready.wait(10), "test cloud client could not subscribe"
        self._client = c
        return self

    def stop(self):
        if self._client:
            self._client.loop_stop()
            self._client.disconnect()
        if self.gate:
            self.gate.close()
        self.broker.stop()

    def mark(self):
        with self._cond:
            return len(self.messages)

    def broker_down(self):
        """The cloud becomes unreachable for boards: their connections end and new ones
        are refused, as if the broker had died. broker_up() lets them in again.

        The broker itself keeps running with this client subscribed: a restarted broker
        would let a quick board publish before this client had subscribed again, and
        that message would be lost to the test."""
        self.gate.close()

    def broker_up(self):
        self.gate.open()

    def wait(self, suffix, node_id, since=0, timeout=15, where=None):
        """The first message on node/<id>/<suffix> (either topic form) after index `since`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for topic, payload, _ in self.messages[since:]:
                    if _suffix(topic, node_id) == suffix:
                        if where is None or where(payload):
                            return topic, payload
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [t for t, _, _ in self.messages[since:]][-10:]
                    raise AssertionError(f"no {suffix} from {node_id} within {timeout} s; last topics: {seen}")
                self._cond.wait(left)

    def none(self, suffix, node_id, since, seconds):
        time.sleep(seconds)
        with self._cond:
            return [p for t, p, _ in self.messages[since:] if _suffix(t, node_id) == suffix]

    def publish(self, topic, payload):
        if not isinstance(payload, (bytes, str)):
            payload = json.dumps(payload)
        info = self._client.publish(topic, payload, qos=1)
        info.wait_for_publish(10)

    def write(self, node_id, params):
        self.publish(f"node/{node_id}/params/remote", params)


class Gate:
    """A TCP forwarder on 127.0.0.1 between the boards and the broker. close() ends
    every connection through it (a FIN on both sides) and refuses new ones; open()
    listens again on the same port."""

    def __init__(self, target):
        self.target = target
        self.port = free_port()
        self._lock = threading.Lock()
        self._socks = set()
        self._listener = None

    def open(self):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(16)
        s.settimeout(0.1)
        with self._lock:
            self._listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def close(self):
        with self._lock:
            s, self._listener = self._listener, None
            socks, self._socks = self._socks, set()
        if s:
            s.close()  # the accept loop sees it is no longer the listener and ends
        for c in socks:
            _end(c)

    def _accept(self, s):
        while True:
            with self._lock:
                if self._listener is not s:
                    return
            try:
                a, _ = s.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            a.settimeout(None)
            try:
                b = socket.create_connection(self.target, timeout=5)
                b.settimeout(None)
            except OSError:
                a.close()  # the broker refused: so does the gate
                continue
            with self._lock:
                if self._listener is not s:  # closed meanwhile
                    _end(a)
                    _end(b)
                    return
                self._socks.update((a, b))
            for src, dst in ((a, b), (b, a)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        with self._lock:
            self._socks.discard(src)
            self._socks.discard(dst)
        _end(src)
        _end(dst)


def _end(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def _suffix(topic, node_id):
    parts = topic.split("/")
    if parts[:2] == ["$aws", "rules"]:
        parts = parts[3:]
    if len(parts) > 2 and parts[0] == "node" and parts[1] == node_id:
        return "/".join(parts[2:])
    return None


class Board:
    """A simulated board in a child process; lines() and wait_line() read its log.

    backend: "cpython" (tools.sim.board) or "micropython" (tools.sim.mpboard on the
    MICROPYTHON binary; rainmaker.json's mqtt_port is then the board's radio relay).
    chip: which chip the simulated board is (--chip).
    ota: the OTA partition table (default) or, False, one factory app (--no-ota);
    app_version: the version of the app image its flash starts with (--app-version).
    The flash is root/flash (tools/sim/mpy/simworld/flash.py, bootloader.py).
    """

    def __init__(self, cloud, root, node_id, main=None, keepalive=None, topics=None, wifi=True, args=(),
                 backend="cpython", chip="esp32", ota=True, app_version=None):
        assert backend in BACKENDS, backend
        self.cloud = cloud
        self.root = Path(root)
        self.dir = self.root / "board"
        self.air = self.root / "air.json"
        self.node_id = node_id
        self.mac = node_id if len(node_id) == 12 else "240AC4000001"
        self.backend = backend
        self.chip = chip  # the simulated chip: "esp32", "esp32c3"... (tools/sim/mpy/simworld/chip.py)
        self.ota = ota
        self.app_version = app_version
        self.flash_dir = self.root / "flash"
        port = cloud.node_port
        self.relay = None
        if backend == "micropython":
            self.relay = (free_port(), (cloud.broker.host, port))
            port = self.relay[0]
        prepare_board(cloud.workdir, self.dir, self.air, node_id, port, keepalive=keepalive, wifi=wifi)
        if topics:
            cfg = json.loads((self.dir / "rainmaker.json").read_text())
            cfg["topics"] = topics
            write_json(self.dir / "rainmaker.json", cfg)
        if main:
            (self.dir / "main.py").write_text(Path(main).read_text())
        self.args = list(args)  # more tools.sim.board / tools.sim.mpboard options
        self.proc = None
        self._lines = []
        self._cond = threading.Condition()

    def start(self):
        mp = MICROPYTHON if self.backend == "micropython" else None
        cmd = board_command(self.dir, self.air, self.mac, mp, self.relay, self.chip, ota=self.ota,
                            app_version=self.app_version) + self.args
        self.proc = subprocess.Popen(cmd, cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        threading.Thread(target=self._pump, args=(self.proc,), daemon=True).start()
        return self

    def _pump(self, proc):
        for line in proc.stdout:
            with self._cond:
                self._lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def power_cycle(self):
        self.stop()
        self.start()

    def mark(self):
        with self._cond:
            return len(self._lines)

    def lines(self, since=0):
        with self._cond:
            return list(self._lines[since:])

    def wait_line(self, text, since=0, timeout=15):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self._lines[since:]:
                    if text in line:
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc and self.proc.poll() is not None and not left):
                    tail = "\n".join(self._lines[-25:])
                    raise AssertionError(f"board never logged {text!r} within {timeout} s; last lines:\n{tail}")
                self._cond.wait(min(left, 0.5))

    def count(self, text, since=0):
        return sum(text in line for line in self.lines(since))

    # The simulated world around the board (written by tests, read by the sim).
    def flash(self):
        """The board's flash as the host sees it (simworld.bootloader.Flash): partition files,
        otadata, flash().state(flash().get("ota_1")) -> "PENDING_VERIFY"..."""
        from tools.sim.mpy.simworld.bootloader import Flash

        return Flash(str(self.flash_dir), "ota" if self.ota else "factory", self.chip)

    def pins(self):
        from tools.sim.pins import Pins

        return Pins.for_board(self.dir)

    def led_duty(self, pin=2):
        pwm = self.pins().pwm(pin)
        return pwm["duty_u16"] if pwm else None

    def press_button(self, pin=0):
        p = self.pins()
        p.press(pin)
        time.sleep(0.2)
        p.release(pin)

    def set_air(self, up=True, password=SIM_PASSWORD):
        write_json(self.air, {"networks": [{"ssid": SIM_SSID, "password": password, "up": up,
                                            "rssi": -52, "channel": 6, "authmode": 3}]})
