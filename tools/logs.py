"""Show what a board prints on its serial console (`make logs PORT=...`).

The agent logs one line per event ("rm I mqtt: online as ..."), so this is
the first place to look when a node does not come online. The port is only
read: the running app is not interrupted, unless --reset asks for a soft
reset to see the log from boot. Ctrl-C (or --seconds) ends it.

CLI: ``python -m tools.logs --help``.
"""
import argparse
import sys
import time

from tools.transport import diagnose_port


def follow(port, baud=115200, seconds=None, reset=False, out=sys.stdout):
    import serial

    try:
        ser = serial.Serial(port, baud, timeout=0.2, exclusive=True)
    except (serial.SerialException, OSError):
        raise SystemExit(f"error: {diagnose_port(port)}")
    try:
        if reset:
            # Ctrl-C twice stops a running app, Ctrl-B makes sure we are at
            # the friendly REPL, Ctrl-D soft-resets: boot.py, then main.py.
            ser.write(b"\r\x03\x03\x02")
            time.sleep(0.2)
            ser.reset_input_buffer()
            ser.write(b"\x04")
        end = None if seconds is None else time.monotonic() + seconds
        while end is None or time.monotonic() < end:
            data = ser.read(256)
            if data:
                out.write(data.decode("utf-8", "replace").replace("\r", ""))
                out.flush()
    except KeyboardInterrupt:
        pass
    except (serial.SerialException, OSError) as e:
        raise SystemExit(f"error: lost the board on {port} ({e}); check the cable")
    finally:
        try:
            # Keep DTR/RTS from resetting ESP32 boards on close, as mpremote does.
            ser.rts = False
            ser.dtr = False
        except (OSError, serial.SerialException):
            pass
        ser.close()


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m tools.logs",
        description="Print the board's serial output (the agent's log lines) until Ctrl-C. "
                    "For the simulated board, the log is in the terminal that runs make sim.")
    p.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB0")
    p.add_argument("--baud", type=int, default=115200, help="serial speed (default: %(default)s)")
    p.add_argument("--reset", action="store_true", help="soft-reset first to see the log from boot")
    p.add_argument("--seconds", type=float, help="stop after this long (default: until Ctrl-C)")
    args = p.parse_args(argv)
    follow(args.port, args.baud, args.seconds, args.reset)
    return 0


if __name__ == "__main__":
    sys.exit(main())
