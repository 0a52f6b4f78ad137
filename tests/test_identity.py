"""Identities end to end with real cryptography: local CA, RainMaker claim import,
CSR round trip, inventory, renewal, bundle checks, and revocation enforced by a
real Mosquitto."""

import datetime as dt
import json
import socket
import ssl
import stat
import struct

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from provisioning import bundle, ca
from provisioning import identity as ident
from tools import broker as brokermod

NOW = dt.datetime.now(dt.timezone.utc)


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def tree(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


@pytest.fixture
def ca_dir(tmp_path):
    return ca.init_ca(tmp_path / "ca")


@pytest.fixture
def store(tmp_path):
    return tmp_path / "identities"


# ---------------------------------------------------------------- node id

@pytest.mark.parametrize("mac", ["24:0a:c4:a1:b2:c3", "240AC4A1B2C3", "24-0A-C4-A1-B2-C3",
                                 bytes.fromhex("240ac4a1b2c3")])
def test_node_id_from_mac(mac):
    assert ident.node_id_from_mac(mac) == "240AC4A1B2C3"


@pytest.mark.parametrize("bad", ["", "24:0a:c4", "zz0AC4A1B2C3", "240AC4A1B2C3FF"])
def test_bad_mac_is_a_clear_error(bad):
    with pytest.raises(ident.IdentityError, match="not a MAC address"):
        ident.node_id_from_mac(bad)


def test_mac_from_a_port_without_board(tmp_path):
    with pytest.raises(ca.CAError, match="no board on"):
        ident.read_mac(str(tmp_path / "ttyUSB9"))


# ---------------------------------------------------------------- local CA

def test_issue_local_files_permissions_and_chain(store, ca_dir):
    folder = ident.issue_local(store, "240AC4A1B2C3", ca_dir)
    assert folder == store / "240AC4A1B2C3"
    assert mode(folder) == 0o700 and mode(folder / "node.key") == 0o600
    key = ident.load_key(folder / "node.key")
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert b"BEGIN PRIVATE KEY" in (folder / "node.key").read_bytes()  # PKCS#8, as the RainMaker CLI
    csr = x509.load_pem_x509_csr((folder / "node.csr").read_bytes())
    assert csr.is_signature_valid and ident.common_name(csr) == "240AC4A1B2C3"
    assert csr.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    cert = ident.load_certs(folder / "node.crt")[0]
    assert ident.common_name(cert) == "240AC4A1B2C3" and ident.same_public_key(key, cert)
    cert.verify_directly_issued_by(ca.load_ca(ca_dir)[1])
    assert (folder / "node.info").read_text() == "240AC4A1B2C3"
    assert json.loads((folder / "identity.json").read_text())["source"] == "local-ca"

    with pytest.raises(ident.IdentityError, match="already exists.*--force"):
        ident.issue_local(store, "240AC4A1B2C3", ca_dir)
    assert ident.load_key(folder / "node.key").private_numbers() == key.private_numbers()
    ident.issue_local(store, "240AC4A1B2C3", ca_dir, force=True)
    assert ident.load_key(folder / "node.key").private_numbers() != key.private_numbers()
    assert [p.name for p in (folder / "old").iterdir()] == [f"{cert.serial_number:x}.crt"]


def test_rsa_identity_and_its_board_bundle(store, ca_dir):
    folder = ident.issue_local(store, "RSA1", ca_dir, key_type="rsa")
    assert b"BEGIN RSA PRIVATE KEY" in (folder / "node.key").read_bytes()
    files, _ = bundle.build(folder, mqtt_host="broker.lan")
    key = serialization.load_der_private_key(files["certs/node.key.der"][0], None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048


def test_bundle_layout_matches_what_the_firmware_reads(store, ca_dir):
    folder = ident.issue_local(store, "N1", ca_dir)
    files, warnings = bundle.build(folder, mqtt_host="10.0.0.2", mqtt_port=8884, server_hostname="broker",
                                   keepalive=60, wifi=("Home", "correct horse"))
    assert warnings == []
    assert sorted(files) == ["certs/ca.der", "certs/node.crt.der", "certs/node.key.der",
                             "rainmaker.json", "wifi.json"]
    assert files["certs/node.key.der"][1] == 0o600 and files["wifi.json"][1] == 0o600
    assert json.loads(files["rainmaker.json"][0]) == {
        "node_id": "N1", "mqtt_host": "10.0.0.2", "mqtt_port": 8884, "server_hostname": "broker",
        "topics": "plain", "keepalive": 60}
    key = serialization.load_der_private_key(files["certs/node.key.der"][0], None)
    cert = x509.load_der_x509_certificate(files["certs/node.crt.der"][0])
    assert ident.same_public_key(key, cert)
    cert.verify_directly_issued_by(x509.load_der_x509_certificate(files["certs/ca.der"][0]))


def test_cli_issue_list_and_no_key_material_printed(tmp_path, capsys):
    args = ["--store", str(tmp_path / "ids"), "--ca-dir", str(tmp_path / "ca")]
    assert ident.main(["issue", "--mac", "24:0a:c4:00:00:01"] + args) == 0
    assert ident.main(["list"] + args) == 0
    assert ident.main(["list", "--json"] + args) == 0
    out = capsys.readouterr()
    text = out.out + out.err
    assert "PRIVATE KEY" not in text and "240AC4000001" in text and "valid" in text
    key = (tmp_path / "ids" / "240AC4000001" / "node.key").read_text()
    assert not any(line in text for line in key.splitlines()[1:-1])
    assert ident.main(["issue", "240AC4000001"] + args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--force" in err
    assert ident.main(["issue", "bad/id"] + args) == 2
    assert "1 to 63 characters" in capsys.readouterr().err


# ---------------------------------------------------------------- RainMaker claim import

def fake_claim(root, ca_dir, node_id="Xb7kP2mQ9rT4vW1yZ3aC5e", mac="240AC4A1B2C3", key_type="ec",
               not_after=None):
    """A folder shaped like `esp-rainmaker-cli claim --outdir root` output (files per the CLI)."""
    d = root / mac
    d.mkdir(parents=True)
    key = ident.new_key(key_type)
    cert = ca.sign_csr(ca_dir, ident.make_csr(key, node_id), not_after=not_after,
                       not_before=(NOW - dt.timedelta(days=30)) if not_after else None)
    (d / "node.key").write_bytes(ident.key_pem(key))
    (d / "node.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "node.info").write_text(node_id)
    (d / "endpoint.info").write_text("a1b2c3d4e5f6g7-ats.iot.us-east-1.amazonaws.com")
    (d / "random.info").write_text("ab" * 64)
    (d / "node_info.csv").write_text("key,type,encoding,value\nrmaker_creds,namespace,,\n")
    (d / f"{mac}.bin").write_bytes(b"\xff" * 64)
    return d, key, cert


@pytest.fixture
def cloud_ca(tmp_path):
    """Stands in for the RainMaker claiming service's CA (we cannot reach the real one)."""
    return ca.init_ca(tmp_path / "rainmaker-ca")


@pytest.fixture
def amazon_root(tmp_path):
    """A file in the place of AmazonRootCA1.pem (the real one cannot be downloaded here)."""
    d = ca.init_ca(tmp_path / "amazon")
    return d / "ca.crt"


def test_import_claim_then_bundle_for_the_cloud(tmp_path, store, cloud_ca, amazon_root):
    src, key, cert = fake_claim(tmp_path / "claims", cloud_ca)
    folder = ident.import_claim(store, tmp_path / "claims")  # the --outdir, MAC sub-folder found
    node_id = "Xb7kP2mQ9rT4vW1yZ3aC5e"
    assert folder == store / node_id and mode(folder / "node.key") == 0o600
    assert ident.load_certs(folder / "node.crt")[0] == cert
    meta = json.loads((folder / "identity.json").read_text())
    assert meta["source"] == "rainmaker" and meta["mqtt_host"].endswith("amazonaws.com")
    # Importing the same claim again is a no-op, not an error.
    assert ident.import_claim(store, src) == folder

    with pytest.raises(bundle.BundleError, match="Amazon Root CA 1"):
        bundle.build(folder)
    files, warnings = bundle.build(folder, broker_ca=amazon_root)
    settings = json.loads(files["rainmaker.json"][0])
    assert settings == {"node_id": node_id, "mqtt_host": meta["mqtt_host"], "mqtt_port": 8883,
                        "server_hostname": meta["mqtt_host"], "topics": "ingest"}
    assert x509.load_der_x509_certificate(files["certs/ca.der"][0]) == ident.load_certs(amazon_root)[0]
    assert any("chain not checked" in w for w in warnings)  # the claiming CA is not known to us
    row = ident.inventory(store)[0]
    assert row["node_id"] == node_id and row["source"] == "rainmaker"
    assert ident.find_by_mac(store, "24:0a:c4:a1:b2:c3") == folder  # deploy finds it from the board's MAC
    assert ident.find_by_mac(store, "240AC4000000") is None
    assert row["serial"] == f"{cert.serial_number:x}" and row["fingerprint"] == ident.fingerprint(cert)


def test_import_claim_rsa_key_as_older_cli_versions_write(tmp_path, store, cloud_ca):
    fake_claim(tmp_path / "claims", cloud_ca, node_id="N-rsa", key_type="rsa")
    folder = ident.import_claim(store, tmp_path / "claims" / "240AC4A1B2C3")
    assert ident.describe(folder)["key"] == "RSA-2048"


# ---------------------------------------------------------------- CSR round trip

def test_csr_round_trip_with_your_own_ca(tmp_path, store):
    own = ca.init_ca(tmp_path / "own-ca")  # the user's CA (or AWS IoT Core)
    folder = ident.create_key(store, "dev-42")
    assert mode(folder / "node.key") == 0o600
    assert ident.describe(folder)["status"] == "CSR waiting for a certificate"
    with pytest.raises(bundle.BundleError, match="no certificate yet"):
        bundle.build(folder)
    csr = x509.load_pem_x509_csr((folder / "node.csr").read_bytes())
    cert = ca.sign_csr(own, csr)  # what the CA does with the CSR
    (tmp_path / "issued.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_before = (folder / "node.key").read_bytes()
    ident.create_key(store, "dev-42")  # again: the key is reused, only the CSR is rewritten
    assert (folder / "node.key").read_bytes() == key_before

    ident.import_cert(store, "dev-42", tmp_path / "issued.pem", issuer_ca=own / "ca.crt",
                      broker_ca=own / "ca.crt", mqtt_host="mqtt.example.com", topics="ingest")
    files, warnings = bundle.build(folder)
    assert warnings == []  # chain checked against the issuer CA
    assert json.loads(files["rainmaker.json"][0])["mqtt_host"] == "mqtt.example.com"
    assert ident.describe(folder)["source"] == "external"
    with pytest.raises(ident.IdentityError, match="own CA"):
        ident.renew(store, "dev-42", own)


# ---------------------------------------------------------------- bad input

def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, store, ca_dir, cloud_ca):
    src, _, _ = fake_claim(tmp_path / "claims", cloud_ca, node_id="N7")

    # A corrupt PEM.
    good_crt = (src / "node.crt").read_bytes()
    (src / "node.crt").write_bytes(good_crt[:40] + b"garbage" + good_crt[60:])
    with pytest.raises(ident.IdentityError, match="not a valid certificate"):
        ident.import_claim(store, src)
    (src / "node.crt").write_bytes(good_crt)
    (src / "node.key").write_text("-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ident.IdentityError, match="not a valid private key"):
        ident.import_claim(store, src)

    # A key that does not match the certificate.
    (src / "node.key").write_bytes(ident.key_pem(ident.new_key()))
    with pytest.raises(bundle.BundleError, match="does not match the certificate"):
        ident.import_claim(store, src)

    # A certificate for another node id.
    other, _, _ = fake_claim(tmp_path / "c2", cloud_ca, node_id="OTHER")
    (other / "node.info").write_text("N8")
    with pytest.raises(bundle.BundleError, match="for node 'OTHER', not 'N8'"):
        ident.import_claim(store, other)

    # An expired certificate.
    old, _, _ = fake_claim(tmp_path / "c3", cloud_ca, node_id="N9", not_after=NOW - dt.timedelta(days=1))
    with pytest.raises(bundle.BundleError, match="expired on .*renew"):
        ident.import_claim(store, old)

    # Not a claim folder at all.
    with pytest.raises(ident.IdentityError, match="not an esp-rainmaker-cli claim folder"):
        ident.import_claim(store, tmp_path)
    assert tree(store) == []

    # import-cert: a certificate for another key leaves the stored identity as it was.
    folder = ident.create_key(store, "dev-1")
    before = tree(store)
    stray = ident.issue_local(tmp_path / "elsewhere", "dev-1", ca_dir) / "node.crt"
    with pytest.raises(bundle.BundleError, match="does not match"):
        ident.import_cert(store, "dev-1", stray)
    assert tree(store) == before and not (folder / "node.crt").exists()
    # ...and a certificate from another CA than the one named.
    other_ca = ca.init_ca(tmp_path / "other-ca")
    cert = ca.sign_csr(ca_dir, x509.load_pem_x509_csr((folder / "node.csr").read_bytes()))
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(bundle.BundleError, match="does not chain to its CA"):  # same CA name, other key
        ident.import_cert(store, "dev-1", tmp_path / "c.pem", issuer_ca=other_ca / "ca.crt")
    assert tree(store) == before


def test_expired_and_wrong_node_bundles_are_refused(tmp_path, store, ca_dir):
    folder = ident.issue_local(store, "OLD", ca_dir, not_before=NOW - dt.timedelta(days=10),
                               not_after=NOW - dt.timedelta(days=1))
    with pytest.raises(bundle.BundleError, match="expired on .*renew OLD"):
        bundle.build(folder, mqtt_host="h")
    # A board folder whose certificate is for another node than rainmaker.json says.
    good = ident.issue_local(store, "N1", ca_dir)
    files, _ = bundle.build(good, mqtt_host="h")
    board = bundle.write(files, tmp_path / "board")
    assert bundle.check_board_dir(board)[0] == "N1"
    settings = json.loads((board / "rainmaker.json").read_text())
    (board / "rainmaker.json").write_text(json.dumps(dict(settings, node_id="N2")))
    with pytest.raises(bundle.BundleError, match="for node 'N1', not 'N2'"):
        bundle.check_board_dir(board)


# ---------------------------------------------------------------- renewal

def test_renew_before_expiry_keeps_the_key(store, ca_dir):
    folder = ident.issue_local(store, "N5", ca_dir, not_after=NOW + dt.timedelta(days=5))
    key = (folder / "node.key").read_bytes()
    old = ident.load_certs(folder / "node.crt")[0]
    assert ident.describe(folder)["status"].startswith("renew: expires in")
    new = ident.renew(store, "N5", ca_dir)
    assert new is not None and new.serial_number != old.serial_number
    assert (folder / "node.key").read_bytes() == key
    assert ident.same_public_key(ident.load_key(folder / "node.key"), ident.load_certs(folder / "node.crt")[0])
    assert (folder / "old" / f"{old.serial_number:x}.crt").exists()
    assert ident.renew(store, "N5", ca_dir) is None  # ten years left: not due
    assert ident.describe(folder)["status"].startswith("valid")


# ---------------------------------------------------------------- revocation, with Mosquitto

def mqtt_connects(port, ca_crt, crt, key, client_id):
    """True if the broker answers CONNECT with CONNACK 'accepted' over mutual TLS."""
    ctx = brokermod.client_tls_context(ca_crt, crt, key)
    cid = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + struct.pack(">H", len(cid)) + cid
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                s.sendall(bytes([0x10, len(body)]) + body)
                data = s.recv(4)
    except (OSError, ssl.SSLError):
        return False
    return len(data) == 4 and data[0] == 0x20 and data[3] == 0


@pytest.mark.skipif(brokermod.mosquitto_unavailable() is not None, reason=str(brokermod.mosquitto_unavailable()))
def test_revoked_node_is_refused_by_mosquitto(tmp_path, store):
    work = tmp_path / "cloud"
    b = brokermod.Broker(work, engine="mosquitto")
    b.start()
    try:
        ca_dir = work / "ca"
        paths = brokermod.credential_paths(work)
        good = ident.issue_local(store, "GOOD", ca_dir)
        bad = ident.issue_local(store, "BAD", ca_dir)
        for folder, node in ((good, "GOOD"), (bad, "BAD")):
            assert mqtt_connects(b.port, paths["ca_crt"], folder / "node.crt", folder / "node.key", node)

        serial = ident.revoke(store, "BAD", ca_dir, reason="keyCompromise")
        crl = x509.load_pem_x509_crl((ca_dir / "crl.pem").read_bytes())
        assert [r.serial_number for r in crl] == [serial]
        assert crl.is_signature_valid(ca.load_ca(ca_dir)[1].public_key())
        assert ident.revoke(store, "BAD", ca_dir) == serial  # idempotent
        assert ident.describe(bad)["status"].startswith("REVOKED")
        with pytest.raises(bundle.BundleError, match="revoked"):
            bundle.build(bad, mqtt_host="127.0.0.1")

        b.restart()  # Mosquitto reads the CRL when it starts
        assert "crlfile" in (work / "mosquitto.conf").read_text()
        assert not mqtt_connects(b.port, paths["ca_crt"], bad / "node.crt", bad / "node.key", "BAD")
        assert mqtt_connects(b.port, paths["ca_crt"], good / "node.crt", good / "node.key", "GOOD")

        # A second revocation keeps the first one in the list.
        ident.revoke(store, "GOOD", ca_dir)
        crl = x509.load_pem_x509_crl((ca_dir / "crl.pem").read_bytes())
        assert len(list(crl)) == 2
        assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 2
    finally:
        b.stop()


def test_only_local_ca_certificates_can_be_revoked_here(tmp_path, store, ca_dir, cloud_ca):
    fake_claim(tmp_path / "claims", cloud_ca, node_id="CLOUD1")
    ident.import_claim(store, tmp_path / "claims")
    with pytest.raises(ident.IdentityError, match="not issued by the local CA"):
        ident.revoke(store, "CLOUD1", ca_dir)
    assert not (ca_dir / "crl.pem").exists()
