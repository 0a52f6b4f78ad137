# Test app (deployed as main.py by tests/test_services.py): the RainMaker
# services on one node, and a sensor fast enough to fill time-series batches.
import asyncio
import rainmaker as rm
from rainmaker import std

node = rm.Node("Services", "Switch", fw_version="3.0.0")
plug = node.add(std.switch("Plug"))
sensor = node.add(std.temperature_sensor("Temp", 20.0))
node.add(std.system_service())
node.add(std.schedule_service())
node.add(std.scenes_service(deactivation=True))


async def sense():
    t = 20.0
    while True:
        await asyncio.sleep_ms(100)
        t = 20.0 if t > 30 else t + 0.5
        sensor.update("Temperature", t)


rm.run(node, sense())
