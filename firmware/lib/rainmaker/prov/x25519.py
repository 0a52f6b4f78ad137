# X25519 (RFC 7748, Curve25519 Diffie-Hellman) in plain Python, for Security 1.
#
# The Montgomery ladder with a constant sequence of operations per bit
# (conditional swaps done arithmetically, no branch on the key). Python big
# ints are not constant-time, so this resists only coarse timing probes; a
# handshake key lives for one session.
_P = 2 ** 255 - 19
_A24 = 121665
BASE = b"\x09" + bytes(31)


def x25519(k, u):
    """The 32-byte shared u-coordinate for scalar k and point u (both 32 bytes)."""
    if len(k) != 32 or len(u) != 32:
        raise ValueError("X25519 keys are 32 bytes")
    P = _P
    k = bytearray(k)
    k[0] &= 248
    k[31] = (k[31] & 127) | 64
    n = int.from_bytes(k, "little")
    x1 = int.from_bytes(u, "little") & ((1 << 255) - 1)
    x2, z2, x3, z3 = 1, 0, x1, 1
    swap = 0
    for t in range(254, -1, -1):
        bit = (n >> t) & 1
        s = swap ^ bit
        # constant-time swap: d is 0 or the difference
        d = s * (x2 - x3)
        x2 -= d
        x3 += d
        d = s * (z2 - z3)
        z2 -= d
        z3 += d
        swap = bit
        a = x2 + z2
        aa = a * a % P
        b = x2 - z2
        bb = b * b % P
        e = aa - bb
        c = x3 + z3
        dd = x3 - z3
        da = dd * a % P
        cb = c * b % P
        x3 = (da + cb) % P
        x3 = x3 * x3 % P
        z3 = (da - cb) % P
        z3 = x1 * (z3 * z3 % P) % P
        x2 = aa * bb % P
        z2 = e * (aa + _A24 * e) % P
    d = swap * (x2 - x3)
    x2 -= d
    d = swap * (z2 - z3)
    z2 -= d
    return (x2 * pow(z2, P - 2, P) % P).to_bytes(32, "little")


def public(k):
    return x25519(k, BASE)
