# Security 1 (docs/provisioning.md#security-1): X25519 key exchange, the PoP mixed into the key,
# one AES-256-CTR keystream for both directions starting with the two verify
# blobs of the handshake.
import os
import hashlib
from . import pb
from .x25519 import x25519, public
from .aes import CTR, xor, equal
from .errors import Refused, AuthFailed
from .session import route, IDLE as _IDLE, WAIT_CMD1 as _WAIT_CMD1

_DONE = 2


class Sec1:
    version = 1
    patch = 0

    def __init__(self, pop, rand=os.urandom, ecb=None):
        self.pop_hash = hashlib.sha256(pop).digest() if pop else None
        self.rand = rand
        self.ecb = ecb
        self.pre = None  # (private, public) made ahead of a handshake
        self.reset()

    @property
    def established(self):
        return self.state == _DONE

    def reset(self):
        self.state = _IDLE
        self.ctr = None
        self.dev_pub = self.cli_pub = None

    def idle(self):
        """Make the next device key pair while nobody waits (one X25519 ladder)."""
        if self.pre is None and self.state == _IDLE:
            k = self.rand(32)
            self.pre = (k, public(k))

    def handshake(self, data):
        return route(self, data, 1, 11)

    def _cmd0(self, sc0):
        self.reset()  # a new command 0 restarts the session
        cli = pb.get_bytes(sc0, 1)
        if len(cli) != 32:
            raise AuthFailed("client public key is not 32 bytes")
        self.idle()
        assert self.pre is not None  # made by idle(): the state is _IDLE after reset()
        priv, pub = self.pre
        self.pre = None
        shared = x25519(priv, cli)
        if shared == bytes(32):
            raise AuthFailed("client public key is a low-order point")
        key = xor(shared, self.pop_hash) if self.pop_hash else shared
        rnd = self.rand(16)
        self.ctr = CTR(key, rnd, self.ecb)
        self.dev_pub = pub
        self.cli_pub = cli
        self.state = _WAIT_CMD1
        sr0 = pb.f_bytes(2, pub) + pb.f_bytes(3, rnd)
        return pb.f_int(2, 1) + pb.f_msg(11, pb.f_int(1, 1) + pb.f_msg(21, sr0))

    def _cmd1(self, sc1):
        proof = pb.get_bytes(sc1, 2)
        assert self.ctr is not None  # made by _cmd0(); route() checked the state
        if len(proof) != 32 or not equal(self.ctr.crypt(proof), self.dev_pub):
            self.reset()
            raise AuthFailed("client proof does not match (wrong PoP?)")
        verify = self.ctr.crypt(self.cli_pub)
        self.state = _DONE
        return pb.f_int(2, 1) + pb.f_msg(11, pb.f_int(1, 3) + pb.f_msg(23, pb.f_bytes(3, verify)))

    def encrypt(self, data):
        if self.state != _DONE:
            raise Refused("no session")
        assert self.ctr is not None  # _DONE comes after _cmd0()
        return self.ctr.crypt(data)

    decrypt = encrypt
