# Local control over the LAN (docs/protocol.md#local-control): the HTTP server on
# port 8080 with its three protocomm endpoints, and the mDNS announcement of
# _esp_local_ctrl._tcp. The protocol work is done by sans-IO modules (lctl,
# mdns, and the provisioning package's protocomm, httpd and security
# schemes); this file moves bytes and time, and bounds every wait.
#
# Start it once the board is on the network and provisioning has ended:
#     asyncio.create_task(lctlsrv.serve(node, sync))
import asyncio
import select
import socket
import time
import network
from micropython import const
from . import log, mdns
from .lctl import Control, version_json
from .prov.ident import Ident
from .prov.protocomm import Protocomm
from .prov.httpd import Parser, Server

PORT = const(8080)
SERVICE = "_esp_local_ctrl._tcp"
_PREFIX = "esp_local_ctrl/"
_MAX_CONNS = const(3)  # open connections; the oldest is closed for a new one
_IDLE_MS = const(300000)  # an idle keep-alive connection is closed after this (apps keep one)
_REQUEST_MS = const(10000)  # longest pause inside a request that has started
_MDNS_POLL = const(100)  # ms between looks at the mDNS socket when it is quiet
_MDNS_MAX = const(1500)  # bytes of one mDNS datagram read (a longer one is cut, and ignored)
_ANNOUNCE_MS = const(1000)


class LocalControl:
    """The running service. sec: 1 or 2; path: where the PoP (and for Security 2 the
    SRP salt and verifier) are kept, made once."""

    def __init__(self, node, sync, sec=2, path="lctl.json", clock=time.ticks_ms):
        if sec not in (1, 2):
            log.error("lctl", "local control security must be 1 or 2; using 2")
            sec = 2
        # The provisioning identity code, with its own file: a PoP of 8 hex
        # digits from 4 random bytes, and the Security 2 verifier cached.
        ident = Ident({"prov_sec": sec}, path)
        self.pop = ident.pop
        self.sec = ident.security()
        self.control = Control(node, sync, clock)
        # Wrong PoPs slow the next handshakes down (provisioning's back-off:
        # brute force is infeasible, the owner is never locked out for good).
        self.pc = Protocomm(self.sec, {_PREFIX + "control": self.control.handle},
                            (_PREFIX + "version", _PREFIX + "session"), version_json(self.sec))
        self.http = Server(self.pc)
        self.node = node
        self.conns = []  # (id, writer), oldest first
        self._ids = 0
        self._paused = 0  # failed handshakes when the back-off was last logged
        self.responder = None

    # -- HTTP ------------------------------------------------------------------------

    async def _serve(self, reader, writer):
        self._ids += 1
        cid = self._ids
        self.conns.append((cid, writer))
        while len(self.conns) > _MAX_CONNS:
            await _close(self.conns.pop(0)[1])
        parser = Parser()
        try:
            while True:
                wait = _IDLE_MS if parser.head is None and not parser.buf else _REQUEST_MS
                data = await asyncio.wait_for_ms(reader.read(512), wait)
                if not data:
                    return
                req = parser.feed(data)
                while req is not None:
                    now = time.ticks_ms()
                    out, keep = self.http.handle(cid, req, now)
                    w = self.pc.wait(now)
                    if w and self._paused != self.pc.fails:
                        self._paused = self.pc.fails
                        log.error("lctl", "%d failed handshakes (wrong PoP?): local control paused for %d s" % (
                            self.pc.fails, (w + 999) // 1000))
                    if out is None:
                        log.warn("lctl", "request refused, connection closed: %s" % self.http.last_error)
                        return
                    writer.write(out)
                    await writer.drain()
                    if not keep:
                        return
                    req = parser.feed(b"")
        except asyncio.TimeoutError:
            pass
        except Exception as e:  # a bad request or a bug: this connection ends, the server goes on
            log.warn("lctl", "connection closed: %s" % (str(e) or type(e).__name__))
        finally:
            for i in range(len(self.conns)):
                if self.conns[i][0] == cid:
                    self.conns.pop(i)
                    break
            await _close(writer)

    def _unpause(self):
        if self._paused and not self.pc.wait(time.ticks_ms()):
            self._paused = 0
            log.info("lctl", "local control accepts handshakes again")

    # -- mDNS ------------------------------------------------------------------------

    async def _mdns(self, host, instance, port, mdns_port, sta, addr):
        r = mdns.Responder(host, instance, SERVICE, port, (
            ("version_endpoint", "/" + _PREFIX + "version"),
            ("session_endpoint", "/" + _PREFIX + "session"),
            ("control_endpoint", "/" + _PREFIX + "control"),
            ("node_id", instance)))
        self.responder = r
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(socket.getaddrinfo(addr, mdns_port)[0][-1])
        except OSError as e:
            s.close()
            # On a stock ESP32 build MicroPython's own responder (which answers
            # only for the host name) holds 5353 without SO_REUSEADDR.
            log.warn("lctl", "mDNS port %d not available (%s): local control is not announced; "
                     "clients must be given the address" % (mdns_port, e))
            return
        group = socket.getaddrinfo(mdns.GROUP, mdns.PORT)[0][-1]
        poller = select.poll()
        poller.register(s, select.POLLIN)
        ip = None
        announce = 0  # announcements still to send
        next_at = time.ticks_ms()
        try:
            while True:
                self._unpause()
                now_ip = sta.ifconfig()[0] if sta.isconnected() else None
                if now_ip != ip:
                    ip = now_ip
                    r.set_ip(ip)
                    if ip:
                        _join(s, ip)
                        announce = 2
                        next_at = time.ticks_ms()
                if announce and time.ticks_diff(time.ticks_ms(), next_at) >= 0:
                    announce -= 1
                    next_at = time.ticks_add(time.ticks_ms(), _ANNOUNCE_MS)
                    _send(s, r.announce(), group)
                if not poller.poll(0):
                    await asyncio.sleep_ms(_MDNS_POLL)
                    continue
                try:
                    data, src = s.recvfrom(_MDNS_MAX)
                except OSError:
                    continue
                out = r.answer(data, _port(src))
                if out:
                    _send(s, out[0], src if out[1] else group)
                # A busy network must not hold the loop: one datagram per turn.
                await asyncio.sleep_ms(0)
        finally:
            s.close()

    async def _keeper(self):
        # Without mDNS the pause still has to end.
        while True:
            self._unpause()
            await asyncio.sleep_ms(1000)

    # -- lifecycle -------------------------------------------------------------------

    async def run(self, port=PORT, mdns_port=mdns.PORT, host=None, announce=True, addr="0.0.0.0"):
        sta = network.WLAN(network.STA_IF)
        server = await asyncio.start_server(self._serve, addr, port)
        log.info("lctl", "local control on port %d, Security %d, PoP %s" % (port, self.sec.version, self.pop))
        try:
            if announce:
                try:
                    await self._mdns(host or self.node.node_id, self.node.node_id, port, mdns_port, sta, addr)
                except Exception as e:  # a bug or an odd port: the HTTP side goes on without it
                    log.error("lctl", "mDNS stopped: %s" % (str(e) or type(e).__name__))
            await self._keeper()
        finally:
            server.close()
            await server.wait_closed()
            while self.conns:
                await _close(self.conns.pop()[1])


def _port(addr):
    # The ESP32 port gives (ip, port); the unix port a raw sockaddr_in.
    if isinstance(addr, tuple):
        return addr[1]
    return (addr[2] << 8) | addr[3]


def _join(s, ip):
    mreq = bytes(int(x) for x in mdns.GROUP.split(".")) + bytes(int(x) for x in ip.split("."))
    try:
        # The ESP32 port reads only the option (its level is ignored); the unix
        # port has no IPPROTO_IP name, and 0 is its value on both.
        s.setsockopt(getattr(socket, "IPPROTO_IP", 0), socket.IP_ADD_MEMBERSHIP, mreq)
    except OSError as e:
        log.warn("lctl", "mDNS group not joined (%s): only direct queries are answered" % e)


def _send(s, data, addr):
    if data:
        try:
            s.sendto(data, addr)
        except OSError as e:  # no route yet, buffers full: the next query is answered
            log.debug("lctl", "mDNS reply not sent: %s" % e)


async def _close(writer):
    try:
        await writer.wait_closed()  # MicroPython's Stream.close() does nothing
    except Exception:
        pass


async def serve(node, sync, sec=2, port=PORT, path="lctl.json", mdns_port=mdns.PORT, host=None,
                announce=True, service=True, addr="0.0.0.0"):
    """Serve local control until cancelled.

    node, sync: the agent's (agent.node, agent.sync). sec: protocomm Security 1 or
    2. path: the file that keeps the PoP. mdns_port/host/announce: the mDNS
    announcement (host: the name the SRV record points at and the A record
    answers, the node id by default, as the SDK's). service: add the
    "Local Control" service (PoP and security) to the node, as the SDK does,
    so the phone apps get the PoP through the cloud. addr: the address the
    HTTP server and the mDNS socket bind (all interfaces by default; mDNS
    hears the multicast group only then). Wrong PoPs slow the next
    handshakes down as provisioning's do (prov/protocomm.py).
    """
    lc = LocalControl(node, sync, sec, path)
    if service and not node.device("Local Control"):
        from . import std

        node.add(std.local_control_service(lc.pop, lc.sec.version))
    await lc.run(port, mdns_port, host, announce, addr)
