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
    # A list is the config as the sync engine hands it out: pieces that join to the JSON.
    return json.loads(b"".join(s) if isinstance(s, list) else s)


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


_real_log = []  # rainmaker.log.log before any Logs wrapped it


class Logs:
    """Counts the warnings logged from now on (the newest Logs replaces the last one's
    wrapper of log.log; close() puts the real one back)."""

    def __init__(self):
        from rainmaker import log

        if not _real_log:
            _real_log.append(log.log)
        self.log = log
        self.n = 0
        self._orig = orig = _real_log[0]

        def counting(lvl, tag, msg):
            if lvl == log.WARN:
                self.n += 1
            orig(lvl, tag, msg)

        log.log = counting

    def close(self):
        self.log.log = self._orig

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def warnings(self):
        return self.n

    def last(self):
        return self.log.last_error


class Rand:
    """A small deterministic generator (the same sequence on CPython and MicroPython)."""

    def __init__(self, seed):
        self.x = seed

    def next(self, n):
        self.x = (self.x * 1103515245 + 12345) & 0x7FFFFFFF
        return (self.x >> 8) % n

    def bytes(self, n):
        return bytes(self.next(256) for _ in range(n))


def mutate(r, data):
    """1 to 4 random edits: a byte changed, bytes inserted, bytes removed."""
    for _ in range(1 + r.next(4)):
        op = r.next(3)
        pos = r.next(len(data) + 1)
        if op == 0 and data:
            pos = min(pos, len(data) - 1)
            data = data[:pos] + bytes((r.next(256),)) + data[pos + 1:]
        elif op == 1:
            data = data[:pos] + r.bytes(1 + r.next(3)) + data[pos:]
        else:
            data = data[:pos] + data[pos + 1 + r.next(3):]
    return data


def report(sync, now):
    """sync.take(now), then sync.sent() as the link does once the packet exists:
    the report the cloud gets, or None."""
    item = sync.take(now)
    if item is not None:
        sync.sent(item[0])
    return item
