# Example app: a colour lightbulb on an LED pin, a temperature sensor that
# reports every 30 s, a button that toggles the light locally, and the Time,
# System and Schedule services. Runs on the ESP32, ESP32-S2, -S3, -C3 and -C6.
import asyncio
import esp32
from machine import Pin, PWM
import rainmaker as rm
from rainmaker import std

# Pins per chip: (LED, BOOT button). Change them for your board. The BOOT button
# is GPIO 0 on the ESP32, S2 and S3, GPIO 9 on the C3 and C6. The LED is the one
# of Espressif's DevKits (DevKitC on the ESP32: a plain LED on GPIO 2). On the
# S2, S3, C3 and C6 DevKits that pin drives an addressable RGB LED, which PWM does
# not light: wire a plain LED (with a resistor) to another pin and name it here.
_PINS = {
    "esp32": (2, 0),
    "esp32s2": (18, 0),
    "esp32s3": (48, 0),  # GPIO 38 on the ESP32-S3-DevKitC-1 v1.1
    "esp32c3": (8, 9),
    "esp32c6": (8, 9),
}
_LED, _BUTTON = _PINS.get(rm.chip(), _PINS["esp32"])
_TEMP_PERIOD = 30  # s
_HOLD_RESET = 3000  # ms: holding the button this long erases Wi-Fi (provisioning at reboot)

led = PWM(Pin(_LED, Pin.OUT), freq=1000, duty_u16=0)


def show(power, level):
    # Hue and saturation would drive an RGB LED; a single LED shows level only.
    led.duty_u16(level * 65535 // 100 if power else 0)


def on_light(device, values, source):
    # Called for writes from the cloud, already checked against the model,
    # before they are stored. Returning None accepts them all (return a dict
    # to apply other values, or False to refuse; refused params are
    # re-reported as they are, so the app in the phone snaps back).
    show(values.get("Power", device["Power"]), values.get("Brightness", device["Brightness"]))


def read_temp():
    # The chip's internal sensor stands in for a real one (it reads the die, warmer
    # than the room). The S2, S3, C3 and C6 have mcu_temperature() (degrees C); the
    # ESP32 has raw_temperature() instead (degrees F, uncalibrated).
    if hasattr(esp32, "mcu_temperature"):
        # Not in the (classic) ESP32 stubs, as not on that chip: hence hasattr().
        return float(esp32.mcu_temperature())  # pyright: ignore[reportAttributeAccessIssue]
    return round((esp32.raw_temperature() - 32) / 1.8, 1)


node = rm.Node("Example Light", "Lightbulb", fw_version="1.0.0", model="rm-example")
light = node.add(std.lightbulb("Light", cb=on_light))
sensor = node.add(std.temperature_sensor("Temperature", read_temp()))  # charted by the app (tsdata)
# The services the phone apps use: the time zone they set after provisioning,
# reboot / factory reset / Wi-Fi reset, and schedules that run on the board's
# own clock, also when the internet is down. Remove what you do not need:
# each costs heap.
node.add(std.time_service())
node.add(std.system_service())
node.add(std.schedule_service())
del std  # needed only to build the node: run() then frees its code (about 4 KB of heap)


async def sense():
    while True:
        sensor.update("Temperature", read_temp())
        await asyncio.sleep(_TEMP_PERIOD)


async def button():
    # The IRQ only sets a flag; the toggle runs in a task, where it is safe to
    # allocate and to report. A short press toggles the light on release; a
    # press held 3 s is a Wi-Fi reset, as in the SDK's examples.
    flag = asyncio.ThreadSafeFlag()
    pin = Pin(_BUTTON, Pin.IN, Pin.PULL_UP)
    pin.irq(lambda p: flag.set(), Pin.IRQ_FALLING)
    while True:
        await flag.wait()
        await asyncio.sleep_ms(30)  # debounce
        if pin.value():
            continue
        held = 30
        while pin.value() == 0 and held < _HOLD_RESET:
            await asyncio.sleep_ms(50)
            held += 50
        if held >= _HOLD_RESET:
            rm.wifi_reset()
        light.update("Power", not light["Power"])
        show(light["Power"], light["Brightness"])


show(light["Power"], light["Brightness"])  # restored values (Name) are in place before the first connect
rm.run(node, sense(), button())
