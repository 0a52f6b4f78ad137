# The simulated world both board backends share: the air (Wi-Fi networks), the
# ESP32 Wi-Fi driver's rules, the pin files. Written in the subset of Python that
# CPython and MicroPython both run, with no I/O beyond reading/writing the world's
# JSON files: the CPython sim imports it as tools.sim.mpy.simworld (tools/sim/
# mp_network.py, mp_machine.py), the MicroPython backend as simworld (tools/sim/mpy/
# network.py, machine.py). Clock, locks and callbacks are handed in by each backend.
import os


def stamp(path):
    """What tells a new version of a world file from the one read last, without
    reading it: (inode, size, mtime), or None if there is no file. The world's
    writers replace these files whole (a temporary file renamed over them), so
    each new version is a new inode. Polled every 50 ms, this keeps the board's
    heap from a fresh copy of the file each time: an ESP32's Wi-Fi driver and
    GPIO hardware take nothing from it."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st[1], st[6], st[8])
