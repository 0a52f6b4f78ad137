# The MQTT publish budget of the C SDK (docs/protocol.md#publish-budget): start
# with 100 tokens, one per publish, one back every 5 s, never more than 1024.
# It stops a bug in an app from flooding the cloud (and the bill). Unlike the
# SDK we never drop a param report for lack of budget: reports are state, so
# they wait and merge.
from micropython import const
from .session import diff

_START = const(100)
_MAX = const(1024)
_PERIOD = const(5000)  # ms per token


class Budget:
    def __init__(self, now, start=_START, cap=_MAX, period=_PERIOD):
        self.tokens = start
        self.cap = cap
        self.period = period
        self._t = now

    def _refill(self, now):
        n = diff(now, self._t) // self.period
        if n > 0:
            self.tokens = min(self.cap, self.tokens + n)
            self._t = now if self.tokens == self.cap else self._t + n * self.period

    def available(self, now):
        self._refill(now)
        return self.tokens

    def take(self, now):
        self._refill(now)
        if self.tokens <= 0:
            return False
        self.tokens -= 1
        return True
