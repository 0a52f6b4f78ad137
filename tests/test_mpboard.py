"""The MicroPython backend of the simulated board (tools/sim/mpboard.py): the unix
port runs the board folder with only the hardware modules supplied (tools/sim/mpy),
resets boot it again, and its radio relay applies the air's rules to TCP.

Skipped without a MicroPython binary ($MICROPYTHON, default
../shared/micropython/micropython32).
"""
import errno
import os
import json
import socket
import subprocess
import sys
import threading
import time

import pytest

from tools.sim import Air, Pins
from tools.sim.mpboard import default_micropython
from tools.sim.relay import free_port

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent
MICROPYTHON = default_micropython()
pytestmark = pytest.mark.skipif(not MICROPYTHON, reason="no MicroPython unix-port binary (set MICROPYTHON)")
HOME = ("HomeNet", "secret123")


def wait_until(pred, timeout=3.0, step=0.02):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


class Peer:
    """A TCP server on 127.0.0.1 that echoes and records what happens to each connection."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.events = []
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        while True:
            try:
                data = c.recv(100)
            except OSError as e:
                self.events.append(("reset", e.errno))
                return
            if not data:
                self.events.append(("eof",))
                return
            self.events.append(("data", data))
            try:
                c.sendall(b"echo:" + data)
            except OSError:
                return

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


class Run:
    """tools.sim.mpboard in a child process; expect() waits for a line of its output."""

    def __init__(self, board_dir, *args):
        cmd = [sys.executable, "-u", "-m", "tools.sim.mpboard", "--micropython", MICROPYTHON,
               "--dir", str(board_dir), "--mac", "240AC4123456"] + list(args)
        self.p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines = []
        self.cond = threading.Condition()
        self.seen = 0
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.p.stdout:
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()

    def expect(self, text, timeout=10):
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                for i in range(self.seen, len(self.lines)):
                    if text in self.lines[i]:
                        self.seen = i + 1
                        return self.lines[i]
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError("no %r in:\n%s" % (text, "".join(self.lines)))
                self.cond.wait(min(left, 0.2))

    def output(self):
        with self.cond:
            return "".join(self.lines)

    def stop(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()


def test_boots_resets_and_keeps_the_folder(tmp_path):
    bd = tmp_path / "board"
    bd.mkdir()
    (bd / "boot.py").write_text("print('boot.py ran')\nGREETING = 'hi'\n")
    (bd / "main.py").write_text(
        "import machine, os, sys\n"
        "print('main.py', GREETING, 'cause', machine.reset_cause(), sys.implementation.name)\n"
        "with open('count.txt', 'a') as f:\n    f.write('x')\n"
        "n = len(open('count.txt').read())\n"
        "if n == 1:\n"
        "    machine.reset()\n"
        "if n == 2:\n"
        "    machine.WDT(timeout=200)\n"
        "    while True:\n        pass  # starves the watchdog\n"
        "print('third boot, count', open('count.txt').read())\n"
        "raise OSError(113)\n")
    r = Run(bd)
    try:
        rc = r.p.wait(30)
    finally:
        r.stop()
    wait_until(lambda: "Type \"help()\"" in r.output())
    out = r.output()
    assert out.count("MicroPython v1.") == 3 + 1  # three boot banners, one REPL banner
    assert "main.py hi cause 1 micropython" in out and "main.py hi cause 2 micropython" in out
    assert "task_wdt: Task watchdog got triggered" in out and "main.py hi cause 3 micropython" in out
    assert "third boot, count xxx" in out
    assert 'File "main.py", line 13, in <module>' in out and "OSError: [Errno 113] EHOSTUNREACH" in out
    assert "mpboot" not in out  # the driver's frame is not shown
    assert "main.py raised OSError; board is at the REPL" in out
    assert rc == 1


def test_wifi_relay_button_and_a_dead_link(tmp_path):
    """Wi-Fi from the air, TCP through the radio relay, a button IRQ, then the network
    goes down: isconnected() turns False first, the board's socket is reset after
    abort_after_ms, and the peer is told nothing."""
    peer = Peer()
    bd = tmp_path / "board"
    bd.mkdir()
    air = Air(tmp_path / "air.json")
    air.set_network(*HOME)
    air.set_option("abort_after_ms", 800)
    pins = Pins.for_board(bd)
    relay = free_port()
    (bd / "cfg.json").write_text(json.dumps({"port": relay}))
    (bd / "main.py").write_text('''
import asyncio, json, network, time
from machine import Pin
cfg = json.loads(open("cfg.json").read())
w = network.WLAN(network.STA_IF)
w.active(True)
w.connect("HomeNet", "secret123")
while w.status() != network.STAT_GOT_IP:
    time.sleep_ms(20)
print("wifi up", w.ifconfig()[0], network.WLAN(network.AP_IF).config("mac"))
led = Pin(2, Pin.OUT, value=0)
flag = asyncio.ThreadSafeFlag()
Pin(0, Pin.IN, Pin.PULL_UP).irq(lambda p: flag.set(), Pin.IRQ_FALLING)

async def main():
    r, s = await asyncio.open_connection("127.0.0.1", cfg["port"])
    s.write(b"hi")
    await s.drain()
    print("got", await r.read(20))
    await flag.wait()
    led.on()
    print("button")
    while w.isconnected():
        await asyncio.sleep_ms(10)
    t0 = time.ticks_ms()
    print("link down")
    s.write(b"lost")  # a dead radio: goes nowhere
    await s.drain()
    try:
        print("read", await asyncio.wait_for(r.read(20), 3))
    except OSError as e:
        print("socket error", e.errno, "after", time.ticks_diff(time.ticks_ms(), t0))
    await s.wait_closed()
    while not w.isconnected():  # the driver joins again when the network returns
        await asyncio.sleep_ms(20)
    r, s = await asyncio.open_connection("127.0.0.1", cfg["port"])
    s.write(b"again")
    await s.drain()
    print("got", await r.read(20))
    await s.wait_closed()
    print("done")
    time.sleep(60)

asyncio.run(main())
''')
    r = Run(bd, "--air", str(tmp_path / "air.json"), "--relay", "%d=127.0.0.1:%d" % (relay, peer.port))
    try:
        assert "b'$\\n\\xc4\\x124W'" in r.expect("wifi up 192.168.1.")  # AP MAC = STA MAC + 1
        r.expect("got b'echo:hi'")
        pins.press(0)
        r.expect("button")
        assert wait_until(lambda: pins.output(2) == 1)
        air.drop(HOME[0])
        r.expect("link down")
        line = r.expect("socket error")
        assert "socket error %d" % errno.ECONNRESET in line
        assert 600 <= int(line.split("after ")[1]) <= 2500  # abort_after_ms, not at once
        air.restore(HOME[0])
        r.expect("got b'echo:again'")
        r.expect("done")
        # The first connection: the peer got "hi" and never "lost", and no FIN or RST:
        # it is still open from its side (a keep-alive would find it dead).
        assert peer.events[0] == ("data", b"hi")
        assert ("data", b"lost") not in peer.events
        assert wait_until(lambda: len(peer.events) == 3)
        assert peer.events[1:] == [("data", b"again"), ("eof",)]  # the second one closed normally
    finally:
        r.stop()
        peer.close()


def test_no_ip_no_connection_and_reset_leaves_peer_half_open(tmp_path):
    peer = Peer()
    bd = tmp_path / "board"
    bd.mkdir()
    Air(tmp_path / "air.json").set_network(*HOME)
    relay = free_port()
    (bd / "cfg.json").write_text(json.dumps({"port": relay}))
    (bd / "main.py").write_text('''
import json, network, socket, time, machine, os
port = json.loads(open("cfg.json").read())["port"]
def talk(msg):
    s = socket.socket()
    s.connect(socket.getaddrinfo("127.0.0.1", port)[0][-1])
    s.send(msg)
    data = s.recv(20)
    return s, data
if machine.reset_cause() == machine.HARD_RESET:
    print("rebooted")
    time.sleep(60)
try:
    talk(b"no ip")
    print("talked without Wi-Fi")
except OSError as e:
    print("no ip: error", e.errno)
w = network.WLAN(network.STA_IF)
w.active(True)
w.connect("HomeNet", "secret123")
while not w.isconnected():
    time.sleep_ms(20)
s, data = talk(b"hello")
print("got", data)
machine.reset()  # the connection vanishes with the board
''')
    r = Run(bd, "--air", str(tmp_path / "air.json"), "--relay", "%d=127.0.0.1:%d" % (relay, peer.port))
    try:
        assert "error %d" % errno.ECONNRESET in r.expect("no ip")
        r.expect("got b'echo:hello'")
        r.expect("rebooted")
        time.sleep(0.6)  # past the relay's wait for the board's FIN or its end
        assert peer.events == [("data", b"hello")]  # no FIN from a board that was reset
    finally:
        r.stop()
        peer.close()


@pytest.mark.parametrize("delay", [0, 60])
def test_fs_delay_slows_every_filesystem_change(tmp_path, delay):
    # --fs-delay (MPBOARD_FS_DELAY): rename, remove, mkdir and rmdir each take
    # that long; reads and writes do not.
    import os

    code = ("import os, time\nt = time.ticks_ms()\nos.mkdir('d')\nopen('d/f', 'w').write('x')\n"
            "os.rename('d/f', 'd/g')\nos.remove('d/g')\nos.rmdir('d')\n"
            "print('took', time.ticks_diff(time.ticks_ms(), t), os.listdir('.'))\n")
    env = dict(os.environ, MICROPYPATH=str(ROOT / "tools" / "sim" / "mpy"), MPBOARD_FS_DELAY=str(delay))
    r = subprocess.run([MICROPYTHON, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    took = r.stdout.split()
    assert took[0] == "took" and took[2] == "[]", r.stdout + r.stderr
    assert (4 * delay <= int(took[1]) < 4 * delay + 1000) if delay else int(took[1]) < 50


def fake_binary(folder, prints, status=0):
    # Stands in for `micropython -c ...` in frozen_hw's probe: what it prints
    # for the frozen simworld.chip's __file__.
    path = folder / "micropython"
    path.write_text("#!/bin/sh\necho '%s'\nexit %d\n" % (prints, status))
    path.chmod(0o755)
    return path


def test_hardware_modules_run_frozen_only_from_a_build_that_has_them_and_is_newer(tmp_path):
    from tools.sim import mpboard

    newest = mpboard._newest(mpboard.HW_DIR)
    said = []
    frozen = fake_binary(tmp_path, "simworld/chip.py")
    assert mpboard.frozen_hw(str(frozen), said.append) and not said
    os.utime(frozen, (newest - 60, newest - 60))  # built before the last change to tools/sim/mpy
    assert not mpboard.frozen_hw(str(frozen), said.append)
    assert len(said) == 1 and "changed after it was built: running the files" in said[0]
    assert "python -m tools.firmware --port unix" in said[0]
    (tmp_path / "b").mkdir()
    files = fake_binary(tmp_path / "b", "%s/simworld/chip.py" % mpboard.HW_DIR)  # found on a path: not frozen
    assert not mpboard.frozen_hw(str(files))
    assert not mpboard.frozen_hw(str(fake_binary(tmp_path / "b", "", status=1)))  # no such module
    assert not mpboard.frozen_hw(MICROPYTHON)  # the stock binary: nothing of the board frozen in


def test_frozen_hardware_leaves_the_path_and_the_driver_runs_from_the_binary(tmp_path):
    from tools.sim import mpboard

    board = tmp_path / "board"
    board.mkdir()
    frozen = str(fake_binary(tmp_path, "simworld/chip.py"))
    lib = [str(board), ".frozen", str(board / "lib")]
    for binary, path, driver in ((frozen, lib, ["-m", "mpboot"]),
                                 (MICROPYTHON, [mpboard.HW_DIR] + lib, [mpboard.DRIVER])):
        launcher = mpboard.Launcher(mpboard.parse_args(["--micropython", binary, "--dir", str(board),
                                                        "--heapsize", "64K"]))
        try:
            assert launcher.hw_frozen == (binary == frozen)
            assert launcher.path() == path
            assert launcher.command() == [binary, "-X", "heapsize=64K"] + driver
        finally:
            launcher.stop()


def test_the_driver_run_with_dash_m_gives_the_board_the_esp32_path(tmp_path):
    # How a build with the hardware frozen runs it: `-m mpboot` puts '' first,
    # which the driver drops so that the board folder comes first, as with a script.
    board = tmp_path / "board"
    board.mkdir()
    (board / "main.py").write_text("import sys\nprint('PATH', sys.path)\n")
    hw = str(ROOT / "tools" / "sim" / "mpy")
    env = dict(os.environ, MICROPYPATH=":".join([hw, str(board), ".frozen", str(board / "lib")]),
               MPBOARD_CHIP="esp32c3")
    r = subprocess.run([MICROPYTHON, "-m", "mpboot"], cwd=board, env=env, capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PATH %r" % [hw, str(board), ".frozen", str(board / "lib")] in r.stdout, r.stdout
    assert "ESP32C3" in r.stdout.splitlines()[0]  # the banner's chip, from the os.py beside it
