# The life of one MQTT connection and the pauses between connections,
# without I/O.
#
# The driver (agent.py) opens a socket, calls open(), and from then on hands
# in what arrives (receive) and the passing of time (tick); it sends the
# chunks in link.out, in order, and, when the socket dies, asks closed() how
# long to wait before the next attempt. Every decision lives here, so each
# can be tested on a fake clock:
#
#   * every wait is bounded: TCP + TLS + CONNACK, the user mapping's PUBACK,
#     the SUBACK, and each write the driver is blocked on (deadline());
#   * the order after CONNACK is the SDK's: config, user mapping (waiting for
#     its PUBACK), subscribe, then the full params;
#   * the full params (init) go out after every connect whatever the publish
#     budget: the budget throttles reports, never the state after a connect;
#   * {"Connectivity":{"Connected":true}} is re-reported 5 s after every
#     connect, as the SDK does, because the last will of the previous session
#     can reach the cloud after the new session's init;
#   * the backoff grows until a link has stayed online for _HEALTHY, so a
#     broker that accepts and then refuses (SUBACK 0x80, a malformed packet)
#     is not hammered once a second forever.
import json
from micropython import const
from . import log, topics
from .mqtt import MQTTError
from .session import diff, EV_CONNACK, EV_MESSAGE, EV_PUBACK, EV_SUBACK, EV_OVERSIZE
from .sync import LOCAL, INIT

# states
OFFLINE = const(0)
CONNECTING = const(1)  # TCP, TLS, CONNECT sent: waiting for CONNACK
MAPPING = const(2)  # user mapping published: waiting for its PUBACK
SUBSCRIBING = const(3)  # waiting for the SUBACK
ONLINE = const(4)

_CONNECT_WAIT = const(20000)  # ms for TCP + TLS handshake + CONNACK
_ACK_WAIT = const(20000)  # ms for the mapping's PUBACK and the SUBACK
_WRITE_WAIT = const(20000)  # ms a write may stay blocked once online
_HEALTHY = const(60000)  # ms online before the backoff starts again from its floor
_CONNECTED_DELAY = const(5000)  # ms after the SUBACK: re-report Connected (SDK: 5 s)
_BACKOFF_MIN = const(2000)  # ms; the delay is half fixed, half random: 1-2 s first
_BACKOFF_MAX = const(120000)

_QUEUE_MAX = const(8)  # messages posted by services (tsdata, otastatus...) waiting to go out
# link.out holds packets and a long PUBLISH's pieces as they are, the very
# objects the session keeps for a re-send: never copied here, so no second
# block of their size is needed. The driver gathers the short ones in one
# buffer of its own (a PUBACK and the echo of its write leave in one write).

_STATE_TEXT = ("offline", "connecting", "mapping", "subscribing", "online")
_CONNECTED = b'{"Connectivity":{"Connected":true}}'


class Backoff:
    """Exponential backoff with jitter: half the step fixed, half random.

    The first retry waits at least _BACKOFF_MIN / 2 = 1 s: AWS IoT accepts
    one CONNECT per second per client id.
    """

    def __init__(self, lo=_BACKOFF_MIN, hi=_BACKOFF_MAX, rand=None):
        self.lo = lo
        self.hi = hi
        self.n = 0
        self.rand = rand or _rand  # () -> 0..255

    def next(self, r=None):
        step = min(self.hi, self.lo << min(self.n, 16))
        self.n += 1
        if r is None:
            r = self.rand()
        return step // 2 + (step // 2) * r // 255

    def reset(self):
        self.n = 0


class Link:
    def __init__(self, session, sync, budget, node_id, ingest=False, connectivity=True, mapping=None):
        self.session = session
        self.sync = sync
        self.budget = budget
        self.node_id = node_id
        self.ingest = ingest
        self.connectivity = connectivity
        self.mapping = mapping  # {"user_id", "secret_key"} from provisioning, until its PUBACK
        self.mapped = None  # the user id, once the mapping's PUBACK arrives: the driver forgets the file
        self.remote_topic = topics.sub(node_id, "params/remote")
        self.backoff = Backoff()
        self.state = OFFLINE
        self.out = []  # chunks (bytes-like) to send, in order; the driver takes them (put())
        self.connects = 0
        self.starved = False  # a report is waiting for budget (logged once)
        self._until = 0  # deadline of the wait of the current state
        self._online_at = 0
        self._connected_due = False
        self._pid = 0  # pid of the mapping publish or the subscribe we wait for
        self._fresh = False
        self.handlers = {}  # topic -> fn(payload, now): services' own subscriptions (on())
        self.queue = []  # [(suffix, payload, done)] posted by services, sent after params
        self._acks = {}  # pid -> done(now): services waiting for a PUBACK
        self.hooks = []  # fn(now) called once the link is online (after the SUBACK)
        # Services with their own queue (ota): take(now, spare) -> (suffix,
        # payload) or None, sent(pid, now), puback(pid, now). They decide for
        # themselves what may go out with few or no budget tokens left.
        self.sources = []

    def on(self, suffix, fn):
        """Subscribe node/<id>/<suffix> on every connect; fn(payload, now) gets its messages."""
        self.handlers[topics.sub(self.node_id, suffix)] = fn

    def post(self, suffix, payload, done=None):
        """Queue a message of a service; done(now) is called on its PUBACK.

        Sent after the params, within the publish budget. The queue is
        bounded: when full, the oldest message is dropped (and said so), so a
        service that produces faster than the budget allows cannot exhaust
        the heap.
        """
        q = self.queue
        if len(q) >= _QUEUE_MAX:
            log.warn("mqtt", "%s dropped: %d messages already waiting" % (q[0][0], _QUEUE_MAX))
            q.pop(0)
        q.append((suffix, payload, done))

    def put(self, pkt):
        """Queue a packet, or a long PUBLISH's header and pieces (a list, see
        Session.publish), for the driver, as it is: nothing is copied here.
        The driver gathers short ones in its write buffer (Agent._flush)."""
        if isinstance(pkt, list):
            self.out.extend(pkt)
        elif pkt:
            self.out.append(pkt)

    def state_text(self):
        return _STATE_TEXT[self.state]

    # -- the driver's calls ---------------------------------------------------

    def open(self, now):
        """A socket is being opened: CONNECT goes out once TCP and TLS are up."""
        self.state = CONNECTING
        self._until = now + _CONNECT_WAIT
        self.out = []
        self.put(self.session.connect(now))

    def stage(self, now):
        """Build the node config's PUBLISH before the first connection.

        Called at start, before the connection cuts the heap up (and again
        before each connection while it is due): its packet, the largest
        one, then waits in the session's window and is the first to go out
        after the CONNACK (with the other unacknowledged ones, resend()), in
        the SDK's order. Its pieces never meet the TLS handshake's buffers.
        """
        if self.state == OFFLINE and self.sync.config_due:
            try:
                self._config(now)
            except MemoryError:  # built after the CONNACK instead, as without stage()
                pass
            self.out = []  # sent after the CONNACK, from the session's window

    def _config(self, now):
        # The config is due until its packet exists: a MemoryError while it is
        # built or packed leaves it due, for the next connection.
        suffix, payload = self.sync.take(now)
        self._send(suffix, payload, now)
        self.sync.sent(suffix)

    def receive(self, data, now):
        """Bytes from the broker. Raises MQTTError when the link must end."""
        events, out = self.session.receive(data, now)
        self.put(out)
        for ev in events:
            kind = ev[0]
            if kind == EV_MESSAGE:
                fn = self.handlers.get(ev[1])
                if ev[1] == self.remote_topic:
                    self.sync.remote(ev[2], now)
                    self.pump(now)  # echo now, not at the next tick
                elif fn:
                    fn(ev[2], now)
                    self.pump(now)
                else:
                    log.debug("mqtt", "message on unexpected topic %s" % ev[1])
            elif kind == EV_CONNACK:
                self._connack(ev[2], now)
            elif kind == EV_PUBACK:
                done = self._acks.pop(ev[1], None)
                if done:
                    done(now)
                for src in self.sources:
                    src.puback(ev[1], now)
                if self.state == MAPPING and ev[1] == self._pid:
                    assert self.mapping is not None  # MAPPING is entered only with one
                    self.mapped = self.mapping["user_id"]
                    self.mapping = None
                    self._subscribe(now)
            elif kind == EV_SUBACK:
                if self.state == SUBSCRIBING and ev[1] == self._pid:
                    self._suback(ev[2], now)
            elif kind == EV_OVERSIZE:
                log.warn("mqtt", "message on %s of %d bytes dropped: limit is %d" % (ev[1], ev[2], self.session.max_packet))

    def tick(self, now):
        """Timers. Raises MQTTError when a wait ran out or the link is dead."""
        if self.state == OFFLINE:
            return
        if self.state != ONLINE and diff(now, self._until) >= 0:
            raise MQTTError("no %s from the broker within %d s" % (self._waiting(), _CONNECT_WAIT // 1000))
        self.put(self.session.tick(now))
        if self.state == ONLINE:
            if self._connected_due and diff(now, self._online_at) >= _CONNECTED_DELAY \
                    and self.session.can_publish():  # (a full window: at a later tick)
                self._send(LOCAL, _CONNECTED, now)
                self._connected_due = False  # (after: a MemoryError leaves it due)
            self.pump(now)

    def deadline(self, now):
        """Tick by which a write blocked now must have finished."""
        if self.state == ONLINE:
            return now + _WRITE_WAIT
        return self._until

    def closed(self, now, retry=True):
        """The socket is gone. Returns ms to wait before the next attempt.

        retry=False when the cause was not the broker (Wi-Fi lost): the
        attempt does not count towards the backoff.
        """
        if self.state == ONLINE and diff(now, self._online_at) >= _HEALTHY:
            self.backoff.reset()
        self.state = OFFLINE
        self.session.lost()
        self._acks = {}  # their publishes are resent on the next link, without callers
        self.out = []  # nothing stale goes out on the next link
        return self.backoff.next() if retry else 0

    # -- connection set-up ----------------------------------------------------

    def _waiting(self):
        if self.state == CONNECTING:
            return "CONNACK"
        if self.state == MAPPING:
            return "PUBACK of user/mapping"
        return "SUBACK"

    def _connack(self, rc, now):
        if self.state != CONNECTING:
            raise MQTTError("unexpected CONNACK")
        if rc:
            from . import diag  # the texts are loaded only when they are needed

            raise MQTTError("broker refused the connection: %s" % diag.connack(rc))
        self.connects += 1
        for pkt in self.session.resend(now):
            self.put(pkt)
        self.sync.connected()
        # SDK order: config, (user mapping), subscribe, then the full params.
        if self.sync.config_due:
            self._config(now)
        if self.mapping:
            m = self.mapping
            body = json.dumps({"node_id": self.node_id, "user_id": m["user_id"], "secret_key": m.get("secret_key", "")})
            self._pid = self._send("user/mapping", body, now)
            self.state = MAPPING
            self._until = now + _ACK_WAIT
        else:
            self._subscribe(now)

    def _subscribe(self, now):
        subs = [(self.remote_topic, 1)]
        for t in self.handlers:
            subs.append((t, 1))
        self._pid, pkt = self.session.subscribe(subs, now)
        self.put(pkt)
        self.state = SUBSCRIBING
        self._until = now + _ACK_WAIT

    def _suback(self, codes, now):
        if 0x80 in codes:
            t = self.remote_topic if codes[0] == 0x80 else "a service topic"
            raise MQTTError("broker refused subscription to %s (check the broker ACL for this node id)" % t)
        self.state = ONLINE
        self._online_at = now
        self._connected_due = self.connectivity
        self._fresh = True  # the init that follows a connect is not budgeted
        log.info("mqtt", "online as %s" % self.node_id)
        for fn in self.hooks:
            fn(now)
        self.pump(now)

    # -- publishing -----------------------------------------------------------

    def pump(self, now):
        """Publish whatever the sync engine has due, within the budget and window.

        The full params after a connect are not held back by the budget
        (they still spend a token when there is one): a reconnect must always
        leave the cloud with the device's state. A reconfiguration by the app
        later on is an ordinary report: an app that reconfigures in a loop
        cannot flood the cloud.
        """
        if self.state != ONLINE:
            return
        sync = self.sync
        while self.session.can_publish():
            fresh = self._fresh and sync.init_due
            spare = self.budget.available(now)
            if not fresh and spare <= 0:
                if self._source(now, 0):
                    continue
                if not self.starved and (sync.pending() or self.queue):
                    log.warn("mqtt", "publish budget used up; reports wait and merge")
                    self.starved = True
                return
            if spare > 0:
                # The wait ends with a token, not with the init after a
                # connect: a starved node says so once, not per reconnect.
                self.starved = False
            # Each report stays due (sync.sent, queue.pop) until its packet
            # exists: a MemoryError or MQTTError in _send loses nothing.
            item = sync.take(now)
            if item is None:
                if not self.queue:
                    if self._source(now, spare):
                        continue
                    return
                suffix, payload, done = self.queue[0]
                pid = self._send(suffix, payload, now)
                self.queue.pop(0)
                if done and pid:
                    self._acks[pid] = done
                continue
            self._send(item[0], item[1], now)
            sync.sent(item[0])  # nothing between: the node cannot have changed
            if item[0] == INIT:
                self._fresh = False

    def _source(self, now, spare):
        for src in self.sources:
            item = src.take(now, spare)
            if item:
                src.sent(self._send(item[0], item[1], now), now)
                return True
        return False

    def _send(self, suffix, payload, now):
        # Returns the pid, or 0 for what can never be sent (dropped: the caller
        # treats it as sent). Anything else it raises leaves the report due.
        topic = topics.pub(self.node_id, suffix, self.ingest)
        try:
            pid, pkt = self.session.publish(topic, payload, 1, now)
        except ValueError as e:
            # It can never be sent; retrying would loop forever. Say what to cut.
            log.error("mqtt", "%s not sent: %s (fewer or shorter params?)" % (suffix, e))
            return 0
        self.budget.take(now)  # a token only for what goes out
        self.put(pkt)
        if log.level >= log.DEBUG:  # (its text would be an allocation per publish)
            log.debug("mqtt", "%s %d bytes" % (suffix, sum(len(c) for c in pkt) if isinstance(pkt, list) else len(pkt)))
        return pid


def _rand():
    import random  # seeded from the hardware RNG on the ESP32

    return random.getrandbits(8)
