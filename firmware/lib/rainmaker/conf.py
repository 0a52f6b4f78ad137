# The node model's build-time code, loaded by node.py only while it is needed and
# dropped after the config is built (and by the agent once it starts): the checks
# of a new param or device, chip(), and the node config JSON
# (docs/protocol.md#node-config), written in the key order of the C SDK, because
# MicroPython's dict has no insertion order and json.dumps has no sort_keys.
from micropython import const
from .node import READ, WRITE, TIME_SERIES, SIMPLE_TS, Param, Device, _j, _kind

_TYPES = ("bool", "int", "float", "string", "object", "array")
_MAX_NAME = const(64)


def check_name(kind, name):
    if not isinstance(name, str) or not name or len(name) > _MAX_NAME:
        raise ValueError("%s name must be a non-empty string of at most %d chars" % (kind, _MAX_NAME))
    if '"' in name or "\\" in name or "." in name:
        # '.' would make "Device.Param" addressing ambiguous in tools and logs.
        raise ValueError("%s name %r must not contain '\"', '\\' or '.'" % (kind, name))


def param(name, value, data_type, props, bounds, valid_strs):
    # Param.__init__'s checks: returns its data_type (inferred if None) and bounds.
    check_name("param", name)
    if data_type is None:
        data_type = infer(value)
    if data_type not in _TYPES:
        raise ValueError("param %r: data_type must be one of %s" % (name, ", ".join(_TYPES)))
    if props & TIME_SERIES and props & SIMPLE_TS:
        raise ValueError("param %r cannot be both time_series and simple_ts" % name)
    if props & TIME_SERIES and data_type in ("object", "array"):
        raise ValueError("param %r: time_series needs a scalar data_type" % name)
    if bounds is not None:
        if data_type not in ("int", "float", "array"):
            raise ValueError("param %r: bounds need an int, float or array data_type" % name)
        if len(bounds) < 3:
            bounds = tuple(bounds) + (0,) * (3 - len(bounds))
        if data_type != "array" and bounds[0] > bounds[1]:
            raise ValueError("param %r: bounds min > max" % name)
    if valid_strs is not None and data_type != "string":
        raise ValueError("param %r: valid_strs need a string data_type" % name)
    return data_type, bounds


def infer(value):
    t = type(value)
    if t is bool:
        return "bool"
    if t is int:
        return "int"
    if t is float:
        return "float"
    if t is str:
        return "string"
    if t is dict:
        return "object"
    if t is list:
        return "array"
    raise ValueError("cannot infer a data_type from %s" % _kind(value))


_TARGETS = ("S2", "S3", "C2", "C3", "C5", "C6", "H2", "P4")


def chip():
    """The chip, named as ESP-IDF's CONFIG_IDF_TARGET ("esp32", "esp32s3", "esp32c3"...).

    Read from os.uname().machine, "<board> with <MCU>" on the esp32 port (e.g.
    "Generic ESP32S3 module with ESP32-S3"); "esp32" on a port without uname().
    """
    try:
        import os

        mcu = os.uname().machine
    except (ImportError, AttributeError):
        return "esp32"
    mcu = mcu.rsplit(" with ", 1)[-1].upper().replace("-", "")
    for t in _TARGETS:
        if mcu.startswith("ESP32" + t):
            return "esp32" + t.lower()
    return "esp32"  # ESP32, ESP32-D2WD, ESP32-PICO-D4...


CONFIG_VERSION = "2020-03-20"


def _obj(pairs):
    # pairs: list of (key, already-encoded JSON text); None values are left out.
    return "{" + ",".join('"%s":%s' % (k, v) for k, v in pairs if v is not None) + "}"


def _attrs(attrs):
    if not attrs:
        return None
    return "[" + ",".join(_obj((("name", _j(k)), ("value", _j(v)))) for k, v in attrs) + "]"


def _param(self):
    p = self.props
    props = [s for f, s in ((READ, "read"), (WRITE, "write"), (TIME_SERIES, "time_series"),
                            (SIMPLE_TS, "simple_ts")) if p & f]
    bounds = None
    b = self.bounds
    if b is not None:
        if self.data_type == "array":
            bounds = _obj((("max", _j(b[1])),))
        else:
            bounds = _obj((("min", _j(b[0])), ("max", _j(b[1])), ("step", _j(b[2]) if b[2] else None)))
    return _obj((
        ("name", _j(self.name)),
        ("type", _j(self.type) if self.type else None),
        ("data_type", _j(self.data_type)),
        ("properties", _j(props)),
        ("bounds", bounds),
        ("valid_strs", _j(self.valid_strs) if self.valid_strs is not None else None),
        ("ui_type", _j(self.ui_type) if self.ui_type else None),
    ))


def _device(self, out, sep=""):
    # Appends the device's text to out in pieces (encoded), each no longer
    # than its head or one param: sep, then the object's keys with "params"
    # last, left open for the params.
    head = _obj((
        ("name", _j(self.name)),
        ("type", _j(self.type)),
        ("subtype", _j(self.subtype) if self.subtype else None),
        ("model", _j(self.model) if self.model else None),
        ("attributes", _attrs(self.attrs)),
        ("primary", _j(self.primary) if self.primary else None),
    ))
    if not self.params:
        out.append((sep + head).encode())
        return
    out.append((sep + head[:-1] + ',"params":[').encode())
    sep = ""
    for p in self.params:
        out.append((sep + _param(p)).encode())
        sep = ","
    out.append(b"]}")


def _node(self):
    # A list of pieces, each at most one param (or a device's head) long:
    # they go into the MQTT packet as they are (mqtt.publish split), so
    # building and sending the config never needs a block larger than a
    # piece, in a heap that the app's start has cut into small holes. Each
    # is encoded as soon as it is built.
    info = _obj((
        ("name", _j(self.name)),
        ("fw_version", _j(self.fw_version)),
        ("type", _j(self.type)),
        ("subtype", _j(self.subtype) if self.subtype else None),
        ("readme", _j(self.readme) if self.readme else None),
        ("model", _j(self.model)),
        ("project_name", _j(self.project_name)),
        ("platform", _j(self.platform)),
    ))
    out = [_obj((
        ("node_id", _j(self.node_id)),
        ("config_version", _j(CONFIG_VERSION)),
        ("info", info),
        ("attributes", _attrs(self.attrs)),
    ))[:-1].encode()]  # the object stays open for the lists
    if self.devices:
        for key, svc in (("devices", False), ("services", True)):
            sep = ',"%s":[' % key
            for d in self.devices:
                if d.service == svc:
                    _device(d, out, sep)
                    sep = ","
            out.append(b"]" if sep == "," else (sep + "]").encode())
    out.append(b"}")
    return out


def config(obj, parts=False):
    if isinstance(obj, Param):
        return _param(obj)
    if isinstance(obj, Device):
        out = []
        _device(obj, out)
        return b"".join(out).decode()
    out = _node(obj)
    return out if parts else b"".join(out).decode()
