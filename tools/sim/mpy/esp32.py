# `esp32` (esp32 port) for the MicroPython backend of the simulated board.
import gc as _gc
from simworld import chip as _chip
from simworld.chip import HEAP_DATA, HEAP_EXEC, WAKEUP_ALL_LOW, WAKEUP_ANY_HIGH, raw_temperature, mcu_temperature


def idf_heap_info(capabilities):
    return _chip.idf_heap_info(capabilities, _gc.mem_alloc())
