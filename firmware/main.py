# Example app: a colour lightbulb on an LED pin, a temperature sensor that
# reports every 30 s, and a button that toggles the light locally.
#
# Pins (ESP32 DevKitC): LED on GPIO 2, BOOT button on GPIO 0.
import asyncio
import esp32
from machine import Pin, PWM
import rainmaker as rm
from rainmaker import std

_LED = 2
_BUTTON = 0
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
    # The ESP32's internal sensor (degrees F, very rough): stands in for a real one.
    return round((esp32.raw_temperature() - 32) / 1.8, 1)


node = rm.Node("Example Light", "Lightbulb", fw_version="1.0.0", model="rm-example")
light = node.add(std.lightbulb("Light", cb=on_light))
sensor = node.add(std.temperature_sensor("Temperature", read_temp()))


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
