"""Messages and bytes on the wire per day for the example node, and the cost.

A day is simulated with the real sans-IO session and sync engine on a
simulated clock: one connection (CONNECT, config, subscribe, full params),
keep-alive as the session decides it, and the local changes spread over the
day. Each packet is counted as MQTT bytes plus an estimate of the TLS 1.2
AES-GCM record overhead (29 bytes a record: 5 header, 8 nonce, 16 tag).

AWS IoT Core metering (pricing "additional details" page): CONNECT,
SUBSCRIBE and PUBLISH in both directions are metered in 5 KB steps, and a
PUBACK from the device counts as one message; PINGREQ/PINGRESP, CONNACK,
SUBACK and the service's PUBACKs are free. Prices are the us-east-1 list
prices used here as constants (check the current page): USD 1.00 per
million messages, USD 0.08 per million connection-minutes.
"""
from tests.example_node import example_node  # noqa: E402  (sets up the firmware path)
from rainmaker import log, mqtt, topics  # noqa: E402
from rainmaker.session import Session  # noqa: E402
from rainmaker.sync import Sync  # noqa: E402
from rainmaker.series import Series  # noqa: E402

TLS_RECORD = 29
PRICE_MSG = 1.00 / 1e6
PRICE_MIN = 0.08 / 1e6
DAY_MS = 86_400_000


def simulate(changes=100, temp_period_s=None, ingest=False):
    log.level = -1
    node = example_node("240AC4A1B2C3", 21.5)
    # Time-series samples as the agent batches them; the SDK sends one
    # tsdata message per sample instead (counted as "samples").
    series = Series(lambda: 1767225600 + now // 1000)
    sync = Sync(node, series=series)
    sess = Session(node.node_id, 120, (topics.sub(node.node_id, "params/local"),
                                       b'{"Connectivity":{"Connected":false}}', 1, False))
    c = {"up_pkts": 0, "up_bytes": 0, "down_pkts": 0, "down_bytes": 0, "metered": 0, "samples": 0, "tsdata": 0}

    def size(pkt):  # a long PUBLISH is a list of chunks
        return sum(len(x) for x in pkt) if isinstance(pkt, list) else len(pkt)

    def up(pkt, metered=0):
        c["up_pkts"] += 1
        c["up_bytes"] += size(pkt) + TLS_RECORD
        c["metered"] += metered

    def down(pkt, metered=0):
        c["down_pkts"] += 1
        c["down_bytes"] += len(pkt) + TLS_RECORD
        c["metered"] += metered
        sess.receive(pkt, now)

    def units(pkt):
        return max(1, -(-size(pkt) // 5120))

    now = 0
    pkt = sess.connect(now)
    up(pkt, units(pkt))
    down(b"\x20\x02\x00\x00")
    sync.connected()

    def publish_due():
        while True:
            item = sync.take(now)
            if item is None:
                break
            pid, pkt = sess.publish(topics.pub(node.node_id, item[0], ingest), item[1], 1, now)
            sync.sent(item[0])
            up(pkt, units(pkt))
            down(mqtt.puback(pid))
        while True:
            item = series.take(1767225600 + now // 1000)
            if item is None:
                return
            c["tsdata"] += 1
            pid, pkt = sess.publish(topics.pub(node.node_id, item[0], ingest), item[1], 1, now)
            up(pkt, units(pkt))
            down(mqtt.puback(pid))

    item = sync.take(now)  # config first
    pid, pkt = sess.publish(topics.pub(node.node_id, item[0], ingest), item[1], 1, now)
    sync.sent(item[0])
    up(pkt, units(pkt))
    down(mqtt.puback(pid))
    pid, pkt = sess.subscribe([(topics.sub(node.node_id, "params/remote"), 1)], now)
    up(pkt, 1)
    down(bytes((0x90, 3, pid >> 8, pid & 0xFF, 1)))
    publish_due()

    light = node.device("Light")
    temp = node.device("Temperature")
    change_every = DAY_MS // changes
    step = 1000
    for now in range(step, DAY_MS + 1, step):
        if now % change_every == 0:
            light.update("Power", not light["Power"])
        if temp_period_s and now % (temp_period_s * 1000) == 0:
            temp.update("Temperature", 20.0 + (now // 1000 % 50) / 10)
            c["samples"] += 1
        out = sess.tick(now)
        if out:
            out = b"".join(bytes(x) for x in out)  # chunks
            up(out)
            if out == mqtt.pingreq():
                down(b"\xd0\x00")
        publish_due()
    return c


def report():
    lines = ["Wire traffic per day, example node, one connection all day (simulated clock):"]
    results = {}
    for label, kw in (("100 local changes", {}),
                      ("100 changes + temperature every 30 s", {"temp_period_s": 30})):
        c = simulate(**kw)
        per_year = 365 * (c["metered"] * PRICE_MSG + 1440 * PRICE_MIN)
        results[label] = {**c, "usd_year": per_year}
        lines.append(f"  {label}:")
        lines.append(f"    device -> broker {c['up_pkts']:6,d} packets {c['up_bytes']:9,d} bytes"
                     f" | broker -> device {c['down_pkts']:6,d} packets {c['down_bytes']:9,d} bytes")
        lines.append(f"    AWS IoT metered messages {c['metered']:,d}/day -> USD {per_year:.4f} per device per year"
                     f" (of which connectivity USD {365 * 1440 * PRICE_MIN:.4f})")
        if c["samples"]:
            sdk = c["metered"] - c["tsdata"] + c["samples"]  # one metered PUBLISH per sample
            batched = c["metered"]
            lines.append(f"    tsdata: {c['samples']:,d} samples in {c['tsdata']:,d} messages "
                         f"(the SDK: {c['samples']:,d}); metered messages with the SDK's one per sample "
                         f"{sdk:,d}/day, batched {batched:,d}/day ({sdk / batched:.2f}x fewer)")
    return "\n".join(lines), results
