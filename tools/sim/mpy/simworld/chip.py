# `esp32` for the esp32 port: constants, the internal temperature sensor, and
# plausible IDF heap figures for an ESP32 without PSRAM running Wi-Fi (not a
# measure of anything). Shared by both backends (CPython and MicroPython subset).
HEAP_DATA = 4
HEAP_EXEC = 1
WAKEUP_ALL_LOW = False
WAKEUP_ANY_HIGH = True


def idf_heap_info(capabilities, gc_alloc):
    """(total, free, largest free block, minimum free ever) per IDF heap region."""
    free = 60000 - (gc_alloc // 8)
    if capabilities & 1 and not capabilities & 4:
        return [(15072, 7120, 7072, 6980), (113840, 0, 0, 0)]
    return [(7280, 4, 4, 4), (16648, 3104, 3072, 2940), (94608, free, 31744, free - 9000),
            (15072, 7120, 7072, 6980), (113840, 0, 0, 0)]


def raw_temperature():
    return 106  # degrees F, as the ESP32's sensor reports them


def mcu_temperature():
    return 41
