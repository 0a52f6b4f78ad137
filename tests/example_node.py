"""The example app's node (firmware/main.py), built with the same library on
the host, so tests and benchmarks can compare against what the board sends.
Keep it in step with firmware/main.py."""
import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "firmware" / "lib"))
if "micropython" not in sys.modules:
    _mp = types.ModuleType("micropython")
    _mp.const = lambda x: x
    sys.modules["micropython"] = _mp

from rainmaker import Node, Device, Param, READ, std  # noqa: E402


# The app's (LED, BOOT button) GPIOs per chip (_PINS in firmware/main.py).
EXAMPLE_PINS = {"esp32": (2, 0), "esp32s2": (18, 0), "esp32s3": (48, 0), "esp32c3": (8, 9), "esp32c6": (8, 9)}


def example_node(node_id, temperature=0.0, platform="esp32"):
    """platform: the chip the board runs on, which the app's node reports as info.platform."""
    n = Node("Example Light", "Lightbulb", fw_version="1.0.0", model="rm-example", platform=platform)
    n.node_id = node_id
    n.add(std.lightbulb("Light"))
    n.add(std.temperature_sensor("Temperature", temperature))
    n.add(std.time_service())
    n.add(std.system_service())
    n.add(std.schedule_service())
    # What the agent adds by itself: the Connectivity service of the last will.
    svc = Device("Connectivity", "esp.service.connectivity", service=True)
    svc.add(Param("Connected", True, "bool", "esp.param.connected", READ))
    n.add(svc)
    return n
