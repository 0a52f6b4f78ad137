# `esp32` (esp32 port) for the MicroPython backend of the simulated board. The
# internal temperature sensor's function is the chip's: raw_temperature() on the
# ESP32, mcu_temperature() on the others (simworld/chip.py). Partition is the
# shared flash model's (simworld/flash.py) over the partition files the launcher's
# bootloader booted from; it is loaded on first use, so firmware that never touches
# partitions does not pay for it in heap.
import gc as _gc
import _simhw
from simworld import chip as _chip
from simworld.chip import HEAP_DATA, HEAP_EXEC, WAKEUP_ALL_LOW, WAKEUP_ANY_HIGH

globals().update(_chip.temperature_functions(_simhw.chip))


def idf_heap_info(capabilities):
    return _chip.idf_heap_info(capabilities, _gc.mem_alloc())


def __getattr__(name):
    if name != "Partition":
        raise AttributeError(name)
    import os
    _gc.collect()  # room to compile the model (on the chip this is C in flash)
    from simworld import flash

    def panic(text):
        print(text)
        print("Rebooting...")
        _simhw.hard_reset("HARD_RESET")

    fl = flash.Flash(os.getenv("MPBOARD_FLASH"), os.getenv("MPBOARD_LAYOUT"), _simhw.chip,
                     running=os.getenv("MPBOARD_RUNNING"), panic=panic)
    cls = flash.partition_class(fl)
    globals()["Partition"] = cls
    return cls
