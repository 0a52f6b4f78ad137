# Helpers shared by the core tests. These tests run twice: under pytest on
# CPython, and on the real MicroPython VM (tests/test_micropython.py), so they
# use only what both have: plain asserts, no fixtures, no f-string tricks.
import json


def raises(exc, fn, *args, **kw):
    """Call fn(*args, **kw); assert it raises exc; return the exception."""
    try:
        fn(*args, **kw)
    except exc as e:
        return e
    raise AssertionError("%s not raised by %r" % (exc.__name__, fn))


def h(s):
    """bytes from a hex string with spaces."""
    return bytes.fromhex(s.replace(" ", ""))


def js(s):
    return json.loads(s)


class MemStore:
    """Stands in for rainmaker.store.Store: same load/save contract, in RAM."""

    def __init__(self, data=None):
        self.data = data or {}
        self.saves = 0

    def load(self):
        return json.loads(json.dumps(self.data))

    def save(self, data):
        self.data = json.loads(json.dumps(data))
        self.saves += 1
        return True


class Logs:
    """Captures rainmaker.log lines by swapping its print-level to silent."""

    def __init__(self):
        from rainmaker import log

        self.log = log
        self.before = log.counts[1]

    def warnings(self):
        return self.log.counts[1] - self.before

    def last(self):
        return self.log.last_error
