# The chip of the simulated board, and `esp32`'s numbers. Chips are named as
# ESP-IDF's CONFIG_IDF_TARGET ("esp32", "esp32c3"...). Per chip, from MicroPython's
# esp32 port for the chip's generic board:
#   * MCU name: os.uname().machine is "<board name> with <MCU name>";
#   * valid GPIOs: ports/esp32/machine_pin.h, without the pins wired to the SPI
#     flash (which MicroPython accepts on the ESP32 and C3, and using them hangs
#     the chip), nor those the generic build gives to USB-Serial/JTAG or PSRAM;
#   * input-only GPIOs (machine_pin.c: from 34 on the ESP32, 46 on the S2);
#   * the internal temperature sensor (modesp32.c): raw_temperature() (degrees F,
#     uncalibrated) on the ESP32 only; mcu_temperature() (degrees C, an int) on the
#     others.
# The IDF heap figures are plausible numbers for an ESP32 without PSRAM running
# Wi-Fi (not a measure of anything). Shared by both backends (CPython and
# MicroPython subset).
HEAP_DATA = 4
HEAP_EXEC = 1
WAKEUP_ALL_LOW = False
WAKEUP_ANY_HIGH = True
DEFAULT = "esp32"


def _r(a, b):
    return list(range(a, b + 1))


# chip: (MCU name, valid GPIOs, input-only GPIOs)
CHIPS = {
    "esp32": ("ESP32", _r(0, 5) + _r(12, 19) + [21, 22, 23, 25, 26, 27] + _r(32, 39), _r(34, 39)),
    "esp32s2": ("ESP32-S2", _r(0, 21) + _r(33, 46), [46]),   # 26-32: PSRAM and flash
    "esp32s3": ("ESP32-S3", _r(0, 21) + _r(33, 48), []),     # 26-32: PSRAM and flash
    "esp32c3": ("ESP32-C3", _r(0, 11) + [20, 21], []),       # 12-17: flash; 18-19: USB
    "esp32c6": ("ESP32-C6", _r(0, 11) + _r(14, 23), []),     # 12-13: USB; 24-30: flash
}


def check(chip):
    if chip not in CHIPS:
        raise ValueError("unknown chip %r: one of %s" % (chip, ", ".join(sorted(CHIPS))))
    return chip


def machine(chip):
    """os.uname().machine (and the banner's tail) of the simulated board."""
    mcu = CHIPS[chip][0]
    return "%s module (simulated) with %s" % (mcu.replace("-", ""), mcu)


def valid_pins(chip):
    return frozenset(CHIPS[chip][1])


def input_only(chip):
    return frozenset(CHIPS[chip][2])


def idf_heap_info(capabilities, gc_alloc):
    """(total, free, largest free block, minimum free ever) per IDF heap region."""
    free = 60000 - (gc_alloc // 8)
    if capabilities & 1 and not capabilities & 4:
        return [(15072, 7120, 7072, 6980), (113840, 0, 0, 0)]
    return [(7280, 4, 4, 4), (16648, 3104, 3072, 2940), (94608, free, 31744, free - 9000),
            (15072, 7120, 7072, 6980), (113840, 0, 0, 0)]


def raw_temperature():
    return 106  # degrees F, as the ESP32's sensor reports them (41.1 C)


def mcu_temperature():
    return 38  # degrees C, rounded to an int as modesp32.c does


def temperature_functions(chip):
    """The esp32 module's temperature function(s) on this chip, by name."""
    if chip == "esp32":
        return {"raw_temperature": raw_temperature}
    return {"mcu_temperature": mcu_temperature}
