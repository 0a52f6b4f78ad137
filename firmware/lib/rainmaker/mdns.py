# A minimal mDNS responder (docs/protocol.md#local-control-discovery), without I/O:
# one DNS-SD service (local control's _esp_local_ctrl._tcp) and the host's
# address. Bytes of a query in, bytes of the answer out (or None).
#
# It answers only what it owns: PTR for the service type (and for the DNS-SD
# enumeration name), SRV and TXT for the instance, A for the host; everything
# else, every response from other hosts, and every malformed packet is
# ignored. Parsing is bounded: at most _MAX_QUESTIONS questions, names of at
# most 255 bytes, and a compression pointer must point backwards, so a
# pointer loop cannot make the parser spin.
import struct
from micropython import const

PORT = const(5353)
GROUP = "224.0.0.251"

_MAX_QUESTIONS = const(16)
_MAX_NAME = const(255)
_TTL = const(120)  # s; RFC 6762's recommended TTL for records naming a host
_LEGACY_TTL = const(10)  # s; at most this to a one-shot (legacy unicast) querier

A = const(1)
PTR = const(12)
TXT = const(16)
SRV = const(33)
ANY = const(255)
_IN = const(1)
_FLUSH = const(0x8000)  # cache-flush bit of a unique record's class
_QU = const(0x8000)  # "unicast response wanted" bit of a question's class

_ENUM = b"_services._dns-sd._udp.local"
_ENUM_PTR = const(0x10000)  # not a DNS type: our PTR record under _ENUM


def _enc(name):
    """A dotted name as DNS labels (never compressed: our answers are small)."""
    out = b""
    for label in name.split(b"."):
        if not 0 < len(label) < 64:
            raise ValueError("bad label in %r" % name)
        out += bytes((len(label),)) + label
    return out + b"\x00"


def read_name(buf, i):
    """(lower-case dotted name, offset after it) of the name at buf[i:]; ValueError if bad."""
    labels = []
    size = 0
    end = None  # where parsing resumes after the first pointer
    floor = i  # a pointer must point before this: no loops
    while True:
        if i >= len(buf):
            raise ValueError("name runs past the packet")
        n = buf[i]
        if n == 0:
            i += 1
            break
        if n & 0xC0 == 0xC0:
            if i + 1 >= len(buf):
                raise ValueError("truncated pointer")
            target = ((n & 0x3F) << 8) | buf[i + 1]
            if target >= floor:
                raise ValueError("compression pointer does not point backwards")
            if end is None:
                end = i + 2
            floor = target
            i = target
            continue
        if n & 0xC0:
            raise ValueError("unknown label type")
        if i + 1 + n > len(buf):
            raise ValueError("label runs past the packet")
        size += n + 1
        if size > _MAX_NAME:
            raise ValueError("name longer than 255 bytes")
        labels.append(bytes(buf[i + 1:i + 1 + n]).lower())
        i += 1 + n
    return b".".join(labels), (i if end is None else end)


def parse(pkt):
    """(id, [(name, type, unicast wanted)]) of a query; None for a response; ValueError if malformed."""
    if len(pkt) < 12:
        raise ValueError("shorter than a DNS header")
    qid, flags, qd = struct.unpack_from(">HHH", pkt, 0)
    if flags & 0x8000:
        return None  # a response: other hosts' answers are not our business
    if flags & 0x7800:
        raise ValueError("not a standard query")
    if qd > _MAX_QUESTIONS:
        raise ValueError("more than %d questions" % _MAX_QUESTIONS)
    qs = []
    i = 12
    for _ in range(qd):
        name, i = read_name(pkt, i)
        if i + 4 > len(pkt):
            raise ValueError("truncated question")
        qtype, qclass = struct.unpack_from(">HH", pkt, i)
        i += 4
        if qclass & 0x7FFF in (_IN, ANY):
            qs.append((name, qtype, bool(qclass & _QU)))
    return qid, qs


class Responder:
    """host: the host name (no ".local"); instance: the service instance name (one
    label: no dots, as a node id); service: e.g. "_esp_local_ctrl._tcp"; txt: [(key, value)]."""

    def __init__(self, host, instance, service, port, txt, ttl=_TTL):
        self.host = (host + ".local").encode()
        self.stype = (service + ".local").encode()
        self.inst = instance.encode() + b"." + self.stype
        self._host_l = self.host.lower()
        self._stype_l = self.stype.lower()
        self._inst_l = self.inst.lower()
        self.port = port
        self.ttl = ttl
        self.ip = None  # 4 bytes once the board has an address
        t = b""
        for k, v in txt:
            item = ("%s=%s" % (k, v)).encode()
            if len(item) > 255:
                raise ValueError("TXT item %r longer than 255 bytes" % k)
            t += bytes((len(item),)) + item
        self.txt = t
        self._enc_inst = _enc(self.inst)  # checks every label once, here
        _enc(self.host)
        self.bad = 0  # malformed packets seen
        self.answered = 0

    def set_ip(self, ip):
        """The board's IPv4 address, "a.b.c.d" (None: no A record)."""
        self.ip = bytes(int(x) for x in ip.split(".")) if ip else None

    # -- records ------------------------------------------------------------------

    def _rr(self, name, rtype, unique, ttl, data):
        cls = _IN | (_FLUSH if unique else 0)
        return _enc(name) + struct.pack(">HHIH", rtype, cls, ttl, len(data)) + data

    def _record(self, rtype, ttl, flush):
        if rtype == PTR:
            return self._rr(self.stype, PTR, False, ttl, self._enc_inst)
        if rtype == _ENUM_PTR:
            return self._rr(_ENUM, PTR, False, ttl, _enc(self.stype))
        if rtype == SRV:
            return self._rr(self.inst, SRV, flush, ttl, struct.pack(">HHH", 0, 0, self.port) + _enc(self.host))
        if rtype == TXT:
            return self._rr(self.inst, TXT, flush, ttl, self.txt)
        if rtype == A and self.ip:
            return self._rr(self.host, A, flush, ttl, self.ip)
        return None

    def _wanted(self, name, qtype):
        """The record types a question asks for, [] if none of ours."""
        if name == _ENUM and qtype in (PTR, ANY):
            return [_ENUM_PTR]
        if name == self._stype_l and qtype in (PTR, ANY):
            return [PTR]
        if name == self._inst_l:
            return [t for t in (SRV, TXT) if qtype in (t, ANY)]
        if name == self._host_l and qtype in (A, ANY):
            return [A]
        return []

    def _message(self, qid, question, answers, extra, ttl, flush):
        ans = []
        for t in answers:
            r = self._record(t, ttl, flush)
            if r:
                ans.append(r)
        if not ans:
            return None
        add = []
        for t in extra:
            if t not in answers:
                r = self._record(t, ttl, flush)
                if r:
                    add.append(r)
        head = struct.pack(">HHHHHH", qid, 0x8400, 1 if question else 0, len(ans), 0, len(add))
        return head + (question or b"") + b"".join(ans) + b"".join(add)

    # -- the two things the I/O layer asks ----------------------------------------------

    def answer(self, pkt, src_port):
        """(reply, unicast) for a received packet, or None.

        unicast: send the reply to the querier's address and port, not to the
        group: a one-shot querier (source port not 5353) gets its query id
        echoed, the question repeated and short TTLs; a question with the
        QU bit gets its answer directly too.
        """
        try:
            q = parse(pkt)
        except (ValueError, IndexError):  # IndexError too: struct on a short tail
            self.bad += 1
            return None
        if q is None:
            return None
        qid, qs = q
        legacy = src_port != PORT
        types = []
        first = None
        multicast = False  # some question wants its answer on the group
        for name, qtype, qu in qs:
            got = self._wanted(name, qtype)
            if got:
                if first is None:
                    first = (name, qtype)
                if not qu:
                    multicast = True
                for t in got:
                    if t not in types:
                        types.append(t)
        if not types:
            return None
        self.answered += 1
        extra = []
        if PTR in types:
            extra = [SRV, TXT, A]
        elif SRV in types:
            extra = [A]
        if legacy:
            assert first is not None
            question = _enc(first[0]) + struct.pack(">HH", first[1], _IN)
            msg = self._message(qid, question, types, extra, min(self.ttl, _LEGACY_TTL), False)
        else:
            msg = self._message(0, None, types, extra, self.ttl, True)
        if msg is None:
            return None  # asked only for our address, and we have none yet
        return msg, legacy or not multicast

    def announce(self):
        """An unsolicited response with every record (sent at start, and again 1 s later)."""
        return self._message(0, None, [PTR, SRV, TXT, A], [], self.ttl, True)
