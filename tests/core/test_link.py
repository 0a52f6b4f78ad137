# The connection's life (rainmaker.link) on a fake clock: bounded waits, the
# order after CONNACK, init whatever the budget, the Connected re-report,
# and a backoff that only resets after a link has proved itself.
import json
from rainmaker import Node, std, log, mqtt
from rainmaker.session import Session
from rainmaker.sync import Sync
from rainmaker.budget import Budget
from rainmaker.link import Link, Backoff, OFFLINE, CONNECTING, MAPPING, SUBSCRIBING, ONLINE
from util import raises, h, MemStore

log.level = -1

CONNACK_OK = h("20 02 00 00")
WILL = ("node/N1/params/local", b'{"Connectivity":{"Connected":false}}', 1, False)


def make(budget_start=100, mapping=None, connectivity=True, store=None):
    n = Node("N", "T")
    n.node_id = "N1"
    n.add(std.switch("Plug"))
    sync = Sync(n, store)
    ses = Session("N1", 120, WILL)
    link = Link(ses, sync, Budget(0, budget_start), "N1", False, connectivity, mapping)
    link.backoff.rand = lambda: 128  # (the WASM VM has no entropy source)
    return link


def packets(data):
    """[(first byte, body)] of the packets the client sent (a decoder of its own);
    data: bytes, or link.out's chunks."""
    data = b"".join(bytes(c) for c in data) if isinstance(data, list) else bytes(data)
    out = []
    i = 0
    while i < len(data):
        first = data[i]
        n = 0
        shift = 0
        i += 1
        while True:
            b = data[i]
            i += 1
            n |= (b & 127) << shift
            shift += 7
            if not b & 128:
                break
        out.append((first, data[i:i + n]))
        i += n
    return out


def kinds(data):
    return [f & 0xF0 if f & 0xF0 != 0x80 else 0x82 for f, _ in packets(data)]


def published(data):
    """[(topic, payload)] of the QoS 1 PUBLISH packets in data."""
    out = []
    for f, body in packets(data):
        if f & 0xF0 == 0x30:
            tl = (body[0] << 8) | body[1]
            out.append((body[2:2 + tl].decode(), body[4 + tl:]))
    return out


def sub_pid(data):
    for f, body in packets(data):
        if f == 0x82:
            return (body[0] << 8) | body[1]
    raise AssertionError("no SUBSCRIBE")


def take(link):
    out = link.out
    link.out = []
    return b"".join(bytes(c) for c in out)


def online(link, now=0):
    link.open(now)
    assert kinds(take(link)) == [mqtt.CONNECT]
    link.receive(CONNACK_OK, now)
    pid = sub_pid(link.out)
    take(link)
    link.receive(bytes([0x90, 3, pid >> 8, pid & 255, 1]), now)
    assert link.state == ONLINE
    return take(link)


def test_connect_then_config_subscribe_init_in_order():
    link = make()
    link.open(0)
    assert link.state == CONNECTING
    assert kinds(take(link)) == [mqtt.CONNECT]
    link.receive(CONNACK_OK, 10)
    out = take(link)
    assert kinds(out) == [mqtt.PUBLISH, mqtt.SUBSCRIBE]
    assert published(out)[0][0] == "node/N1/config"
    assert link.state == SUBSCRIBING
    pid = sub_pid(out)
    link.receive(bytes([0x90, 3, pid >> 8, pid & 255, 1]), 20)
    assert link.state == ONLINE
    pubs = published(take(link))
    assert [t for t, _ in pubs] == ["node/N1/params/local/init"]


def test_user_mapping_waits_for_its_puback_before_subscribing():
    link = make(mapping={"user_id": "u1", "secret_key": "k1"})
    link.open(0)
    take(link)
    link.receive(CONNACK_OK, 0)
    out = take(link)
    pubs = published(out)
    assert [t for t, _ in pubs] == ["node/N1/config", "node/N1/user/mapping"]
    assert json.loads(pubs[1][1]) == {"node_id": "N1", "user_id": "u1", "secret_key": "k1"}
    assert link.state == MAPPING and mqtt.SUBSCRIBE not in kinds(out)
    link.receive(mqtt.puback(1), 5)  # the config's PUBACK changes nothing
    assert link.state == MAPPING and not link.mapped
    link.receive(mqtt.puback(2), 10)
    assert link.mapped == "u1" and link.mapping is None
    assert link.state == SUBSCRIBING and kinds(take(link)) == [mqtt.SUBSCRIBE]


def test_every_wait_of_the_handshake_is_bounded():
    # CONNACK
    link = make()
    link.open(1000)
    link.tick(1000 + 19999)
    e = raises(mqtt.MQTTError, link.tick, 1000 + 20000)
    assert "no CONNACK from the broker within 20 s" in str(e)
    # the mapping's PUBACK
    link = make(mapping={"user_id": "u1"})
    link.open(0)
    link.receive(CONNACK_OK, 100)
    link.tick(100 + 19999)
    assert "PUBACK of user/mapping" in str(raises(mqtt.MQTTError, link.tick, 100 + 20000))
    # the SUBACK
    link = make()
    link.open(0)
    link.receive(CONNACK_OK, 100)
    assert "no SUBACK" in str(raises(mqtt.MQTTError, link.tick, 100 + 20000))


def test_deadline_of_a_blocked_write():
    link = make()
    link.open(500)
    assert link.deadline(600) == 500 + 20000  # the handshake's deadline, not a fresh one
    online(link, 700)
    assert link.deadline(900) == 900 + 20000


def test_refusals_are_named():
    link = make()
    link.open(0)
    e = raises(mqtt.MQTTError, link.receive, h("20 02 00 05"), 0)
    assert "broker refused the connection: not authorised" in str(e)
    link = make()
    link.open(0)
    link.receive(CONNACK_OK, 0)
    pid = sub_pid(take(link))
    e = raises(mqtt.MQTTError, link.receive, bytes([0x90, 3, pid >> 8, pid & 255, 0x80]), 0)
    assert "refused subscription to node/N1/params/remote" in str(e)
    assert link.state != ONLINE


def test_init_goes_out_after_every_connect_whatever_the_budget():
    link = make(budget_start=0)
    for attempt in range(5):
        now = attempt * 100000
        pubs = published(online(link, now))
        assert "node/N1/params/local/init" in [t for t, _ in pubs], attempt
        # ...while an ordinary report waits for a token
        link.sync.node.device("Plug").update("Power", attempt % 2 == 0)
        link.tick(now + 1000)
        assert "node/N1/params/local" not in [t for t, _ in published(take(link))]
        link.closed(now + 2000)


def test_connected_is_re_reported_5_s_after_every_connect():
    link = make()
    for now in (0, 100000):
        online(link, now)
        link.tick(now + 4999)
        assert published(take(link)) == []
        link.tick(now + 5000)
        assert published(take(link)) == [("node/N1/params/local", b'{"Connectivity":{"Connected":true}}')]
        link.tick(now + 9000)  # (before the 10 s re-send of unacknowledged publishes)
        assert published(take(link)) == []  # once per connect
        link.closed(now + 30000)


def test_connected_waits_for_room_in_the_window_instead_of_failing_the_link():
    link = make()
    online(link, 0)
    while link.session.can_publish():  # unacknowledged publishes fill the window
        link.post("tsdata", b"x")
        link.pump(1)
    take(link)
    link.tick(5000)  # no MQTTError: the report waits
    assert published(take(link)) == []
    pid = next(iter(link.session.inflight))
    link.receive(bytes([0x40, 2, pid >> 8, pid & 255]), 5100)
    link.tick(5200)
    assert ("node/N1/params/local", b'{"Connectivity":{"Connected":true}}') in published(take(link))


def test_no_connected_report_without_the_connectivity_service():
    link = make(connectivity=False)
    online(link, 0)
    link.tick(6000)
    assert published(take(link)) == []


def test_backoff_first_retry_at_least_1_s_and_capped():
    b = Backoff()
    assert 1000 <= b.next(0) and b.next(255) <= 4000
    b = Backoff(2000, 120000)
    delays = [b.next(r) for r in (0, 255, 7, 200, 255, 0, 0, 255, 255, 255)]
    for n, d in enumerate(delays):
        step = min(120000, 2000 << n)
        assert step // 2 <= d <= step, (n, d)
    assert max(delays) <= 120000


def test_backoff_resets_only_after_a_healthy_link():
    # A broker that accepts, then refuses the subscription: the delay keeps
    # growing; it does not start again from 1 s at each CONNACK.
    link = make()
    now = 0
    delays = []
    for _ in range(5):
        link.open(now)
        link.receive(CONNACK_OK, now)
        pid = sub_pid(take(link))
        raises(mqtt.MQTTError, link.receive, bytes([0x90, 3, pid >> 8, pid & 255, 0x80]), now)
        delays.append(link.closed(now))
        now += delays[-1]
    assert delays[-1] >= 16000 and delays == sorted(delays)
    # Online but dropped after 59 s: still no reset.
    online(link, now)
    d = link.closed(now + 59000)
    assert d >= 32000
    # Online for 60 s: the next pause is short again.
    online(link, now + 100000)
    assert link.closed(now + 160000) <= 2000


def test_closed_clears_stale_bytes_and_the_session():
    link = make()
    online(link, 0)
    link.sync.node.device("Plug").update("Power", True)
    link.tick(1000)
    link.tick(1300)  # after the 200 ms merge window
    assert link.out
    link.closed(1300)
    assert link.state == OFFLINE and link.out == [] and not link.session.connected
    link.tick(5000)  # offline: nothing happens, nothing raises
    assert link.out == []


def test_persisted_value_is_on_flash_before_its_echo():
    store = MemStore()
    link = make(store=store)
    online(link, 0)
    saves = store.saves
    link.receive(mqtt.publish("node/N1/params/remote", b'{"Plug":{"Name":"Porch"}}', 1, 7), 10)
    pubs = published(take(link))
    assert ("node/N1/params/local", b'{"Plug":{"Name":"Porch"}}') in pubs
    assert store.saves == saves + 1 and store.data["Plug"]["Name"] == "Porch"


def test_a_wifi_loss_does_not_grow_the_backoff():
    link = make()
    link.open(0)
    first = link.closed(0)
    for now in range(1, 6):
        link.open(now)
        assert link.closed(now, False) == 0
    link.open(10)
    assert link.closed(10) <= 2 * 2000 and link.backoff.n == 2  # the second broker failure, not the seventh
    assert first <= 2000


def test_a_reconfiguration_later_waits_for_the_budget():
    link = make(budget_start=0)
    online(link, 0)
    link.sync.reconfigured()  # what node.add()/remove() at runtime does
    link.tick(100)
    assert published(take(link)) == []  # no token: config and init wait
    link.budget.tokens = 2
    link.tick(200)
    assert [t for t, _ in published(take(link))] == ["node/N1/config", "node/N1/params/local/init"]


def test_service_topics_are_subscribed_and_dispatched():
    link = make()
    got = []
    link.on("otaurl", lambda payload, now: got.append((bytes(payload), now)))
    link.open(0)
    take(link)
    link.receive(CONNACK_OK, 0)
    out = take(link)
    for f, body in packets(out):
        if f == 0x82:
            assert b"node/N1/params/remote" in body and b"node/N1/otaurl" in body
    pid = sub_pid(out)
    link.receive(bytes([0x90, 4, pid >> 8, pid & 255, 1, 1]), 0)
    assert link.state == ONLINE
    take(link)
    topic = b"node/N1/otaurl"
    body = bytes([0, len(topic)]) + topic + b'{"x":1}'
    link.receive(bytes([0x30, len(body)]) + body, 7)
    assert got == [(b'{"x":1}', 7)]


def test_a_refused_service_topic_ends_the_link():
    link = make()
    link.on("otaurl", lambda payload, now: None)
    link.open(0)
    take(link)
    link.receive(CONNACK_OK, 0)
    pid = sub_pid(take(link))
    raises(mqtt.MQTTError, link.receive, bytes([0x90, 4, pid >> 8, pid & 255, 1, 0x80]), 0)


def test_posted_messages_follow_the_params_within_the_budget_and_report_their_puback():
    link = make(budget_start=3)
    acked = []
    online(link)  # config + init spend two tokens
    link.post("tsdata", b"A", lambda now: acked.append(("A", now)))
    link.post("tsdata", b"B")
    link.pump(1)
    pubs = published(take(link))
    assert [p for _, p in pubs] == [b"A"]  # one token left: B waits
    assert link.queue and link.queue[0][1] == b"B"
    # the PUBACK of A calls its done()
    (pid_a,) = [k for k in link._acks]
    link.receive(bytes([0x40, 2, pid_a >> 8, pid_a & 255]), 5)
    assert acked == [("A", 5)]


def test_the_budget_warning_is_said_once_however_often_the_node_reconnects():
    # The init after a connect is sent without a token; it does not end the
    # wait of a posted message, so the warning is not said again.
    link = make()
    link.budget = Budget(0, 0, 1024, 3600000)  # used up: one token an hour
    link.post("otafetch", b"F")
    log.last_error = None
    online(link, 0)
    assert log.last_error is not None and "budget used up" in log.last_error[1]
    for attempt in range(1, 4):
        now = attempt * 100000
        link.closed(now - 1000)
        log.last_error = None
        pubs = published(online(link, now))
        assert "node/N1/params/local/init" in [t for t, _ in pubs], attempt
        for pid in list(link.session.inflight):  # the broker acknowledges
            link.receive(bytes([0x40, 2, pid >> 8, pid & 255]), now + 10)
        link.tick(now + 6000)
        assert log.last_error is None, (attempt, log.last_error)
    assert link.queue and link.queue[0][1] == b"F"  # still waiting, not lost


def test_the_service_queue_is_bounded_and_drops_the_oldest():
    link = make(budget_start=0)
    for i in range(20):
        link.post("tsdata", b"%d" % i)
    assert len(link.queue) == 8
    assert link.queue[0][1] == b"12" and link.queue[-1][1] == b"19"


def test_hooks_run_once_online():
    link = make()
    seen = []
    link.hooks.append(seen.append)
    online(link, 42)
    assert seen == [42]


def test_packets_and_the_configs_pieces_go_out_as_they_are():
    # A long PUBLISH (the node config) is kept by the session as its header
    # and the payload's pieces, none longer than one param or a device's
    # head (no block of the config's size). link.out holds packets and
    # pieces as they are, the same objects: nothing is copied or joined
    # here (the driver gathers short ones in its own buffer: Agent._flush).
    n = Node("N", "T")
    n.node_id = "N1"
    for i in range(3):
        n.add(std.lightbulb("Light%d" % i))
    link = Link(Session("N1", 120, WILL), Sync(n), Budget(0, 100), "N1")
    link.backoff.rand = lambda: 128  # (the WASM VM has no entropy source)
    link.open(0)
    assert len(link.out) == 1 and kinds(take(link)) == [mqtt.CONNECT]
    link.receive(CONNACK_OK, 10)
    out = link.out
    cfg = [e[0] for e in link.session.inflight.values() if e[3] == mqtt.PUBLISH]
    assert len(cfg) == 1 and isinstance(cfg[0], list)
    assert max(len(c) for c in cfg[0]) < 300, [len(c) for c in cfg[0]]
    assert sum(len(c) for c in cfg[0]) > 1024  # split: longer than _SPLIT
    assert len(out) == len(cfg[0]) + 1 and all(a is b for a, b in zip(out, cfg[0]))
    assert kinds(out) == [mqtt.PUBLISH, mqtt.SUBSCRIBE]
    topic, payload = published(out)[0]
    assert topic == "node/N1/config" and payload.decode() == n.config()
    assert json.loads(payload)["devices"][2]["params"][0]["name"] == "Name"
    pid = sub_pid(take(link))
    link.receive(bytes([0x90, 3, pid >> 8, pid & 255, 1]), 20)
    take(link)  # the full params
    link.receive(mqtt.publish("node/N1/params/remote", b'{"Light1":{"Power":false}}', 1, 9), 30)
    out = link.out
    assert len(out) == 2 and kinds(out) == [mqtt.PUBACK, mqtt.PUBLISH]
    assert ("node/N1/params/local", b'{"Light1":{"Power":false}}') in published(out)
    take(link)
    big = bytes(b"y" * 600)
    link.put(mqtt.puback(4))
    link.put(big)
    link.put(b"")  # nothing: no empty chunk
    assert len(link.out) == 2 and link.out[1] is big
    assert take(link) == mqtt.puback(4) + big
    link.put(mqtt.puback(5))
    link.closed(50)
    assert link.out == []  # nothing stale goes out on the next link

def test_staged_config_goes_out_first_after_the_connack():
    # stage(): the config's packet is built before the first connection and
    # goes out after the CONNACK, first, once; not before (no CONNECT yet).
    link = make(mapping={"user_id": "u1"})
    link.stage(0)
    assert link.out == [] and not link.sync.config_due
    link.stage(1)  # nothing more is due: no second config
    assert len(link.session.inflight) == 1
    link.open(5)
    assert kinds(take(link)) == [mqtt.CONNECT]
    link.receive(CONNACK_OK, 10)
    pubs = published(take(link))
    assert [t for t, _ in pubs] == ["node/N1/config", "node/N1/user/mapping"]
    assert json.loads(pubs[0][1])["node_id"] == "N1"
    # Not staged while a link is up: a reconfiguration goes out through pump().
    link = make()
    online(link, 0)
    link.sync.config_due = True
    link.stage(100)
    assert link.sync.config_due and link.out == []


def test_config_stays_due_when_its_packet_finds_no_memory():
    link = make()
    real = link.session.publish
    fail = [True]

    def publish(topic, payload, qos, now):
        if fail[0]:
            raise MemoryError("memory allocation failed")
        return real(topic, payload, qos, now)

    link.session.publish = publish
    link.stage(0)  # no packet: built after the CONNACK instead, nothing raised
    assert link.sync.config_due and link.out == [] and not link.session.inflight
    link.open(1)
    take(link)
    raises(MemoryError, link.receive, CONNACK_OK, 2)
    assert link.sync.config_due  # the agent reconnects: the config goes out then
    link.closed(3)
    fail[0] = False
    link.open(4)
    take(link)
    link.receive(CONNACK_OK, 5)
    assert [t for t, _ in published(take(link))] == ["node/N1/config"]


def no_memory(link, times=1):
    """The session's next `times` publishes raise MemoryError, as when the heap
    has no block for the packet; returns the topics that failed."""
    real = link.session.publish
    failed = []

    def publish(topic, payload, qos, now):
        if len(failed) < times:
            failed.append(topic)
            raise MemoryError("memory allocation failed")
        return real(topic, payload, qos, now)

    link.session.publish = publish
    return failed


def test_an_init_that_finds_no_memory_goes_out_whole_at_the_next_tick():
    link = make()
    plug = link.sync.node.device("Plug")
    link.open(0)
    take(link)
    link.receive(CONNACK_OK, 10)
    pid = sub_pid(take(link))
    failed = no_memory(link, 2)
    raises(MemoryError, link.receive, bytes([0x90, 3, pid >> 8, pid & 255, 1]), 20)
    assert failed == ["node/N1/params/local/init"] and link.state == ONLINE
    assert published(take(link)) == []
    # A write before the retry, whose own pump finds no memory either: applied,
    # and its PUBACK goes out; the init stays due and will carry it.
    raises(MemoryError, link.receive, mqtt.publish("node/N1/params/remote", b'{"Plug":{"Power":true}}', 1, 7), 30)
    assert failed == ["node/N1/params/local/init"] * 2 and plug["Power"] is True
    assert kinds(take(link)) == [mqtt.PUBACK]
    plug.update("Name", "Porch")  # a local change too
    link.tick(40)
    pubs = published(take(link))
    assert [t for t, _ in pubs] == ["node/N1/params/local/init"]
    assert json.loads(pubs[0][1]) == json.loads(link.sync.node.params())
    assert json.loads(pubs[0][1])["Plug"] == {"Name": "Porch", "Power": True}
    link.tick(1000)  # and nothing more: the changes were in the init
    assert published(take(link)) == []


def test_a_merged_report_that_finds_no_memory_goes_out_at_the_next_tick():
    link = make()
    online(link, 0)
    plug = link.sync.node.device("Plug")
    failed = no_memory(link)
    plug.update("Power", True)
    link.tick(1000)  # starts the 200 ms window
    raises(MemoryError, link.tick, 1200)
    assert failed == ["node/N1/params/local"] and published(take(link)) == []
    plug.update("Power", False)  # the values of the retry's moment go out
    plug.update("Name", "Porch")  # merged, not lost
    link.tick(1300)
    pubs = published(take(link))
    assert [(t, json.loads(p)) for t, p in pubs] == [("node/N1/params/local", {"Plug": {"Power": False, "Name": "Porch"}})]
    link.tick(2000)
    assert published(take(link)) == []
    # A remote write's echo likewise: its PUBACK now, the echo at the next tick.
    failed = no_memory(link)
    raises(MemoryError, link.receive, mqtt.publish("node/N1/params/remote", b'{"Plug":{"Power":true}}', 1, 8), 2100)
    assert kinds(take(link)) == [mqtt.PUBACK]
    link.tick(2150)
    assert published(take(link)) == [("node/N1/params/local", b'{"Plug":{"Power":true}}')]


def test_a_persisted_value_that_finds_no_memory_still_waits_for_the_flash():
    store = MemStore()
    link = make(store=store)
    online(link, 0)
    saves = store.saves
    failed = no_memory(link)
    write = b'{"Plug":{"Name":"Porch","Power":true}}'
    raises(MemoryError, link.receive, mqtt.publish("node/N1/params/remote", write, 1, 7), 10)
    assert failed == ["node/N1/params/local"] and store.saves == saves + 1
    take(link)
    # Another write before the retry: on flash at most once a second, so the
    # report (now carrying both) waits until the flash has it.
    link.receive(mqtt.publish("node/N1/params/remote", b'{"Plug":{"Name":"Deck"}}', 1, 8), 20)
    link.tick(500)
    assert published(take(link)) == [] and store.data["Plug"]["Name"] == "Porch"
    link.tick(1010)
    pubs = published(take(link))
    assert [(t, json.loads(p)) for t, p in pubs] == [("node/N1/params/local", {"Plug": {"Name": "Deck", "Power": True}})]
    assert store.data["Plug"]["Name"] == "Deck" and store.saves == saves + 2


def test_a_connected_report_or_a_posted_message_that_finds_no_memory_stays_due():
    link = make()
    online(link, 0)
    no_memory(link)
    raises(MemoryError, link.tick, 5000)
    link.tick(5100)
    assert published(take(link)) == [("node/N1/params/local", b'{"Connectivity":{"Connected":true}}')]
    acked = []
    no_memory(link)
    link.post("tsdata", b"x", acked.append)
    raises(MemoryError, link.pump, 6000)
    assert link.queue
    link.pump(6100)
    out = take(link)
    assert published(out) == [("node/N1/tsdata", b"x")] and not link.queue
    assert len(link._acks) == 1  # its done() waits for its PUBACK
    link.receive(mqtt.puback(next(iter(link._acks))), 6200)
    assert acked == [6200]


def test_a_report_that_can_never_be_sent_is_dropped_not_retried_forever():
    link = make()
    online(link, 0)
    link.session.max_out = 40  # smaller than any report
    link.sync.node.device("Plug").update("Name", "Porch")
    link.tick(1000)
    link.tick(1300)
    assert published(take(link)) == [] and not link.sync.dirty
    assert "not sent" in log.last_error[1]


def test_a_long_config_is_resent_in_its_pieces_with_dup_set():
    # The re-send after 10 s without PUBACK: the same bytes with DUP set, in
    # chunks no longer than the longest piece (the pieces themselves), never
    # joined into one block of the packet's size.
    n = Node("N", "T")
    n.node_id = "N1"
    for i in range(3):
        n.add(std.lightbulb("Light%d" % i))
    link = Link(Session("N1", 120, WILL), Sync(n), Budget(0, 100), "N1", connectivity=False)  # (no Connected report at 5 s)
    link.backoff.rand = lambda: 128  # (the WASM VM has no entropy source)
    link.open(0)
    take(link)
    link.receive(CONNACK_OK, 10)
    cfg = [(p, e[0]) for p, e in link.session.inflight.items() if e[3] == mqtt.PUBLISH]
    assert len(cfg) == 1 and isinstance(cfg[0][1], list)
    pid, pieces = cfg[0]
    first = b"".join(bytes(c) for c in pieces)
    assert len(first) > 1024 and take(link).startswith(first)
    sub = sub_pid(link.session.inflight[pid + 1][0])
    link.receive(bytes([0x90, 3, sub >> 8, sub & 255, 1]), 20)
    init = [p for p in link.session.inflight if p != pid]
    link.receive(mqtt.puback(init[0]), 30)
    take(link)
    link.tick(10009)
    assert link.out == []
    link.tick(10010)
    out = link.out
    assert b"".join(bytes(c) for c in out) == bytes((first[0] | 0x08,)) + first[1:]
    assert max(len(c) for c in out) <= max(len(c) for c in pieces)
    assert len(pieces) > 10 and all(any(c is x for x in out) for c in pieces[1:])  # not copied
    assert b"".join(bytes(c) for c in pieces) == first  # kept as built (DUP clear)
    link.receive(mqtt.puback(pid), 10020)
    assert not link.session.inflight
