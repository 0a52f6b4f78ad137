# Test app (deployed as main.py by tests/test_resilience.py): building the
# node config fails with a MemoryError (as on a tight heap), then with an
# error nobody planned for. The agent must survive both, say what happened
# (with a traceback for the unplanned one), and come online.
#
# The agent builds the config's packet at start and again before the first
# connection (both quietly leave it for later on a MemoryError), then after
# the CONNACK: so three MemoryErrors, the last one logged while connecting,
# then the unplanned error, raised before the next connection.
import rainmaker as rm
from rainmaker import std


class FlakyNode(rm.Node):
    failures = [MemoryError, MemoryError, MemoryError, RuntimeError]

    def config(self, parts=False):
        if self.failures:
            raise self.failures.pop(0)("planted by the test app")
        return rm.Node.config(self, parts)


node = FlakyNode("Flaky", "Test", fw_version="1.0.0")
node.add(std.switch("Plug"))
rm.run(node)
