# The thin asyncio layer: Wi-Fi, TLS, the MQTT connection and its supervisor.
#
# Protocol and connection decisions live in the sans-IO modules (link,
# session, sync, budget); this file only moves bytes and time between them
# and the network, and keeps the board going whatever fails.
import asyncio
import json
import os
import time
import gc
import network
from micropython import const
from . import dial, log
from .node import unload
from .session import diff
from .link import ONLINE
from .store import Store

_TICK = const(50)  # ms between housekeeping passes of a live connection
_KEEP = const(250)  # ms between passes of the keeper (flash, stalls, watchdog)
_WIFI_TIMEOUT = const(30)  # s to wait for an IP before reporting why not
_READ = const(512)  # bytes of the read buffer (the MQTT Reader gathers whole packets)
_WRITE = const(512)  # bytes of the write buffer, where short packets are gathered

# 2019-01-01 in seconds since 2000-01-01 (the ESP32 epoch): before this the
# RTC has not been set, and certificate validity cannot be checked.
_TIME_VALID = const(599616000)

# The node's otafetch (the boot's, and any the OTA job logic asks for), as the
# SDK sends it: not within 5 s of the node coming online; sent again if its
# PUBACK has not come within 60 s, after 30 s * 2^(n-1) (n = 1..5), then every
# 480 s.
_FETCH_FIRST = const(5000)
_FETCH_ACK = const(60000)
_FETCH_BASE = const(30000)
_NTP_EVERY = const(3600000)  # ms between clock re-syncs (the RTC drifts seconds a day)
_EPOCH = const(946684800)  # 1970 -> 2000: the ESP32's time() counts from 2000
_TIME_SET = const(1546300800)  # 2019-01-01, Unix: before it the clock has not been set

MAPPING = "mapping.json"  # user-node mapping from provisioning, kept until its PUBACK


def utc():
    """Unix seconds now, whichever epoch the port's time() counts from (2000 on the ESP32)."""
    # The node's one Unix clock: the Keeper gets it as its clock, the OTA
    # driver imports it. Here because this module is loaded on every running
    # node; rainmaker.tz is only with the Time service, and importing it for
    # the clock alone would cost a node without one about 2.3 KB of heap.
    return int(time.time()) + (_EPOCH if time.gmtime(0)[0] == 2000 else 0)


def _ota_state():
    # Is there an OTA job or a new app's trial to finish? ota.json holds "{}"
    # once a job is over.
    for f in ("ota.json", "ota/state.json"):
        try:
            if os.stat(f)[6] > 2:
                return True
        except OSError:
            pass
    return False


class Agent:
    def __init__(self, node, config="rainmaker.json", wifi="wifi.json", params="params.json",
                 connectivity=True, ota=True, tls=None):
        self.node = node
        # The connection's buffers are taken first, before the start-up code
        # cuts the heap up further: with them a read or a write allocates
        # nothing (stream.read(n) takes a fresh n-byte block for every read).
        self._rbuf = bytearray(_READ)
        self._rview = memoryview(self._rbuf)
        self._wbuf = bytearray(_WRITE)
        self._wview = memoryview(self._wbuf)
        # config.py is needed only at start: it is dropped once the TLS context exists.
        from . import config as c

        self.cfg = c.load_config(config)
        node.node_id = self.cfg["node_id"]
        # The TLS context needs no clock: built now, while the heap has room
        # (tls: an empty one rainmaker.run() took before this code loaded).
        # If it cannot be, run() tries again and the supervisor says why.
        try:
            self.ctx = c.tls_context(tls)
        except Exception:
            self.ctx = None
        self.wifi_file = wifi
        self.params_file = params
        # The node's services the agent serves (config.py: run once).
        self.sync, self.system, self.sched = c.prepare(node, params, connectivity, utc)
        self._sysreq = None  # the System action asked for, if any
        self._ntp_at = time.ticks_add(time.ticks_ms(), _NTP_EVERY)
        self._halted = False  # a System action is under way: no more connections
        # (with the config's packet built, if the board has Wi-Fi: config.link)
        self.session, self.budget, self.link = c.link(self.cfg, node.node_id, self.sync, connectivity, wifi)
        # The node is built: conf is loaded again only for a
        # reconfiguration, std (the builders) never again. run() has dropped
        # both already; these are for an Agent made directly. An app that
        # keeps its own name for std keeps the module (the example deletes it).
        unload("conf")
        unload("std")
        self.update = None  # the OTA driver while it has work
        self._ota_carry = None
        # The otafetch wanted: None (none, or acknowledged), else the tick its
        # next send is due (any value before the first send, see _otafetch).
        # Every otafetch is sent from here, so a boot without a job never has
        # the OTA code (about 15 KB) in its heap, nor its names, which would
        # stay in the name pool for good; the job logic asks with fetch().
        self._fetch_at = None
        self._fetch_n = 0  # sends of the wanted otafetch
        if ota:  # OTA jobs on node/<id>/otaurl: firmware images and app bundles
            self._fetch_at = 0  # the boot's
            # Loaded at start for a job or a new app's trial to finish, else
            # only for a job (an otaurl).
            if not (_ota_state() and self._ota_load("the unfinished job waits for the next boot")):
                self.link.on("otaurl", self._otaurl)
        self.wlan = None
        self.state = "starting"
        self.since = time.ticks_ms()
        self._sock = None  # the socket of the current connection, raw or TLS
        self._writer = None
        self._rx_error = None
        self._task = None  # the current connection's task
        self._guard = None  # tick by which the write the connection waits on must end
        self._stalled = False
        self._wdt = None
        self._lctl = None  # the local-control server's task
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
        if wlan.status() == network.STAT_IDLE:  # never told to join: start-up code
            from . import config

            await config.join(self, wlan, MAPPING)
        self._set("wifi")
        waited = 0
        while not wlan.isconnected():
            await asyncio.sleep_ms(100)
            waited += 100
            if waited % (_WIFI_TIMEOUT * 1000) == 0:
                st = wlan.status()
                from . import diag

                log.warn("wifi", "no IP after %d s: %s" % (waited // 1000, diag.wifi_reason(st)))
        log.info("wifi", "connected, ip %s" % wlan.ifconfig()[0])

    # -- supervision --------------------------------------------------------------

    async def _keeper(self):
        # Persisted params are saved whether or not we are online: a change
        # made while the broker is unreachable must survive a reboot too.
        # It also ends a connection whose write is blocked past its deadline
        # (a broker that accepts TCP and never answers TLS, a frozen peer),
        # and feeds the watchdog, which reboots the board if this loop (and
        # so the whole event loop) ever stops.
        while True:
            now = time.ticks_ms()
            try:
                if self.sync.save(now):
                    log.debug("store", "params saved")
            except Exception as e:  # e.g. MemoryError: tried again next pass
                log.error("store", "params not saved: %s" % (str(e) or type(e).__name__))
            g = self._guard
            if g is not None and diff(now, g) >= 0 and self._task:
                self._guard = None
                self._stalled = True
                self._task.cancel()
            try:
                req = self._services(now)
                if req:
                    from . import system

                    await system.act(self, req)
                if self.update:
                    await self._ota_tick(now)
                self._otafetch(now)
            except Exception as e:
                log.error("agent", "service: %s" % (str(e) or type(e).__name__))
            if self._wdt:
                self._wdt.feed()
            await asyncio.sleep_ms(_KEEP)

    def _services(self, now):
        if diff(now, self._ntp_at) >= 0 and self.wlan and self.wlan.isconnected():
            self._ntp_at = now + _NTP_EVERY
            try:
                import ntptime

                ntptime.settime()  # blocks for at most its socket timeout (1 s), once an hour
            except Exception as e:
                log.warn("time", "NTP re-sync failed: %s" % (str(e) or type(e).__name__))
        # Schedules run from the board's own clock, online or not: their
        # actions are local param writes, reported like any other change.
        eng = self.sched
        if eng is not None:
            t = utc()
            if t >= _TIME_SET:
                for payload, source in eng.poll(t):
                    log.info("sched", "%s: %s" % (source, payload.decode()))
                    self.sync.remote(payload, now, source)
        # Time-series batches go out when due, leaving room in the link's
        # queue for other services.
        link = self.link
        series = self.sync.series
        if series is not None and link.state == ONLINE and len(link.queue) < 4:
            item = series.take(utc())
            if item:
                link.post(item[0], item[1])
        # A System param written true asks for its action (system.py, loaded
        # only then), carried out 2 s later so the echo reaches the app first.
        # Once asked, the action stands, whatever is written after it.
        sysd = self.system
        req = self._sysreq
        if sysd is not None and req is None:
            for p in sysd.params:
                if p.value is True:
                    req = self._sysreq = p.name
        if req is None:
            return None
        from . import system

        return system.due(self, req, now)

    # -- OTA: its code stays in the heap only while it has work -----------------

    def _ota_load(self, lost):
        # The OTA driver, or None if its code could not be loaded (MemoryError,
        # most likely): lost says what that costs.
        try:
            from .update import Updater

            u = self.update = Updater(self, self._ota_carry)
        except Exception as e:
            log.error("ota", "%s: the OTA code could not be loaded: %s" % (lost, str(e) or type(e).__name__))
            return None
        return u

    def fetch(self, now):
        """The OTA job logic's hook: an otafetch is wanted (now: a tick), or
        none any more (None: an otaurl came, which is what it asks for)."""
        self._fetch_at = now
        self._fetch_n = 0

    def _otafetch(self, now):
        # Sent until its PUBACK, only while online, with or without the OTA
        # code; the answer, if there is a job, is an otaurl, which loads it.
        at = self._fetch_at
        if at is None or self.state != "online":
            return
        n = self._fetch_n
        if n:
            if diff(now, at) < 0:
                return
        elif 0 <= diff(now, self.since) < _FETCH_FIRST:
            return  # online for less than 5 s (a wrapped diff, after days online, does not count)
        n = self._fetch_n = n + 1
        if n > 1:
            log.warn("ota", "otafetch not acknowledged within %d s: sent again" % (_FETCH_ACK // 1000))
        self._fetch_at = now + _FETCH_ACK + (_FETCH_BASE << (min(n, 5) - 1))
        node = self.node
        self.link.post("otafetch", '{"node_id":%s,"fw_version":%s}' % (json.dumps(node.node_id), json.dumps(node.fw_version)),
                       self._fetched)

    def _fetched(self, now):
        self._fetch_at = None  # acknowledged

    async def _ota_tick(self, now):
        u = self.update
        assert u is not None  # the keeper calls this only with one
        await u.tick(now)
        carry = u.idle()
        if carry is not None:
            self._ota_carry = carry
            self.update = None
            u.close(self._otaurl)  # the rest of this boot's OTA work starts with an otaurl

    def _otaurl(self, payload, now):
        # otaurl while the OTA code is unloaded: it is loaded and gets the job.
        u = self._ota_load("OTA job dropped")
        if u:
            u.ota.message(payload, now)
        else:  # the next job may find more memory
            self.link.on("otaurl", self._otaurl)

    async def reboot(self, why):
        """End the connection (without DISCONNECT: the broker publishes the
        last will, the node shows offline) and reset the board."""
        import machine

        self._halted = True
        if self._task:
            self._task.cancel()
        self._close()
        # lwIP sends the FIN after close() returns: a reset right away could
        # lose it, and the cloud would see the node online until the broker's
        # keep-alive runs out.
        await asyncio.sleep_ms(500)
        log.warn("system", "%s: rebooting" % why)
        machine.reset()

    async def run(self):
        """Supervise forever: Wi-Fi, then MQTT; on any failure, log, back off and retry."""
        if self.cfg["watchdog"]:
            import machine

            self._wdt = machine.WDT(timeout=self.cfg["watchdog"] * 1000)
        asyncio.create_task(self._keeper())
        while True:
            try:
                await self._wifi()
                if self.cfg["local_control"] and self._lctl is None:
                    # Started once Wi-Fi is up (provisioning, which has its own
                    # HTTP server, is over by then); it serves the LAN whether
                    # or not the cloud is reachable.
                    from . import lctlsrv

                    self._lctl = asyncio.create_task(lctlsrv.serve(self.node, self.sync, sec=self.cfg["local_control"]))
                if self.ctx is None or time.time() < _TIME_VALID:
                    from . import config  # start-up code: dropped once TLS is set up

                    await config.clock(self.cfg)
                    if self.ctx is None:
                        self.ctx = config.tls_context()
                    del config  # this frame lives as long as the agent: no reference may stay
                unload("config")  # (loaded since __init__, or just now)
                # If the config's packet found no room at start, the start-up
                # code just freed is the best chance before the CONNACK.
                self.link.stage(time.ticks_ms())
                self._task = asyncio.create_task(self._connection())
                await self._task
            except asyncio.CancelledError:
                if self._halted:
                    await asyncio.sleep_ms(60000)  # the System service reboots the board
                    continue
                if not self._stalled:
                    raise  # the agent itself is being stopped
                log.error("mqtt", "%s: no progress within the time allowed; reconnecting" % self.link.state_text())
            except Exception as e:
                # Nothing ends the supervisor: whatever went wrong is named
                # (with a traceback when it is not a known failure), memory is
                # reclaimed, and the connection is tried again after a pause.
                try:
                    from . import diag  # loaded only after a failure

                    diag.report(self, e)
                except Exception:  # e.g. no memory left to import diag
                    gc.collect()
                    try:
                        log.error("agent", "connection failed: %s" % type(e).__name__)
                    except MemoryError:
                        pass  # not even a line: the retry below still comes
            self._task = None
            self._guard = None
            self._stalled = False
            self._close()
            gc.collect()
            if self.wlan and not self.wlan.isconnected():
                self.link.closed(time.ticks_ms(), False)
                continue  # the Wi-Fi loop waits; no MQTT backoff needed
            delay = self.link.closed(time.ticks_ms())
            self._set("backoff")
            log.info("mqtt", "retrying in %d ms" % delay)
            await asyncio.sleep_ms(delay)

    def _close(self):
        # MicroPython's Stream.close() does nothing (the socket is closed by
        # wait_closed()), so the socket itself is closed here, on every path:
        # the broker sees our FIN at once and no descriptor is left behind.
        s = self._sock
        self._sock = self._writer = None
        if s is not None:
            try:
                s.close()
            except Exception:
                pass
        if self.state != "no wifi":
            self._set("offline")

    # -- the MQTT connection ------------------------------------------------------

    async def _dial(self):
        # The socket is ours from its creation (dial.py), so _close() reaches
        # it if the connect fails or stalls; the wait for TCP is bounded by
        # the link's deadline.
        def own(sock):
            self._sock = sock

        def expired():
            now = time.ticks_ms()
            return diff(now, self.link.deadline(now)) >= 0

        s = await dial.tcp(self.cfg["mqtt_host"], self.cfg["mqtt_port"], expired, own)
        assert self.ctx is not None  # made by run() before it connects
        s = self.ctx.wrap_socket(s, server_hostname=self.cfg["server_hostname"], do_handshake_on_connect=False)
        self._sock = s
        s.setblocking(False)
        return asyncio.StreamWriter(s)

    async def _connection(self):
        link = self.link
        assert self.wlan is not None  # run() joined Wi-Fi first
        self._set("connecting")
        log.info("mqtt", "connecting to %s:%d" % (self.cfg["mqtt_host"], self.cfg["mqtt_port"]))
        self._rx_error = None
        m = Store(MAPPING).load()  # from provisioning, kept until its PUBACK
        link.mapping = m if m.get("user_id") else None
        link.open(time.ticks_ms())
        w = await self._dial()
        self._writer = w
        rx = asyncio.create_task(self._reader(w))
        try:
            while True:
                if self._rx_error:
                    raise self._rx_error
                if not self.wlan.isconnected():
                    raise OSError("Wi-Fi lost")
                now = time.ticks_ms()
                link.tick(now)
                self._settle()
                self._flush()
                # The TLS handshake runs inside this drain, and a peer that
                # stops reading blocks it: the keeper cancels this task when
                # the link's deadline passes.
                self._guard = link.deadline(now)
                await w.drain()
                self._guard = None
                await asyncio.sleep_ms(_TICK)
        finally:
            self._guard = None
            rx.cancel()

    async def _reader(self, reader):
        # Errors are handed to the connection loop rather than raised, so the
        # loop reports them with context (an unawaited task would just print).
        try:
            while True:
                n = await reader.readinto(self._rbuf)
                if n is None:
                    continue  # woken before a whole TLS record arrived: wait again
                if not n:
                    raise OSError("connection closed by broker")
                self.link.receive(self._rview[:n], time.ticks_ms())
                self._settle()
                self._flush()
        except Exception as e:
            self._rx_error = e

    def _settle(self):
        # The link's actions that touch files or the agent's own state.
        link = self.link
        if link.mapped:
            try:
                os.remove(MAPPING)
            except OSError:
                pass
            log.info("mqtt", "user mapping for %s acknowledged" % link.mapped)
            link.mapped = None
        if link.state == ONLINE and self.state != "online":
            self._set("online")

    def _flush(self):
        # Short packets are gathered in the write buffer and leave in one
        # write: the PUBACK of a write and its echo travel in one TCP segment,
        # so Nagle's algorithm (on in lwIP) never holds the echo back waiting
        # for an ACK. A packet or piece as long as the buffer is written as it
        # is. The stream copies only what the socket refuses, so the buffer
        # is free again when write() returns; nothing else is allocated.
        out = self.link.out
        w = self._writer
        if out and w:
            self.link.out = []
            buf = self._wbuf
            n = 0
            for c in out:
                k = len(c)
                if n and n + k > _WRITE:
                    w.write(self._wview[:n])
                    n = 0
                if k >= _WRITE:
                    w.write(c)
                else:
                    buf[n:n + k] = c
                    n += k
            if n:
                w.write(self._wview[:n])


_agent = None


def run(node, *coros, **kw):
    """Start the agent and the app's own coroutines; never returns."""
    try:
        agent = Agent(node, **kw)
    except MemoryError:  # before the supervisor exists: say what to do, then end
        gc.collect()
        log.error("agent", "no memory to start (%d bytes free): a smaller app or node, or the agent "
                           "frozen into the firmware (firmware/manifest.py)" % gc.mem_free())
        raise

    async def main():
        for c in coros:
            asyncio.create_task(c)
        await agent.run()

    asyncio.run(main())
