# Security 2 (docs/provisioning.md#security-2): SRP6a with the PoP as password, then AES-256-GCM
# with K[0:32]; with sec_patch_ver 1 the nonce's last 4 bytes count every
# encrypt and every decrypt on each side.
import os
from . import pb
from .srp import Server
from .aes import GCM
from .errors import Refused, AuthFailed
from .session import route, IDLE as _IDLE, WAIT_CMD1 as _WAIT_CMD1

_DONE = 2


class Sec2:
    version = 2
    patch = 1

    def __init__(self, salt, verifier, rand=os.urandom, ecb=None):
        self.srp = Server(salt, verifier, rand)
        self.rand = rand
        self.ecb = ecb
        self.reset()

    @property
    def established(self):
        return self.state == _DONE

    def reset(self):
        self.state = _IDLE
        self.gcm = None
        self.nonce = None

    def idle(self):
        """Make the next ephemeral b and B while nobody waits (one modexp)."""
        if self.state == _IDLE:
            self.srp.prepare()

    def handshake(self, data):
        return route(self, data, 2, 12)

    def _cmd0(self, sc0):
        self.reset()
        user = pb.get_bytes(sc0, 1)
        a = pb.get_bytes(sc0, 2)  # lengths are checked by challenge(), and counted
        try:
            b = self.srp.challenge(user, a)
        except ValueError as e:
            raise AuthFailed(str(e))
        self.state = _WAIT_CMD1
        sr0 = pb.f_bytes(2, b) + pb.f_bytes(3, self.srp.salt)
        return pb.f_int(2, 2) + pb.f_msg(12, pb.f_int(1, 1) + pb.f_msg(21, sr0))

    def _cmd1(self, sc1):
        proof = pb.get_bytes(sc1, 1)
        hamk = self.srp.verify(proof) if len(proof) == 64 else None
        if hamk is None:
            self.reset()
            raise AuthFailed("client proof does not match (wrong PoP?)")
        assert self.srp.key is not None  # set by challenge() with the proof verify() matched
        self.gcm = GCM(self.srp.key[:32], self.ecb)
        self.srp.key = None
        self.nonce = bytearray(self.rand(8) + b"\x00\x00\x00\x01")
        self.state = _DONE
        sr1 = pb.f_bytes(2, hamk) + pb.f_bytes(3, bytes(self.nonce))
        return pb.f_int(2, 2) + pb.f_msg(12, pb.f_int(1, 3) + pb.f_msg(23, sr1))

    def _next(self):
        assert self.nonce is not None  # set by _cmd1() with _DONE
        n = bytes(self.nonce)
        c = int.from_bytes(n[8:], "big") + 1
        if c > 0xFFFFFFFF:
            self.reset()
            raise Refused("nonce counter exhausted: start a new session")
        self.nonce[8:] = c.to_bytes(4, "big")
        return n

    def encrypt(self, data):
        if self.state != _DONE:
            raise Refused("no session")
        assert self.gcm is not None  # set by _cmd1() with _DONE
        return self.gcm.encrypt(self._next(), data)

    def decrypt(self, data):
        if self.state != _DONE:
            raise Refused("no session")
        assert self.gcm is not None  # set by _cmd1() with _DONE
        try:
            return self.gcm.decrypt(self._next(), data)
        except ValueError:
            raise Refused("message failed authentication")
