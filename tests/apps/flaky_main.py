# Test app (deployed as main.py by tests/test_resilience.py): building the
# node config fails twice, first with a MemoryError (as on a tight heap),
# then with an error nobody planned for. The agent must survive both, say
# what happened (with a traceback for the unplanned one), and come online.
import rainmaker as rm
from rainmaker import std


class FlakyNode(rm.Node):
    failures = [MemoryError, RuntimeError]

    def config(self, parts=False):
        if self.failures:
            raise self.failures.pop(0)("planted by the test app")
        return rm.Node.config(self, parts)


node = FlakyNode("Flaky", "Test", fw_version="1.0.0")
node.add(std.switch("Plug"))
rm.run(node)
