# The protocomm request model (docs/provisioning.md#request-model): endpoint
# dispatch over one security scheme, the proto-ver answer, and the lock-out
# after failed handshakes.
#
# request() returns the response bytes or raises Refused (or ValueError for a
# malformed message); the transport then answers nothing.
from micropython import const
from .errors import Refused, AuthFailed

MAX_FAILS = const(5)  # failed handshakes before provisioning stops until reboot
VERSION = "netprov-v1.2"


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
    def __init__(self, sec, endpoints, max_fails=MAX_FAILS, names=("proto-ver", "prov-session"), version=None):
        self.sec = sec
        self.endpoints = endpoints  # name -> handler(plaintext) -> plaintext
        self.max_fails = max_fails
        self.fails = 0
        self.locked = False
        self.ver_name, self.sess_name = names
        self.version = version or version_json(sec).encode()

    def known(self, name):
        return name in (self.ver_name, self.sess_name) or name in self.endpoints

    def open(self):
        """A new transport session: the previous one is closed, keys dropped."""
        self.sec.reset()

    def request(self, name, data):
        if self.locked:
            raise Refused("locked after %d failed handshakes" % self.fails)
        if not data:
            raise Refused("empty request")
        if name == self.ver_name:
            return self.version
        if name == self.sess_name:
            try:
                return self.sec.handshake(data)
            except AuthFailed:
                self.fails += 1
                if self.fails >= self.max_fails:
                    self.locked = True
                raise
        handler = self.endpoints.get(name)
        if handler is None:
            raise Refused("no endpoint %s" % name)
        if not self.sec.established:
            raise Refused("no session: handshake first")
        return self.sec.encrypt(handler(self.sec.decrypt(data)))
