# AES block encryption (FIPS-197) in plain Python: the ECB that cryptolib
# gives firmware on the board, for tests where cryptolib is missing (CPython,
# the MicroPython VM). Slow and not constant-time: tests only.


def _xt(a):
    a <<= 1
    return (a ^ 0x11B) if a & 0x100 else a


def _sbox():
    # multiplicative inverse in GF(2^8) followed by the affine map
    exp = [0] * 256
    log = [0] * 256
    x = 1
    for i in range(255):
        exp[i] = x
        log[x] = i
        x ^= _xt(x)  # multiply by the generator 3
    s = [0] * 256
    for a in range(256):
        inv = 0 if a == 0 else exp[(255 - log[a]) % 255]
        b = inv
        for k in range(1, 5):
            b ^= ((inv << k) | (inv >> (8 - k))) & 0xFF
        s[a] = b ^ 0x63
    return bytes(s)


SBOX = _sbox()


def _expand(key):
    nk = len(key) // 4
    rounds = nk + 6
    w = [list(key[4 * i:4 * i + 4]) for i in range(nk)]
    rcon = 1
    for i in range(nk, 4 * (rounds + 1)):
        t = list(w[i - 1])
        if i % nk == 0:
            t = t[1:] + t[:1]
            t = [SBOX[b] for b in t]
            t[0] ^= rcon
            rcon = _xt(rcon)
        elif nk > 6 and i % nk == 4:
            t = [SBOX[b] for b in t]
        w.append([w[i - nk][j] ^ t[j] for j in range(4)])
    return [sum(w[4 * r:4 * r + 4], []) for r in range(rounds + 1)]


def _block(rk, blk):
    s = [blk[i] ^ rk[0][i] for i in range(16)]
    n = len(rk) - 1
    for r in range(1, n + 1):
        s = [SBOX[b] for b in s]
        # ShiftRows on the column-major state
        s = [s[(i + 4 * (i % 4)) % 16] for i in range(16)]
        if r != n:
            out = []
            for c in range(4):
                a = s[4 * c:4 * c + 4]
                t = a[0] ^ a[1] ^ a[2] ^ a[3]
                out += [a[i] ^ t ^ _xt(a[i] ^ a[(i + 1) % 4]) for i in range(4)]
            s = out
        s = [s[i] ^ rk[r][i] for i in range(16)]
    return bytes(s)


class ECB:
    """Same contract as cryptolib.aes(key, 1) used for encryption."""

    def __init__(self, key):
        if len(key) not in (16, 32):
            raise ValueError("key")
        self.rk = _expand(bytes(key))

    def encrypt(self, buf):
        if len(buf) % 16:
            raise ValueError("blksize")
        out = b""
        for i in range(0, len(buf), 16):
            out += _block(self.rk, buf[i:i + 16])
        return out
