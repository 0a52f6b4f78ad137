# What the phone needs to find and trust this board (docs/provisioning.md#identity): the service
# name PROV_xxxxxx (the SoftAP SSID), the proof of possession (PoP), the QR
# payload, and for Security 2 the SRP salt and verifier, generated once.
#
# All of it derives from 64 random bytes: "random" (128 hex digits) in
# rainmaker.json if the factory bundle has it, as the SDK's fctry/random;
# else made once on the board and kept in prov.json.
import os
import hashlib
import json
from ..store import Store
from .. import log

USERNAME = "wifiprov"


def _hex_bytes(v, n):
    if isinstance(v, str) and len(v) == 2 * n:
        try:
            return bytes.fromhex(v)
        except ValueError:
            pass
    return None


class Ident:
    def __init__(self, cfg, path="prov.json"):
        self.store = Store(path)
        self.data = self.store.load()  # until sec2_secrets() (None after)
        rnd = _hex_bytes(cfg.get("random"), 64) or _hex_bytes(self.data.get("random"), 64)
        if rnd is None:
            rnd = os.urandom(64)
            self.data["random"] = rnd.hex()
            self.store.save(self.data)
        self.random = rnd
        self.name = "PROV_" + rnd[-3:].hex()
        self.pop = rnd[:4].hex()
        self.sec = cfg.get("prov_sec", 2)
        if self.sec not in (0, 1, 2):
            log.error("prov", "prov_sec must be 0, 1 or 2; using 2")
            self.sec = 2

    def qr(self, transport="softap"):
        """The QR payload the phone app scans, keys in the SDK's order."""
        parts = ['"ver":"v1"', '"name":%s' % json.dumps(self.name)]
        if self.sec == 2:
            parts.append('"username":"%s"' % USERNAME)
        if self.sec:
            parts.append('"pop":%s' % json.dumps(self.pop))
        parts.append('"transport":"%s"' % transport)
        return "{" + ",".join(parts) + "}"

    def sec2_secrets(self):
        """(salt, verifier) for this PoP, made once (a 512-bit exponent: slow) and kept."""
        from . import srp

        # prov.json's document is not kept once the secrets are out: its
        # verifier alone is 768 hex digits, in the heap for all of provisioning.
        data = self.store.load() if self.data is None else self.data
        self.data = None
        tag = hashlib.sha256(self.pop.encode()).digest()[:8].hex()
        s = data.get("sec2")
        if isinstance(s, dict) and s.get("for") == tag:
            salt = _hex_bytes(s.get("salt"), 16)
            ver = s.get("verifier")
            if salt and isinstance(ver, str) and 2 <= len(ver) <= 768:
                try:
                    return salt, bytes.fromhex(ver)
                except ValueError:
                    pass
        log.info("prov", "making the Security 2 verifier for this PoP (once; takes seconds)")
        salt = srp.new_salt()
        ver = srp.verifier(salt, USERNAME.encode(), self.pop.encode())
        data["sec2"] = {"for": tag, "salt": salt.hex(), "verifier": ver.hex()}
        self.store.save(data)
        return salt, ver

    def security(self, ecb=None):
        """The session scheme object; only its module is imported."""
        if self.sec == 0:
            from .sec0 import Sec0

            return Sec0()
        if self.sec == 1:
            from .sec1 import Sec1

            return Sec1(self.pop.encode(), ecb=ecb)
        from .sec2 import Sec2

        salt, ver = self.sec2_secrets()
        return Sec2(salt, ver, ecb=ecb)
