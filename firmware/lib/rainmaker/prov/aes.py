# AES-256-CTR (Security 1) and AES-256-GCM (Security 2) built on the AES-ECB
# block cipher that MicroPython's cryptolib provides (cryptolib.aes(key, 1)).
#
# ecb is a factory: ecb(key) -> object whose encrypt(buf) enciphers a whole
# number of 16-byte blocks. The default is cryptolib; tests pass their own.
# GHASH multiplies in GF(2^128) four bits at a time (Shoup's method): a
# 16-entry table per key, 32 steps per block.
_MASK128 = (1 << 128) - 1
_R = 0xE1 << 120


def _cryptolib(key):
    import cryptolib

    return cryptolib.aes(key, 1)


def xor(a, b):
    n = len(a)
    out = bytearray(n)
    for i in range(n):
        out[i] = a[i] ^ b[i]
    return bytes(out)


def equal(a, b):
    """Constant-time comparison of two byte strings (length is not secret)."""
    if len(a) != len(b):
        return False
    r = 0
    for i in range(len(a)):
        r |= a[i] ^ b[i]
    return r == 0


class CTR:
    """One keystream; crypt() continues it (encrypt and decrypt are the same)."""

    def __init__(self, key, iv, ecb=None):
        if len(iv) != 16:
            raise ValueError("CTR counter block is 16 bytes")
        self._aes = (ecb or _cryptolib)(key)
        self._ctr = int.from_bytes(iv, "big")
        self._ks = b""

    def crypt(self, data):
        n = len(data)
        need = n - len(self._ks)
        if need > 0:
            blocks = (need + 15) // 16
            buf = bytearray(16 * blocks)
            c = self._ctr
            for i in range(blocks):
                buf[16 * i:16 * i + 16] = c.to_bytes(16, "big")
                c = (c + 1) & _MASK128
            self._ctr = c
            self._ks += self._aes.encrypt(buf)
        ks = self._ks
        self._ks = ks[n:]
        return xor(data, ks)


# R4[m]: the reduction of the four bits m shifted out when multiplying by x^4
# (tests recompute it). Literals: frozen into the firmware, they stay in flash.
_R4 = (
    0x00000000000000000000000000000000,
    0x1C200000000000000000000000000000,
    0x38400000000000000000000000000000,
    0x24600000000000000000000000000000,
    0x70800000000000000000000000000000,
    0x6CA00000000000000000000000000000,
    0x48C00000000000000000000000000000,
    0x54E00000000000000000000000000000,
    0xE1000000000000000000000000000000,
    0xFD200000000000000000000000000000,
    0xD9400000000000000000000000000000,
    0xC5600000000000000000000000000000,
    0x91800000000000000000000000000000,
    0x8DA00000000000000000000000000000,
    0xA9C00000000000000000000000000000,
    0xB5E00000000000000000000000000000,
)


class GCM:
    """AES-GCM with a 96-bit nonce, no associated data, 16-byte tag appended."""

    def __init__(self, key, ecb=None):
        self._aes = (ecb or _cryptolib)(key)
        h = int.from_bytes(self._aes.encrypt(bytes(16)), "big")
        t = [0] * 16
        t[8] = h
        v = h
        for i in (4, 2, 1):
            v = (v >> 1) ^ _R if v & 1 else v >> 1
            t[i] = v
        for i in (3, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15):
            hi = 8 if i & 8 else (4 if i & 4 else 2)
            t[i] = t[hi] ^ t[i ^ hi]
        self._t = t

    def _mul(self, x):
        t = self._t
        r4 = _R4
        z = 0
        for _ in range(32):
            z = (z >> 4) ^ r4[z & 15] ^ t[x & 15]
            x >>= 4
        return z

    def _ghash(self, data):
        z = 0
        n = len(data)
        for i in range(0, n, 16):
            blk = data[i:i + 16]
            if len(blk) < 16:
                blk = blk + bytes(16 - len(blk))
            z = self._mul(z ^ int.from_bytes(blk, "big"))
        return self._mul(z ^ (n * 8))  # len(A) = 0 in the high 64 bits

    def _ctr(self, nonce, data):
        j = int.from_bytes(nonce, "big") << 32
        blocks = (len(data) + 15) // 16
        buf = bytearray(16 * (blocks + 1))
        for i in range(blocks + 1):
            buf[16 * i:16 * i + 16] = (j | ((1 + i) & 0xFFFFFFFF)).to_bytes(16, "big")
        ks = self._aes.encrypt(buf)
        return ks[:16], xor(data, ks[16:])  # E(J0) for the tag, then the data

    def encrypt(self, nonce, data):
        if len(nonce) != 12:
            raise ValueError("GCM nonce is 12 bytes")
        ek0, ct = self._ctr(nonce, data)
        tag = (self._ghash(ct) ^ int.from_bytes(ek0, "big")).to_bytes(16, "big")
        return ct + tag

    def decrypt(self, nonce, data):
        """Plaintext, or ValueError if the tag does not match."""
        if len(nonce) != 12:
            raise ValueError("GCM nonce is 12 bytes")
        if len(data) < 16:
            raise ValueError("GCM message shorter than its tag")
        ct = data[:-16]
        ek0, pt = self._ctr(nonce, ct)
        tag = (self._ghash(ct) ^ int.from_bytes(ek0, "big")).to_bytes(16, "big")
        if not equal(tag, data[-16:]):
            raise ValueError("GCM tag mismatch")
        return pt
