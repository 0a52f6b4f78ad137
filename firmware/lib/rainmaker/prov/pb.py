# Protocol Buffers wire format, the subset the provisioning messages use.
#
# decode() reads one message into {field number: value}: a varint field is an
# int, a length-delimited field is bytes (nested messages are decoded again by
# the caller); items() keeps every field in order, for repeated ones. Given a
# memoryview, length-delimited fields are views into it, not copies (a
# Security 2 handshake nests its 384-byte key three deep): get_msg() decodes
# a view as views, get_bytes() copies only the field asked for.
# Fixed32/64 fields are skipped as unknown, groups are refused.
# Everything is bounded: field count, varint length, every length checked
# against the buffer. Malformed input raises ValueError, never IndexError.
#
# The encoders follow proto3 as protobuf-c writes it: fields in number order,
# zero scalars and empty bytes omitted (f_int, f_bytes), a set oneof message
# always written even when empty (f_msg).
from micropython import const

_MAX_FIELDS = const(24)
_M64 = const(0xFFFFFFFFFFFFFFFF)


def _varint(buf, i, end):
    n = 0
    shift = 0
    while True:
        if i >= end:
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n & _M64, i
        shift += 7
        if shift >= 70:
            raise ValueError("varint too long")


def items(buf, max_fields=_MAX_FIELDS):
    """[(field, int or bytes)] of one message in wire order, repeated fields included."""
    out = []
    i = 0
    end = len(buf)
    while i < end:
        if len(out) >= max_fields:
            raise ValueError("too many fields")
        key, i = _varint(buf, i, end)
        num = key >> 3
        wt = key & 7
        if num == 0 or num > 0x1FFFFFFF:
            raise ValueError("bad field number")
        if wt == 0:
            v, i = _varint(buf, i, end)
        elif wt == 2:
            n, i = _varint(buf, i, end)
            if n > end - i:
                raise ValueError("length past the end")
            v = buf[i:i + n]
            if type(v) is not memoryview:
                v = bytes(v)
            i += n
        elif wt == 1 or wt == 5:
            i += 8 if wt == 1 else 4  # unknown fixed-size field: skipped (it still counts)
            if i > end:
                raise ValueError("truncated fixed field")
            out.append((0, None))
            continue
        else:
            raise ValueError("unsupported wire type %d" % wt)
        out.append((num, v))
    return out


def decode(buf, max_fields=_MAX_FIELDS):
    """{field: int or bytes (memoryview from a memoryview)} of one message; a
    repeated field keeps its last value."""
    out = {}
    for num, v in items(buf, max_fields):
        if num:
            out[num] = v
    return out


def varints(buf, max_n):
    """The integers of a packed repeated varint field; ValueError past max_n of them."""
    out = []
    i = 0
    end = len(buf)
    while i < end:
        if len(out) >= max_n:
            raise ValueError("too many packed values")
        v, i = _varint(buf, i, end)
        out.append(v)
    return out


def get_int(d, num, hi=0xFFFFFFFF):
    """An enum/uint field (0 when absent); ValueError if it is not a varint or above hi."""
    v = d.get(num, 0)
    if type(v) is not int or v > hi:
        raise ValueError("field %d: bad integer" % num)
    return v


def get_bytes(d, num, lo=0, hi=4096):
    """A bytes/string field (b'' when absent), its length checked; always bytes."""
    v = d.get(num, b"")
    t = type(v)
    if (t is not bytes and t is not memoryview) or not lo <= len(v) <= hi:
        raise ValueError("field %d: bad length" % num)
    return v if t is bytes else bytes(v)


def get_msg(d, num):
    """A nested message that must be present; decoded (as views if it is one)."""
    v = d.get(num)
    if type(v) is not bytes and type(v) is not memoryview:
        raise ValueError("field %d: missing message" % num)
    return decode(v)


def varint(n):
    if n < 0:
        n &= _M64  # int32/int64: two's complement over 64 bits
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def f_int(num, v):
    return varint(num << 3) + varint(v) if v else b""


def f_bool(num, v):
    return varint(num << 3) + b"\x01" if v else b""


def f_bytes(num, v):
    return varint((num << 3) | 2) + varint(len(v)) + v if v else b""


def f_msg(num, v):
    return varint((num << 3) | 2) + varint(len(v)) + v
