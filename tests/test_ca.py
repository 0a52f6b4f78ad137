"""Tests for provisioning.ca: files, permissions, extensions, refusal rules, CLI."""

import datetime as dt
import ipaddress
import json
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from provisioning import ca


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def load_pem_cert(path):
    return x509.load_pem_x509_certificate(path.read_bytes())


def cn(cert):
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def eku(cert):
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


@pytest.fixture
def ca_dir(tmp_path):
    return ca.init_ca(tmp_path / "ca")


def test_init_ca_files_permissions_and_extensions(tmp_path):
    ca_dir = ca.init_ca(tmp_path / "ca")
    assert ca_dir == tmp_path / "ca"
    assert mode(ca_dir) == 0o700
    assert mode(ca_dir / "ca.key") == 0o600
    cert = load_pem_cert(ca_dir / "ca.crt")
    assert x509.load_der_x509_certificate((ca_dir / "ca.der").read_bytes()) == cert
    assert cn(cert) == "RainMaker Local CA"
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    years = (cert.not_valid_after_utc - cert.not_valid_before_utc).days / 365
    assert 9.9 < years < 10.1
    key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert cert.signature_algorithm_oid == x509.SignatureAlgorithmOID.ECDSA_WITH_SHA256
    cert.verify_directly_issued_by(cert)


def test_init_ca_refuses_overwrite_unless_forced(ca_dir):
    before = (ca_dir / "ca.key").read_bytes()
    with pytest.raises(ca.CAError, match="force"):
        ca.init_ca(ca_dir)
    assert (ca_dir / "ca.key").read_bytes() == before
    ca.init_ca(ca_dir, force=True)
    assert (ca_dir / "ca.key").read_bytes() != before
    assert mode(ca_dir / "ca.key") == 0o600


def test_ensure_ca_is_idempotent(tmp_path):
    first = ca.ensure_ca(tmp_path / "ca")
    key = (first / "ca.key").read_bytes()
    assert ca.ensure_ca(tmp_path / "ca") == first
    assert (first / "ca.key").read_bytes() == key


def test_no_temporary_files_left_behind(ca_dir, tmp_path):
    ca.issue_node(ca_dir, tmp_path / "n", "N1")
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_issue_server_san_and_eku(ca_dir, tmp_path):
    crt = ca.issue_server(ca_dir, tmp_path / "srv", hosts=("localhost", "127.0.0.1", "broker.lan"))
    assert crt == tmp_path / "srv" / "server.crt"
    assert mode(tmp_path / "srv" / "server.key") == 0o600
    cert = load_pem_cert(crt)
    assert cn(cert) == "localhost"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "broker.lan"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert eku(cert) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    cert.verify_directly_issued_by(load_pem_cert(ca_dir / "ca.crt"))


def test_issue_node_files_permissions_and_identity(ca_dir, tmp_path):
    out = tmp_path / "node"
    crt = ca.issue_node(ca_dir, out, "Node_01-a")
    assert crt == out / "node.crt"
    assert mode(out / "node.key") == 0o600
    assert mode(out / "node.key.der") == 0o600
    assert mode(out) == 0o700
    assert b"BEGIN PRIVATE KEY" in (out / "node.key").read_bytes()  # PKCS8 PEM
    cert = load_pem_cert(out / "node.crt")
    assert cn(cert) == "Node_01-a"
    assert eku(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    der_cert = x509.load_der_x509_certificate((out / "node.crt.der").read_bytes())
    assert der_cert == cert
    der_key = serialization.load_der_private_key((out / "node.key.der").read_bytes(), None)
    pem_key = serialization.load_pem_private_key((out / "node.key").read_bytes(), None)
    assert der_key.private_numbers() == pem_key.private_numbers()
    assert der_key.public_key().public_numbers() == cert.public_key().public_numbers()
    cert.verify_directly_issued_by(load_pem_cert(ca_dir / "ca.crt"))


def test_issue_node_refuses_overwrite_unless_forced(ca_dir, tmp_path):
    out = tmp_path / "node"
    ca.issue_node(ca_dir, out, "N1")
    key = (out / "node.key").read_bytes()
    with pytest.raises(ca.CAError, match="already exists.*force"):
        ca.issue_node(ca_dir, out, "N1")
    assert (out / "node.key").read_bytes() == key
    ca.issue_node(ca_dir, out, "N1", force=True)
    assert (out / "node.key").read_bytes() != key


@pytest.mark.parametrize("bad", ["", "a/b", "a+b", "#", "a b", "a.b", "x" * 64, "nodé", None])
def test_node_id_validation(ca_dir, tmp_path, bad):
    with pytest.raises(ca.CAError, match="1 to 63 characters"):
        ca.issue_node(ca_dir, tmp_path / "n", bad)
    assert not (tmp_path / "n").exists()


def test_node_id_limits_accepted_and_console_reserved(ca_dir, tmp_path):
    ca.issue_node(ca_dir, tmp_path / "long", "x" * 63)
    with pytest.raises(ca.CAError, match="reserved"):
        ca.issue_node(ca_dir, tmp_path / "c", "console")


def test_expired_certificate_can_be_made(ca_dir, tmp_path):
    now = dt.datetime.now(dt.timezone.utc)
    ca.issue_node(ca_dir, tmp_path / "old", "OLD", not_before=now - dt.timedelta(days=10),
                  not_after=now - dt.timedelta(days=1))
    cert = load_pem_cert(tmp_path / "old" / "node.crt")
    assert cert.not_valid_after_utc < now


def test_missing_ca_is_a_clear_error(tmp_path):
    with pytest.raises(ca.CAError, match="provisioning.ca init"):
        ca.issue_node(tmp_path / "nope", tmp_path / "n", "N1")


def test_issue_client(ca_dir, tmp_path):
    crt = ca.issue_client(ca_dir, tmp_path, "console")
    assert crt == tmp_path / "console.crt"
    assert mode(tmp_path / "console.key") == 0o600
    cert = load_pem_cert(crt)
    assert cn(cert) == "console"
    assert eku(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    with pytest.raises(ca.CAError):
        ca.issue_client(ca_dir, tmp_path, "console")


def test_board_bundle_layout(ca_dir, tmp_path):
    board = tmp_path / "board"
    assert ca.make_board_bundle(ca_dir, board, "N7", mqtt_port=18883, topics="ingest") == board
    settings = json.loads((board / "rainmaker.json").read_text())
    assert settings == {"node_id": "N7", "mqtt_host": "127.0.0.1", "mqtt_port": 18883,
                        "server_hostname": "localhost", "topics": "ingest"}
    assert mode(board / "certs" / "node.key.der") == 0o600
    cert = x509.load_der_x509_certificate((board / "certs" / "node.crt.der").read_bytes())
    assert cn(cert) == "N7"
    key = serialization.load_der_private_key((board / "certs" / "node.key.der").read_bytes(), None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()
    ca_der = x509.load_der_x509_certificate((board / "certs" / "ca.der").read_bytes())
    assert ca_der == load_pem_cert(ca_dir / "ca.crt")
    cert.verify_directly_issued_by(ca_der)
    assert sorted(p.name for p in board.rglob("*")) == [
        "ca.der", "certs", "node.crt.der", "node.key.der", "rainmaker.json"]


def test_board_bundle_refuses_overwrite_and_bad_topics(ca_dir, tmp_path):
    board = tmp_path / "board"
    ca.make_board_bundle(ca_dir, board, "N7")
    key = (board / "certs" / "node.key.der").read_bytes()
    with pytest.raises(ca.CAError, match="force"):
        ca.make_board_bundle(ca_dir, board, "N7")
    assert (board / "certs" / "node.key.der").read_bytes() == key
    ca.make_board_bundle(ca_dir, board, "N8", force=True)
    assert json.loads((board / "rainmaker.json").read_text())["node_id"] == "N8"
    with pytest.raises(ca.CAError, match="plain, ingest"):
        ca.make_board_bundle(ca_dir, tmp_path / "b2", "N9", topics="aws")


def test_cli_never_prints_keys_and_errors_exit_2(tmp_path, capsys):
    ca_dir = tmp_path / "cloud" / "ca"
    assert ca.main(["init", "--ca-dir", str(ca_dir)]) == 0
    assert ca.main(["bundle", "N1", str(tmp_path / "board"), "--ca-dir", str(ca_dir),
                    "--port", "9999", "--topics", "ingest"]) == 0
    assert ca.main(["node", "N2", "--ca-dir", str(ca_dir)]) == 0
    assert (tmp_path / "cloud" / "identities" / "N2" / "node.crt").exists()
    assert ca.main(["client", "console", "--ca-dir", str(ca_dir)]) == 0
    assert ca.main(["server", "--ca-dir", str(ca_dir), "--host", "localhost"]) == 0
    out = capsys.readouterr()
    assert "PRIVATE KEY" not in out.out + out.err
    assert json.loads((tmp_path / "board" / "rainmaker.json").read_text())["mqtt_port"] == 9999

    assert ca.main(["init", "--ca-dir", str(ca_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--force" in err
    assert ca.main(["node", "bad/id", "--ca-dir", str(ca_dir)]) == 2
    assert "1 to 63 characters" in capsys.readouterr().err
