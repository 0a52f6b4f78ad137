"""Simulated ESP32 board for running the MicroPython firmware under CPython.

    python -m tools.sim.board --dir BOARD_DIR [--air AIR] [--mac AABBCCDDEEFF] ...

In-process use (tests): ``rt = Runtime(board_dir, ...).install()``; the
firmware-facing modules are ``rt.modules[name]``; ``rt.import_module("x")`` imports a
firmware module from BOARD_DIR under the board's builtins; ``rt.uninstall()`` undoes it.
See tools/sim/README.md.
"""

from .air import Air
from .pins import Pins
from .runtime import Runtime

__all__ = ["Air", "Pins", "Runtime"]
