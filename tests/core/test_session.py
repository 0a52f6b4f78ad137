# MQTT session: acknowledgements, retransmission, keep-alive, dead links,
# and the wrapping tick clock of the ESP32.
from rainmaker import mqtt
from rainmaker.session import Session, diff, EV_CONNACK, EV_MESSAGE, EV_PUBACK, EV_SUBACK, EV_OVERSIZE
from util import raises, h

_WRAP = 0x40000000


def online(now=0, keepalive=120):
    s = Session("N1", keepalive)
    pkt = s.connect(now)
    assert pkt[0] == 0x10
    ev, out = s.receive(h("20 02 00 00"), now)
    assert ev == [(EV_CONNACK, 0, 0)] and out == b""
    assert s.connected
    return s


def wire(out):
    """The bytes of what tick() returned: b"" or a list of chunks."""
    assert out == b"" or (isinstance(out, list) and out), out
    return b"".join(bytes(c) for c in out)


def test_diff_wraps():
    assert diff(5, 3) == 2
    assert diff(3, 5) == -2
    assert diff(10, _WRAP - 10) == 20
    assert diff(_WRAP - 10, 10) == -20


def test_refused_connack_is_not_connected():
    s = Session("N1")
    s.connect(0)
    ev, _ = s.receive(h("20 02 00 05"), 0)
    assert ev == [(EV_CONNACK, 0, 5)]
    assert not s.connected


def test_publish_qos1_until_puback():
    s = online()
    pid, pkt = s.publish("t", b"x", 1, 0)
    assert pid == 1 and pkt == mqtt.publish("t", b"x", 1, 1)
    assert 1 in s.inflight
    ev, _ = s.receive(mqtt.puback(1), 5)
    assert ev == [(EV_PUBACK, 1)] and not s.inflight


def test_retransmit_with_dup_then_dead():
    s = online()
    s.publish("t", b"x", 1, 0)
    assert s.tick(9999) == b""
    out = wire(s.tick(10000))
    assert out[0] == 0x3A and out[1:] == mqtt.publish("t", b"x", 1, 1)[1:]  # DUP set, same pid
    for t in (20000, 30000, 40000):
        assert wire(s.tick(t)) == out
    e = raises(mqtt.MQTTError, s.tick, 50000)
    assert "not acknowledged" in str(e)


def test_inflight_window_is_bounded():
    s = online()
    for i in range(s.max_inflight):
        s.publish("t", b"x", 1, 0)
    assert not s.can_publish()
    raises(mqtt.MQTTError, s.publish, "t", b"x", 1, 0)
    s.publish("t", b"qos0 still goes", 0, 0)  # QoS 0 needs no window


def test_oversized_publish_rejected_before_send():
    s = Session("N1", max_packet=100, max_out=150)
    s.connect(0)
    s.publish("t", b"x" * 140, 1, 0)  # the inbound limit does not apply to what we send
    e = raises(ValueError, s.publish, "t", b"x" * 200, 1, 0)
    assert "exceeds the broker limit of 150" in str(e)
    assert list(s.inflight) == [1]  # no packet id spent on it


def test_incoming_qos1_is_acked_and_oversize_reported():
    s = Session("N1", max_packet=64)
    s.connect(0)
    s.receive(h("20 02 00 00"), 0)
    ev, out = s.receive(mqtt.publish("node/N1/params/remote", b"{}", 1, 77), 1)
    assert ev == [(EV_MESSAGE, "node/N1/params/remote", b"{}", 1, False)]
    assert out == mqtt.puback(77)
    ev, out = s.receive(mqtt.publish("node/N1/params/remote", b"y" * 300, 1, 78), 2)
    assert ev == [(EV_OVERSIZE, "node/N1/params/remote", 300 + 2 + 21 + 2 + 3)]
    assert out == mqtt.puback(78)  # acked so the broker does not resend it
    assert s.dropped == 1


def test_suback_and_foreign_acks():
    s = online()
    pid, _ = s.subscribe([("node/N1/params/remote", 1)], 0)
    ev, _ = s.receive(mqtt.puback(pid), 1)  # a PUBACK for a SUBSCRIBE pid is not its ack
    assert ev == [] and pid in s.inflight
    ev, _ = s.receive(bytes((0x90, 3, 0, pid, 1)), 2)
    assert ev == [(EV_SUBACK, pid, b"\x01")] and not s.inflight
    ev, _ = s.receive(mqtt.puback(999), 3)  # unknown pid: ignored
    assert ev == []


def test_keepalive_ping_and_dead_link():
    s = online(0, keepalive=20)
    assert s.tick(14999) == b""
    assert wire(s.tick(15000)) == mqtt.pingreq()
    assert s.tick(16000) == b""  # one ping outstanding at a time
    ev, _ = s.receive(h("d0 00"), 17000)
    assert s.tick(17001) == b""
    assert wire(s.tick(32000)) == mqtt.pingreq()
    e = raises(mqtt.MQTTError, s.tick, 32000 + 20001)
    assert "link is dead" in str(e)


def test_keepalive_across_tick_wrap():
    start = _WRAP - 5000
    s = online(start, keepalive=20)
    assert s.tick((start + 14999) % _WRAP) == b""
    assert wire(s.tick((start + 15000) % _WRAP)) == mqtt.pingreq()


def test_receiving_traffic_defers_ping():
    s = online(0, keepalive=20)
    for t in range(1000, 40000, 1000):
        s.receive(h("d0 00"), t)
        s.tick(t)  # we are sending nothing, but the broker is: quiet is max(tx, rx)
    # quiet since 0 on the tx side, so pings still go out; never "dead" while rx flows.
    assert s.connected


def test_resend_after_reconnect():
    s = online()
    s.publish("t", b"a", 1, 0)
    pid, _ = s.subscribe([("x", 1)], 0)
    s.lost()
    s.connect(100)
    s.receive(h("20 02 00 00"), 100)
    out = s.resend(100)
    assert out == [mqtt.publish("t", b"a", 1, 1)]  # subscriptions are redone by the caller
    assert pid not in s.inflight


def test_corrupt_stream_raises():
    s = online()
    raises(mqtt.MQTTError, s.receive, h("50 02 00 01"), 1)


def test_long_publish_is_kept_in_chunks_and_resent_in_them():
    # Longer than _SPLIT: kept as header + pieces (no block of its size); a
    # retransmission sends the same bytes with DUP set, in chunks no longer
    # than the pieces: the pieces themselves, and a copy of the header.
    s = online()
    pieces = [b"a" * 700, b"b" * 700]
    pid, pkt = s.publish("node/N1/config", pieces, 1, 0)
    whole = mqtt.publish("node/N1/config", pieces, 1, pid)
    assert isinstance(pkt, list) and pkt[1] is pieces[0] and b"".join(pkt) == whole
    assert s.inflight[pid][0] is pkt
    dup = bytes((whole[0] | 0x08,)) + whole[1:]
    for t in (10000, 20000):
        out = s.tick(t)
        assert wire(out) == dup and dup[0] == 0x3A
        assert max(len(c) for c in out) <= 700
        assert out[-2] is pieces[0] and out[-1] is pieces[1]  # not copied
    assert b"".join(pkt) == whole  # the kept packet is as built: DUP clear
    # Resent after a reconnect: the same chunks, as new messages (DUP clear).
    s.lost()
    s.connect(25000)
    s.receive(h("20 02 00 00"), 25000)
    again = s.resend(25000)
    assert again == [pkt] and b"".join(again[0]) == whole
    # Short ones stay one bytearray.
    pid2, small = s.publish("t", b"x" * 1000, 1, 25000)
    assert isinstance(small, bytearray) and small == mqtt.publish("t", b"x" * 1000, 1, pid2)
    out = s.tick(35000)  # both: the short one also goes out whole, not copied, DUP set
    dup2 = b"\x3a" + small[1:]
    assert wire(out) in (dup + dup2, dup2 + dup) and small[0] == 0x32  # (a dict: either order)
    assert max(len(c) for c in out) < len(small)  # no copy of the whole packet
    s.receive(mqtt.puback(pid), 35001)
    assert pid not in s.inflight
