# The node model: Node > Device > Param, and the params JSON. The node config JSON
# (docs/protocol.md#node-config) is built by conf.py, loaded only for that.
import json
from micropython import const

READ = const(1)
WRITE = const(2)
TIME_SERIES = const(4)
SIMPLE_TS = const(8)
PERSIST = const(16)  # stored on flash; not listed in the config (docs/protocol.md#node-config)

_INT_MIN = const(-2147483648)
_INT_MAX = const(2147483647)


def _j(v):
    return json.dumps(v, separators=(",", ":"))


def _conf():
    # conf.py: the code that runs while the node is built (checks of new params
    # and names, chip()) and the config JSON. Loaded when needed; dropped by
    # Node.config() and by the agent once it starts.
    from . import conf

    return conf


def unload(name):
    """Drop rainmaker.<name> from sys.modules and the package, so its code is freed."""
    import sys

    sys.modules.pop("rainmaker." + name, None)
    try:
        delattr(sys.modules["rainmaker"], name)
    except (AttributeError, KeyError):
        pass


def encode(data_type, value):
    """A param value as JSON text, as the C SDK reports it (docs/protocol.md#value-encoding)."""
    if data_type == "float":
        if value != value or value in (float("inf"), float("-inf")):
            return "null"
        return "%.5f" % value
    return _j(value)


class Param:
    def __init__(self, name, value, data_type=None, type=None, props=READ | WRITE,
                 bounds=None, valid_strs=None, ui_type=None):
        data_type, bounds = _conf().param(name, value, data_type, props, bounds, valid_strs)
        self.name = name
        self.data_type = data_type
        self.type = type
        self.props = props
        self.bounds = bounds  # (min, max, step); for arrays only max counts
        self.valid_strs = valid_strs
        self.ui_type = ui_type
        self.device = None
        err, v = self.check(value)
        if err:
            raise ValueError("param %r: initial value %s" % (name, err))
        self.value = v

    def check(self, v):
        """Validate v for this param. Returns (error text or None, value to store)."""
        dt = self.data_type
        if dt == "bool":
            if v is True or v is False:
                return None, v
            if type(v) is int and v in (0, 1):  # the SDK's parser also takes 1/0
                return None, v == 1
            return "must be true or false, got %s" % _kind(v), None
        if dt == "int":
            if type(v) is not int:
                return "must be an integer, got %s" % _kind(v), None
            if not _INT_MIN <= v <= _INT_MAX:
                return "%d is outside 32-bit int" % v, None
        elif dt == "float":
            if type(v) is int:
                v = float(v)
            elif type(v) is not float:
                return "must be a number, got %s" % _kind(v), None
        elif dt == "string":
            if not isinstance(v, str):
                return "must be a string, got %s" % _kind(v), None
            if self.valid_strs is not None and v not in self.valid_strs:
                return "%r is not one of %s" % (v, self.valid_strs), None
            return None, v
        elif dt == "object":
            return (None, v) if isinstance(v, dict) else ("must be a JSON object, got %s" % _kind(v), None)
        else:
            if not isinstance(v, list):
                return "must be a JSON array, got %s" % _kind(v), None
            if self.bounds and self.bounds[1] and len(v) > self.bounds[1]:
                return "has %d elements, max is %d" % (len(v), self.bounds[1]), None
            return None, v
        b = self.bounds
        if b is not None and not b[0] <= v <= b[1]:
            return "%s is outside %s..%s" % (v, b[0], b[1]), None
        return None, v

    def config(self):
        """This object's part of the node config JSON (built by conf.py, loaded for it)."""
        return _conf().config(self)


def _kind(v):
    if v is None:
        return "null"
    if v is True or v is False:
        return "bool"
    return type(v).__name__


class Device:
    """A device or a service of the node. cb(device, values, source) handles writes.

    cb gets a dict {param name: validated value}. It returns None to accept
    all values, a dict of the values to apply instead (params left out are
    refused), or False to refuse all; raising an exception refuses all and its
    text is logged as the reason.
    """

    def __init__(self, name, type, cb=None, primary=None, service=False, subtype=None, model=None):
        _conf().check_name("device", name)
        self.name = name
        self.type = type
        self.cb = cb
        self.primary = primary
        self.service = service
        self.subtype = subtype
        self.model = model
        self.attrs = []
        self.params = []
        self.node = None

    def add(self, param):
        if self.param(param.name):
            raise ValueError("device %r already has a param %r" % (self.name, param.name))
        param.device = self
        self.params.append(param)
        if self.node:
            self.node._added(self, param)
        return param

    def remove(self, name):
        p = self.param(name)
        if p is None:
            raise KeyError(name)
        self.params.remove(p)
        p.device = None
        if self.node:
            self.node._changed()

    def param(self, name):
        for p in self.params:
            if p.name == name:
                return p
        return None

    def __getitem__(self, name):
        p = self.param(name)
        if p is None:
            raise KeyError("device %r has no param %r" % (self.name, name))
        return p.value

    def update(self, name, value):
        """A local change (button, sensor): validated, stored, reported soon."""
        p = self.param(name)
        if p is None:
            raise KeyError("device %r has no param %r" % (self.name, name))
        err, v = p.check(value)
        if err:
            raise ValueError("%s.%s %s" % (self.name, name, err))
        if v == p.value and type(v) is type(p.value):
            return  # unchanged: a message would cost and tell nothing
        p.value = v
        if self.node:
            self.node._dirty(p, False)

    __setitem__ = update

    def config(self):
        """This object's part of the node config JSON (built by conf.py, loaded for it)."""
        return _conf().config(self)


def chip():
    """The chip, named as ESP-IDF's CONFIG_IDF_TARGET ("esp32", "esp32s3", "esp32c3"...)."""
    return _conf().chip()


class Node:
    def __init__(self, name, type, fw_version="1.0.0", model=None, project_name=None,
                 platform=None, subtype=None, readme=None):
        self.node_id = ""  # set from the credential bundle by the agent
        self.name = name
        self.type = type
        self.fw_version = fw_version
        self.model = model or name
        self.project_name = project_name or self.model
        self.platform = platform or chip()  # info.platform, as the SDK reports CONFIG_IDF_TARGET
        self.subtype = subtype
        self.readme = readme
        # No "cmd-resp" attribute: the SDK adds it only when command-response
        # (docs/protocol.md#command-response) is running, and this agent does not implement it yet.
        self.attrs = []
        self.devices = []
        self.listener = None  # the param sync engine, set by the agent

    def add(self, device):
        if self.device(device.name):
            raise ValueError("node already has a device or service %r" % device.name)
        device.node = self
        self.devices.append(device)
        if self.listener:
            self.listener.added(device, None)
        self._changed()
        return device

    def remove(self, name):
        d = self.device(name)
        if d is None:
            raise KeyError(name)
        self.devices.remove(d)
        d.node = None
        self._changed()

    def device(self, name):
        for d in self.devices:
            if d.name == name:
                return d
        return None

    def _added(self, device, param):
        if self.listener:
            self.listener.added(device, param)
        self._changed()

    def _changed(self):
        if self.listener:
            self.listener.reconfigured()

    def _dirty(self, param, remote):
        if self.listener:
            self.listener.changed(param, remote)

    def config(self, parts=False):
        """The node config JSON (built by conf.py, loaded for it); with parts,
        as a list of pieces that join to it, for mqtt.publish()."""
        try:
            return _conf().config(self, parts)
        finally:
            unload("conf")  # built once per boot and after a reconfiguration

    def params(self, only=None):
        """Params JSON: all params, or only those in the set `only`."""
        parts = []
        for d in self.devices:
            items = [
                _j(p.name) + ":" + encode(p.data_type, p.value)
                for p in d.params
                if only is None or p in only
            ]
            if items:
                parts.append(_j(d.name) + ":{" + ",".join(items) + "}")
        return "{" + ",".join(parts) + "}"
