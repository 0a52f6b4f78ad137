# `os` for the MicroPython backend of the simulated board: MicroPython's own os,
# extended the documented way for extensible built-in modules (a file of the same
# name that imports the built-in with sys.path cleared), with the one function the
# unix port lacks and the esp32 port has: uname(), whose machine field names the
# board and its chip ("<board> with <MCU>"), here the simulated chip's.
import sys as _sys

_path = _sys.path
_sys.path = ()
try:
    from os import *  # noqa: F401,F403 - the built-in os
finally:
    _sys.path = _path
    del _path


_delay = int(getenv("MPBOARD_FS_DELAY") or 0)  # noqa: F405 - --fs-delay MS
if _delay:
    # Each change of the filesystem's metadata takes time, as a LittleFS
    # commit to flash does on the chip, so a power cut can land in one.
    import time as _time

    def _slow(fn):
        def f(*args):
            _time.sleep_ms(_delay)
            return fn(*args)

        return f

    rename = _slow(rename)  # noqa: F405
    remove = _slow(remove)  # noqa: F405
    mkdir = _slow(mkdir)  # noqa: F405
    rmdir = _slow(rmdir)  # noqa: F405


def uname():
    from collections import namedtuple
    from simworld import chip

    v = _sys.implementation.version
    release = "%d.%d.%d" % (v[0], v[1], v[2])
    name = getenv("MPBOARD_CHIP") or chip.DEFAULT  # noqa: F405 - from the built-in os
    t = namedtuple("uname_result", ("sysname", "nodename", "release", "version", "machine"))
    return t("esp32", "esp32", release, "v%s on %s" % (release, getenv("MPBOARD_DATE") or "unix"),
             chip.machine(chip.check(name)))
