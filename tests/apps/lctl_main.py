# Test app (deployed as main.py by tests/test_lctl.py): the agent plus local
# control, started the way the agent will start it once wired in (this app
# does it by hand). A switch whose writes are printed with their source.
import asyncio
import json
import rainmaker as rm
from rainmaker import std, lctlsrv
from rainmaker.agent import Agent


def on_light(device, values, source):
    print("APP write from %s: %s" % (source, ",".join("%s=%s" % (k, values[k]) for k in sorted(values))))


node = rm.Node("Lamp", "esp.node.switch")
node.add(std.switch("Light", cb=on_light))
agent = Agent(node)


try:
    # The test's ports and address (the MicroPython backend binds real host ports).
    with open("lctl_test.json") as f:
        opts = json.load(f)
except OSError:
    opts = {}


async def main():
    asyncio.create_task(lctlsrv.serve(agent.node, agent.sync, **opts))
    await agent.run()


asyncio.run(main())
