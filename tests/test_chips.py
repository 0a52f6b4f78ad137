"""Every chip: the simulated board as an ESP32 and as an ESP32-C3, on both backends.

* The sim: `--chip` sets what the firmware can see of the chip, on tools.sim.board
  and on tools.sim.mpboard alike: os.uname().machine, the esp32 module's temperature
  function (raw_temperature() on the ESP32 only, mcu_temperature() on the others,
  as in MicroPython's ports/esp32/modesp32.c), the valid and the input-only GPIOs.
* The app: firmware/main.py, unmodified, comes online with info.platform naming the
  chip, reports the chip's temperature, and its light follows the button on the
  chip's BOOT pin and drives the LED pin it picked for the chip.
* rainmaker.chip(): the chip from the os.uname().machine strings of real builds.
"""
import json
import os
import subprocess
import time
import types

import pytest

from rainmaker.node import chip as node_chip
from tests.example_node import EXAMPLE_PINS, example_node
from tests.harness import MICROPYTHON, ROOT, Board, Cloud
from tools.simulate import board_command

CHIPS = ("esp32", "esp32c3")

# What each chip's board must show the firmware (from MicroPython's esp32 port).
ESP32_PINS = list(range(0, 6)) + list(range(12, 20)) + [21, 22, 23, 25, 26, 27] + list(range(32, 40))
FACTS = {
    "esp32": {"machine": "ESP32 module (simulated) with ESP32", "temp": ["raw_temperature"],
              "pins": ESP32_PINS, "input_only": list(range(34, 40)), "celsius": 41.1},  # 106 F
    "esp32c3": {"machine": "ESP32C3 module (simulated) with ESP32-C3", "temp": ["mcu_temperature"],
                "pins": list(range(0, 12)) + [20, 21], "input_only": [], "celsius": 38.0},
}

PROBE = """\
import os, esp32, machine
print("machine", os.uname().machine)
print("temp", sorted([n for n in dir(esp32) if n.endswith("temperature")]))
ok = []
for p in range(50):
    try:
        machine.Pin(p)
        ok.append(p)
    except ValueError:
        pass
print("pins", ok)
inp = []
for p in ok:
    try:
        machine.Pin(p, machine.Pin.OUT)
    except ValueError as e:
        inp.append(p)
print("input_only", inp)
try:
    esp32.raw_temperature()
    print("raw ok")
except AttributeError:
    print("raw AttributeError")
"""


@pytest.mark.parametrize("chip", CHIPS)
def test_the_sim_shows_the_firmware_its_chip(tmp_path, backend, chip):
    board = tmp_path / "board"
    board.mkdir()
    (board / "main.py").write_text(PROBE)
    cmd = board_command(board, tmp_path / "air.json", "240AC4000C01",
                        MICROPYTHON if backend == "micropython" else None, chip=chip)
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    lines = {ln.split(" ", 1)[0]: ln.split(" ", 1)[1] for ln in out.splitlines()
             if ln.split(" ", 1)[0] in ("machine", "temp", "pins", "input_only", "raw")}
    f = FACTS[chip]
    assert lines["machine"] == f["machine"], out
    assert json.loads(lines["temp"].replace("'", '"')) == f["temp"]
    assert json.loads(lines["pins"]) == f["pins"]
    assert json.loads(lines["input_only"]) == f["input_only"]
    assert lines["raw"] == ("ok" if chip == "esp32" else "AttributeError")
    assert f["machine"] in out.splitlines()[0]  # the boot banner names the chip too


@pytest.mark.parametrize("machine,expected", [
    ("Generic ESP32 module with ESP32", "esp32"),
    ("Generic ESP32 module with OTA with ESP32", "esp32"),
    ("Generic ESP32 module with ESP32-D2WD", "esp32"),
    ("Generic ESP32S2 module with ESP32-S2", "esp32s2"),
    ("LOLIN_S2_MINI with ESP32-S2FN4R2", "esp32s2"),
    ("Generic ESP32S3 module with ESP32-S3", "esp32s3"),
    ("ESP32C3 module with ESP32-C3", "esp32c3"),
    ("ESP32C3 module with ESP32C3", "esp32c3"),
    ("ESP32C6 module with ESP32-C6", "esp32c6"),
    ("x86_64", "esp32"),
])
def test_chip_from_uname(monkeypatch, machine, expected):
    monkeypatch.setattr(os, "uname", lambda: types.SimpleNamespace(machine=machine), raising=False)
    assert node_chip() == expected


def test_chip_without_uname(monkeypatch):
    monkeypatch.delattr(os, "uname", raising=False)
    assert node_chip() == "esp32"


# -- the example app on each chip --------------------------------------------------


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    c = Cloud(tmp_path_factory.mktemp("cloud")).start()
    yield c
    c.stop()


@pytest.fixture(scope="module", params=CHIPS)
def app(request, cloud, backend, tmp_path_factory):
    chip = request.param
    node = "240AC4C%d%04X" % (BACKENDS_N[backend], CHIPS.index(chip))
    since = cloud.mark()
    b = Board(cloud, tmp_path_factory.mktemp("chip"), node, keepalive=30, backend=backend, chip=chip).start()
    b.wait_line("online as " + node, timeout=30)
    b.first = since
    yield b
    b.stop()


BACKENDS_N = {"cpython": 0, "micropython": 1}


def wait_for(pred, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def test_app_comes_online_naming_its_chip(cloud, app):
    _, payload = cloud.wait("config", app.node_id, app.first)
    assert json.loads(payload)["info"]["platform"] == app.chip
    assert payload.decode() == example_node(app.node_id, platform=app.chip).config()


def test_app_reports_the_chips_temperature(cloud, app):
    _, init = cloud.wait("params/local/init", app.node_id, app.first)
    assert json.loads(init)["Temperature"]["Temperature"] == FACTS[app.chip]["celsius"]


def test_boot_button_toggles_the_light_on_the_chips_pins(cloud, app):
    led, button = EXAMPLE_PINS[app.chip]
    assert wait_for(lambda: app.led_duty(led) == 0)  # the app's LED pin, off
    since = cloud.mark()
    app.press_button(button)
    _, report = cloud.wait("params/local", app.node_id, since, where=lambda p: b"Power" in p)
    assert json.loads(report) == {"Light": {"Power": True}}
    assert wait_for(lambda: app.led_duty(led) == 65535)  # Brightness 100
