"""Boot a simulated ESP32 board whose filesystem is a host folder.

    python -m tools.sim.board --dir BOARD_DIR [--air AIR_FILE] [--mac AABBCCDDEEFF]
                              [--pins FILE] [--pins-out FILE] [--ticks-wrap SECONDS]
                              [--rtc-synced] [--fs-size BYTES] [--port-map 80=18080]
                              [--chip esp32|esp32s2|esp32s3|esp32c3|esp32c6] [--no-strict]
                              [--flash DIR] [--no-ota] [--app-version VERSION] [--fs-delay MS]

Prints a banner, runs boot.py then main.py (in one __main__ namespace, as MicroPython
does) with the current directory at BOARD_DIR, and prints everything line-buffered on
stdout. A traceback from boot.py/main.py is printed MicroPython-style, then the board
"stays at the REPL" by exiting with status 1. machine.reset() re-executes this command.
Every boot but a soft reset first runs the simulated bootloader over the board's flash
(tools/sim/mpy/simworld/bootloader.py): it picks the app slot, with OTA rollback.
"""

import argparse
import os
import sys

from . import runtime as _r
from .mpy.simworld import chip
from .mpy.simworld import bootloader as _boot


def _port_map(items):
    out = {}
    for it in items or []:
        a, _, b = it.partition("=")
        out[int(a)] = int(b)
    return out


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m tools.sim.board", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", required=True, help="board filesystem root")
    p.add_argument("--air", help="Wi-Fi environment JSON (default BOARD_DIR/../air.json)")
    p.add_argument("--mac", help="STA MAC, 12 hex digits (default derived from --dir)")
    p.add_argument("--pins", help="input levels JSON (default BOARD_DIR/../pins.json)")
    p.add_argument("--pins-out", help="output state JSON (default BOARD_DIR/../pins_out.json)")
    p.add_argument("--ticks-wrap", type=float, default=60.0,
                   help="seconds after boot when ticks_ms()/ticks_us() first wrap (default 60)")
    p.add_argument("--rtc-synced", action="store_true",
                   help="start with the RTC set from the host clock (default: 2000-01-01 on power-on)")
    p.add_argument("--fs-size", type=int, default=None,
                   help="flash filesystem size for statvfs (default: the vfs partition's, 960 KiB on the "
                        "OTA table, 2 MiB with --no-ota)")
    p.add_argument("--port-map", action="append", metavar="BOARD=HOST",
                   help="map a port the firmware binds to a host port (repeatable)")
    p.add_argument("--chip", default="esp32", choices=sorted(chip.CHIPS),
                   help="the chip: os.uname().machine, the esp32 module's temperature function, "
                        "the valid GPIOs (default esp32)")
    add_flash_args(p)
    p.add_argument("--no-strict", action="store_true",
                   help="let firmware import any CPython module and use CPython-only names")
    return p.parse_args(argv)


def add_flash_args(p):
    """The flash options both backends take."""
    p.add_argument("--flash", metavar="DIR",
                   help="the flash's partitions, one file each (default BOARD_DIR/../flash)")
    p.add_argument("--no-ota", action="store_true",
                   help="MicroPython's default partition table, one factory app, instead of the "
                        "OTA build's two app slots and otadata")
    p.add_argument("--app-version", default="1.0.0",
                   help="version in the app image a new flash folder starts with (default 1.0.0)")
    p.add_argument("--fs-delay", type=int, default=0, metavar="MS",
                   help="each rename, remove, mkdir and rmdir in the board's filesystem takes MS ms, as a "
                        "flash commit does on the chip (default 0), so a test's power cut can land in one")


def open_flash(args, board_dir, chip_name):
    """The board's flash (a new folder is a freshly flashed board)."""
    folder = os.path.abspath(args.flash) if args.flash else os.path.join(os.path.dirname(board_dir), "flash")
    fl = _boot.Flash(folder, "factory" if args.no_ota else "ota", chip_name)
    fl.prepare(args.app_version)
    return fl


def bootloader(fl, soft):
    """Run the bootloader unless this is a soft reset (the app keeps running then); the
    app slot that runs is carried to the next process in SIM_RUNNING."""
    running = os.environ.get("SIM_RUNNING") if soft else None
    if running and fl.get(running):
        fl.running = running
    else:
        running = fl.boot(print)
    if running:
        os.environ["SIM_RUNNING"] = running
    return running


def banner(board_dir, machine=_r.MACHINE):
    return "MicroPython v%s (simulated board, %s) on %s; %s" % (
        _r.VERSION, board_dir, _r.VERSION_DATE, machine)


def repl_banner(machine=_r.MACHINE):
    return ('MicroPython v%s on %s; %s\nType "help()" for more information.\n>>> '
            % (_r.VERSION, _r.VERSION_DATE, machine))


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    board_dir = os.path.realpath(args.dir)
    if not os.path.isdir(board_dir):
        print("sim: board folder %s does not exist" % board_dir, file=sys.stderr)
        return 2
    try:
        sys.stdout.reconfigure(line_buffering=True)
        sys.stderr.reconfigure(line_buffering=True)
    except AttributeError:
        pass
    sys.dont_write_bytecode = True  # no __pycache__ in the board's flash

    cause = _r.reset_cause_from_env()
    try:
        fl = open_flash(args, board_dir, args.chip)
    except ValueError as e:
        print("sim: %s" % e, file=sys.stderr)
        return 2
    if bootloader(fl, cause == _r.SOFT_RESET) is None:
        print("sim: no bootable app in the flash; the chip would reset forever (exiting with status 3)")
        return 3
    rtc = _r.rtc_from_env()
    if rtc is None and args.rtc_synced:
        rtc = _r.host_rtc()
    rt = _r.Runtime(board_dir, air=args.air, mac=args.mac, pins=args.pins, pins_out=args.pins_out,
                    ticks_wrap_s=args.ticks_wrap, rtc=rtc, strict=not args.no_strict,
                    fs_size=args.fs_size or fl.get("vfs")[4], port_map=_port_map(args.port_map), reset_cause=cause,
                    argv=argv, chip=args.chip, flash=fl, fs_delay_ms=args.fs_delay)
    rt.install()
    print(banner(board_dir, rt.machine))

    os.chdir(board_dir)
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    rest = [p for p in sys.path if p not in ("", here, os.getcwd())]
    sys.path[:] = [board_dir, os.path.join(board_dir, "lib")] + rest

    ns = {"__name__": "__main__"}
    for name in ("boot.py", "main.py"):
        path = os.path.join(board_dir, name)
        if not os.path.isfile(path):
            continue
        ns["__file__"] = name
        try:
            rt.exec_file(path, ns, filename=name)
        except SystemExit:
            break
        except KeyboardInterrupt as e:
            rt.print_exception(e)
            print(repl_banner(rt.machine))
            return 0
        except BaseException as e:
            rt.print_exception(e)
            print("sim: %s raised %s; board is at the REPL (exiting with status 1)"
                  % (name, type(e).__name__))
            print(repl_banner(rt.machine))
            return 1
    print(repl_banner(rt.machine))
    return 0


if __name__ == "__main__":
    sys.exit(main())
