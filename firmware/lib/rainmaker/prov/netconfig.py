# prov-config and prov-ctrl (docs/provisioning.md#prov-config and #prov-ctrl):
# the Wi-Fi credentials state machine.
#
# The handlers only record what the client asked; the I/O layer takes the
# credentials to try (take()), then reports back: attempt_failed(), failed(),
# connected(). Credentials live in RAM until a connection succeeds.
from micropython import const
from . import pb
from .errors import Refused

CONNECTED = const(0)
CONNECTING = const(1)
DISCONNECTED = const(2)
FAILED = const(3)
AUTH_ERROR = const(0)
NOT_FOUND = const(1)

_OK = const(0)
_INVALID_ARGUMENT = const(4)
_INTERNAL_ERROR = const(5)


class NetConfig:
    def __init__(self):
        self.state = DISCONNECTED
        self.reason = AUTH_ERROR
        self.remaining = None  # attempts left while retrying
        self.info = None  # (ip, auth, ssid, bssid, channel) once connected
        self.creds = None  # set, not yet applied
        self.pending = None  # applied, for the I/O layer to try
        self.reported = False  # the client has read Connected
        self.reprov = False  # the client asked to provision again after success

    # -- prov-config ----------------------------------------------------------

    def config(self, plain):
        d = pb.decode(plain)
        msg = pb.get_int(d, 1)
        if msg == 0:
            return pb.f_int(1, 1) + pb.f_msg(11, self._status())
        if msg == 2:
            st = self._set(pb.get_msg(d, 12))
            return pb.f_int(1, 3) + pb.f_msg(13, pb.f_int(1, st))
        if msg == 4:
            st = self._apply()
            return pb.f_int(1, 5) + pb.f_msg(15, pb.f_int(1, st))
        raise Refused("unknown prov-config message %d" % msg)

    def _status(self):
        s = self.state
        if s == CONNECTED:
            assert self.info is not None  # set with CONNECTED by connected()
            ip, auth, ssid, bssid, ch = self.info
            self.reported = True
            body = pb.f_bytes(1, ip.encode()) + pb.f_int(2, auth) + pb.f_bytes(3, ssid) + pb.f_bytes(4, bssid) + pb.f_int(5, ch)
            return pb.f_msg(11, body)
        if s == CONNECTING:
            if self.remaining is not None:
                return pb.f_int(2, s) + pb.f_msg(12, pb.f_int(1, self.remaining))
            return pb.f_int(2, s) + pb.f_msg(11, b"")  # as the SDK sends it
        if s == FAILED:
            # a oneof member is written even when 0 (AuthError)
            return pb.f_int(2, s) + pb.varint(10 << 3) + pb.varint(self.reason)
        return pb.f_int(2, s)

    def _set(self, cmd):
        ssid = pb.get_bytes(cmd, 1)
        pw = pb.get_bytes(cmd, 2)
        bssid = pb.get_bytes(cmd, 3)
        if self.state in (CONNECTING, CONNECTED):
            return _INTERNAL_ERROR
        if not 1 <= len(ssid) <= 32 or len(pw) > 63 or len(bssid) not in (0, 6):
            return _INVALID_ARGUMENT
        try:
            # stored as JSON text (wifi.json), so it must be UTF-8
            self.creds = (ssid.decode(), pw.decode())
        except UnicodeError:
            return _INVALID_ARGUMENT
        return _OK

    def _apply(self):
        if self.creds is None or self.state in (CONNECTING, CONNECTED):
            return _INTERNAL_ERROR
        self.pending = self.creds
        self.state = CONNECTING
        self.remaining = None
        return _OK

    # -- prov-ctrl --------------------------------------------------------------

    def ctrl(self, plain):
        d = pb.decode(plain)
        msg = pb.get_int(d, 1)
        if msg == 1:  # reset after a failed attempt
            ok = self.state in (FAILED, DISCONNECTED)
            if ok:
                self.state = DISCONNECTED
                self.creds = None
            return pb.f_int(1, 2) + pb.f_int(2, _OK if ok else _INTERNAL_ERROR) + pb.f_msg(12, b"")
        if msg == 3:  # provision again after a success
            ok = self.state == CONNECTED
            if ok:
                self.state = DISCONNECTED
                self.creds = self.info = None
                self.reported = False
                self.reprov = True
            return pb.f_int(1, 4) + pb.f_int(2, _OK if ok else _INTERNAL_ERROR) + pb.f_msg(14, b"")
        raise Refused("unknown prov-ctrl message %d" % msg)

    # -- the I/O layer reports ------------------------------------------------------

    def take(self):
        """(ssid, password) to try now, once per apply; else None."""
        p = self.pending
        self.pending = None
        return p

    def attempt_failed(self, remaining):
        self.remaining = remaining

    def failed(self, reason):
        self.state = FAILED
        self.reason = reason
        self.remaining = None

    def connected(self, ip, auth, ssid, bssid, channel):
        self.state = CONNECTED
        self.info = (ip, auth, ssid.encode(), bssid, channel)
        self.remaining = None
