# Provisioning over SoftAP: the access point PROV_xxxxxx, the HTTP server on
# its address, port 80 (rainmaker.json "prov_port"), and the Wi-Fi station that
# tries the credentials the phone sends.
# The protocol work is done by the sans-IO modules; this file moves bytes and
# time, and owns every wait (each one bounded).
import asyncio
import gc
import time
import network
from micropython import const
from .. import log
from ..store import Store
from .ident import Ident
from .protocomm import Protocomm
from .httpd import Parser, Server, TooLarge, response
from .netconfig import NetConfig, CONNECTED, AUTH_ERROR, NOT_FOUND

PORT = 80
# Connections: how many, and which one makes room for a new one, is the
# Server's rule (httpd.py). An idle connection is never closed on a timer.
# Bytes per read: each read takes a fresh block of this size (+1), and a
# request is parsed from its pieces; 256 finds room where 512 may not.
_READ = const(256)
_REQUEST_MS = const(10000)  # longest pause inside a request that has started, or in a reply
_ATTEMPTS = const(3)  # connection attempts per apply, as the SDK example
_ATTEMPT_MS = const(15000)  # an attempt with no verdict by then failed (e.g. silent bad key)
_LINGER_MS = const(30000)  # after joining, keep serving so the client can read "connected"
_GONE_MS = const(2000)  # ...less if it has read it and no connection was open for this long
_QUIET_MS = const(300)  # no request for this long: precompute the next handshake key
_FAILS = (201, 202, 203, 204, 205, 210, 211, 212)
_NOT_FOUND = (201, 210, 211, 212)


def _disconnect(sta):
    try:
        sta.disconnect()
    except OSError:
        pass


def _peer(writer):
    """The client's IP address (any comparable value), from the stream's peername:
    ("ip", port) on the board, a raw sockaddr (bytes) on some ports."""
    try:
        a = writer.get_extra_info("peername")
    except Exception:
        return None
    if isinstance(a, tuple):
        return a[0]
    if isinstance(a, (bytes, bytearray)) and len(a) >= 8:
        return bytes(a[4:8])  # sockaddr_in: family, port, then the IPv4 address
    return a


async def _close(writer):
    try:
        await writer.wait_closed()  # MicroPython's Stream.close() does nothing
    except Exception:
        pass


class Provisioner:
    def __init__(self, cfg, sta, node_id, wifi_file, mapping_file, port=PORT):
        self.ident = Ident(cfg)
        self.timeout_ms = int(cfg.get("prov_timeout", 1800)) * 1000
        self.sta = sta
        self.wifi_file = wifi_file
        self.mapping_file = mapping_file
        self.port = int(cfg.get("prov_port", port))
        self.net = NetConfig()
        # The scan and the user mapping (their modules and objects) are made
        # on their first request, after the handshake: not in the heap while
        # Security 2's big numbers need it.
        self.node_id = node_id
        self.scan = None
        self.assoc = None
        self.sec = self.ident.security()
        self.pc = Protocomm(self.sec, {
            "prov-config": self.net.config,
            "prov-scan": self._scan_req,
            "prov-ctrl": self.net.ctrl,
            "cloud_user_assoc": self._assoc_req,
        })
        self.http = Server(self.pc)
        self.tasks = {}  # connection id -> its task (as many as the Server admits)
        self._ids = 0
        self.last_request = time.ticks_ms()

    def _scan_req(self, plain):
        if self.scan is None:
            from .scan import Scan

            self.scan = Scan(self.sta.scan)
        return self.scan.handle(plain)

    def _assoc_req(self, plain):
        if self.assoc is None:
            from .assoc import UserAssoc

            self.assoc = UserAssoc(self.node_id)
        return self.assoc.handle(plain)

    # -- HTTP connections ---------------------------------------------------------

    async def _serve(self, reader, writer):
        self._ids += 1
        cid = self._ids
        victim = self.http.accept(cid, _peer(writer), time.ticks_ms())
        if victim is not None:
            t = self.tasks.pop(victim, None)
            if t is not None:
                # Cancelled, not closed from here: cancel() takes its pending read
                # out of the poller first, then its own finally closes the socket.
                # A socket closed while still polled crashed MicroPython's unix port.
                t.cancel()
        self.tasks[cid] = asyncio.current_task()
        parser = Parser()
        gc.collect()  # (see prov/__init__.py)
        try:
            while True:
                if parser.head is None and not parser.buf:
                    data = await reader.read(_READ)  # idle: no timeout (see httpd.py)
                else:
                    data = await asyncio.wait_for_ms(reader.read(_READ), _REQUEST_MS)
                if not data:
                    return
                try:
                    req = parser.feed(data)
                    data = None  # (the parser has it) not held through a handshake's big numbers
                    # The reads' and the header's garbage goes before the
                    # request is handled: a handshake's big numbers, and what
                    # the request keeps, then find the low holes it left
                    # rather than landing above it (see prov/__init__.py).
                    gc.collect()
                    while req is not None:
                        self.last_request = time.ticks_ms()
                        out, keep = self.http.handle(cid, req, self.last_request)
                        if out is None:
                            log.warn("prov", "request refused, connection closed: %s" % self.http.last_error)
                            return
                        writer.write(out)
                        await asyncio.wait_for_ms(writer.drain(), _REQUEST_MS)
                        self.last_request = time.ticks_ms()  # handling may have taken seconds
                        if not keep:
                            return
                        req = parser.feed(b"")  # a pipelined request
                except TooLarge as e:
                    # Said as soon as the header is in: the body is never read.
                    log.warn("prov", "request refused: %s" % e)
                    writer.write(response(413, b"Request body too large", close=True))
                    await asyncio.wait_for_ms(writer.drain(), _REQUEST_MS)
                    return
        except asyncio.TimeoutError:
            pass
        except Exception as e:  # a bad request or a bug: this connection ends, the server goes on
            log.warn("prov", "connection closed: %s" % (str(e) or type(e).__name__))
        finally:
            if self.tasks.get(cid) is asyncio.current_task():
                del self.tasks[cid]
            self.http.closed(cid)
            await _close(writer)

    # -- the Wi-Fi station ----------------------------------------------------------

    async def _join(self, ssid, password):
        sta = self.sta
        try:
            sta.config(reconnects=-1)  # the driver retries until we stop it
        except (ValueError, OSError):
            pass
        st = None
        for attempt in range(_ATTEMPTS):
            _disconnect(sta)  # stops any retry; clears its stale reason
            log.info("prov", "joining %r (attempt %d of %d)" % (ssid, attempt + 1, _ATTEMPTS))
            st = None
            try:
                sta.connect(ssid, password)
            except OSError as e:
                log.warn("prov", "connect failed: %s" % e)
            else:
                t0 = time.ticks_ms()
                while time.ticks_diff(time.ticks_ms(), t0) < _ATTEMPT_MS:
                    await asyncio.sleep_ms(100)
                    if sta.isconnected():
                        self._joined(ssid, password)
                        return
                    s = sta.status()
                    if s in _FAILS:
                        st = s
                        break
            left = _ATTEMPTS - 1 - attempt
            if left:
                self.net.attempt_failed(left)
        _disconnect(sta)
        reason = NOT_FOUND if st in _NOT_FOUND else AUTH_ERROR
        self.net.failed(reason)
        log.warn("prov", "could not join %r: %s; waiting for new credentials" % (
            ssid, "network not found" if reason == NOT_FOUND else "wrong password (or no answer)"))

    def _joined(self, ssid, password):
        sta = self.sta
        ip = sta.ifconfig()[0]
        auth, bssid, ch = (3 if password else 0), b"", 0
        for r in self.scan.results if self.scan else ():
            if r[0] == ssid.encode():
                auth, bssid, ch = r[4], r[1], r[2]
                break
        # The mapping first: if power fails between the two writes, the board
        # provisions again rather than coming up without its owner.
        m = self.assoc.mapping if self.assoc else None
        if m:
            Store(self.mapping_file).save({"user_id": m[0], "secret_key": m[1]})
        if not Store(self.wifi_file).save({"ssid": ssid, "password": password}):
            log.error("prov", "credentials not stored: the board will provision again after a reset")
        self.net.connected(ip, auth, ssid, bssid, ch)
        log.info("prov", "joined %r, ip %s; credentials stored" % (ssid, ip))

    # -- lifecycle --------------------------------------------------------------------

    async def run(self):
        """Serve until the board has joined a network ("done"), or "timeout"."""
        name = self.ident.name
        # The first handshake's key (Security 2: g^b, a 3072-bit modexp) is
        # made now, while the heap has the most room, before the HTTP
        # server's and the first connection's objects cut it up; a client
        # that comes at once would otherwise wait for it to be made then.
        gc.collect()
        self.pc.idle(time.ticks_ms())
        ap = network.WLAN(network.AP_IF)
        ap.active(True)
        ap.config(ssid=name, security=0, max_clients=5)  # open, as the SDK's example
        self.sta.active(True)  # scanning needs the station interface
        # The access point's own address, not 0.0.0.0: only SoftAP clients reach the
        # server, never the network the station joins while it tries the credentials.
        server = await asyncio.start_server(self._serve, ap.ifconfig()[0], self.port)
        gc.collect()  # (see prov/__init__.py)
        log.info("prov", "not provisioned: access point %s, Security %d, %s, http://%s:%d" % (
            name, self.ident.sec, "PoP " + self.ident.pop if self.ident.sec else "no PoP", ap.ifconfig()[0], self.port))
        log.info("prov", "QR %s" % self.ident.qr())
        start = time.ticks_ms()
        joined = read = empty = None
        fails = 0
        result = "timeout"
        try:
            while True:
                await asyncio.sleep_ms(100)
                now = time.ticks_ms()
                if self.pc.fails != fails:
                    fails = self.pc.fails
                    if fails:
                        log.warn("prov", "%d failed handshakes (wrong PoP?): the next one is accepted in %d s" % (
                            fails, (self.pc.wait(now) + 999) // 1000))
                empty = None if self.tasks else (empty or now)
                creds = self.net.take()
                if creds:
                    await self._join(creds[0], creds[1])
                    continue
                if self.net.reprov:
                    self.net.reprov = False
                    joined = read = None
                    _disconnect(self.sta)
                    log.info("prov", "client asked to provision again")
                if self.net.state == CONNECTED:
                    joined = joined or now
                    if self.net.reported:
                        read = read or now
                    # The client may still read the status or finish: serve up to
                    # _LINGER_MS, less only once it has read "connected" and left.
                    gone = read and empty and time.ticks_diff(now, empty) > _GONE_MS
                    if gone or time.ticks_diff(now, joined) > _LINGER_MS:
                        result = "done"
                        break
                elif time.ticks_diff(now, start) > self.timeout_ms:
                    log.warn("prov", "no credentials within %d s: provisioning stopped" % (self.timeout_ms // 1000))
                    break
                elif time.ticks_diff(now, self.last_request) > _QUIET_MS:
                    self.pc.idle(now)  # survives a MemoryError
        finally:
            server.close()
            await server.wait_closed()
            for t in list(self.tasks.values()):
                t.cancel()  # each closes its own socket
            self.tasks.clear()
            ap.active(False)
        return result
