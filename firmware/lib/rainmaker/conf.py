# The node config JSON (docs/protocol.md#node-config), in the key order of the C SDK,
# because MicroPython's dict has no insertion order and json.dumps has no sort_keys.
#
# Loaded only while the config is built (node.py's config() methods), then dropped.
from .node import READ, WRITE, TIME_SERIES, SIMPLE_TS, Param, Device, _j

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


def _device(self):
    params = None
    if self.params:
        params = "[" + ",".join(_param(p) for p in self.params) + "]"
    return _obj((
        ("name", _j(self.name)),
        ("type", _j(self.type)),
        ("subtype", _j(self.subtype) if self.subtype else None),
        ("model", _j(self.model) if self.model else None),
        ("attributes", _attrs(self.attrs)),
        ("primary", _j(self.primary) if self.primary else None),
        ("params", params),
    ))


def _node(self):
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
    devs = svcs = None
    if self.devices:
        devs = "[" + ",".join(_device(d) for d in self.devices if not d.service) + "]"
        svcs = "[" + ",".join(_device(d) for d in self.devices if d.service) + "]"
    return _obj((
        ("node_id", _j(self.node_id)),
        ("config_version", _j(CONFIG_VERSION)),
        ("info", info),
        ("attributes", _attrs(self.attrs)),
        ("devices", devs),
        ("services", svcs),
    ))


def config(obj):
    if isinstance(obj, Param):
        return _param(obj)
    if isinstance(obj, Device):
        return _device(obj)
    return _node(obj)
