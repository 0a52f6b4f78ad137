"""Boot a simulated ESP32 board on MicroPython itself (the unix port).

    python -m tools.sim.mpboard --micropython BIN --dir BOARD_DIR [--air AIR_FILE]
        [--mac AABBCCDDEEFF] [--pins FILE] [--pins-out FILE] [--heapsize 96K]
        [--relay PORT=HOST:TARGET]... [--chip esp32|esp32s2|esp32s3|esp32c3|esp32c6]
        [--flash DIR] [--no-ota] [--app-version VERSION] [--fs-delay MS]

The same firmware files as tools.sim.board, run by MicroPython's own interpreter:
its socket, ssl (mbedTLS), asyncio, json, hashlib, os, time. Only the hardware
modules are supplied, thin, on MICROPYPATH (tools/sim/mpy: network, machine, esp32,
ntptime, and os.py, which extends MicroPython's own os with the esp32 port's uname(),
absent from the unix port); they share the world model (tools/sim/mpy/simworld) with the CPython sim.

* cwd = BOARD_DIR, MICROPYPATH = tools/sim/mpy:BOARD_DIR:.frozen:BOARD_DIR/lib
  (the ESP32's order: the filesystem root, frozen modules, then /lib).
* A binary built by `python -m tools.firmware --port unix` has the hardware modules
  frozen in (tools/sim/mpy/manifest.py), as an ESP32 has its own in flash: they are
  then run from the binary (tools/sim/mpy leaves the path and the driver is run with
  -m), so their code takes no heap, unless a file in tools/sim/mpy is newer than
  the binary, which would then run an older simulator.
* Runs boot.py then main.py (tools/sim/mpy/mpboot.py) and prints a banner at every
  boot. A traceback from either ends the run with status 1 (the board is at the REPL).
* machine.reset()/soft_reset()/deepsleep() and a watchdog timeout end the interpreter
  at once (nothing of the firmware runs after them) and boot it again: the board
  folder persists, machine.reset_cause() tells why.
* --relay PORT=HOST:TARGET: the board's radio for its TCP connections. The firmware's
  sockets are real, so the board reaches HOST:TARGET through 127.0.0.1:PORT (name
  PORT in rainmaker.json's mqtt_port), and the relay applies the air's rules to them:
  a Wi-Fi loss stalls them, then resets them on the board's side while the broker's
  side stays half-open (tools/sim/relay.py).
* The flash (tools/sim/mpy/simworld/flash.py and bootloader.py, shared with the CPython sim): before
  every boot but a soft reset the launcher runs the bootloader over the partition
  files (OTA slot selection and rollback); esp32.Partition works on the same files.
* The provisioning server binds the access point's address, 127.0.0.1 here, on
  rainmaker.json's prov_port (default 80).
"""

import argparse
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile

from .board import add_flash_args, open_flash
from .mpy.simworld import chip as _chip
from .relay import Relay

HERE = os.path.dirname(os.path.abspath(__file__))
HW_DIR = os.path.join(HERE, "mpy")
DRIVER = os.path.join(HW_DIR, "mpboot.py")
CAUSES = ("PWRON_RESET", "HARD_RESET", "WDT_RESET", "DEEPSLEEP_RESET", "SOFT_RESET")


def default_micropython():
    """$MICROPYTHON, else ../shared/micropython/micropython32 beside the repository."""
    env = os.environ.get("MICROPYTHON")
    if env:
        return env if os.path.isfile(env) else None
    root = os.path.dirname(os.path.dirname(HERE))
    path = os.path.join(os.path.dirname(root), "shared", "micropython", "micropython32")
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


def _newest(folder):
    return max(os.path.getmtime(os.path.join(d, f)) for d, _, files in os.walk(folder)
               for f in files if f.endswith(".py"))


def frozen_hw(binary, log=None):
    """True if `binary` has the hardware modules frozen in and was built after
    the last change to any of them (see the module's docstring); log(text) is
    told when a build has them but is older."""
    with tempfile.TemporaryDirectory(prefix="mpboard-") as d:
        try:
            r = subprocess.run([binary, "-c", "import simworld.chip as m; print(m.__file__)"], cwd=d,
                               env=dict(os.environ, MICROPYPATH=".frozen"), capture_output=True, text=True,
                               timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return False
    # A frozen module's __file__ is its name in the manifest.
    if r.returncode or r.stdout.strip() != "simworld/chip.py":
        return False
    if os.path.getmtime(binary) < _newest(HW_DIR):
        if log:
            log("mpboard: %s has the simulated hardware frozen in, but %s changed after it was built: "
                "running the files (rebuild: python -m tools.firmware --port unix)" % (binary, HW_DIR))
        return False
    return True


def _relay_arg(text):
    port, _, target = text.partition("=")
    host, _, tport = target.rpartition(":")
    try:
        return int(port), (host or "127.0.0.1", int(tport))
    except ValueError:
        raise argparse.ArgumentTypeError("expected PORT=HOST:PORT, e.g. 18883=127.0.0.1:8883")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m tools.sim.mpboard", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--micropython", default=default_micropython(),
                   help="the unix-port binary (default $MICROPYTHON or ../shared/micropython/micropython32)")
    p.add_argument("--dir", required=True, help="board filesystem root")
    p.add_argument("--air", help="Wi-Fi environment JSON (default BOARD_DIR/../air.json)")
    p.add_argument("--mac", help="STA MAC, 12 hex digits (default derived from --dir)")
    p.add_argument("--pins", help="input levels JSON (default BOARD_DIR/../pins.json)")
    p.add_argument("--pins-out", help="output state JSON (default BOARD_DIR/../pins_out.json)")
    p.add_argument("--heapsize", help="MicroPython GC heap, e.g. 96K (default: the binary's)")
    p.add_argument("--relay", action="append", type=_relay_arg, default=[], metavar="PORT=HOST:TARGET",
                   help="reach HOST:TARGET through the board's radio at 127.0.0.1:PORT (repeatable)")
    p.add_argument("--chip", default="esp32", choices=sorted(_chip.CHIPS),
                   help="the chip: os.uname().machine, the esp32 module's temperature function, "
                        "the valid GPIOs (default esp32)")
    add_flash_args(p)
    return p.parse_args(argv)


def _die_with_parent():
    # The interpreter must not outlive the launcher (a test's kill is a power cut).
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Launcher:
    def __init__(self, args):
        self.args = args
        self.board = os.path.realpath(args.dir)
        parent = os.path.dirname(self.board)
        self.air = os.path.abspath(args.air) if args.air else os.path.join(parent, "air.json")
        self.pins = os.path.abspath(args.pins) if args.pins else os.path.join(parent, "pins.json")
        self.pins_out = os.path.abspath(args.pins_out) if args.pins_out else os.path.join(parent, "pins_out.json")
        if args.mac:
            self.mac = args.mac.replace(":", "").upper()
        else:
            from .runtime import _default_mac

            self.mac = _default_mac(self.board).hex().upper()
        self.ctl = tempfile.mkdtemp(prefix="mpboard-")
        self.boot = 0
        self.ended = set()  # boots whose interpreter has ended
        self.proc = None
        self.relays = []
        self.flash = None  # opened in run()
        self.hw_frozen = frozen_hw(args.micropython, print)

    def alive(self, boot):
        return boot not in self.ended

    def start_relays(self):
        for port, target in self.args.relay:
            self.relays.append(Relay(port, target, os.path.join(self.ctl, "link"), self.alive).start())

    def path(self):
        hw = [] if self.hw_frozen else [HW_DIR]
        return hw + [self.board, ".frozen", os.path.join(self.board, "lib")]

    def command(self):
        cmd = [self.args.micropython]
        if self.args.heapsize:
            cmd += ["-X", "heapsize=" + self.args.heapsize]
        return cmd + (["-m", "mpboot"] if self.hw_frozen else [DRIVER])

    def env(self, cause):
        env = dict(os.environ)
        env["MICROPYPATH"] = ":".join(self.path())
        env.update(MPBOARD_CTL=self.ctl, MPBOARD_AIR=self.air, MPBOARD_PINS=self.pins,
                   MPBOARD_PINS_OUT=self.pins_out, MPBOARD_MAC=self.mac, MPBOARD_BOOT=str(self.boot),
                   MPBOARD_RESET_CAUSE=cause, MPBOARD_CHIP=self.args.chip,
                   MPBOARD_FLASH=self.flash.folder, MPBOARD_LAYOUT=self.flash.layout,
                   MPBOARD_RUNNING=self.flash.running, MPBOARD_FS_DELAY=str(self.args.fs_delay))
        return env

    def run(self):
        cmd = self.command()
        try:
            self.flash = open_flash(self.args, self.board, self.args.chip)
        except ValueError as e:
            print("mpboard: %s" % e, file=sys.stderr)
            return 2
        cause = "PWRON_RESET"
        reset_file = os.path.join(self.ctl, "reset")
        while True:
            self.boot += 1
            # The bootloader runs at every reset but a soft one (only the VM restarts).
            if (cause != "SOFT_RESET" or self.flash.running is None) and self.flash.boot(print) is None:
                print("mpboard: no bootable app in the flash; the chip would reset forever (exiting with status 3)")
                return 3
            try:
                os.unlink(reset_file)
            except FileNotFoundError:
                pass
            with open(os.path.join(self.ctl, "link.tmp"), "w") as f:
                f.write("%d 0 0 1000\n" % self.boot)
            os.replace(os.path.join(self.ctl, "link.tmp"), os.path.join(self.ctl, "link"))
            sys.stdout.flush()
            self.proc = subprocess.Popen(cmd, cwd=self.board, env=self.env(cause), preexec_fn=_die_with_parent)
            rc = self.proc.wait()
            self.ended.add(self.boot)
            try:
                with open(reset_file) as f:
                    cause = f.read().strip()
            except FileNotFoundError:
                cause = None
            if cause in CAUSES:
                continue  # machine.reset() or the watchdog: boot again
            return rc if rc >= 0 else 128 - rc

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for r in self.relays:
            r.stop()
        shutil.rmtree(self.ctl, ignore_errors=True)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if not args.micropython or not os.path.isfile(args.micropython):
        print("mpboard: no MicroPython binary: give --micropython BIN or set MICROPYTHON", file=sys.stderr)
        return 2
    args.micropython = os.path.abspath(args.micropython)  # the board runs in its own folder
    if not os.path.isdir(args.dir):
        print("mpboard: board folder %s does not exist" % args.dir, file=sys.stderr)
        return 2
    try:
        sys.stdout.reconfigure(line_buffering=True)
    except AttributeError:
        pass
    launcher = Launcher(args)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        launcher.start_relays()
        return launcher.run()
    except KeyboardInterrupt:
        # Ctrl-C reached the interpreter too (same process group): let it print, then go
        p = launcher.proc
        if p is not None:
            try:
                p.wait(2)
            except subprocess.TimeoutExpired:
                pass
        return 0
    finally:
        launcher.stop()


if __name__ == "__main__":
    sys.exit(main())

