# What went wrong with a connection, in words that name the fix.
#
# Imported only when something failed: a board that stays online never
# loads these tables.
import errno
import gc
import sys
import time
from micropython import const
from . import log
from .mqtt import MQTTError

# MicroPython's errno module has no EPIPE; the value is 32 in lwIP and Linux.
_EPIPE = const(32)

_CA = "is certs/ca.der the broker's CA? is the clock set?"
_OURS = "is certs/node.crt.der expired, revoked, from another CA, or not for this node id?"

# mbedTLS error codes that reach us as OSError(code) when the handshake runs
# inside non-blocking reads and writes (asyncio streams).
_TLS = {
    -0x2700: "broker certificate rejected: X509 verify failed (" + _CA + ")",
    -0x7780: "the broker refused our TLS handshake: " + _OURS,
    -0x7280: "the broker closed the TLS link during the handshake: " + _OURS,
}

# errno values whose name is more use than a number.
_NAMES = ("ECONNREFUSED", "ECONNRESET", "EHOSTUNREACH", "ETIMEDOUT", "ENOTCONN",
          "ECONNABORTED", "ENOMEM")


def code(e):
    # OSError args on MicroPython are (code,) with no text: an errno, or an
    # mbedTLS error from a handshake run inside non-blocking I/O.
    if isinstance(e, OSError) and e.args and type(e.args[0]) is int:
        return e.args[0]
    return None


def why(e):
    c = code(e)
    if c == _EPIPE:
        return "EPIPE"
    if c is not None:
        for name in _NAMES:
            if getattr(errno, name, None) == c:
                return name
    return str(e) or type(e).__name__


def report(a, e):
    """Log why the agent a's connection failed (e), naming the fix when known."""
    if type(e).__name__ == "ConfigError":  # config.py's; that module may be unloaded
        log.error("config", str(e))
        return
    if a.wlan and not a.wlan.isconnected():
        # The socket error is only a symptom; name the cause.
        log.warn("wifi", "Wi-Fi lost (%s); MQTT resumes when it is back" % why(e))
        return
    # The reader may have met the TLS failure first, with its text; a
    # later operation on the same socket only gets a bare code.
    if isinstance(a._rx_error, ValueError):
        e = a._rx_error
    state = a.link.state_text()
    tag, text = explain(e, state, a.cfg)
    if text is None:
        log.error("agent", "unexpected %s in state %s" % (type(e).__name__, state))
        sys.print_exception(e)
    else:
        log.error(tag, text)


# CONNACK return codes (MQTT 3.1.1 §3.2.2.3), for log lines a human can act on.
CONNACK_TEXT = (
    "accepted",
    "unacceptable protocol version",
    "client id rejected",
    "server unavailable",
    "bad user name or password",
    "not authorised",
)


def connack(rc):
    return CONNACK_TEXT[rc] if rc < len(CONNACK_TEXT) else "code %d" % rc


def explain(e, state, cfg):
    """(tag, text) for a connection failure, or (None, None) if unexpected."""
    where = "%s:%d" % (cfg["mqtt_host"], cfg["mqtt_port"])
    if isinstance(e, MemoryError):
        return "mqtt", "out of memory while %s; memory reclaimed, reconnecting (a smaller app or fewer params leave more room)" % state
    if isinstance(e, MQTTError):
        return "mqtt", str(e)
    if isinstance(e, ValueError):
        if state != "connecting":
            return None, None
        # A verification failure: mbedTLS's own words, sorted by cause.
        text = str(e).strip()
        if "CN" in text or "Common Name" in text:
            return "tls", "the broker's certificate is not for %r: set server_hostname in rainmaker.json to a name in its certificate" % cfg["server_hostname"]
        if "expired" in text:
            return "tls", "the broker's certificate has expired, or the board's clock is wrong"
        if "future" in text:
            return "tls", "the broker's certificate is not valid yet: is the board's clock set (ntp_host)?"
        return "tls", "broker certificate rejected: %s (%s)" % (text, _CA)
    c = code(e)
    if c is None:
        if isinstance(e, OSError):  # our own OSError("...") with a text
            if state == "connecting" and "closed" in str(e):
                return "tls", "the broker closed the connection before CONNACK: " + _OURS
            return "mqtt", "%s: %s" % (state, e)
        return None, None
    text = _TLS.get(c)
    if text:
        return "tls", text
    if c == errno.ECONNREFUSED:
        return "mqtt", "nothing accepts connections at %s: is the broker running? (mqtt_host, mqtt_port in rainmaker.json)" % where
    if c == errno.ETIMEDOUT and state == "connecting":
        return "mqtt", "no answer from %s: is the broker reachable from this network?" % where
    if state == "connecting" and (c == _EPIPE or c == errno.ECONNRESET):
        # TCP was up (a refused connect is ECONNREFUSED above): the peer hung
        # up during the TLS handshake, which is how a broker refuses a
        # client certificate without an alert.
        return "tls", "the broker closed the connection during the TLS handshake (%s): %s" % (why(e), _OURS)
    if c < 0:
        return "tls", "TLS error -0x%04x while %s" % (-c, state)
    return "mqtt", "%s: %s" % (state, why(e))


_WIFI_REASON = {
    201: "network not found",
    202: "wrong password",
    203: "association failed",
    204: "handshake timeout (often a wrong password)",
    200: "beacon timeout (access point gone)",
}


def wifi_reason(st):
    return _WIFI_REASON.get(st, "status %d" % st)


def status():
    """Print the agent's state at the REPL: import rainmaker; rainmaker.status()"""
    a = sys.modules.get("rainmaker.agent")
    a = a and a._agent
    if not a:
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
        print("wifi     down: %s" % wifi_reason(w.status()))
    print("mqtt     %s for %d s, %s:%d, %d connects" % (
        a.state, time.ticks_diff(now, a.since) // 1000, a.cfg["mqtt_host"], a.cfg["mqtt_port"], a.link.connects))
    if log.last_error:
        print("last err %s: %s" % log.last_error)
    print("reports  %d pending, %d in flight, budget %d" % (a.sync.pending(), len(s.inflight), a.budget.available(now)))
    print("writes   %d accepted, %d refused, %d oversized dropped" % (a.sync.writes, a.sync.refused, s.dropped))
    gc.collect()
    print("heap     %d free, %d used" % (gc.mem_free(), gc.mem_alloc()))
