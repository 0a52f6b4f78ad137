# A protocomm client written from docs/provisioning.md, for tests that must also run on
# the MicroPython VM (the real peer, esp-rainmaker-cli, is exercised in
# tests/test_prov.py). Deterministic: every random value is passed in.
from rainmaker.prov import pb, srp
from rainmaker.prov.x25519 import x25519, public
from rainmaker.prov.aes import CTR, GCM, xor
from rainmaker.prov.sha512 import sha512
from aes_ref import ECB
import hashlib


def sec0_cmd():
    return pb.f_msg(10, pb.f_msg(20, b""))


class Sec1Client:
    def __init__(self, pop, priv):
        self.pop = pop
        self.priv = priv
        self.pub = public(priv)
        self.ctr = None

    def cmd0(self):
        return pb.f_int(2, 1) + pb.f_msg(11, pb.f_msg(20, pb.f_bytes(1, self.pub)))

    def cmd1(self, resp0):
        s = pb.get_msg(pb.decode(resp0), 11)
        assert pb.get_int(s, 1) == 1
        sr0 = pb.get_msg(s, 21)
        self.dev_pub = pb.get_bytes(sr0, 2)
        key = x25519(self.priv, self.dev_pub)
        if self.pop:
            key = xor(key, hashlib.sha256(self.pop).digest())
        self.ctr = CTR(key, pb.get_bytes(sr0, 3), ECB)
        proof = self.ctr.crypt(self.dev_pub)
        return pb.f_int(2, 1) + pb.f_msg(11, pb.f_int(1, 2) + pb.f_msg(22, pb.f_bytes(2, proof)))

    def check(self, resp1):
        s = pb.get_msg(pb.decode(resp1), 11)
        assert pb.get_int(s, 1) == 3
        return self.ctr.crypt(pb.get_bytes(pb.get_msg(s, 23), 3)) == self.pub

    def encrypt(self, data):
        return self.ctr.crypt(data)

    decrypt = encrypt


def _h(*parts):
    x = sha512()
    for p in parts:
        x.update(p)
    return x.digest()


class Sec2Client:
    def __init__(self, password, a, username=b"wifiprov"):
        self.user = username
        self.password = password
        self.a = int.from_bytes(a, "big")
        self.big_a = pow(5, self.a, srp._N).to_bytes(384, "big")

    def cmd0(self):
        body = pb.f_bytes(1, self.user) + pb.f_bytes(2, self.big_a)
        return pb.f_int(2, 2) + pb.f_msg(12, pb.f_msg(20, body))

    def cmd1(self, resp0):
        s = pb.get_msg(pb.decode(resp0), 12)
        assert pb.get_int(s, 1) == 1
        sr0 = pb.get_msg(s, 21)
        bb = pb.get_bytes(sr0, 2)
        salt = pb.get_bytes(sr0, 3)
        n = srp._N
        b = int.from_bytes(bb, "big")
        u = int.from_bytes(_h(bytes(384 - len(self.big_a)) + self.big_a, b.to_bytes(384, "big")), "big")
        x = int.from_bytes(_h(salt, _h(self.user, b":", self.password)), "big")
        v = pow(5, x, n)
        s_ = pow((b - srp._K * v) % n, self.a + u * x, n)
        self.key = _h(srp.i2b(s_))
        self.m = _h(srp._HNG, _h(self.user), salt, self.big_a, bb, self.key)
        return pb.f_int(2, 2) + pb.f_msg(12, pb.f_int(1, 2) + pb.f_msg(22, pb.f_bytes(1, self.m)))

    def check(self, resp1):
        s = pb.get_msg(pb.decode(resp1), 12)
        assert pb.get_int(s, 1) == 3
        sr1 = pb.get_msg(s, 23)
        if pb.get_bytes(sr1, 2) != _h(self.big_a, self.m, self.key):
            return False
        self.nonce = bytearray(pb.get_bytes(sr1, 3))
        self.gcm = GCM(self.key[:32], ECB)
        return True

    def _next(self):
        n = bytes(self.nonce)
        self.nonce[8:] = (int.from_bytes(n[8:], "big") + 1).to_bytes(4, "big")
        return n

    def encrypt(self, data):
        return self.gcm.encrypt(self._next(), data)

    def decrypt(self, data):
        return self.gcm.decrypt(self._next(), data)


def handshake(pc, client):
    """Run a client's handshake against a Protocomm; True when both sides agree."""
    r0 = pc.request("prov-session", client.cmd0())
    r1 = pc.request("prov-session", client.cmd1(r0))
    return client.check(r1)


def get_status():
    return pb.f_msg(10, b"")  # NetworkConfigPayload{msg=0, cmd_get_wifi_status{}}


def set_config(ssid, password, bssid=b""):
    body = pb.f_bytes(1, ssid) + pb.f_bytes(2, password) + pb.f_bytes(3, bssid)
    return pb.f_int(1, 2) + pb.f_msg(12, body)


def apply_config():
    return pb.f_int(1, 4) + pb.f_msg(14, b"")
