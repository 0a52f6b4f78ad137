# Provisioning crypto: SHA-512, X25519, AES-CTR/GCM over an AES-ECB, SRP6a,
# against published vectors and docs/provisioning.md#test-vectors. Runs on CPython and on
# the MicroPython VM (which has no cryptolib: aes_ref stands in for it).
from rainmaker.prov import sha512 as sha
from rainmaker.prov.x25519 import x25519, public
from rainmaker.prov.aes import CTR, GCM, xor, equal
from rainmaker.prov import srp
from aes_ref import ECB
from util import raises, h
import hashlib


def test_sha512_known_answers():
    assert sha.pure(b"").digest() == h(
        "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce"
        "47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e")
    assert sha.pure(b"abc").digest() == h(
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
        "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f")
    two = b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu"
    assert sha.pure(two).digest() == h(
        "8e959b75dae313da8cf4f72814fc143f8f7779c6eb9f7fa17299aeadb6889018"
        "501d289e4900f7e4331b99dec4b5433ac7d329eeb6dd26545e96e55b874be909")


def test_sha512_incremental_equals_one_shot():
    data = bytes(range(256)) * 2
    for n in (111, 112, 127, 128, 129, 300):
        x = sha.pure()
        x.update(data[:n // 3])
        x.update(data[n // 3:n])
        assert x.digest() == sha.pure(data[:n]).digest()
    x = sha.pure(b"a")
    x.digest()
    raises(ValueError, x.digest)


def test_sha512_any_split_of_any_length():
    # The padding cases (one and two final blocks, a length that ends
    # exactly on a block), SRP-sized inputs, and updates of odd
    # sizes from bytes, bytearray and memoryview: the partial-block buffer
    # and the blocks hashed in place give the one-shot digest, and CPython's
    # hashlib's where it has SHA-512 (MicroPython's unix port has not).
    data = bytes((i * 37 + 11) & 255 for i in range(800))
    try:
        ref = hashlib.sha512
    except AttributeError:
        ref = None
    for n in (0, 1, 17, 111, 112, 113, 127, 128, 129, 239, 240, 255, 256, 257, 383, 384, 385, 800):
        one = sha.pure(data[:n]).digest()
        if ref is not None:
            assert ref(data[:n]).digest() == one, n
        x = sha.pure()
        i = 0
        step = 1 + n % 7
        kinds = (bytes, bytearray, memoryview)
        while i < n:
            x.update(kinds[i % 3](data[i:min(i + step, n)]))
            i += step
            step = step * 3 % 131 + 1
        assert x.digest() == one, n
    blob = bytearray(data[:200])
    x = sha.pure(blob)
    blob[0] ^= 1  # the caller's buffer changing after update() does not matter
    assert x.digest() == sha.pure(data[:200]).digest()


def test_x25519_rfc7748():
    k = h("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4")
    u = h("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c")
    assert x25519(k, u) == h("c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552")
    alice = h("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    bob = h("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
    assert public(alice) == h("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    assert x25519(alice, public(bob)) == x25519(bob, public(alice)) == h(
        "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
    raises(ValueError, x25519, alice, b"\x09")


def test_security1_appendix_a():
    cpriv = h("0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20")
    dpriv = h("2122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f40")
    cpub, dpub = public(cpriv), public(dpriv)
    assert cpub == h("07a37cbc142093c8b755dc1b10e86cb426374ad16aa853ed0bdfc0b2b86d1c7c")
    assert dpub == h("5869aff450549732cbaaed5e5df9b30a6da31cb0e5742bad5ad4a1a768f1a67b")
    shared = x25519(dpriv, cpub)
    assert shared == h("a84dc7c3c8f058b1b2dc4cd1e9b5dc0a7987f88b6a9564cde3391fc421159e77")
    key = xor(shared, hashlib.sha256(b"abcd1234").digest())
    assert key == h("418320d971c2a559d1efc1d957f835d59a1958c2d73ad78f2d5c8101641ef7d9")
    ctr = CTR(key, h("a0a1a2a3a4a5a6a7a8a9aaabacadaeaf"), ECB)
    assert ctr.crypt(dpub) == h("527d5d0604ab390e387edfb2edd69291a9f5d3bc2486b9bfaf469157071f4eee")
    assert ctr.crypt(cpub) == h("2269f29d63597181e5a9ccb15dc0acde206674f74dbc91b1a0ad13a412d8403d")
    assert ctr.crypt(h("5200")) == h("51c4")


def test_ctr_counter_carries_across_128_bits():
    key = bytes(32)
    a = CTR(key, b"\xff" * 16, ECB)
    b = ECB(key)
    ks = a.crypt(bytes(32))
    assert ks == b.encrypt(b"\xff" * 16) + b.encrypt(bytes(16))


def test_gcm_nist_vectors():
    g = GCM(bytes(32), ECB)
    assert g.encrypt(bytes(12), b"") == h("530f8afbc74536b9a963b4f1c4cb738b")
    assert g.encrypt(bytes(12), bytes(16)) == h("cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919")


def test_gcm_appendix_a_and_tamper():
    k = h("cc4777ade5fc376dace54fe2a0e2143acc63c6b826ca75364996edfce89a9cf5")
    g = GCM(k, ECB)
    n = h("c0c1c2c3c4c5c6c700000001")
    ct = g.encrypt(n, h("5200"))
    assert ct == h("321e7638027a1b59e97788f211f447db2680")
    assert g.decrypt(n, ct) == h("5200")
    bad = bytearray(ct)
    bad[0] ^= 1
    raises(ValueError, g.decrypt, n, bytes(bad))
    raises(ValueError, g.decrypt, n, ct[:15])
    raises(ValueError, g.decrypt, n[:11], ct)


def test_gcm_reduction_table():
    # aes._R4 is written out as literals; recomputed here from R = 0xE1 << 120.
    from rainmaker.prov import aes

    r = 0xE1 << 120
    for m in range(16):
        v = m
        for _ in range(4):
            v = (v >> 1) ^ r if v & 1 else v >> 1
        assert aes._R4[m] == v, m
    assert len(aes._R4) == 16


def test_constant_time_equal():
    assert equal(b"abc", b"abc")
    assert not equal(b"abc", b"abd")
    assert not equal(b"abc", b"ab")


def test_srp_group_constants():
    n = srp._N.to_bytes(384, "big")
    g = (5).to_bytes(384, "big")
    x = sha.pure(n)
    x.update(g)
    assert int.from_bytes(x.digest(), "big") == srp._K
    assert xor(sha.pure(n).digest(), sha.pure(g).digest()) == srp._HNG


def _appendix_server():
    s = h("1112131415161718191a1b1c1d1e1f20")
    v = srp.verifier(s, b"wifiprov", b"abcd1234")
    b = h("4142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f60")
    return srp.Server(s, v, rand=lambda n: b), v


def test_srp_appendix_a():
    server, v = _appendix_server()
    assert hashlib.sha256(v).digest() == h("f9967ff66e49a2846c1c790a26abc4ac47835090daf6040dc9ed2676bf02c136")
    a = int("800102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", 16)
    big_a = pow(5, a, srp._N).to_bytes(384, "big")
    assert hashlib.sha256(big_a).digest() == h("58567d73531b19db89126cccd10ab11340e4dad305013ee4b9cd452057b71b3a")
    big_b = server.challenge(b"wifiprov", big_a)
    assert hashlib.sha256(big_b).digest() == h("933d215fd83bdfee34fc20826b4843206086a05d914977ebb2b4c36e3ebe21c0")
    assert server.key == h(
        "cc4777ade5fc376dace54fe2a0e2143acc63c6b826ca75364996edfce89a9cf5"
        "4ee04ec0d3dc5f64ebae439708de801022c88a4ba8d627c2ca70e82cc1c83321")
    m = h("1eb45f91afd54929ea6d5aeeea37640a69d1ab15d4b33ba5ebd8c610566e2502"
          "3e9a60ff697b098c4589deb7cab01939e6d02c77331d611a10ee96fae52bdb00")
    assert server.verify(m) == h(
        "2542e74eb3590dba1ed284d52c20b4c2919f00886b4addfa38d728487489613a"
        "c0b94e367c322a099c2f22ab4167d8b66c70484dee5d62a8997c4bf6cf101cec")
    assert server.verify(m) is None  # one use


def test_srp_a_public_key_without_its_leading_zeros():
    # A client that drops A's leading zero bytes (the CLI does) gets the key
    # that PAD(A) gives, and M over A as it was sent: recomputed here by the
    # formulas, with ints (the server hashes PAD(A) from A's bytes).
    a_short = bytes([7]) + bytes(range(200)) + bytes(range(182))  # 383 bytes
    results = []
    for a_sent in (a_short, b"\x00" + a_short):
        server, v = _appendix_server()
        big_b = server.challenge(b"wifiprov", a_sent)
        results.append((big_b, server.key, server._m))
    assert results[0][:2] == results[1][:2] and results[0][2] != results[1][2]
    big_b, key, m = results[0]
    server, v = _appendix_server()
    b = int.from_bytes(h("4142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f60"), "big")
    a = int.from_bytes(a_short, "big")
    hu = sha.pure(a.to_bytes(384, "big"))
    hu.update(int.from_bytes(big_b, "big").to_bytes(384, "big"))
    u = int.from_bytes(hu.digest(), "big")
    s = pow(a * pow(int.from_bytes(v, "big"), u, srp._N) % srp._N, b, srp._N)
    assert key == sha.pure(srp.i2b(s)).digest()
    x = sha.pure(srp._HNG)
    for part in (sha.pure(b"wifiprov").digest(), server.salt, a_short, big_b, key):
        x.update(part)
    assert m == x.digest()


def test_srp_refuses_bad_public_keys_and_proofs():
    server, _ = _appendix_server()
    raises(ValueError, server.challenge, b"wifiprov", bytes(384))
    raises(ValueError, server.challenge, b"wifiprov", srp._N.to_bytes(384, "big"))
    raises(ValueError, server.challenge, b"wifiprov", b"\x02" * 385)
    raises(ValueError, server.challenge, b"", b"\x02" * 384)
    raises(ValueError, server.challenge, b"u" * 65, b"\x02" * 384)
    server.challenge(b"wifiprov", b"\x02" * 384)
    assert server.verify(bytes(64)) is None
    assert server.key is None
