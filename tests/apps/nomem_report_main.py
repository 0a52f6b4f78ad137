# Test app (deployed as main.py by tests/test_resilience.py): a failure whose
# report finds no memory at all, neither for the diagnosis code (rainmaker.diag)
# nor for the one line the supervisor falls back to. The agent must go on and
# come online.
#
# The config's packet is built at start (a failure there is left for later),
# then again before the first connection, where the second failure reaches
# the supervisor.
import sys
import rainmaker as rm
from rainmaker import std, log


class NoDiag:  # rainmaker.diag when there is no memory to load it
    def report(self, agent, e):
        raise MemoryError("planted: no memory for diag")


sys.modules["rainmaker.diag"] = rm.diag = NoDiag()
_error = log.error
_lines = [MemoryError]


def error(tag, msg):
    if _lines and msg.startswith("connection failed"):
        raise _lines.pop()("planted: no memory for the line")
    _error(tag, msg)


log.error = error


class FailingNode(rm.Node):
    failures = [RuntimeError, RuntimeError]

    def config(self, parts=False):
        if self.failures:
            raise self.failures.pop(0)("planted by the test app")
        return rm.Node.config(self, parts)


node = FailingNode("No Memory", "Test", fw_version="1.0.0")
node.add(std.switch("Plug"))
rm.run(node)
