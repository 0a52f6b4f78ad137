# Start-up code, loaded by the agent while it starts and dropped once the TLS
# context exists: the bundle's settings (rainmaker.json) and the TLS context built
# from its certificates, checked so that every mistake is named with its fix; the
# clock, set by NTP; and the hand-over to provisioning when there is no Wi-Fi.
import asyncio
import gc
import json
import os
import ssl
import time
from micropython import const
from . import log
from .store import Store

# 2019-01-01 in seconds since 2000-01-01 (the ESP32 epoch): before this the
# RTC has not been set, and certificate validity cannot be checked.
_TIME_VALID = const(599616000)

CERT = "certs/node.crt.der"
KEY = "certs/node.key.der"
CA = "certs/ca.der"


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
    if type(ka) is not int or not 30 <= ka <= 1200:
        raise ConfigError("%s: keepalive must be 30..1200 s (the SDK's range)" % path)
    wd = cfg.setdefault("watchdog", 0)
    if type(wd) is not int or not (wd == 0 or 30 <= wd <= 3600):
        raise ConfigError("%s: watchdog must be 0 (off) or 30..3600 s" % path)
    ot = cfg.setdefault("ota_timeout", 30)
    if type(ot) is not int or not 5 <= ot <= 300:
        raise ConfigError("%s: ota_timeout must be 5..300 s (how long a download may stall)" % path)
    ov = cfg.setdefault("ota_verify", 90)
    if type(ov) is not int or not 20 <= ov <= 600:
        raise ConfigError("%s: ota_verify must be 20..600 s (how long a new firmware or app has to reach "
                          "the broker before it is rolled back)" % path)
    lc = cfg.setdefault("local_control", 0)
    if lc not in (0, 1, 2) or type(lc) is not int:
        raise ConfigError("%s: local_control must be 0 (off), 1 or 2 (its protocomm security)" % path)
    cfg.setdefault("server_hostname", cfg["mqtt_host"])
    b = cfg.setdefault("budget", [100, 1024, 5000])  # start, cap, ms per token
    if not (isinstance(b, list) and len(b) == 3 and all(type(x) is int and x > 0 for x in b)):
        raise ConfigError("%s: budget must be [start, cap, ms per token], positive ints" % path)
    return cfg


def prepare(node, params, connectivity, clock):
    """The node's parts the agent serves: (Sync, the System service or None,
    what polls the schedules or None). Adds the Connectivity service."""
    from .node import Device, Param, READ, TIME_SERIES, SIMPLE_TS
    from .sync import Sync

    if connectivity and not node.device("Connectivity"):
        # The SDK's Connectivity service: the LWT flips it to false.
        svc = Device("Connectivity", "esp.service.connectivity", service=True)
        svc.add(Param("Connected", True, "bool", "esp.param.connected", READ))
        node.add(svc)
    series = None
    sched = None
    for d in node.devices:
        for p in d.params:
            if p.props & (TIME_SERIES | SIMPLE_TS) and series is None:
                from .series import Series

                series = Series(clock)
        # What polls the schedules and scenes, if the app added either service:
        # the Keeper, which loads rainmaker.sched only while it has work, or
        # the app's own sched.Engine.
        eng = getattr(d, "engine", None)
        if sched is None and eng is not None and d.type in ("esp.service.schedule", "esp.service.scenes"):
            sched = eng
            if eng.clock is None:
                eng.clock = clock
    return Sync(node, Store(params), series=series), node.device("System"), sched


def link(cfg, node_id, sync, connectivity, wifi):
    """(Session, Budget, Link) for the node, from the bundle's settings; the
    config's packet staged in the Link if the board has Wi-Fi credentials."""
    from . import topics
    from .budget import Budget
    from .link import Link
    from .session import Session

    will = None
    if connectivity:
        # Always the plain topic, as the SDK does.
        will = (topics.sub(node_id, "params/local"), b'{"Connectivity":{"Connected":false}}', 1, False)
    session = Session(node_id, cfg["keepalive"], will)
    b = cfg["budget"]
    budget = Budget(time.ticks_ms(), b[0], b[1], b[2])
    lk = Link(session, sync, budget, node_id, cfg["topics"] == "ingest", connectivity)
    # The config's packet is built now, before the connection cuts the heap
    # up, and waits for the first CONNACK (link.stage). Not on a board without
    # Wi-Fi credentials: it provisions first, and the packet (the largest,
    # about 4 KB for the example) would sit in the heap through provisioning,
    # in the way of its big numbers; the agent's run() builds it once
    # provisioning's code is unloaded. (Here, in start-up code, not in the
    # agent's resident code.)
    if Store(wifi).load().get("ssid"):
        try:
            lk.stage(time.ticks_ms())
        except Exception:  # raised again by run()'s stage, where the supervisor reports it
            pass
    return session, budget, lk


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def tls_context(ctx=None, cert=CERT, key=KEY, ca=CA):
    """Mutual-TLS client context: our certificate, the broker's CA pinned.

    Built once and reused: each context holds parsed certificates and a
    DRBG. The broker is always verified (CERT_REQUIRED needs server_hostname,
    which the caller passes); there is no fallback to an unverified link.
    ctx: a fresh SSLContext the caller took while the heap had room for it.
    """
    for path, what in ((cert, "device certificate"), (key, "device key"), (ca, "broker CA")):
        if not _exists(path):
            raise ConfigError("%s %s is missing: deploy the credential bundle" % (what, path))
    if ctx is None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_verify_locations(cafile=ca)
    except ValueError:
        raise ConfigError("broker CA %s is not a valid certificate: redeploy the credential bundle" % ca)
    try:
        ctx.load_cert_chain(cert, key)
    except ValueError as e:
        # mbedTLS says "invalid key" or "invalid cert"; name the file.
        bad = key if "key" in str(e) else cert
        raise ConfigError("%s is not valid (%s): redeploy the credential bundle" % (bad, str(e).strip()))
    return ctx


async def clock(cfg):
    """Set the RTC from NTP once: TLS needs it to check certificate dates.

    A fresh ESP32 believes it is 2000-01-01, so every certificate looks
    "not yet valid". Tried a few times, then we go on and let the TLS
    error say what is wrong rather than hang here.
    """
    if time.time() >= _TIME_VALID:
        return
    import ntptime

    host = cfg.get("ntp_host")
    if host:
        ntptime.host = host
    for attempt in range(3):
        try:
            ntptime.settime()  # blocks for at most its socket timeout (1 s)
            log.info("time", "clock set from %s" % ntptime.host)
            return
        except OSError as e:
            from . import diag

            log.warn("time", "NTP attempt %d failed: %s" % (attempt + 1, diag.why(e)))
            await asyncio.sleep(1)


async def join(agent, wlan, mapping):
    """The station's first join: its credentials, from provisioning if there are none."""
    creds = Store(agent.wifi_file).load()
    if not creds.get("ssid"):
        agent._set("provisioning")
        await provision(agent, mapping)
        creds = Store(agent.wifi_file).load()
    if not creds.get("ssid"):
        agent._set("no wifi")
        log.error("wifi", "no credentials in %s: provision the board or deploy with Wi-Fi settings" % agent.wifi_file)
        while not creds.get("ssid"):
            await asyncio.sleep(5)
            creds = Store(agent.wifi_file).load()
    if not wlan.isconnected():  # provisioning leaves the station connected
        log.info("wifi", "joining %r" % creds["ssid"])
        # The driver keeps retrying by itself after this, across drops.
        wlan.connect(creds["ssid"], creds.get("password", ""))


async def provision(agent, mapping):
    # Imported only now, and unloaded afterwards: its memory (crypto,
    # HTTP server) goes back to the heap before TLS needs it.
    try:
        from . import prov
    except ImportError:  # installed without it (mip: a package of its own)
        log.error("prov", "lib/rainmaker/prov is not installed: install the provisioning package, "
                          "or deploy wifi.json with the credentials")
        return

    try:
        await prov.run(agent.cfg, agent.wlan, agent.node.node_id, agent.wifi_file, mapping)
    except Exception as e:  # e.g. port 80 taken: no retry loop, say why
        log.error("prov", "provisioning failed: %s; reboot to try again" % (str(e) or type(e).__name__))
    finally:
        prov.unload()
        del prov
        gc.collect()
