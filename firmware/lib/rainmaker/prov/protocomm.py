# The protocomm request model (docs/provisioning.md#request-model): endpoint
# dispatch over one security scheme, the proto-ver answer, and the back-off
# after failed handshakes.
#
# request() returns the response bytes or raises Refused (or ValueError for a
# malformed message); the transport then answers nothing.
#
# Failed handshakes (a wrong PoP, a bad key) slow down the next ones instead of
# locking the board: a lock-out until reboot would let any passer-by on the
# open access point disable a new board with 5 wrong guesses. Rule: the first
# _FREE failures cost nothing (typos); after that every prov-session request is
# refused for 1 s, 2 s, 4 s ... doubling per failure up to _MAX_WAIT (60 s),
# counted from the last failure. A completed handshake (the PoP was right)
# clears the count.
# Brute force of an 8-hex-digit PoP (2^32 values, 2^31 guesses expected): the
# first 8 failures cost 0+0+0+1+2+4+8+16 s, the next 32 s, every later one
# 60 s, so about 2^31 x 60 s = 1.29e11 s, some 4,080 years. Provisioning also
# stops after 30 minutes (prov_timeout, 1800 s): 9 guesses in the first 63 s,
# then one a minute, at most ~38 per boot, so ~57 million boots on average.
import gc
from micropython import const
from .errors import Refused, AuthFailed

_FREE = const(3)  # failed handshakes before any wait
_FIRST_WAIT = const(1000)  # ms of wait after failure _FREE + 1; doubles per failure
_MAX_WAIT = const(60000)  # ms, the longest wait
_MEM_RETRY = const(1000)  # ms between precompute attempts after a MemoryError
_PERIOD = const(1 << 30)  # the tick clock (time.ticks_ms) wraps here
_HALF = const(1 << 29)
VERSION = "netprov-v1.2"


def diff(a, b):
    """a - b on the wrapping tick clock (same contract as time.ticks_diff)."""
    return ((a - b + _HALF) % _PERIOD) - _HALF


def wait_ms(fails):
    """How long prov-session is refused after `fails` failed handshakes."""
    if fails < _FREE:
        return 0
    n = fails - _FREE
    return _MAX_WAIT if n > 6 else min(_FIRST_WAIT << n, _MAX_WAIT)


def version_json(sec):
    # Built as text: MicroPython's dicts (and so json.dumps) do not keep order.
    cap = '"wifi_prov","wifi_scan"'
    if sec.version == 0:
        cap = '"no_sec",' + cap
    return '{"prov":{"ver":"%s","sec_ver":%d,"sec_patch_ver":%d,"cap":[%s]}}' % (
        VERSION, sec.version, sec.patch, cap)


class Protocomm:
    # names: the version and session endpoints; local control has its own
    # (esp_local_ctrl/version, esp_local_ctrl/session) and its own version text.
    def __init__(self, sec, endpoints, names=("proto-ver", "prov-session"), version=None):
        self.sec = sec
        self.endpoints = endpoints  # name -> handler(plaintext) -> plaintext
        self.fails = 0
        self.failed_at = 0  # tick of the last failed handshake
        self.idle_at = None  # no precompute before this tick (after a MemoryError)
        self.ver_name, self.sess_name = names
        self.version = version or version_json(sec).encode()

    def known(self, name):
        return name in (self.ver_name, self.sess_name) or name in self.endpoints

    def open(self):
        """A new transport session: the previous one is closed, keys dropped."""
        self.sec.reset()

    def wait(self, now):
        """ms until a handshake is accepted again (0: now)."""
        w = wait_ms(self.fails)
        return max(0, w - diff(now, self.failed_at)) if w else 0

    def idle(self, now):
        """Precompute the next handshake key while nobody waits. A MemoryError
        (fragmented heap) is not fatal: collect, and try again a bit later."""
        if self.sec.established or (self.idle_at is not None and diff(now, self.idle_at) < 0):
            return
        try:
            self.sec.idle()
            self.idle_at = None
        except MemoryError:
            gc.collect()
            self.idle_at = now + _MEM_RETRY

    def request(self, name, data, now=0):
        if not data:
            raise Refused("empty request")
        if name == self.ver_name:
            return self.version
        try:
            return self._request(name, data, now)
        except MemoryError:
            # Half-made keys or a keystream that moved on: this session is
            # unusable. Drop it and reclaim, so that the client's retry works.
            self.sec.reset()
            gc.collect()
            raise Refused("out of memory: session dropped, start again")

    def _request(self, name, data, now):
        if name == self.sess_name:
            w = self.wait(now)
            if w:
                raise Refused("%d failed handshakes: next one in %d ms" % (self.fails, w))
            try:
                out = self.sec.handshake(data)
            except AuthFailed:
                self.fails += 1
                self.failed_at = now
                raise
            if self.sec.established:
                self.fails = 0
            return out
        handler = self.endpoints.get(name)
        if handler is None:
            raise Refused("no endpoint %s" % name)
        if not self.sec.established:
            raise Refused("no session: handshake first")
        return self.sec.encrypt(handler(self.sec.decrypt(data)))
