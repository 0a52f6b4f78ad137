# Param sync between the node model and the cloud (docs/protocol.md#params), without I/O.
#
# Remote writes come in as bytes; what must be published comes out of
# take(). Unlike the C SDK, every remote write is validated against the model
# (known device and param, write permission, type, bounds, valid_strs) and a
# refused write is answered with the current value, so the cloud never keeps a
# value the device does not have.
import json
from micropython import const
from .node import WRITE, PERSIST, TIME_SERIES, SIMPLE_TS
from .session import diff
from . import log

_WINDOW = const(200)  # ms over which local changes are merged into one report
_STORE_EVERY = const(1000)  # ms between flash writes of persisted params, at most
_MAX_PAYLOAD = const(4096)
_MAX_DEPTH = const(16)  # nesting of objects/arrays in a remote write

CONFIG = "config"
INIT = "params/local/init"
LOCAL = "params/local"


class Sync:
    def __init__(self, node, store=None, window=_WINDOW, max_payload=_MAX_PAYLOAD, series=None):
        self.node = node
        self.store = store
        self.window = window
        self.max_payload = max_payload
        self.config_due = True  # once per boot, and after every reconfiguration
        self.init_due = False  # after every connect, and after reconfiguration
        self.dirty = set()
        self._due = None  # tick at which the delta report goes out
        self._local = False  # a local change is waiting for its window to start
        self._persist = False
        self._stored_at = None
        self._saved = store.load() if store else {}
        self.series = series  # time-series samples (series.Series), if any param has them
        self.writes = 0  # remote writes accepted
        self.refused = 0  # remote values refused
        node.listener = self
        for d in node.devices:
            self.added(d, None)

    # -- listener interface, called by the node model ------------------------

    def added(self, device, param):
        # Restore persisted values silently: no write callback, no report
        # (the init report after connect carries them).
        saved = self._saved.get(device.name)
        if not saved:
            return
        for p in (param,) if param else device.params:
            if p.props & PERSIST and p.name in saved:
                err, v = p.check(saved[p.name])
                if err:
                    log.warn("store", "ignoring stored %s.%s: %s" % (device.name, p.name, err))
                else:
                    p.value = v

    def reconfigured(self):
        self.config_due = True
        self.init_due = True

    def changed(self, param, remote):
        self.dirty.add(param)
        if param.props & PERSIST:
            self._persist = True
        if not remote:
            self._local = True
        if self.series is not None and param.props & (TIME_SERIES | SIMPLE_TS):
            self.series.add(param)

    # -- connection events ----------------------------------------------------

    def connected(self):
        """A new MQTT session: the full state goes out again (after config)."""
        self.init_due = True

    # -- remote writes --------------------------------------------------------

    def remote(self, payload, now, source="Cloud"):
        """Apply a params/remote payload (bytes). Returns the number of params applied."""
        if len(payload) > self.max_payload:
            log.warn("params", "remote write of %d bytes ignored: limit is %d" % (len(payload), self.max_payload))
            return 0
        if not _shallow(payload, _MAX_DEPTH):
            # Checked before parsing: a 4 KB "[[[[..." would exhaust the
            # stack of a recursive parser, and anyone who may write this
            # node's params could stop it that way.
            log.warn("params", "remote write ignored: nested deeper than %d levels" % _MAX_DEPTH)
            return 0
        try:
            data = json.loads(payload)
        except (ValueError, UnicodeError) as e:
            log.warn("params", "remote write ignored: malformed JSON (%s)" % e)
            return 0
        if not isinstance(data, dict):
            log.warn("params", "remote write ignored: expected a JSON object of devices")
            return 0
        applied = 0
        for dname in data:
            dev = self.node.device(dname)
            if dev is None:
                log.warn("params", "remote write to unknown device %r ignored" % dname)
                continue
            values = data[dname]
            if not isinstance(values, dict):
                log.warn("params", "remote write to %r ignored: expected an object of params" % dname)
                continue
            applied += self._device(dev, values, source)
        if self.dirty:
            self._due = now  # echo at once: the app is waiting for it
        return applied

    def _device(self, dev, values, source):
        ok = {}
        for pname in values:
            p = dev.param(pname)
            if p is None:
                log.warn("params", "remote write to unknown param %s.%s ignored" % (dev.name, pname))
                continue
            if not p.props & WRITE:
                self._refuse(p, "is read-only")
                continue
            err, v = p.check(values[pname])
            if err:
                self._refuse(p, err)
                continue
            ok[pname] = v
        if not ok:
            return 0
        result = None
        if dev.cb:
            try:
                result = dev.cb(dev, ok, source)
            except Exception as e:
                result = False
                why = "refused by the app: %s" % (e,)
            else:
                why = "refused by the app"
        if result is False:
            for pname in ok:
                self._refuse(dev.param(pname), why)
            return 0
        if isinstance(result, dict):
            for pname in ok:
                if pname not in result:
                    self._refuse(dev.param(pname), why)
            ok = result
        n = 0
        for pname in ok:
            p = dev.param(pname)
            if p is None:
                log.error("params", "app callback of %r returned unknown param %r" % (dev.name, pname))
                continue
            err, v = p.check(ok[pname])
            if err:
                # The app changed a value into something invalid: keep ours.
                self._refuse(p, "app returned a bad value: %s" % err)
                continue
            p.value = v
            self.changed(p, True)
            n += 1
        self.writes += n
        return n

    def _refuse(self, p, why):
        self.refused += 1
        log.warn("params", "%s.%s %s; reporting current value" % (p.device.name, p.name, why))
        self.dirty.add(p)  # unchanged: re-reported, but not a new sample and nothing to save

    # -- what to publish ------------------------------------------------------

    def take(self, now):
        """The next (suffix, payload) due for publishing, or None.

        Two-phase: this only builds the payload; the report stays due until
        the caller says its packet exists (sent(suffix)), so a MemoryError
        while it is built or packed loses nothing: the next take() builds it
        again, with the values of that moment. Call sent() right after the
        publish, with nothing in between that can change the node.
        Order: config, then the full params, then merged changes. A report
        that carries a persisted param waits until the value is on flash:
        the cloud is never told a value that a power cut would lose.
        """
        if self.config_due:
            return CONFIG, self.node.config(True)  # pieces: see mqtt.parts()
        if self._persist and self.store and (self.init_due or self._due is not None):
            if not self.save(now):
                return None  # flash written less than _STORE_EVERY ago
        if self.init_due:
            return INIT, self.node.params()
        if self._local:
            self._local = False
            if self._due is None:
                self._due = (now + self.window) % 0x40000000
        if self._due is not None and diff(now, self._due) >= 0:
            # Params removed since they were marked have no device any more.
            dirty = set(p for p in self.dirty if p.device and p.device.node is self.node)
            if dirty:
                return LOCAL, self.node.params(dirty)
            self._due = None
            self.dirty.clear()
        return None

    def sent(self, suffix):
        """The packet of what take() returned exists: that report is no longer due."""
        if suffix == CONFIG:
            self.config_due = False
            return
        if suffix == INIT:
            self.init_due = False
            self._local = False
        self._due = None
        self.dirty.clear()

    def pending(self):
        return len(self.dirty) + self.config_due + self.init_due

    # -- persistence ------------------------------------------------------------

    def save(self, now):
        """Write persisted params when due. Returns True if it wrote."""
        if not self.store or not self._persist:
            return False
        if self._stored_at is not None and diff(now, self._stored_at) < _STORE_EVERY:
            return False
        data = {}
        for d in self.node.devices:
            vals = {}
            for p in d.params:
                if p.props & PERSIST:
                    vals[p.name] = p.value
            if vals:
                data[d.name] = vals
        self.store.save(data)
        self._saved = data
        self._persist = False
        self._stored_at = now
        return True


def _shallow(data, limit):
    """True if no object/array in the JSON text nests deeper than limit."""
    depth = 0
    quoted = False
    escaped = False
    for c in data:
        if quoted:
            if escaped:
                escaped = False
            elif c == 0x5C:  # backslash
                escaped = True
            elif c == 0x22:  # "
                quoted = False
        elif c == 0x22:
            quoted = True
        elif c == 0x7B or c == 0x5B:  # { [
            depth += 1
            if depth > limit:
                return False
        elif c == 0x7D or c == 0x5D:  # } ]
            depth -= 1
    return True
