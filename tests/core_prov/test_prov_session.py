# Session establishment and the request model (docs/provisioning.md#request-model
# to #security-2): handshakes for Security 0/1/2, encrypted endpoint traffic,
# wrong PoPs, replays, truncation, the back-off after failed handshakes, a MemoryError.
# CPython and the MicroPython VM.
from rainmaker.prov import pb, srp
from rainmaker.prov.protocomm import Protocomm
from rainmaker.prov.errors import Refused, AuthFailed
from rainmaker.prov.sec0 import Sec0
from rainmaker.prov.sec1 import Sec1
from rainmaker.prov.sec2 import Sec2
from rainmaker.prov.netconfig import NetConfig
from provclient import Sec1Client, Sec2Client, handshake, sec0_cmd, get_status
from aes_ref import ECB
from util import raises, h
import json

POP = b"abcd1234"


def counter(seed):
    state = [seed]

    def rand(n):
        out = bytearray()
        while len(out) < n:
            state[0] = (state[0] * 1103515245 + 12345) & 0x7FFFFFFF
            out.append((state[0] >> 16) & 0xFF)
        return bytes(out)

    return rand


def sec1_pc(pop=POP, seed=7):
    net = NetConfig()
    return Protocomm(Sec1(pop, rand=counter(seed), ecb=ECB), {"prov-config": net.config})


_SALT = h("1112131415161718191a1b1c1d1e1f20")
_VER = []


def sec2_pc(seed=9):
    if not _VER:
        _VER.append(srp.verifier(_SALT, b"wifiprov", POP))
    net = NetConfig()
    return Protocomm(Sec2(_SALT, _VER[0], rand=counter(seed), ecb=ECB), {"prov-config": net.config})


def test_proto_ver_is_plain_json_for_every_scheme():
    for sec, cap in ((Sec0(), ["no_sec", "wifi_prov", "wifi_scan"]), (Sec1(POP, ecb=ECB), ["wifi_prov", "wifi_scan"])):
        pc = Protocomm(sec, {})
        info = json.loads(pc.request("proto-ver", b"---"))
        assert info["prov"]["ver"] == "netprov-v1.2"
        assert info["prov"]["sec_ver"] == sec.version
        assert info["prov"]["sec_patch_ver"] == 0
        assert info["prov"]["cap"] == cap


def test_sec0_handshake_bytes_and_plain_requests():
    pc = Protocomm(Sec0(), {"prov-config": NetConfig().config})
    raises(Refused, pc.request, "prov-config", get_status())  # no session yet
    assert sec0_cmd() == h("52 03 a2 01 00")
    assert pc.request("prov-session", sec0_cmd()) == h("52 05 08 01 aa 01 00")
    assert pc.request("prov-config", get_status()) == h("08 01 5a 02 10 02")
    raises(Refused, pc.request, "prov-session", h("10 01 52 00"))  # Security 1 asked of a Security 0 node


def test_sec1_session_and_encrypted_request():
    pc = sec1_pc()
    c = Sec1Client(POP, h("0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20"))
    r0 = pc.request("prov-session", c.cmd0())
    assert r0[:11] == h("10 01 5a 39 08 01 aa 01 34 12 20") and len(r0) == 61
    r1 = pc.request("prov-session", c.cmd1(r0))
    assert r1[:11] == h("10 01 5a 27 08 03 ba 01 22 1a 20") and len(r1) == 43
    assert c.check(r1)
    resp = c.decrypt(pc.request("prov-config", c.encrypt(get_status())))
    assert resp == h("08 01 5a 02 10 02")
    assert pc.fails == 0


def test_wrong_pops_slow_the_next_handshakes_down_and_never_lock():
    from rainmaker.prov.protocomm import wait_ms

    # a passer-by's guesses cost waiting time, not the board: the wait grows,
    # is capped, and runs out by itself
    assert [wait_ms(f) for f in range(11)] == [0, 0, 0, 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000]
    assert wait_ms(10 ** 6) == 60000
    pc = sec1_pc()
    now = 5000
    bad_key = pb.f_int(2, 1) + pb.f_msg(11, pb.f_msg(20, pb.f_bytes(1, b"\x09" * 31)))
    for i in range(5):
        now += wait_ms(i)  # a patient guesser
        if i == 4:  # a real wrong PoP (the others: a bad key, counted the same, cheaper on the VM)
            c = Sec1Client(b"wrong-pop", bytes([i + 1]) * 32)
            r0 = pc.request("prov-session", c.cmd0(), now)
            raises(AuthFailed, pc.request, "prov-session", c.cmd1(r0), now)
        else:
            raises(AuthFailed, pc.request, "prov-session", bad_key, now)
        assert pc.fails == i + 1
    assert pc.wait(now) == 4000
    # during the wait every handshake message is refused, uncounted; the rest is served
    c = Sec1Client(POP, b"\x42" * 32)
    for t in (now, now + 1, now + 3999):
        raises(Refused, pc.request, "prov-session", c.cmd0(), t)
    assert pc.fails == 5 and pc.wait(now + 3000) == 1000
    assert b'"sec_ver":1' in pc.request("proto-ver", b"---", now)
    # after it, the right PoP works, and clears the count
    later = now + 4000
    r0 = pc.request("prov-session", c.cmd0(), later)
    assert c.check(pc.request("prov-session", c.cmd1(r0), later))
    assert pc.fails == 0 and pc.wait(later) == 0
    assert c.decrypt(pc.request("prov-config", c.encrypt(get_status()), later)) == h("08 01 5a 02 10 02")


def test_backoff_runs_across_the_tick_wrap_and_stays_capped():
    pc = sec1_pc()
    top = (1 << 30) - 10  # ticks_ms wraps at 2**30 on the board
    for i in range(40):  # a determined guesser, waiting out each delay
        t = (top + i * 60000) % (1 << 30)
        raises(AuthFailed, pc.request, "prov-session", pb.f_int(2, 1) + pb.f_msg(11, pb.f_msg(20, pb.f_bytes(1, b"\x09" * 31))), t)
    assert pc.fails == 40
    last = (top + 39 * 60000) % (1 << 30)
    assert pc.wait(last) == 60000 and pc.wait((last + 59999) % (1 << 30)) == 1
    assert pc.wait((last + 60000) % (1 << 30)) == 0


def test_memory_error_while_making_keys_is_survived():
    # A fragmented heap can fail the key precompute or the handshake's own key
    # generation: the request fails (connection closed), the heap is collected,
    # the board goes on, and the next attempt works.
    from rainmaker.prov import protocomm

    class GC:  # counts collections (a real one inside the WASM VM's test frames can trap it)
        n = 0

        def collect(self):
            GC.n += 1

    real_gc = protocomm.gc
    protocomm.gc = GC()
    try:
        for scheme in (1, 2):
            _memory_error_case(scheme, GC)
    finally:
        protocomm.gc = real_gc


def _memory_error_case(scheme, gc):
    boom = [0]
    base = counter(11)

    def rand(n):
        if boom[0]:
            boom[0] -= 1
            raise MemoryError("memory allocation failed")
        return base(n)

    if scheme == 1:
        pc = Protocomm(Sec1(POP, rand=rand, ecb=ECB), {"prov-config": NetConfig().config})
        client = lambda i: Sec1Client(POP, bytes([0x50 + i]) * 32)
    else:
        if not _VER:
            _VER.append(srp.verifier(_SALT, b"wifiprov", POP))
        pc = Protocomm(Sec2(_SALT, _VER[0], rand=rand, ecb=ECB), {"prov-config": NetConfig().config})
        client = lambda i: Sec2Client(POP, bytes([0x60 + i]) * 32)
    n = gc.n
    boom[0] = 1
    pc.idle(100)  # the precompute between requests: caught, collected
    assert gc.n == n + 1
    boom[0] = 1
    pc.idle(600)  # not retried at once (each try allocates)
    assert boom[0] == 1
    boom[0] = 0
    pc.idle(1100)  # retried later, and made
    assert (pc.sec.pre if scheme == 1 else pc.sec.srp.pre) is not None
    boom[0] = 1
    pc.open()
    if scheme == 1:
        pc.sec.pre = None  # the handshake's own key generation fails this time
    else:
        pc.sec.srp.pre = None
    e = raises(Refused, pc.request, "prov-session", client(0).cmd0(), 2000)
    assert "memory" in str(e) and pc.fails == 0 and not pc.sec.established and gc.n == n + 2
    c = client(1)
    r0 = pc.request("prov-session", c.cmd0(), 2100)
    assert c.check(pc.request("prov-session", c.cmd1(r0), 2100))
    assert c.decrypt(pc.request("prov-config", c.encrypt(get_status()), 2100)) == h("08 01 5a 02 10 02")


def test_sec1_bad_public_key_length_is_counted():
    pc = sec1_pc()
    bad = pb.f_int(2, 1) + pb.f_msg(11, pb.f_msg(20, pb.f_bytes(1, b"\x09" * 31)))
    raises(AuthFailed, pc.request, "prov-session", bad)
    assert pc.fails == 1


def test_sec1_replayed_and_out_of_order_commands_are_refused():
    pc = sec1_pc()
    c = Sec1Client(POP, b"\x11" * 32)
    r0 = pc.request("prov-session", c.cmd0())
    cmd1 = c.cmd1(r0)
    assert c.check(pc.request("prov-session", cmd1))
    raises(Refused, pc.request, "prov-session", cmd1)  # replayed command 1: wrong state
    # a recorded handshake replayed into a new session: new device key, so the
    # old proof no longer matches
    pc.open()
    pc.request("prov-session", c.cmd0())
    raises(AuthFailed, pc.request, "prov-session", cmd1)
    # truncated handshake: command 0 only, then a request
    pc.open()
    pc.request("prov-session", Sec1Client(POP, b"\x12" * 32).cmd0())
    raises(Refused, pc.request, "prov-config", b"\x00\x01")
    # command 1 cut short on the wire: malformed, not counted
    fails = pc.fails
    raises(ValueError, pc.request, "prov-session", cmd1[:-5])
    assert pc.fails == fails


def test_new_transport_session_drops_keys():
    pc = sec1_pc()
    c = Sec1Client(POP, b"\x21" * 32)
    assert handshake(pc, c)
    pc.open()
    raises(Refused, pc.request, "prov-config", c.encrypt(get_status()))


def test_sec2_session_nonce_counter_and_request():
    pc = sec2_pc()
    c = Sec2Client(POP, h("800102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"))
    r0 = pc.request("prov-session", c.cmd0())
    assert r0[:5] == h("10 02 62 9b 03") or r0[:5] == h("10 02 62 9a 03")
    r1 = pc.request("prov-session", c.cmd1(r0))
    assert c.check(r1)
    assert bytes(c.nonce)[8:] == h("00000001")
    for _ in range(2):  # request with counter c, reply c+1, next request c+2...
        assert c.decrypt(pc.request("prov-config", c.encrypt(get_status()))) == h("08 01 5a 02 10 02")
    assert bytes(c.nonce)[8:] == h("00000005")
    # a replayed request (old nonce) fails authentication
    old = c.encrypt(get_status())
    pc.request("prov-config", old)
    raises(Refused, pc.request, "prov-config", old)


def test_sec2_wrong_pop_and_bad_public_keys_are_counted():
    pc = sec2_pc()
    c = Sec2Client(b"00000000", b"\x33" * 32)
    r0 = pc.request("prov-session", c.cmd0())
    raises(AuthFailed, pc.request, "prov-session", c.cmd1(r0))
    zero = pb.f_int(2, 2) + pb.f_msg(12, pb.f_msg(20, pb.f_bytes(1, b"wifiprov") + pb.f_bytes(2, bytes(384))))
    raises(AuthFailed, pc.request, "prov-session", zero)
    long_a = pb.f_int(2, 2) + pb.f_msg(12, pb.f_msg(20, pb.f_bytes(1, b"wifiprov") + pb.f_bytes(2, b"\x05" * 385)))
    raises(AuthFailed, pc.request, "prov-session", long_a)
    assert pc.fails == 3
    raises(Refused, pc.request, "prov-session", pb.f_int(2, 2) + pb.f_msg(12, pb.f_int(1, 2) + pb.f_msg(22, b"")))
    assert pc.fails == 3  # command 1 without a command 0: out of order, not counted


def test_sec2_accepts_a_public_key_without_leading_zeros():
    # esp-rainmaker-cli sends A as a minimal integer: 383 bytes 1 time in 256
    pc = sec2_pc()
    c = Sec2Client(POP, h("0000023b") + b"\x44" * 28)  # chosen so that A starts with 00
    assert c.big_a[0] == 0
    c.big_a = c.big_a[1:]
    assert handshake(pc, c)
