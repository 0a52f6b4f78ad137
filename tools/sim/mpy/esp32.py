# `esp32` (esp32 port) for the MicroPython backend of the simulated board. The
# internal temperature sensor's function is the chip's: raw_temperature() on the
# ESP32, mcu_temperature() on the others (simworld/chip.py).
import gc as _gc
import _simhw
from simworld import chip as _chip
from simworld.chip import HEAP_DATA, HEAP_EXEC, WAKEUP_ALL_LOW, WAKEUP_ANY_HIGH

globals().update(_chip.temperature_functions(_simhw.chip))


def idf_heap_info(capabilities):
    return _chip.idf_heap_info(capabilities, _gc.mem_alloc())
