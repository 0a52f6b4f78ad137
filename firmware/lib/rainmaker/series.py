# Time-series samples of params flagged TIME_SERIES or SIMPLE_TS
# (docs/protocol.md#time-series), without I/O.
#
# The SDK publishes one "tsdata" message per sample. Every message is metered
# by the cloud, so samples are batched instead: a "tsdata" message carries
# every sample taken since the last one (each param's records in one list),
# and goes out when _BATCH samples are waiting or the oldest is _AGE old.
# "simple_tsdata" has room for one sample per message, so those go one by one.
# Samples need the wall clock: until it is set they are not recorded (as the
# SDK refuses them), because a chart point at 1970 is worse than none.
from micropython import const
from .node import TIME_SERIES, SIMPLE_TS, encode

_BATCH = const(20)  # samples per tsdata message
_AGE = const(600)  # s a sample may wait for its batch (the live value goes in params/local)
_MAX = const(60)  # samples kept while offline; beyond, the oldest go
_MAX_BYTES = const(3000)  # a batch is cut here (the agent's MQTT limit is 4 KB)
_TIME_VALID = const(1546300800)  # 2019-01-01: before, the clock is not set

TSDATA = "tsdata"
SIMPLE = "simple_tsdata"


class Series:
    def __init__(self, clock, batch=_BATCH, age=_AGE, limit=_MAX):
        self.clock = clock  # () -> Unix seconds
        self.batch = batch
        self.age = age
        self.limit = limit
        self.samples = []  # [(param, Unix s, value)], oldest first
        self.dropped = 0

    def add(self, p):
        """Record p's current value, taken now."""
        utc = self.clock()
        if not p.props & (TIME_SERIES | SIMPLE_TS) or utc < _TIME_VALID:
            return
        s = self.samples
        if len(s) >= self.limit:
            s.pop(0)
            self.dropped += 1
        s.append((p, utc, p.value))

    def take(self, utc, flush=False):
        """The next (suffix, payload) to publish, or None.

        flush sends a partial batch now (the driver's choice, e.g. before a
        reboot). Samples are removed only once the payload is built, so a
        MemoryError leaves them in place.
        """
        s = self.samples
        for i in range(len(s)):
            p, t, v = s[i]
            if not p.props & TIME_SERIES:  # SIMPLE_TS only: one message per sample
                payload = '{"name":"%s.%s","type":"%s","dt":"%s","t":%d,"v":%s}' % (
                    p.device.name, p.name, p.type or "", p.data_type, t, encode(p.data_type, v))
                s.pop(i)
                return SIMPLE, payload
        if not s or not flush and len(s) < self.batch and utc - s[0][1] < self.age:
            return None
        return TSDATA, self._batch()

    def _batch(self):
        # Samples of one param share one "records" list, in time order; the
        # message is cut at _MAX_BYTES and the rest waits for the next one.
        s = self.samples
        sent = {}  # id(param) -> samples taken
        parts = []
        size = 50
        for p, _, _ in s:
            if id(p) in sent:
                continue
            recs = []
            for q, t, v in s:
                if q is p:
                    rec = '{"t":%d,"v":%s}' % (t, encode(p.data_type, v))
                    size += len(rec) + 1
                    if size > _MAX_BYTES:
                        break
                    recs.append(rec)
            if not recs:
                break
            sent[id(p)] = len(recs)
            parts.append('{"name":"%s.%s","type":"%s","dt":"%s","records":[%s]}' % (
                p.device.name, p.name, p.type or "", p.data_type, ",".join(recs)))
            size += 60
        payload = '{"ts_data_version":"2021-09-13","ts_data":[%s]}' % ",".join(parts)
        keep = []
        for item in s:
            k = id(item[0])
            c = sent.get(k, 0)
            if c:
                sent[k] = c - 1
            else:
                keep.append(item)
        self.samples = keep
        return payload
