# Boot driver of the MicroPython backend (python -m tools.sim.mpboard runs the unix
# port on this file with the board folder as the current directory): boot.py then
# main.py, in one __main__ namespace, as ports/esp32 does. An exception ends the run
# with status 1 ("the board is at the REPL"); machine.reset() never comes back here
# (the launcher boots the board again).
import sys
import os
import io

_BANNER = "MicroPython v%d.%d.%d (simulated board on the unix port, %s) on %s; %s"
_REPL = 'MicroPython v%d.%d.%d on %s; %s\nType "help()" for more information.\n>>> '


def _version():
    v = sys.implementation.version
    return (v[0], v[1], v[2])


def _print_exception(e):
    # MicroPython's own traceback, without this driver's frame.
    buf = io.StringIO()
    sys.print_exception(e, buf)
    out = [line for line in buf.getvalue().split("\n")
           if not (line.lstrip().startswith('File "') and line.split('"')[1] == __file__)]
    print("\n".join(out).rstrip("\n"))


def main():
    # The unix port prepends the script's folder, which is first on MICROPYPATH
    # too, or '' when the driver is run frozen (-m): the board folder follows.
    if len(sys.path) > 1 and sys.path[0] in ("", sys.path[1]):
        sys.path.pop(0)
    board = os.getcwd()
    date = os.getenv("MPBOARD_DATE") or "unix"
    machine = os.uname().machine  # the simulated chip's (os.py beside this file)
    print(_BANNER % (_version() + (board, date, machine)))
    ns = {"__name__": "__main__"}
    for name in ("boot.py", "main.py"):
        try:
            os.stat(name)
        except OSError:
            continue
        ns["__file__"] = name
        try:
            with open(name) as f:
                code = compile(f.read(), name, "exec")
            exec(code, ns)
            code = None
        except SystemExit:
            break
        except KeyboardInterrupt as e:
            _print_exception(e)
            print(_REPL % (_version() + (date, machine)))
            sys.exit(0)
        except BaseException as e:
            _print_exception(e)
            print("sim: %s raised %s; board is at the REPL (exiting with status 1)" % (name, type(e).__name__))
            print(_REPL % (_version() + (date, machine)))
            sys.exit(1)
    print(_REPL % (_version() + (date, machine)))


main()
