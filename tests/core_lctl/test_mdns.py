# The mDNS responder of local control (docs/protocol.md#local-control-discovery): what
# it answers (PTR, SRV, TXT, A for its own names), to whom (the group, or
# the querier for one-shot and QU queries), what it ignores, and a parser
# that survives garbage, pointer loops and oversized names.
import struct
from rainmaker import mdns
from util import raises, Rand, mutate

SVC = "_esp_local_ctrl._tcp"
TXT_ITEMS = (("version_endpoint", "/esp_local_ctrl/version"), ("session_endpoint", "/esp_local_ctrl/session"),
             ("control_endpoint", "/esp_local_ctrl/control"), ("node_id", "Node1"))


def responder(ip="192.168.1.20"):
    r = mdns.Responder("board1", "Node1", SVC, 8080, TXT_ITEMS)
    r.set_ip(ip)
    return r


def name(dotted):
    out = b""
    for label in dotted.split("."):
        out += bytes((len(label),)) + label.encode()
    return out + b"\x00"


def query(questions, qid=0, flags=0):
    body = b""
    for n, t, c in questions:
        body += (name(n) if isinstance(n, str) else n) + struct.pack(">HH", t, c)
    return struct.pack(">HHHHHH", qid, flags, len(questions), 0, 0, 0) + body


def records(pkt):
    """(id, flags, questions, [(section, name, type, class, ttl, rdata, rdata offset)])."""
    qid, flags, qd, an, ns, ar = struct.unpack_from(">HHHHHH", pkt, 0)
    i = 12
    qs = []
    for _ in range(qd):
        n, i = mdns.read_name(pkt, i)
        qs.append((n, struct.unpack_from(">HH", pkt, i)))
        i += 4
    out = []
    for k in range(an + ns + ar):
        n, i = mdns.read_name(pkt, i)
        t, c, ttl, ln = struct.unpack_from(">HHIH", pkt, i)
        i += 10
        out.append(("an" if k < an else "ar", n, t, c, ttl, pkt[i:i + ln], i))
        i += ln
    assert i == len(pkt)
    return qid, flags, qs, out


def test_ptr_query_gets_ptr_and_srv_txt_a_as_additional_on_the_group():
    r = responder()
    out, unicast = r.answer(query([(SVC + ".local", mdns.PTR, 1)], qid=77), 5353)
    assert not unicast
    qid, flags, qs, rrs = records(out)
    assert qid == 0 and flags == 0x8400 and qs == []
    kinds = [(sec, n, t) for sec, n, t, c, ttl, d, off in rrs]
    assert kinds == [("an", b"_esp_local_ctrl._tcp.local", 12), ("ar", b"node1._esp_local_ctrl._tcp.local", 33),
                     ("ar", b"node1._esp_local_ctrl._tcp.local", 16), ("ar", b"board1.local", 1)]
    ptr, srv, txt, a = rrs
    assert mdns.read_name(out, ptr[6])[0] == b"node1._esp_local_ctrl._tcp.local"
    assert ptr[3] == 1 and srv[3] == 0x8001 and txt[3] == 0x8001 and a[3] == 0x8001  # cache flush on unique ones
    assert ptr[4] == 120
    prio, weight, port = struct.unpack_from(">HHH", srv[5], 0)
    assert (prio, weight, port) == (0, 0, 8080)
    assert mdns.read_name(out, srv[6] + 6)[0] == b"board1.local"
    items = []
    d = txt[5]
    j = 0
    while j < len(d):
        items.append(bytes(d[j + 1:j + 1 + d[j]]).decode())
        j += 1 + d[j]
    assert items == ["version_endpoint=/esp_local_ctrl/version", "session_endpoint=/esp_local_ctrl/session",
                     "control_endpoint=/esp_local_ctrl/control", "node_id=Node1"]
    assert bytes(a[5]) == bytes((192, 168, 1, 20))


def test_the_instance_name_keeps_its_case_in_answers():
    r = responder()
    out, _ = r.answer(query([(SVC + ".local", mdns.PTR, 1)]), 5353)
    assert b"\x05Node1\x0f_esp_local_ctrl" in out


def test_one_shot_query_gets_its_id_question_and_short_ttl_unicast():
    r = responder()
    out, unicast = r.answer(query([("Node1." + SVC + ".local", mdns.SRV, 1)], qid=0x1234), 40000)
    assert unicast
    qid, flags, qs, rrs = records(out)
    assert qid == 0x1234 and flags == 0x8400
    assert qs == [(b"node1._esp_local_ctrl._tcp.local", (33, 1))]
    assert [(sec, t, c) for sec, n, t, c, ttl, d, off in rrs] == [("an", 33, 1), ("ar", 1, 1)]  # no cache flush
    assert all(rr[4] == 10 for rr in rrs)


def test_qu_question_is_answered_unicast_qm_on_the_group():
    r = responder()
    assert r.answer(query([(SVC + ".local", mdns.PTR, 0x8001)]), 5353)[1] is True
    assert r.answer(query([(SVC + ".local", mdns.PTR, 1)]), 5353)[1] is False
    both = query([(SVC + ".local", mdns.PTR, 0x8001), ("board1.local", mdns.A, 1)])
    assert r.answer(both, 5353)[1] is False


def test_srv_txt_any_and_a_and_names_case_insensitive():
    r = responder()
    out, _ = r.answer(query([("NODE1._ESP_LOCAL_CTRL._TCP.LOCAL", mdns.ANY, 1)]), 5353)
    assert [(sec, t) for sec, n, t, c, ttl, d, off in records(out)[3]] == [("an", 33), ("an", 16), ("ar", 1)]
    out, _ = r.answer(query([("Node1." + SVC + ".local", mdns.TXT, 1)]), 5353)
    assert [(sec, t) for sec, n, t, c, ttl, d, off in records(out)[3]] == [("an", 16)]
    out, _ = r.answer(query([("Board1.local", mdns.A, 1)]), 5353)
    assert [(sec, t) for sec, n, t, c, ttl, d, off in records(out)[3]] == [("an", 1)]


def test_service_enumeration():
    r = responder()
    out, _ = r.answer(query([("_services._dns-sd._udp.local", mdns.PTR, 1)]), 5353)
    rrs = records(out)[3]
    assert len(rrs) == 1 and rrs[0][1] == b"_services._dns-sd._udp.local" and rrs[0][2] == 12
    assert mdns.read_name(out, rrs[0][6])[0] == b"_esp_local_ctrl._tcp.local"


def test_no_address_no_a_record():
    r = responder(None)
    assert r.answer(query([("board1.local", mdns.A, 1)]), 5353) is None
    out, _ = r.answer(query([(SVC + ".local", mdns.PTR, 1)]), 5353)
    assert [t for sec, n, t, c, ttl, d, off in records(out)[3]] == [12, 33, 16]


def test_what_is_not_ours_is_ignored():
    r = responder()
    for q in (query([("_http._tcp.local", mdns.PTR, 1)]), query([("board1.local", 28, 1)]),  # AAAA
              query([(SVC + ".local", mdns.SRV, 1)]), query([("Node1." + SVC + ".local", mdns.PTR, 1)]),
              query([(SVC + ".local", mdns.PTR, 3)]),  # class CH
              query([(SVC + ".local", mdns.PTR, 1)], flags=0x8400),  # someone's response
              query([])):
        assert r.answer(q, 5353) is None, q
    assert r.bad == 0 and r.answered == 0


def test_compression_pointers_are_followed_backwards_only():
    r = responder()
    first = name(SVC + ".local")
    # question 2 = "Node1." + pointer to question 1's name at offset 12
    q2 = b"\x05Node1\xc0\x0c"
    pkt = struct.pack(">HHHHHH", 0, 0, 2, 0, 0, 0) + first + struct.pack(">HH", 99, 1) + q2 + struct.pack(">HH", 33, 1)
    out, _ = r.answer(pkt, 5353)
    assert [t for sec, n, t, c, ttl, d, off in records(out)[3]] == [33, 1]
    assert mdns.parse(pkt)[1] == [(b"_esp_local_ctrl._tcp.local", 99, False), (b"node1._esp_local_ctrl._tcp.local", 33, False)]
    head = struct.pack(">HHHHHH", 0, 0, 1, 0, 0, 0)
    for bad in (b"\xc0\x0c", b"\x01a\xc0\x0c",  # points at itself
                b"\xc0\x0e\x00\x01a\x00",  # points forwards
                b"\x01a\xc0",  # cut pointer
                b"\x40abc\x00",  # extended label type
                b"\x05ab\x00",  # label past the end
                b"\x3f" + b"a" * 63 + b"\x3f" + b"a" * 63 + b"\x3f" + b"a" * 63 + b"\x3f" + b"a" * 63 + b"\x00"):  # > 255
        pkt = head + bad + struct.pack(">HH", 12, 1)
        raises(ValueError, mdns.parse, pkt)
        assert r.answer(pkt, 5353) is None
    assert r.bad == 7


def test_bounded_question_count_and_truncation():
    r = responder()
    many = query([(SVC + ".local", mdns.PTR, 1)] * 17)
    raises(ValueError, mdns.parse, many)
    assert r.answer(many, 5353) is None
    ok = query([(SVC + ".local", mdns.PTR, 1)])
    for cut in (0, 5, 11, 13, len(ok) - 1):
        assert r.answer(ok[:cut], 5353) is None
    assert r.answer(query([(SVC + ".local", mdns.PTR, 1)], flags=0x2000), 5353) is None  # opcode 4 (notify)
    assert r.bad == 7


def test_announcement_has_every_record():
    r = responder()
    qid, flags, qs, rrs = records(r.announce())
    assert qid == 0 and flags == 0x8400 and [t for sec, n, t, c, ttl, d, off in rrs] == [12, 33, 16, 1]


def test_bad_configuration_is_refused_at_start():
    raises(ValueError, mdns.Responder, "board1", "x" * 64, SVC, 8080, ())
    raises(ValueError, mdns.Responder, "", "Node1", SVC, 8080, ())
    raises(ValueError, mdns.Responder, "board1", "Node1", SVC, 8080, (("k", "v" * 300),))


def test_fuzz_never_anything_but_an_answer_or_none():
    r = responder()
    rnd = Rand(11)
    seeds = [query([(SVC + ".local", mdns.PTR, 1)]), query([("Node1." + SVC + ".local", mdns.ANY, 0x8001)], qid=9),
             query([("board1.local", mdns.A, 1), (SVC + ".local", mdns.PTR, 1)]), r.announce()]
    answered = 0
    for i in range(800):
        data = rnd.bytes(rnd.next(60)) if i % 3 == 0 else mutate(rnd, seeds[rnd.next(len(seeds))])
        try:
            mdns.parse(data)
        except ValueError:
            pass
        out = r.answer(data, 5353 if i % 2 else 1234)
        if out is not None:
            answered += 1
            assert isinstance(out[0], bytes) and out[1] in (True, False)
            records(out[0])  # and the answer itself parses
    assert answered > 20
