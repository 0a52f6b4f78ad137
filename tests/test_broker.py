"""Broker tests with real TLS, real Mosquitto and the embedded amqtt engine.

Every test runs against both engines. Waits are bounded (a few seconds).
"""

import datetime as dt
import json
import socket
import ssl
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from provisioning import ca
from tools import broker as brokermod
from tools.broker import Broker, acl_allows, client_tls_context, credential_paths, topic_within
from tests.mqtt_client import Client, WAIT


MOSQUITTO_UNAVAILABLE = brokermod.mosquitto_unavailable()
ENGINES = [
    pytest.param("mosquitto", marks=pytest.mark.skipif(
        MOSQUITTO_UNAVAILABLE is not None, reason=str(MOSQUITTO_UNAVAILABLE))),
    "embedded",
]


@pytest.fixture(scope="module", params=ENGINES)
def cloud(request, tmp_path_factory):
    """A running broker plus identities for nodes A and B."""
    root = tmp_path_factory.mktemp(f"cloud-{request.param}")
    b = Broker(root / "cloud", engine=request.param)
    b.start()
    paths = credential_paths(root / "cloud")
    ids = {}
    for node in ("A", "B"):
        ca.issue_node(paths["ca_dir"], root / node, node)
        ids[node] = (root / node / "node.crt", root / node / "node.key")
    clients = []

    def make(who, client_id=None):
        # A node's client id must be its certificate CN; the console may use any.
        if client_id is None:
            client_id = "" if who == "console" else who
        crt, key = (paths["console_crt"], paths["console_key"]) if who == "console" else ids[who]
        c = Client(b.port, paths["ca_crt"], crt, key, client_id=client_id)
        clients.append(c)
        return c

    yield {"broker": b, "paths": paths, "root": root, "make": make}
    for c in clients:
        c.close()
    b.stop()


def connected(cloud, who, client_id=None):
    c = cloud["make"](who, client_id)
    assert c.connect(), f"{who} could not connect"
    return c


# ------------------------------------------------------------- pure ACL logic

def test_topic_within_rules():
    assert topic_within("node/A/params/local", "node/A/#")
    assert topic_within("node/A", "node/A/#")
    assert topic_within("node/A/#", "node/A/#")
    assert topic_within("node/A/+/x", "node/A/#")
    assert not topic_within("node/+/params", "node/A/#")
    assert not topic_within("node/#", "node/A/#")
    assert not topic_within("#", "node/A/#")
    assert topic_within("$aws/rules/esp_set_params/node/A/params/local", "$aws/rules/+/node/A/#")
    assert not topic_within("$aws/rules/x/node/B/params/local", "$aws/rules/+/node/A/#")


def test_client_id_allowed():
    assert brokermod.client_id_allowed("A", "A")
    assert not brokermod.client_id_allowed("A", "B")
    assert not brokermod.client_id_allowed("A", "")
    assert not brokermod.client_id_allowed(None, "")
    assert brokermod.client_id_allowed("console", "anything")


def test_acl_allows():
    assert acl_allows("A", "publish", "$aws/rules/r/node/A/config")
    assert not acl_allows("A", "subscribe", "$aws/rules/r/node/A/config")
    assert not acl_allows("A", "publish", "node/B/params/local")
    assert acl_allows("console", "subscribe", "#")
    assert not acl_allows(None, "publish", "node/None/x")
    assert not acl_allows("A+", "publish", "node/A+/x")


# ------------------------------------------------------------- connection rules

def test_node_with_valid_cert_connects_and_broker_json(cloud):
    connected(cloud, "A", "A")
    info = json.loads((cloud["broker"].workdir / "broker.json").read_text())
    assert info == {"host": "127.0.0.1", "port": cloud["broker"].port, "engine": cloud["broker"].engine}


def test_client_without_certificate_is_refused(cloud):
    c = Client(cloud["broker"].port, cloud["paths"]["ca_crt"])
    try:
        assert not c.connect()
        assert c.rc is None  # refused during the TLS handshake, before any CONNACK
    finally:
        c.close()


def test_certificate_from_another_ca_is_refused(cloud, tmp_path):
    other = ca.init_ca(tmp_path / "otherca")
    ca.issue_node(other, tmp_path / "x", "A")  # same CN, wrong issuer
    c = Client(cloud["broker"].port, cloud["paths"]["ca_crt"], tmp_path / "x" / "node.crt",
               tmp_path / "x" / "node.key")
    try:
        assert not c.connect()
        assert c.rc is None  # refused during the TLS handshake, before any CONNACK
    finally:
        c.close()


def test_expired_certificate_is_refused(cloud, tmp_path):
    now = dt.datetime.now(dt.timezone.utc)
    ca.issue_node(cloud["paths"]["ca_dir"], tmp_path / "old", "A",
                  not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1))
    c = Client(cloud["broker"].port, cloud["paths"]["ca_crt"], tmp_path / "old" / "node.crt",
               tmp_path / "old" / "node.key")
    try:
        assert not c.connect()
        assert c.rc is None  # refused during the TLS handshake, before any CONNACK
    finally:
        c.close()


def test_client_checks_broker_hostname(cloud):
    # The broker cert names localhost and 127.0.0.1 only.
    ctx = client_tls_context(cloud["paths"]["ca_crt"], cloud["paths"]["console_crt"],
                             cloud["paths"]["console_key"])
    with socket.create_connection(("127.0.0.1", cloud["broker"].port), timeout=WAIT) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            ctx.wrap_socket(raw, server_hostname="not-the-broker.example")


# ------------------------------------------------------------- topic ACL

def test_node_cannot_publish_into_another_nodes_topics(cloud):
    console = connected(cloud, "console")
    assert console.subscribe("node/+/#") == [1]
    assert console.subscribe("$aws/rules/+/node/+/#") == [1]
    a = connected(cloud, "A")
    a.publish("node/B/params/local", b'{"x":1}')
    a.publish("$aws/rules/esp_set_params/node/B/params/local", b'{"x":2}')
    a.publish("node/A/params/local", b'{"ok":1}')
    a.publish("$aws/rules/esp_set_params/node/A/params/local", b'{"ok":2}')
    got = console.drain()
    assert sorted(got) == sorted([
        ("node/A/params/local", b'{"ok":1}'),
        ("$aws/rules/esp_set_params/node/A/params/local", b'{"ok":2}'),
    ])


def test_node_cannot_subscribe_to_another_nodes_topics(cloud):
    a = connected(cloud, "A")
    rc_b = a.subscribe("node/B/#")
    rc_wild = a.subscribe("node/+/params/remote")
    assert a.subscribe("node/A/#") == [1]
    console = connected(cloud, "console")
    console.publish("node/B/params/remote", b"for B")
    console.publish("node/A/params/remote", b"for A")
    got = a.drain()
    # mosquitto grants the SUBACK but never delivers; amqtt answers 0x80.
    assert rc_b in ([0x80], [1]) and rc_wild in ([0x80], [1])
    assert got == [("node/A/params/remote", b"for A")]
    if cloud["broker"].engine == "embedded":
        assert rc_b == [0x80] and rc_wild == [0x80]


def test_node_cannot_subscribe_to_ingest_topics(cloud):
    a = connected(cloud, "A")
    rc = a.subscribe("$aws/rules/+/node/A/#")
    a.publish("$aws/rules/esp_set_params/node/A/params/local", b"1")
    assert rc in ([0x80], [1])
    assert a.drain() == []


def test_will_on_foreign_topic_never_delivered(cloud):
    console = connected(cloud, "console")
    console.subscribe("node/+/#")
    forger = cloud["make"]("A")
    forger.paho.will_set("node/B/params/local", b"forged", qos=1)
    honest = cloud["make"]("B")  # positive control: a will on its own topic
    honest.paho.will_set("node/B/params/local", b"B gone", qos=1)
    # mosquitto accepts the forger and drops the will; amqtt refuses the CONNECT.
    forger_connected = forger.connect()
    assert honest.connect()
    for c in (forger, honest):
        c.paho.loop_stop()
        if c.paho.socket():
            c.paho.socket().close()  # no DISCONNECT packet: the broker sends the will
    assert console.drain() == [("node/B/params/local", b"B gone")]
    assert forger_connected == (cloud["broker"].engine == "mosquitto")


def test_silent_client_is_dropped_after_keepalive_and_its_will_sent(cloud):
    console = connected(cloud, "console")
    assert console.subscribe("node/+/#") == [1]
    b = cloud["make"]("B")
    b.paho.will_set("node/B/params/local", b"B gone", qos=1)
    assert b.connect(keepalive=2)
    b.paho.loop_stop()  # no more packets, not even PINGREQ, and no FIN: a dead link
    silent = time.monotonic()
    # MQTT 3.1.1 section 3.1.2.10: dropped after 1.5x the keep-alive, then the will goes out.
    assert console.get(timeout=10) == ("node/B/params/local", b"B gone")
    assert time.monotonic() - silent >= 2


# ------------------------------------------------------------- client id = certificate CN

def refused(client):
    """True if the broker refused the CONNECT with CONNACK 'not authorised'."""
    return not client.connect() and client.rc is not None and str(client.rc) == "Not authorized"


def test_node_cannot_take_over_another_nodes_client_id(cloud):
    console = connected(cloud, "console")
    assert console.subscribe("node/+/#") == [1]
    victim = cloud["make"]("B")
    victim.paho.will_set("node/B/params/local", b"B gone", qos=1)
    assert victim.connect()
    drops = []
    victim.paho.on_disconnect = lambda *args: drops.append(args)
    try:
        assert victim.subscribe("node/B/params/remote") == [1]
        thief = cloud["make"]("A", "B")  # A's certificate, B's client id
        assert refused(thief)
        thief.close()
        # B was neither kicked nor left without its subscription, and no will of B appeared.
        console.publish("node/B/params/remote", b"for B")
        assert victim.get() == ("node/B/params/remote", b"for B")
        victim.publish("node/B/params/local", b"still here")
        assert console.drain() == [("node/B/params/remote", b"for B"), ("node/B/params/local", b"still here")]
        assert drops == [] and victim.paho.is_connected()
    finally:
        victim.close()  # DISCONNECT: no will to leak into later tests


@pytest.mark.parametrize("client_id", ["", "a", "A2", "console"])
def test_node_must_use_its_certificate_cn_as_client_id(cloud, client_id):
    assert refused(cloud["make"]("A", client_id))
    connected(cloud, "A", "A")  # its own CN still works


def test_console_may_use_any_client_id(cloud):
    first = connected(cloud, "console", "console-watch-1")
    second = connected(cloud, "console")  # empty: the broker assigns one
    for c in (first, second):
        assert c.subscribe("node/+/params/local") == [1]
    a = connected(cloud, "A", "A")
    a.publish("node/A/params/local", b"1")
    assert first.get() == second.get() == ("node/A/params/local", b"1")
    assert first.paho.is_connected() and second.paho.is_connected()


def test_console_sees_everything_and_reaches_nodes(cloud):
    console = connected(cloud, "console")
    console.subscribe("node/+/#")
    console.subscribe("$aws/rules/+/node/+/#")
    b = connected(cloud, "B")
    assert b.subscribe("node/B/params/remote") == [1]
    b.publish("node/B/config", b"{}")
    b.publish("$aws/rules/esp_node_config/node/B/config", b"{}")
    console.publish("node/B/params/remote", b'{"Light":{"Power":true}}')
    assert b.get() == ("node/B/params/remote", b'{"Light":{"Power":true}}')
    assert sorted(t for t, _ in console.drain()) == [
        "$aws/rules/esp_node_config/node/B/config", "node/B/config", "node/B/params/remote"]


# ------------------------------------------------------------- lifecycle

def test_restart_keeps_port_and_clients_reconnect(cloud):
    b = cloud["broker"]
    port = b.port
    node = connected(cloud, "A")
    node.paho.reconnect_delay_set(0.1, 0.5)
    b.restart()
    assert b.port == port and b.running
    deadline = time.monotonic() + 5
    while not node.paho.is_connected() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert node.paho.is_connected()
    assert json.loads((b.workdir / "broker.json").read_text())["port"] == port


@pytest.mark.parametrize("engine", ENGINES)
def test_crl_revokes_a_node(engine, tmp_path):
    workdir = tmp_path / "cloud"
    brokermod.prepare_credentials(workdir)
    paths = credential_paths(workdir)
    ca.issue_node(paths["ca_dir"], tmp_path / "ok", "OK")
    ca.issue_node(paths["ca_dir"], tmp_path / "bad", "BAD")
    ca_key = serialization.load_pem_private_key((paths["ca_dir"] / "ca.key").read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate(paths["ca_crt"].read_bytes())
    bad = x509.load_pem_x509_certificate((tmp_path / "bad" / "node.crt").read_bytes())
    now = dt.datetime.now(dt.timezone.utc)
    crl = (x509.CertificateRevocationListBuilder()
           .issuer_name(ca_cert.subject).last_update(now - dt.timedelta(minutes=5))
           .next_update(now + dt.timedelta(days=1))
           .add_revoked_certificate(x509.RevokedCertificateBuilder()
                                    .serial_number(bad.serial_number).revocation_date(now).build())
           .sign(ca_key, hashes.SHA256()))
    paths["crl"].write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    with Broker(workdir, engine=engine) as b:
        if engine == "mosquitto":
            assert "crlfile" in (workdir / "mosquitto.conf").read_text()
        good = Client(b.port, paths["ca_crt"], tmp_path / "ok" / "node.crt", tmp_path / "ok" / "node.key",
                      client_id="OK")
        revoked = Client(b.port, paths["ca_crt"], tmp_path / "bad" / "node.crt", tmp_path / "bad" / "node.key",
                         client_id="BAD")
        try:
            assert good.connect()
            assert not revoked.connect()
            assert revoked.rc is None
        finally:
            good.close()
            revoked.close()
    assert not (workdir / "broker.json").exists()


def test_mosquitto_config_contents(tmp_path):
    paths = brokermod.prepare_credentials(tmp_path)
    conf = brokermod.write_mosquitto_config(tmp_path, 12345, paths, tmp_path / "p.so").read_text()
    for line in ("per_listener_settings false", "listener 12345 127.0.0.1", "require_certificate true",
                 "allow_anonymous false", "persistence false", f"plugin {tmp_path / 'p.so'}",
                 "plugin_opt_privileged_identity console"):
        assert line in conf
    # mosquitto would skip the identity plugin with this option on.
    assert "use_identity_as_username" not in conf
    assert "crlfile" not in conf
    acl = (tmp_path / "acl").read_text()
    assert "pattern readwrite node/%u/#" in acl and "pattern write $aws/rules/+/node/%u/#" in acl


def test_start_failure_reports_log_tail(tmp_path):
    if MOSQUITTO_UNAVAILABLE:
        pytest.skip(MOSQUITTO_UNAVAILABLE)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        b = Broker(tmp_path, port=busy.getsockname()[1], engine="mosquitto")
        with pytest.raises(brokermod.BrokerError, match="log tail"):
            b.start()
    assert not b.running
