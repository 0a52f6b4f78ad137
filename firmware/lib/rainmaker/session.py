# MQTT client session state, without I/O.
#
# The driver hands in received bytes and the current tick (ms), and sends the
# bytes it gets back. Time is a tick counter that wraps like MicroPython's
# time.ticks_ms() on the ESP32 (period 2**30), so every comparison goes through
# diff() and a board that has been up for 13 days keeps working.
from micropython import const
from . import mqtt

_PERIOD = const(0x40000000)
_HALF = const(0x20000000)

# Events returned by Session.receive(); the driver acts on them.
EV_CONNACK = const(1)
EV_MESSAGE = const(2)
EV_PUBACK = const(3)
EV_SUBACK = const(4)
EV_OVERSIZE = const(5)

_ACK_TIMEOUT = const(10000)  # ms to wait for a PUBACK/SUBACK before re-sending
_MAX_TRIES = const(5)  # sends of one packet before the link is declared dead
# A PUBLISH longer than this is kept as its header and the payload's pieces
# (mqtt.publish split): the node config never needs one block of its size.
_SPLIT = const(1024)


def diff(a, b):
    """a - b on the wrapping tick clock (same contract as time.ticks_diff)."""
    return ((a - b + _HALF) % _PERIOD) - _HALF


class Session:
    def __init__(self, client_id, keepalive=120, will=None, max_inflight=8, max_packet=8192,
                 max_out=131072):
        self.client_id = client_id
        self.keepalive = keepalive  # seconds, sent in CONNECT
        self.will = will
        self.max_inflight = max_inflight
        self.max_packet = max_packet  # largest packet we accept from the broker
        self.max_out = max_out  # largest we send: AWS IoT's limit is 128 KiB
        self.connected = False
        self._pid = 0
        # pid -> [packet, last send tick, sends, kind]; kind is PUBLISH or SUBSCRIBE.
        # The packet is a bytearray, or for a long PUBLISH a list of chunks
        # that join to it (the first a bytearray: the header).
        self.inflight = {}
        self.reader = None
        self._rx = 0  # tick of the last byte received
        self._tx = 0  # tick of the last byte sent
        self._ping = None  # tick a PINGREQ went out, None if none outstanding
        self.dropped = 0  # oversized messages discarded

    # -- connection lifecycle -------------------------------------------------

    def connect(self, now):
        """Start a new network connection: returns the CONNECT packet."""
        self.reader = mqtt.Reader(self.max_packet)
        self.connected = False
        self._rx = self._tx = now
        self._ping = None
        return mqtt.connect(self.client_id, self.keepalive, True, self.will)

    def resend(self, now):
        """After CONNACK: unacknowledged QoS 1 publishes go out again.

        With a clean session the broker forgot them, so they are re-sent as
        new messages (DUP clear). Subscriptions are redone by the caller.
        """
        out = []
        for pid in list(self.inflight):
            entry = self.inflight[pid]
            if entry[3] != mqtt.PUBLISH:
                del self.inflight[pid]
                continue
            entry[1] = now
            entry[2] = 1
            out.append(entry[0])
        if out:
            self._tx = now
        return out

    def lost(self):
        """The network connection is gone (error, dead link, Wi-Fi drop)."""
        self.connected = False
        self.reader = None
        self._ping = None

    # -- outbound -------------------------------------------------------------

    def _next_pid(self):
        for _ in range(0xFFFF):
            self._pid = self._pid % 0xFFFF + 1
            if self._pid not in self.inflight:
                return self._pid
        raise mqtt.MQTTError("no free packet id")

    def can_publish(self):
        return len(self.inflight) < self.max_inflight

    def publish(self, topic, payload, qos, now):
        """Returns (pid, packet). pid is 0 for QoS 0. Raises if the window is full.

        The packet is a bytearray, or a list of chunks for one longer than
        _SPLIT (see mqtt.publish); send its chunks in order.
        """
        if qos and not self.can_publish():
            raise mqtt.MQTTError("too many unacknowledged publishes")
        payload = mqtt.parts(payload)  # encoded once for size() and publish()
        n = mqtt.size(topic, payload, qos)
        if n > self.max_out:
            raise ValueError("publish of %d bytes exceeds the broker limit of %d" % (n, self.max_out))
        pid = self._next_pid() if qos else 0
        pkt = mqtt.publish(topic, payload, qos, pid, split=n > _SPLIT)
        if qos:
            self.inflight[pid] = [pkt, now, 1, mqtt.PUBLISH]
        self._tx = now
        return pid, pkt

    def subscribe(self, topics, now):
        pid = self._next_pid()
        pkt = mqtt.subscribe(pid, topics)
        self.inflight[pid] = [pkt, now, 1, mqtt.SUBSCRIBE]
        self._tx = now
        return pid, pkt

    # -- inbound --------------------------------------------------------------

    def receive(self, data, now):
        """Feed received bytes. Returns (events, bytes_to_send).

        events is a list of tuples: (EV_CONNACK, session_present, rc),
        (EV_MESSAGE, topic, payload, qos, retain), (EV_PUBACK, pid),
        (EV_SUBACK, pid, codes), (EV_OVERSIZE, topic, size).
        Raises mqtt.MQTTError when the stream is corrupt.
        """
        self._rx = now
        self._ping = None  # any byte proves the link is alive
        assert self.reader is not None  # made by connect()
        self.reader.feed(data)
        events = []
        out = b""
        for t, pid, topic, payload, qos, retain, codes, size in self.reader.packets():
            if t == mqtt.PUBLISH:
                if qos:
                    out += mqtt.puback(pid)
                if size:
                    self.dropped += 1
                    events.append((EV_OVERSIZE, topic, size))
                else:
                    events.append((EV_MESSAGE, topic, payload, qos, retain))
            elif t == mqtt.CONNACK:
                assert codes is not None  # CONNACK always has them
                self.connected = codes[1] == 0
                events.append((EV_CONNACK, codes[0], codes[1]))
            elif t == mqtt.PUBACK or t == mqtt.SUBACK:
                entry = self.inflight.get(pid)
                kind = mqtt.PUBLISH if t == mqtt.PUBACK else mqtt.SUBSCRIBE
                if entry and entry[3] == kind:
                    del self.inflight[pid]
                    events.append((EV_PUBACK, pid) if t == mqtt.PUBACK else (EV_SUBACK, pid, codes))
            # PINGRESP and UNSUBACK only refresh _rx.
        if out:
            self._tx = now
        return events, out

    # -- timers ---------------------------------------------------------------

    def tick(self, now):
        """Periodic work. Returns b"" or a list of chunks to send, in order
        (never joined: see publish); raises mqtt.MQTTError on a dead link."""
        if not self.connected:
            return b""
        ka = self.keepalive * 1000
        if self._ping is not None and diff(now, self._ping) > min(ka, _ACK_TIMEOUT * 2):
            raise mqtt.MQTTError("no PINGRESP within %d s: link is dead" % (diff(now, self._ping) // 1000))
        out = None  # made only when needed: tick runs often
        for pid in self.inflight:
            entry = self.inflight[pid]
            if diff(now, entry[1]) >= _ACK_TIMEOUT:
                if entry[2] >= _MAX_TRIES:
                    raise mqtt.MQTTError("packet %d not acknowledged after %d sends" % (pid, entry[2]))
                if out is None:
                    out = []
                pkt = entry[0]
                if entry[3] == mqtt.PUBLISH:
                    # Same pid, DUP set (MQTT 3.1.1 §4.4) in a copy of the
                    # first byte: the kept packet stays as built (resend()
                    # after a reconnect sends it with DUP clear), and no
                    # block longer than a piece of it is made.
                    h = pkt[0] if isinstance(pkt, list) else pkt
                    out.append(bytes((h[0] | 0x08,)))
                    out.append(memoryview(h)[1:])
                    if h is not pkt:
                        for i in range(1, len(pkt)):
                            out.append(pkt[i])
                else:
                    out.append(pkt)
                entry[1] = now
                entry[2] += 1
        # Ping when we have been quiet for 3/4 of keep-alive, or when the
        # broker has been silent that long (a half-open TCP link looks like that).
        quiet = max(diff(now, self._tx), diff(now, self._rx))
        if ka and self._ping is None and quiet >= ka * 3 // 4:
            if out is None:
                out = []
            out.append(mqtt.pingreq())
            self._ping = now
        if out is None:
            return b""
        self._tx = now
        return out
