# MQTT 3.1.1 packets: encoding and an incremental decoder.
#
# Sans-IO: nothing here touches a socket or asyncio. Encoders return bytes;
# Reader takes whatever bytes arrived and yields whole packets. This is what
# lets the same code run under CPython tests and on the MicroPython VM.
from micropython import const

CONNECT = const(0x10)
CONNACK = const(0x20)
PUBLISH = const(0x30)
PUBACK = const(0x40)
SUBSCRIBE = const(0x82)
SUBACK = const(0x90)
_UNSUBACK = const(0xB0)
PINGREQ = const(0xC0)
PINGRESP = const(0xD0)

_MAX_REMAINING = const(268435455)  # 4-byte varint ceiling in the MQTT spec
_PEEK = const(256)  # bytes of an oversized PUBLISH kept to read its topic/pid

class MQTTError(Exception):
    pass


def _varint(n):
    if n < 0 or n > _MAX_REMAINING:
        raise MQTTError("remaining length %d out of range" % n)
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return out


def _str(s):
    if isinstance(s, str):
        s = s.encode()
    if len(s) > 0xFFFF:
        raise MQTTError("string longer than 65535 bytes")
    return len(s).to_bytes(2, "big") + s


def _packet(first, body):
    return bytes([first]) + _varint(len(body)) + body


def connect(client_id, keepalive=120, clean=True, will=None):
    """CONNECT. will = (topic, payload, qos, retain) or None."""
    if not 0 <= keepalive <= 0xFFFF:
        raise MQTTError("keepalive out of range")
    flags = 0x02 if clean else 0
    payload = _str(client_id)
    if will:
        topic, msg, qos, retain = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += _str(topic) + _str(msg)
    head = b"\x00\x04MQTT\x04" + bytes([flags]) + keepalive.to_bytes(2, "big")
    return _packet(CONNECT, head + payload)


def parts(payload):
    """The payload as a list of bytes pieces. A payload is bytes, str, or a
    list of str/bytes pieces: a large JSON built in pieces (the node config)
    is copied straight into the packet, never joined into one string first,
    so no large block is needed besides the packet itself. Idempotent: a
    caller that needs size() and publish() converts once."""
    if isinstance(payload, (list, tuple)):
        return [p.encode() if isinstance(p, str) else p for p in payload]
    return [payload.encode() if isinstance(payload, str) else payload]


def size(topic, payload, qos):
    """Length of the PUBLISH that publish() would build, without building it."""
    n = 2 + len(topic.encode() if isinstance(topic, str) else topic) + (2 if qos else 0)
    for p in parts(payload):
        n += len(p)
    return n + 2 + (n > 127) + (n > 16383) + (n > 2097151)


def publish(topic, payload, qos=0, pid=0, dup=False, retain=False, split=False):
    """PUBLISH, built in one allocation of its exact size (payload: see parts()).

    With split, a list instead: a bytearray of the header (fixed header,
    topic, packet id), then the payload's pieces themselves, not copied (a
    bytearray piece is, so that no later change to it goes out): sent one
    after the other, they are the packet, and no block of its size is
    needed, only the header's.
    """
    if qos not in (0, 1):
        raise MQTTError("only QoS 0 and 1 are supported")
    payload = parts(payload)
    t = topic.encode() if isinstance(topic, str) else topic
    if len(t) > 0xFFFF:
        raise MQTTError("string longer than 65535 bytes")
    top = 2 + len(t) + (2 if qos else 0)  # the variable header
    n = top
    for p in payload:
        n += len(p)
    head = _varint(n)
    i = 1 + len(head)
    out = bytearray(i + (top if split else n))
    out[0] = PUBLISH | (qos << 1) | (0x08 if dup else 0) | (0x01 if retain else 0)
    out[1:i] = head
    out[i] = len(t) >> 8
    out[i + 1] = len(t) & 0xFF
    i += 2
    out[i:i + len(t)] = t
    i += len(t)
    if qos:
        out[i] = pid >> 8
        out[i + 1] = pid & 0xFF
        i += 2
    if split:
        return [out] + [p if type(p) is bytes else bytes(p) for p in payload]
    for p in payload:
        out[i:i + len(p)] = p
        i += len(p)
    return out


def puback(pid):
    return bytes((PUBACK, 2, pid >> 8, pid & 0xFF))


def subscribe(pid, topics):
    """topics: list of (filter, qos)."""
    body = pid.to_bytes(2, "big")
    for t, q in topics:
        body += _str(t) + bytes([q])
    return _packet(SUBSCRIBE, body)


def pingreq():
    return b"\xc0\x00"


class Reader:
    """Incremental decoder.

    feed() the bytes you received, then iterate packets(). Each packet is a
    tuple (type, pid, topic, payload, qos, retain, codes, size); fields a type
    does not use are 0, None or b"". codes: (session_present, rc) for CONNACK,
    the granted QoS bytes for SUBACK. A packet larger than max_packet is never
    buffered: its first bytes are kept to recover the topic and packet id, the
    rest is discarded as it arrives, and one PUBLISH with size set (its full
    length) and an empty payload is produced, so the caller can log it and
    still PUBACK it.
    """

    def __init__(self, max_packet=8192):
        self.max_packet = max_packet
        self._buf = bytearray()
        self._skip = 0  # bytes of an oversized packet still to discard
        self._big = None  # the oversized packet being skipped

    def feed(self, data):
        self._buf.extend(data)

    def _header(self, i):
        # From offset i: (first, remaining, header_len) or None if incomplete.
        buf = self._buf
        n = 0
        shift = 0
        j = i + 1
        while True:
            if j >= len(buf):
                return None
            b = buf[j]
            n |= (b & 0x7F) << shift
            j += 1
            if not b & 0x80:
                return buf[i], n, j - i
            shift += 7
            if shift > 21:
                raise MQTTError("malformed remaining length")

    def packets(self):
        # Decodes in place from offset i; what was consumed is cut off the
        # buffer once, at the end (no new buffer per packet).
        out = []
        buf = self._buf
        mv = memoryview(buf)
        i = 0
        while True:
            if self._skip:
                drop = min(self._skip, len(buf) - i)
                i += drop
                self._skip -= drop
                if self._skip:
                    break
                out.append(self._big)
                self._big = None
            h = self._header(i)
            if h is None:
                break
            first, rem, hl = h
            end = i + hl + rem
            if hl + rem > self.max_packet:
                if first & 0xF0 != PUBLISH:
                    raise MQTTError("packet 0x%02x of %d bytes exceeds limit" % (first, hl + rem))
                if len(buf) - i < min(hl + rem, hl + _PEEK):
                    break  # wait for enough bytes to read the topic
                self._big = self._publish(first, mv[i + hl : i + hl + min(rem, _PEEK)], hl + rem)
                self._skip = hl + rem
                continue
            if len(buf) < end:
                break
            out.append(self._decode(first, mv[i + hl : end]))
            i = end
        mv = None  # no view may outlive the buffer's resize (CPython checks)
        if i:
            buf[:i] = b""
        return out

    def _publish(self, first, body, size=0):
        # size: the full length of an oversized PUBLISH, whose payload is not kept.
        qos = (first >> 1) & 3
        if qos == 3:
            raise MQTTError("PUBLISH with QoS 3")
        if len(body) < 2:
            raise MQTTError("PUBLISH too short")
        end = 2 + ((body[0] << 8) | body[1])
        if end + (2 if qos else 0) > len(body):
            raise MQTTError("PUBLISH topic overruns packet")
        try:
            topic = bytes(body[2:end]).decode()
        except UnicodeError:
            raise MQTTError("PUBLISH topic is not UTF-8")
        pid = 0
        if qos:
            pid = (body[end] << 8) | body[end + 1]
            end += 2
        return (PUBLISH, pid, topic, b"" if size else bytes(body[end:]), qos, bool(first & 0x01), None, size)

    def _decode(self, first, body):
        t = first & 0xF0
        if t == PUBLISH:
            return self._publish(first, body)
        n = len(body)
        pid = 0
        codes = None
        if t == CONNACK:
            if n != 2:
                raise MQTTError("CONNACK length %d" % n)
            codes = (body[0] & 1, body[1])
        elif t in (PUBACK, _UNSUBACK):
            if n != 2:
                raise MQTTError("ack length %d" % n)
            pid = (body[0] << 8) | body[1]
        elif t == SUBACK:
            if n < 3:
                raise MQTTError("SUBACK too short")
            pid = (body[0] << 8) | body[1]
            codes = bytes(body[2:])
        elif t == PINGRESP:
            if n:
                raise MQTTError("PINGRESP with body")
        else:
            # PUBREC/PUBREL/PUBCOMP (QoS 2) or a client-only type: we never
            # asked for these, so the stream cannot be trusted any more.
            raise MQTTError("unexpected packet type 0x%02x" % first)
        return (t, pid, None, b"", 0, False, codes, 0)
