# The thin asyncio layer: Wi-Fi, TLS, the MQTT connection and its supervisor.
#
# All protocol decisions live in the sans-IO modules (session, sync, budget);
# this file only moves bytes and time between them and the network.
import asyncio
import json
import os
import time
import gc
import ssl
import network
from micropython import const
from . import log, topics
from .node import Device, Param, READ
from .session import Session, EV_CONNACK, EV_MESSAGE, EV_PUBACK, EV_SUBACK, EV_OVERSIZE
from .mqtt import CONNACK_TEXT, MQTTError
from .sync import Sync
from .budget import Budget
from .store import Store

_TICK = const(50)  # ms between housekeeping passes of a live connection
_CONNECT_TIMEOUT = const(20)  # s for TCP + TLS handshake + CONNACK
_WIFI_TIMEOUT = const(30)  # s to wait for an IP before reporting why not
_BACKOFF_MIN = const(1000)  # ms
_BACKOFF_MAX = const(60000)  # ms
_READ = const(1024)
# 2019-01-01 in seconds since 2000-01-01 (the ESP32 epoch): before this the
# RTC has not been set, and certificate validity cannot be checked.
_TIME_VALID = const(599616000)

CERT = "certs/node.crt.der"
KEY = "certs/node.key.der"
CA = "certs/ca.der"
MAPPING = "mapping.json"  # user-node mapping from provisioning, kept until its PUBACK

_WIFI_REASON = {
    201: "network not found",
    202: "wrong password",
    203: "association failed",
    204: "handshake timeout (often a wrong password)",
    200: "beacon timeout (access point gone)",
}


class ConfigError(Exception):
    pass


def load_config(path="rainmaker.json"):
    """The bundle's settings. Raises ConfigError naming what is wrong."""
    try:
        with open(path) as f:
            cfg = json.load(f)
    except OSError:
        raise ConfigError("%s not found: deploy a credential bundle to the board" % path)
    except ValueError:
        raise ConfigError("%s is not valid JSON" % path)
    if not isinstance(cfg, dict):
        raise ConfigError("%s must hold a JSON object" % path)
    for key in ("node_id", "mqtt_host"):
        if not isinstance(cfg.get(key), str) or not cfg[key]:
            raise ConfigError("%s has no %r" % (path, key))
    if cfg.setdefault("topics", "plain") not in ("plain", "ingest"):
        raise ConfigError("%s: topics must be 'plain' or 'ingest'" % path)
    port = cfg.setdefault("mqtt_port", 8883)
    if type(port) is not int or not 0 < port < 65536:
        raise ConfigError("%s: mqtt_port must be a port number" % path)
    ka = cfg.setdefault("keepalive", 120)
    if type(ka) is not int or not 5 <= ka <= 1200:
        raise ConfigError("%s: keepalive must be 5..1200 s" % path)
    cfg.setdefault("server_hostname", cfg["mqtt_host"])
    b = cfg.setdefault("budget", [100, 1024, 5000])  # start, cap, ms per token
    if not (isinstance(b, list) and len(b) == 3 and all(type(x) is int and x > 0 for x in b)):
        raise ConfigError("%s: budget must be [start, cap, ms per token], positive ints" % path)
    return cfg


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def tls_context(cert=CERT, key=KEY, ca=CA):
    """Mutual-TLS client context: our certificate, the broker's CA pinned.

    Built once and reused: each context holds parsed certificates and a
    DRBG. The broker is always verified (CERT_REQUIRED needs server_hostname,
    which the caller passes); there is no fallback to an unverified link.
    """
    for path, what in ((cert, "device certificate"), (key, "device key"), (ca, "broker CA")):
        if not _exists(path):
            raise ConfigError("%s %s is missing: deploy the credential bundle" % (what, path))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=ca)
    ctx.load_cert_chain(cert, key)
    return ctx


class Backoff:
    """Exponential backoff with jitter: half the step fixed, half random."""

    def __init__(self, lo=_BACKOFF_MIN, hi=_BACKOFF_MAX):
        self.lo = lo
        self.hi = hi
        self.n = 0

    def next(self):
        step = min(self.hi, self.lo << min(self.n, 16))
        self.n += 1
        r = os.urandom(1)[0]
        return step // 2 + (step // 2) * r // 255

    def reset(self):
        self.n = 0


class Agent:
    def __init__(self, node, config="rainmaker.json", wifi="wifi.json", params="params.json",
                 connectivity=True):
        self.node = node
        self.cfg = load_config(config)
        node.node_id = self.cfg["node_id"]
        self.wifi_file = wifi
        self.ingest = self.cfg["topics"] == "ingest"
        if connectivity and not node.device("Connectivity"):
            # The SDK's Connectivity service: the LWT flips it to false.
            svc = Device("Connectivity", "esp.service.connectivity", service=True)
            svc.add(Param("Connected", True, "bool", "esp.param.connected", READ))
            node.add(svc)
        self.sync = Sync(node, Store(params))
        will = None
        if connectivity:
            # Always the plain topic, as the SDK does (spec §2.1).
            will = (topics.sub(node.node_id, "params/local"), b'{"Connectivity":{"Connected":false}}', 1, False)
        self.session = Session(node.node_id, self.cfg["keepalive"], will)
        b = self.cfg["budget"]
        self.budget = Budget(time.ticks_ms(), b[0], b[1], b[2])
        self.backoff = Backoff()
        self.ctx = None
        self.wlan = None
        self.state = "starting"
        self.since = time.ticks_ms()
        self.connects = 0
        self._writer = None
        self._out = bytearray()  # bytes produced in one step, sent in one write
        self._ready = False
        self._event = None
        self._connack = None
        self._suback = None
        self._starved = False
        self._remote_topic = topics.sub(node.node_id, "params/remote")
        global _agent
        _agent = self

    def _set(self, state):
        self.state = state
        self.since = time.ticks_ms()

    # -- Wi-Fi ----------------------------------------------------------------

    async def _wifi(self):
        if self.wlan is None:
            self.wlan = network.WLAN(network.STA_IF)
            self.wlan.active(True)
        wlan = self.wlan
        if wlan.isconnected():
            return
        if wlan.status() == network.STAT_IDLE:
            creds = Store(self.wifi_file).load()
            if not creds.get("ssid"):
                self._set("provisioning")
                await self._provision()
                creds = Store(self.wifi_file).load()
            if not creds.get("ssid"):
                self._set("no wifi")
                log.error("wifi", "no credentials in %s: provision the board or deploy with Wi-Fi settings" % self.wifi_file)
                while not creds.get("ssid"):
                    await asyncio.sleep(5)
                    creds = Store(self.wifi_file).load()
            if not wlan.isconnected():  # provisioning leaves the station connected
                log.info("wifi", "joining %r" % creds["ssid"])
                # The driver keeps retrying by itself after this, across drops.
                wlan.connect(creds["ssid"], creds.get("password", ""))
        self._set("wifi")
        waited = 0
        while not wlan.isconnected():
            await asyncio.sleep_ms(100)
            waited += 100
            if waited % (_WIFI_TIMEOUT * 1000) == 0:
                st = wlan.status()
                log.warn("wifi", "no IP after %d s: %s" % (waited // 1000, _WIFI_REASON.get(st, "status %d" % st)))
        log.info("wifi", "connected, ip %s" % wlan.ifconfig()[0])

    async def _provision(self):
        # Imported only now, and unloaded afterwards: its memory (crypto,
        # HTTP server) goes back to the heap before TLS needs it.
        from . import prov

        try:
            await prov.run(self.cfg, self.wlan, self.node.node_id, self.wifi_file, MAPPING)
        except Exception as e:  # e.g. port 80 taken: no retry loop, say why
            log.error("prov", "provisioning failed: %s; reboot to try again" % (str(e) or type(e).__name__))
        finally:
            prov.unload()
            del prov
            gc.collect()

    # -- clock ------------------------------------------------------------------

    async def _clock(self):
        """Set the RTC from NTP once: TLS needs it to check certificate dates.

        A fresh ESP32 believes it is 2000-01-01, so every certificate looks
        "not yet valid". Tried a few times, then we go on and let the TLS
        error say what is wrong rather than hang here.
        """
        if time.time() >= _TIME_VALID:
            return
        import ntptime

        host = self.cfg.get("ntp_host")
        if host:
            ntptime.host = host
        for attempt in range(3):
            try:
                ntptime.settime()  # blocks for at most its socket timeout (1 s)
                log.info("time", "clock set from %s" % ntptime.host)
                return
            except OSError as e:
                log.warn("time", "NTP attempt %d failed: %s" % (attempt + 1, _why(e)))
                await asyncio.sleep(1)

    # -- MQTT connection ----------------------------------------------------------

    async def _keeper(self):
        # Persisted params are saved whether or not we are online: a change
        # made while the broker is unreachable must survive a reboot too.
        while True:
            if self.sync.save(time.ticks_ms()):
                log.debug("store", "params saved")
            await asyncio.sleep_ms(250)

    async def run(self):
        """Supervise forever: Wi-Fi, then MQTT; on any failure, back off and retry."""
        asyncio.create_task(self._keeper())
        while True:
            try:
                await self._wifi()
                await self._clock()
                if self.ctx is None:
                    self.ctx = tls_context()
                await self._connection()
            except ConfigError as e:
                log.error("config", str(e))
            except ValueError as e:
                # A blocking handshake reports certificate failures as ValueError.
                log.error("tls", _BAD_BROKER % str(e).strip())
            except asyncio.TimeoutError:
                log.error("mqtt", "no answer from %s:%d within %d s" % (self.cfg["mqtt_host"], self.cfg["mqtt_port"], _CONNECT_TIMEOUT))
            except (OSError, MQTTError) as e:
                if self.wlan and not self.wlan.isconnected():
                    # The socket error is only a symptom; name the cause.
                    log.warn("wifi", "Wi-Fi lost (%s); MQTT resumes when it is back" % _why(e))
                else:
                    tag, text = _tls_why(e)
                    log.error(tag, text or "%s: %s" % (self.state, _why(e)))
            self._close()
            if self.wlan and not self.wlan.isconnected():
                continue  # the Wi-Fi loop waits; no MQTT backoff needed
            self._out = bytearray()  # nothing stale goes out on the next link
            delay = self.backoff.next()
            self._set("backoff")
            log.info("mqtt", "retrying in %d ms" % delay)
            await asyncio.sleep_ms(delay)
            gc.collect()

    def _close(self):
        self._ready = False
        self.session.lost()
        w = self._writer
        self._writer = None
        if w:
            try:
                w.close()
            except Exception:
                pass
        if self.state != "no wifi":
            self._set("offline")

    async def _connection(self):
        host = self.cfg["mqtt_host"]
        port = self.cfg["mqtt_port"]
        self._set("connecting")
        log.info("mqtt", "connecting to %s:%d" % (host, port))
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=self.ctx, server_hostname=self.cfg["server_hostname"]),
            _CONNECT_TIMEOUT,
        )
        self._writer = writer
        self._out = bytearray()
        self._event = asyncio.Event()
        self._connack = self._suback = None
        writer.write(self.session.connect(time.ticks_ms()))
        self._rx_error = None
        rx = asyncio.create_task(self._reader(reader))
        try:
            await self._handshake(writer)
            while True:
                if self._rx_error:
                    raise self._rx_error
                if not self.wlan.isconnected():
                    raise OSError("Wi-Fi lost")
                now = time.ticks_ms()
                self._out += self.session.tick(now)
                self._pump(now)
                self._flush()
                await writer.drain()
                await asyncio.sleep_ms(_TICK)
        finally:
            rx.cancel()

    async def _wait(self, what):
        if self._rx_error:
            raise self._rx_error
        self._event.clear()
        try:
            await asyncio.wait_for(self._event.wait(), _CONNECT_TIMEOUT)
        except asyncio.TimeoutError:
            raise MQTTError("no %s from the broker within %d s" % (what, _CONNECT_TIMEOUT))

    async def _handshake(self, writer):
        # TCP + TLS + CONNACK, bounded: the handshake runs inside the first
        # read/write of the non-blocking stream.
        await writer.drain()
        while self._connack is None:
            await self._wait("CONNACK")
        sp, rc = self._connack
        if rc:
            text = CONNACK_TEXT[rc] if rc < len(CONNACK_TEXT) else "code %d" % rc
            raise MQTTError("broker refused the connection: %s" % text)
        self.connects += 1
        self.backoff.reset()
        now = time.ticks_ms()
        for pkt in self.session.resend(now):
            self._out += pkt
        self.sync.connected()
        # Spec order: config, (user mapping), subscribe, then the full params.
        if self.sync.config_due:
            self._publish(*self.sync.take(now))
        await self._map_user(writer, now)
        pid, pkt = self.session.subscribe([(self._remote_topic, 1)], now)
        self._out += pkt
        self._flush()
        await writer.drain()
        while self._suback is None:
            await self._wait("SUBACK")
        if self._suback[0] == 0x80:
            raise MQTTError("broker refused subscription to %s (check the broker ACL for this node id)" % self._remote_topic)
        self._set("online")
        log.info("mqtt", "online as %s" % self.node.node_id)
        self._ready = True
        self._pump(now)
        self._flush()
        await writer.drain()

    async def _map_user(self, writer, now):
        # Spec §6.3: a mapping received during provisioning goes out after the
        # config; params wait for its PUBACK. The file outlives a reboot.
        m = Store(MAPPING).load()
        if not m.get("user_id"):
            return
        body = json.dumps({"node_id": self.node.node_id, "user_id": m["user_id"], "secret_key": m.get("secret_key", "")})
        pid, pkt = self.session.publish(topics.pub(self.node.node_id, "user/mapping", self.ingest), body, 1, now)
        self._out += pkt
        self._flush()
        await writer.drain()
        while pid in self.session.inflight:
            await self._wait("PUBACK of user/mapping")
        try:
            os.remove(MAPPING)
        except OSError:
            pass
        log.info("mqtt", "user mapping for %s acknowledged" % m["user_id"])

    async def _reader(self, reader):
        # Errors are handed to the connection loop rather than raised, so the
        # loop reports them with context (an unawaited task would just print).
        try:
            while True:
                await self._read(reader)
        except Exception as e:
            self._rx_error = e
            self._event.set()

    async def _read(self, reader):
        data = await reader.read(_READ)
        if not data:
            raise OSError("connection closed by broker")
        now = time.ticks_ms()
        events, out = self.session.receive(data, now)
        self._out += out
        for ev in events:
            kind = ev[0]
            if kind == EV_MESSAGE:
                if ev[1] == self._remote_topic:
                    self.sync.remote(ev[2], now)
                    self._pump(now)  # echo now, not at the next tick
                else:
                    log.debug("mqtt", "message on unexpected topic %s" % ev[1])
            elif kind == EV_CONNACK:
                self._connack = (ev[1], ev[2])
                self._event.set()
            elif kind == EV_SUBACK:
                self._suback = ev[2]
                self._event.set()
            elif kind == EV_PUBACK:
                self._event.set()  # _map_user() waits for one
            elif kind == EV_OVERSIZE:
                log.warn("mqtt", "message on %s of %d bytes dropped: limit is %d" % (ev[1], ev[2], self.session.max_packet))
        self._flush()

    def _flush(self):
        # One write per step: the PUBACK of a write and its echo travel in one
        # TCP segment, so Nagle's algorithm (on in lwIP) never holds the echo
        # back waiting for an ACK.
        if self._out and self._writer:
            self._writer.write(bytes(self._out))
            self._out = bytearray()

    def _pump(self, now):
        """Publish whatever the sync engine has due, within budget and window."""
        if not self._ready:
            return
        while self.session.can_publish():
            if self.budget.available(now) <= 0:
                if not self._starved and self.sync.pending():
                    log.warn("mqtt", "publish budget used up; reports wait and merge")
                    self._starved = True
                return
            item = self.sync.take(now)
            if item is None:
                return
            self._starved = False
            self._publish(*item)

    def _publish(self, suffix, payload):
        now = time.ticks_ms()
        self.budget.take(now)
        topic = topics.pub(self.node.node_id, suffix, self.ingest)
        try:
            pid, pkt = self.session.publish(topic, payload, 1, now)
        except ValueError as e:
            # It can never be sent; retrying would loop forever. Say what to cut.
            log.error("mqtt", "%s not sent: %s (fewer or shorter params?)" % (suffix, e))
            return
        self._out += pkt
        log.debug("mqtt", "%s %d bytes" % (suffix, len(pkt)))


_BAD_BROKER = "broker certificate rejected: %s (is certs/ca.der the broker's CA? is the clock set?)"

# mbedTLS error codes that reach us as OSError(code) when the handshake runs
# inside non-blocking reads and writes (asyncio streams), with what to check.
_TLS_ERRORS = {
    -0x2700: _BAD_BROKER % "X509 verify failed",
    -0x7780: "the broker refused our TLS handshake: is certs/node.crt.der expired, revoked or from another CA?",
    -0x7280: "the broker closed the TLS link during the handshake: is our certificate accepted there?",
}


def _code(e):
    # OSError args on MicroPython are (code,) with no text: an errno, or an
    # mbedTLS error from a handshake run inside non-blocking I/O.
    if isinstance(e, OSError) and e.args and type(e.args[0]) is int:
        return e.args[0]
    return None


def _tls_why(e):
    text = _TLS_ERRORS.get(_code(e))
    if text:
        return "tls", text
    return "mqtt", None


def _why(e):
    code = _code(e)
    if code is not None:  # name it
        import errno

        for name in ("ECONNREFUSED", "ECONNRESET", "EHOSTUNREACH", "ETIMEDOUT", "ENOTCONN", "ECONNABORTED", "ENOMEM"):
            if getattr(errno, name, None) == code:
                return "%s (%s)" % (name, "see the broker log" if name == "ECONNRESET" else "network")
    return str(e) or type(e).__name__


_agent = None


def status():
    """Print the agent's state at the REPL: import rainmaker; rainmaker.status()"""
    a = _agent
    if a is None:
        print("rainmaker: no agent created yet")
        return
    s = a.session
    now = time.ticks_ms()
    print("node     %s (%s, fw %s)" % (a.node.node_id, a.node.name, a.node.fw_version))
    w = a.wlan
    if w is None:
        print("wifi     not started")
    elif w.isconnected():
        print("wifi     connected, ip %s" % w.ifconfig()[0])
    else:
        st = w.status()
        print("wifi     down: %s" % _WIFI_REASON.get(st, "status %d" % st))
    print("mqtt     %s for %d s, %s:%d, %d connects" % (
        a.state, time.ticks_diff(now, a.since) // 1000, a.cfg["mqtt_host"], a.cfg["mqtt_port"], a.connects))
    if log.last_error:
        print("last err %s: %s" % log.last_error)
    print("reports  %d pending, %d in flight, budget %d" % (a.sync.pending(), len(s.inflight), a.budget.available(now)))
    print("writes   %d accepted, %d refused, %d oversized dropped" % (a.sync.writes, a.sync.refused, s.dropped))
    gc.collect()
    print("heap     %d free, %d used" % (gc.mem_free(), gc.mem_alloc()))


def run(node, *coros, **kw):
    """Start the agent and the app's own coroutines; never returns."""
    agent = Agent(node, **kw)

    async def main():
        for c in coros:
            asyncio.create_task(c)
        await agent.run()

    asyncio.run(main())
