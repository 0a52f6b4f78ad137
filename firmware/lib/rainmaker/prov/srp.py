# SRP6a, server side, as protocomm Security 2 uses it
# (docs/provisioning.md#security-2): the RFC 5054 3072-bit group, g = 5,
# SHA-512; I2B() = minimal big-endian bytes, PAD() = 384 bytes. k and
# H(N) xor H(PAD(g)) depend only on the group, so they are constants here
# (tests recompute them).
import os
from .sha512 import sha512
from .aes import equal

# Literals, not int() of a string: frozen into the firmware, they stay in flash.
_N = 0xFFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3BE39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E208E24FA074E5AB3143DB5BFCE0FD108E4B82D120A93AD2CAFFFFFFFFFFFFFFFF
_G = 5
NLEN = 384
# k = H(N | PAD(g))
_K = 0xa9c2e2559bf0ebb53f0cbbf62282906bede7f2182f00678211fbd5bde5b285033a4993503b87397f9be5ec02080fedbc0835587ad039060879b8621e8c3659e0
# H(N) xor H(PAD(g)), the first input of M
_HNG = bytes.fromhex(
    "dad76ed5365ed7bf6bbc1bfa050981458392bbd35a50335d03db3c7535b261d1"
    "c902f2ffb8647125bd28ce966c066d5be9b939216c6078b65889299c61624694")


def i2b(x):
    b = x.to_bytes(NLEN, "big")
    i = 0
    while i < NLEN - 1 and b[i] == 0:
        i += 1
    return b[i:]


def _h(*parts):
    h = sha512()
    for p in parts:
        h.update(p)
    return h.digest()


def verifier(salt, username, password):
    """I2B(v), v = g^x, x = H(s | H(I | ':' | P)); the 512-bit exponent makes this slow."""
    x = int.from_bytes(_h(salt, _h(username, b":", password)), "big")
    return i2b(pow(_G, x, _N))


def new_salt():
    # A leading zero byte would be dropped by clients that treat the salt as
    # an integer (the CLI does), and their proof would then not match.
    s = bytearray(os.urandom(16))
    while s[0] == 0:
        s[0] = os.urandom(1)[0]
    return bytes(s)


class Server:
    """One SRP6a exchange: challenge() for Cmd0, verify() for Cmd1."""

    def __init__(self, salt, verifier_bytes, rand=os.urandom):
        self.salt = salt
        self.v = int.from_bytes(verifier_bytes, "big")
        self.rand = rand
        self.pre = None  # (b, B) computed ahead, one use only
        self.key = None  # K = H(I2B(S)), 64 bytes
        self._m = None
        self._a = None

    def prepare(self):
        """The expensive half of a challenge (g^b), done before a client asks."""
        if self.pre is None:
            b = int.from_bytes(self.rand(32), "big")
            gb = pow(_G, b, _N)  # before k * v exists: its temporaries have that room too
            self.pre = (b, (_K * self.v + gb) % _N)

    def challenge(self, username, a_bytes):
        """B as bytes, and K and the expected client proof kept for verify().

        A is taken as the client sent it: 384 bytes, or fewer when the client
        dropped leading zeros (the CLI does, 1 in 256 times); the same bytes
        go into M. Raises ValueError for an unusable A."""
        self.key = self._m = None
        if not 1 <= len(a_bytes) <= NLEN or not 1 <= len(username) <= 64:
            raise ValueError("bad username or public key length")
        if int.from_bytes(a_bytes, "big") % _N == 0:
            raise ValueError("A mod N is 0")
        self.prepare()
        assert self.pre is not None  # made by prepare()
        b, big_b = self.pre
        self.pre = None  # never reuse b
        # Each 3072-bit number exists only while it is needed, so that a
        # modexp's temporaries (four blocks of 780 bytes) find whole holes: A
        # as an int is made again for its one use, PAD(A) is A's bytes after
        # zeros, I2B(B) is made last. (No gc.collect() between the steps: it
        # saved a little fragmentation, but the WebAssembly build of
        # MicroPython the tests also run this code on traps, out of bounds,
        # when it collects here.)
        u = _h(bytes(NLEN - len(a_bytes)), a_bytes, big_b.to_bytes(NLEN, "big"))
        u = int.from_bytes(u, "big")
        if u == 0:
            raise ValueError("u is 0")
        s = pow(self.v, u, _N)
        del u
        s = int.from_bytes(a_bytes, "big") * s % _N
        s = pow(s, b, _N)
        k = _h(i2b(s))
        del s
        bb = i2b(big_b)
        self._m = _h(_HNG, _h(username), self.salt, a_bytes, bb, k)
        self._a = a_bytes
        self.key = k
        return bb

    def verify(self, proof):
        """The device proof H(A | M | K) if the client's proof is right, else None."""
        m = self._m
        self._m = None
        if m is None or not equal(m, proof):
            self.key = None
            return None
        return _h(self._a, m, self.key)
