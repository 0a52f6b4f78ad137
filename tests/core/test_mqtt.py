# Byte-exact MQTT 3.1.1 encoding and incremental decoding.
from rainmaker import mqtt
from util import raises, h


def test_connect_minimal():
    assert mqtt.connect("N1", 120, True) == h("10 0e 00 04 4d 51 54 54 04 02 00 78 00 02 4e 31")


def test_connect_with_will():
    # No user name or password: the node authenticates with its certificate.
    pkt = mqtt.connect("N", 60, True, ("t", b"m", 1, False))
    # flags: will QoS1 0x08 | will 0x04 | clean 0x02
    assert pkt == h("10 13 00 04 4d 51 54 54 04 0e 00 3c 00 01 4e 00 01 74 00 01 6d")


def test_connect_will_retain_flag():
    pkt = mqtt.connect("N", 60, False, ("t", b"m", 0, True))
    assert pkt[9] == 0x24


def test_publish_qos0_and_qos1():
    assert mqtt.publish("a/b", b"hi") == h("30 07 00 03 61 2f 62 68 69")
    assert mqtt.publish("a/b", "hi", 1, 10) == h("32 09 00 03 61 2f 62 00 0a 68 69")
    assert mqtt.publish("a", b"", 1, 1, dup=True, retain=True)[0] == 0x3B


def test_publish_rejects_qos2():
    raises(mqtt.MQTTError, mqtt.publish, "a", b"x", 2, 1)


def test_small_packets():
    assert mqtt.subscribe(1, [("a/#", 1)]) == h("82 08 00 01 00 03 61 2f 23 01")
    assert mqtt.puback(0x1234) == h("40 02 12 34")
    assert mqtt.pingreq() == h("c0 00")


def test_remaining_length_varint():
    assert bytes(mqtt._varint(0)) == h("00")
    assert bytes(mqtt._varint(127)) == h("7f")
    assert bytes(mqtt._varint(128)) == h("80 01")
    assert bytes(mqtt._varint(16383)) == h("ff 7f")
    assert bytes(mqtt._varint(16384)) == h("80 80 01")
    assert bytes(mqtt._varint(268435455)) == h("ff ff ff 7f")
    raises(mqtt.MQTTError, mqtt._varint, 268435456)


def test_long_publish_uses_two_byte_length():
    pkt = mqtt.publish("t", b"x" * 200)
    assert pkt[:3] == h("30 cb 01")  # 203 = 0x4b | 0x80, 0x01


def test_size_is_the_publish_length():
    for n in (0, 1, 120, 124, 125, 200, 16380, 16384, 20000):
        for qos in (0, 1):
            assert mqtt.size("a/b", b"x" * n, qos) == len(mqtt.publish("a/b", b"x" * n, qos, 1))


class P:
    """A decoded packet, the Reader's tuple with its fields named."""

    def __init__(self, t):
        assert type(t) is tuple and len(t) == 8
        self.type, self.pid, self.topic, self.payload, self.qos, self.retain, self.codes, self.size = t


def packets(r):
    return [P(t) for t in r.packets()]


def test_reader_byte_by_byte():
    stream = h("20 02 00 00") + mqtt.publish("x/y", b"hello", 1, 7) + h("90 03 00 01 01") + h("d0 00")
    r = mqtt.Reader()
    got = []
    for i in range(len(stream)):
        r.feed(stream[i : i + 1])
        got += packets(r)
    assert [p.type for p in got] == [mqtt.CONNACK, mqtt.PUBLISH, mqtt.SUBACK, mqtt.PINGRESP]
    assert got[0].codes == (0, 0)
    assert got[1].topic == "x/y" and got[1].payload == b"hello" and got[1].qos == 1 and got[1].pid == 7
    assert got[2].pid == 1 and got[2].codes == b"\x01"


def test_reader_many_in_one_feed():
    r = mqtt.Reader()
    r.feed(mqtt.publish("a", b"1") + mqtt.publish("b", b"2") + h("40 02 00 05"))
    ps = packets(r)
    assert [(p.topic, p.payload) for p in ps[:2]] == [("a", b"1"), ("b", b"2")]
    assert ps[2].type == mqtt.PUBACK and ps[2].pid == 5


def test_reader_connack_refused():
    r = mqtt.Reader()
    r.feed(h("20 02 01 05"))
    p = packets(r)[0]
    assert p.codes == (1, 5)
    from rainmaker import diag  # the texts live with the other failure texts

    assert diag.connack(5) == "not authorised" and diag.connack(9) == "code 9"


def test_reader_skips_oversized_publish_without_buffering():
    r = mqtt.Reader(max_packet=100)
    big = mqtt.publish("node/N/params/remote", b"z" * 5000, 1, 9)
    r.feed(big[:300])
    assert r.packets() == []
    assert len(r._buf) < 300  # the body is not kept
    r.feed(big[300:] + mqtt.publish("t", b"ok"))
    ps = packets(r)
    assert ps[0].topic == "node/N/params/remote" and ps[0].pid == 9 and ps[0].size == len(big)
    assert ps[0].payload == b""
    assert ps[1].payload == b"ok"


def test_reader_rejects_corrupt_streams():
    for bad in (
        h("20 03 00 00 00"),  # CONNACK of wrong length
        h("50 02 00 01"),  # PUBREC: QoS 2 never requested
        h("36 03 00 01 61"),  # PUBLISH QoS 3
        h("30 03 00 05 61"),  # topic length overruns packet
        h("30 ff ff ff ff 01"),  # remaining length of five bytes
        h("30 04 00 02 ff fe"),  # topic not UTF-8
        h("d0 01 00"),  # PINGRESP with body
    ):
        r = mqtt.Reader()
        r.feed(bad)
        raises(mqtt.MQTTError, r.packets)


def test_reader_rejects_oversized_control_packet():
    r = mqtt.Reader(max_packet=50)
    r.feed(h("90 7f 00 01") + b"\x00" * 125)
    raises(mqtt.MQTTError, r.packets)


def test_publish_from_pieces_is_the_joined_publish():
    # The node config goes out as a list of pieces copied straight into the packet.
    pieces = ['{"a":', "1", ',"name":"Kühlschrank"', b',"b":2', "}"]
    whole = "".join(p if isinstance(p, str) else p.decode() for p in pieces)
    for qos in (0, 1):
        for ps in (pieces, tuple(pieces), [whole], whole, whole.encode()):
            pkt = mqtt.publish("node/x/config", ps, qos, 7)
            assert pkt == mqtt.publish("node/x/config", whole.encode(), qos, 7)
            assert mqtt.size("node/x/config", ps, qos) == len(pkt)
    big = ["x" * 100] * 200  # 20,000 bytes: a three-byte remaining length
    assert mqtt.publish("t", big, 1, 1) == mqtt.publish("t", b"x" * 20000, 1, 1)
    assert mqtt.parts(mqtt.parts(pieces)) == mqtt.parts(pieces)  # idempotent
    assert mqtt.publish("t", [], 0) == mqtt.publish("t", b"", 0)


def test_split_publish_is_its_header_then_the_pieces_themselves():
    # split: no block of the packet's size; the chunks join to the packet.
    piece = b"p" * 700
    mut = bytearray(b"m" * 300)
    pieces = ['{"a":', piece, mut, "\u00fc}"]
    for qos in (0, 1):
        for dup in (False, True):
            chunks = mqtt.publish("node/x/config", pieces, qos, 9, dup, split=True)
            whole = mqtt.publish("node/x/config", pieces, qos, 9, dup)
            assert isinstance(chunks, list) and isinstance(chunks[0], bytearray)
            assert b"".join(bytes(c) for c in chunks) == whole
            assert len(chunks[0]) == len(whole) - sum(len(p) for p in mqtt.parts(pieces))  # the header only
            assert chunks[2] is piece  # bytes: not copied
            assert chunks[3] == mut and chunks[3] is not mut and isinstance(chunks[3], bytes)
    big = ["x" * 100] * 200  # a three-byte remaining length
    assert b"".join(mqtt.publish("t", big, 1, 1, split=True)) == mqtt.publish("t", big, 1, 1)
    assert mqtt.publish("t", [], 0, split=True) == [mqtt.publish("t", b"", 0)]
    raises(mqtt.MQTTError, mqtt.publish, "t", [b"x"], 2, 1, split=True)
