# Local control (docs/protocol.md#local-control): the esp_local_ctrl control
# messages, without I/O. The phone apps and esp-rainmaker-cli read the node
# config and the params, and write params, over the LAN, with no cloud.
#
# Control.handle() takes one decrypted LocalCtrlMessage and returns the
# plaintext reply. Two properties, at fixed indices the clients rely on:
#   0 "config"  type 1, flags 1 (read-only): the node config JSON
#   1 "params"  type 2, flags 0: read = every param, write = a params write
#                applied as a cloud write is, with source "Local"
# What the app may get wrong (an index out of range, writing the read-only
# property, a value that is not a JSON object) is answered in the reply's
# status; a message that does not parse raises ValueError or Refused, and
# the transport then answers nothing, as the SDK does.
import json
from micropython import const
from .prov import pb
from .prov.errors import Refused
from .sync import _shallow
from . import log

MAX_PROPS = const(4)  # indices / values per request (RainMaker has two properties)
MAX_VALUE = const(4096)  # bytes of one value written
_MAX_DEPTH = const(16)  # JSON nesting of a written value, as a cloud write
_MAX_ITEMS = const(64)  # fields decoded from one request before it is refused outright

# Status (protocomm constants)
SUCCESS = const(0)
INVALID_PROTO = const(2)
INVALID_ARG = const(4)
INTERNAL = const(5)

# LocalCtrlMsgType: a reply is the request's type + 1.
_GET_COUNT = const(0)
_GET_VALS = const(4)
_SET_VALS = const(6)

_READONLY = const(1)
_PROPS = (("config", 1, _READONLY), ("params", 2, 0))

VERSION = "v1.0"


def version_json(sec):
    """The body of esp_local_ctrl/version (plain, before any session)."""
    return ('{"local_ctrl":{"ver":"%s","sec_ver":%d,"sec_patch_ver":%d}}' % (
        VERSION, sec.version, sec.patch)).encode()


def _reply(msg, field, body):
    return pb.f_int(1, msg + 1) + pb.f_msg(field + 1, body)


class Control:
    """node: .config() and .params() as JSON text; sync: .remote(bytes, now, source);
    clock(): the time in ms that sync.remote wants."""

    def __init__(self, node, sync, clock):
        self.node = node
        self.sync = sync
        self.clock = clock
        self.writes = 0  # params writes accepted (status Success)

    def handle(self, data):
        d = pb.decode(data)
        msg = pb.get_int(d, 1)
        if msg == _GET_COUNT:
            v = d.get(10)
            if v is not None and type(v) is not bytes:
                raise ValueError("field 10: not a message")
            return _reply(msg, 10, pb.f_int(2, len(_PROPS)))
        if msg == _GET_VALS:
            body = d.get(12)
            if type(body) is not bytes:
                raise ValueError("field 12: missing message")
            return _reply(msg, 12, self._get(_indices(body)))
        if msg == _SET_VALS:
            return _reply(msg, 14, pb.f_int(1, self._set(_values(d.get(14)))))
        raise Refused("unknown local control message type %d" % msg)

    def _get(self, idx):
        if idx is None or any(i >= len(_PROPS) for i in idx):
            return pb.f_int(1, INVALID_ARG)
        out = []
        for i in idx:
            name, ptype, flags = _PROPS[i]
            try:
                value = self.node.config() if i == 0 else self.node.params()
            except Exception as e:  # e.g. MemoryError building the config: the app may retry
                log.error("lctl", "%s not read: %s" % (name, str(e) or type(e).__name__))
                return pb.f_int(1, INTERNAL)
            if isinstance(value, str):
                value = value.encode()
            out.append(pb.f_msg(2, pb.f_bytes(2, name.encode()) + pb.f_int(3, ptype) + pb.f_int(4, flags)
                                + pb.f_bytes(5, value)))
        return b"".join(out)

    def _set(self, vals):
        if vals is None:
            return INVALID_ARG
        # All checked before anything is applied, as the SDK does.
        for i, v in vals:
            if i >= len(_PROPS):
                log.warn("lctl", "write to property %d refused: there are %d" % (i, len(_PROPS)))
                return INVALID_ARG
            if _PROPS[i][2] & _READONLY:
                log.warn("lctl", "write to %s refused: it is read-only" % _PROPS[i][0])
                return INVALID_ARG
            if not _object(v):
                log.warn("lctl", "params write refused: not a JSON object of at most %d bytes" % MAX_VALUE)
                return INVALID_ARG
        for _, v in vals:
            self.sync.remote(v, self.clock(), "Local")
        self.writes += 1
        return SUCCESS


def _indices(body):
    """CmdGetPropertyValues -> [index], or None if there are too many. Packed
    (proto3's default) and unpacked encodings are both accepted."""
    out = []
    for num, v in pb.items(body, _MAX_ITEMS):
        if num != 1:
            continue
        if type(v) is bytes:
            out += pb.varints(v, _MAX_ITEMS)
        else:
            out.append(v)
        if len(out) > MAX_PROPS:
            return None
    return out


def _values(body):
    """CmdSetPropertyValues -> [(index, value)], or None if there are too many or a
    value is too long. A missing payload is an empty list (nothing to set)."""
    if body is None:
        raise ValueError("field 14: missing message")
    if type(body) is not bytes:
        raise ValueError("field 14: not a message")
    out = []
    for num, v in pb.items(body, _MAX_ITEMS):
        if num != 1:
            continue
        if type(v) is not bytes:
            raise ValueError("PropertyValue is not a message")
        p = pb.decode(v)
        value = p.get(2, b"")
        if type(value) is not bytes:
            raise ValueError("PropertyValue.value is not bytes")
        if len(out) >= MAX_PROPS or len(value) > MAX_VALUE:
            return None
        out.append((pb.get_int(p, 1), value))
    return out


def _object(v):
    # Checked here so that the app hears InvalidArgument; sync.remote parses
    # it again (a 4 KB write, rare: simpler than a second entry point).
    if not v or len(v) > MAX_VALUE or not _shallow(v, _MAX_DEPTH):
        return False
    try:
        return isinstance(json.loads(v), dict)
    except (ValueError, UnicodeError):
        return False
