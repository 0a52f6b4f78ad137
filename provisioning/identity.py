"""Device identities: node id, key, CSR, certificate, inventory, revocation, renewal.

An identity lives in its own folder of the identity store (default
``.cloud/identities/<node_id>/``, the folder ``python -m provisioning.ca node``
uses too), with the file names ``esp-rainmaker-cli claim`` writes:

  node.key        private key, PEM, 0600 (EC P-256 PKCS#8, or RSA-2048 PKCS#1)
  node.csr        certificate signing request (CN = node id), when made here
  node.crt        device certificate, PEM (may be followed by its chain)
  node.info       the node id
  endpoint.info   MQTT host, when the identity comes with one (RainMaker claim)
  issuer.crt      CA that issued node.crt, when known (chain check)
  broker-ca.crt   CA of the MQTT broker's certificate (goes to the board as certs/ca.der)
  identity.json   where the identity came from and how the board connects
  old/            certificates replaced by a renewal

Three ways to a certificate: our local CA (``issue``, the default; what
``make sim`` uses), ``import-claim`` of what ``esp-rainmaker-cli claim
--outdir`` wrote (ESP RainMaker cloud), and ``csr`` + ``import-cert`` for the
user's own CA or AWS IoT Core. Keys are made 0600 in 0700 folders, never
overwritten without --force, and never printed.

CLI: ``python -m provisioning.identity --help``.
"""
import argparse
import datetime as dt
import json
import re
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from provisioning import ca

DEFAULT_STORE = Path(".cloud") / "identities"
DEFAULT_CA_DIR = ca.DEFAULT_CA_DIR
KEY_TYPES = ("ec", "rsa")
SOURCES = ("local-ca", "rainmaker", "external")
RENEW_WITHIN_DAYS = 30
CRL_DAYS = 365  # an expired CRL makes Mosquitto refuse every client: keep it long

# RainMaker claiming hands out cloud node ids (opaque) and the SDK derives MAC
# ones; both are at most 63 characters (rainmaker-protocol.md section 1.2).
MAC_RE = re.compile(r"^[0-9A-Fa-f]{2}([:-]?[0-9A-Fa-f]{2}){5}$")


class IdentityError(ca.CAError):
    """An identity operation failed; the message names the cause and the fix."""


# ---------------------------------------------------------------- node id

def node_id_from_mac(mac):
    """The SDK's MAC-based node id: 12 upper-case hex digits, no separators."""
    if isinstance(mac, (bytes, bytearray, tuple, list)):
        mac = "".join(f"{b:02X}" for b in mac)
    mac = str(mac).strip()
    if not MAC_RE.match(mac):
        raise IdentityError(f"{mac!r} is not a MAC address; give 12 hex digits, e.g. 24:0A:C4:A1:B2:C3")
    return re.sub(r"[:-]", "", mac).upper()


def read_mac(port, via="esptool"):
    """Base MAC of the board on `port`, read with esptool (ROM bootloader) or over the REPL."""
    if via == "esptool":
        from tools.flash import FlashError, probe_chip

        try:
            return probe_chip(port)["mac"]
        except FlashError as e:
            raise IdentityError(str(e)) from None
    if via == "repl":
        from tools.transport import SerialBoard, TransportError

        try:
            with SerialBoard(port) as board:
                out = board.exec("import machine,binascii\nprint(binascii.hexlify(machine.unique_id()).decode())")
        except TransportError as e:
            raise IdentityError(str(e)) from None
        # machine.unique_id() on the ESP32 port is the base MAC (6 bytes).
        return node_id_from_mac(out.strip().splitlines()[-1])
    raise IdentityError(f"unknown way to read the MAC {via!r}; use esptool or repl")


# ---------------------------------------------------------------- keys and CSRs

def new_key(key_type="ec"):
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise IdentityError(f"unknown key type {key_type!r}; use 'ec' (P-256, default) or 'rsa' (2048 bits)")


def key_pem(key):
    # The formats esp-rainmaker-cli writes: PKCS#8 for EC, PKCS#1 for RSA.
    fmt = (serialization.PrivateFormat.PKCS8 if isinstance(key, ec.EllipticCurvePrivateKey)
           else serialization.PrivateFormat.TraditionalOpenSSL)
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def key_der_for_board(key):
    # SEC1 DER for EC (parsed by every mbedTLS MicroPython ships, including
    # 1.23 whose PKCS#8 DER parsing was fragile), PKCS#1 DER for RSA.
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def key_kind(key):
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return f"EC {key.curve.name.replace('secp256r1', 'P-256')}"
    if isinstance(key, rsa.RSAPrivateKey):
        return f"RSA-{key.key_size}"
    return type(key).__name__


def make_csr(key, node_id):
    """CSR with subject CN = node id only and BasicConstraints CA=false, SHA-256 (as the CLI does)."""
    ca.validate_node_id(node_id)
    return (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)]))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))


# ---------------------------------------------------------------- parsing

def load_key(path):
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise IdentityError(f"cannot read the key {path} ({e.strerror}); check the path") from None
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_der_private_key(data, password=None)
    except TypeError:
        raise IdentityError(f"the key {path} is encrypted; give an unencrypted key "
                            "(openssl pkey -in KEY -out node.key)") from None
    except ValueError:
        raise IdentityError(f"{path} is not a valid private key (corrupt or not PEM/DER); "
                            "get the file again from where it was made") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise IdentityError(f"the key {path} is {type(key).__name__}; the board needs EC P-256 or RSA")
    return key


def load_certs(path):
    """All certificates in a PEM (or one DER) file; the first is the leaf."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise IdentityError(f"cannot read the certificate {path} ({e.strerror}); check the path") from None
    try:
        certs = (x509.load_pem_x509_certificates(data) if b"-----BEGIN" in data
                 else [x509.load_der_x509_certificate(data)])
    except ValueError:
        raise IdentityError(f"{path} is not a valid certificate (corrupt PEM or DER); "
                            "get the file again from the CA that issued it") from None
    if not certs:
        raise IdentityError(f"{path} holds no certificate; get the file again")
    return certs


def common_name(cert):
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return names[0].value if names else None


def same_public_key(key, cert):
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return key.public_key().public_bytes(der, pub) == cert.public_key().public_bytes(der, pub)


def fingerprint(cert):
    return cert.fingerprint(hashes.SHA256()).hex()


def _pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


# ---------------------------------------------------------------- the store

def identity_dir(store, node_id):
    ca.validate_node_id(node_id)
    return Path(store) / node_id


def _meta(folder):
    try:
        return json.loads((Path(folder) / "identity.json").read_text())
    except (OSError, ValueError):
        return {}


def _meta_bytes(meta):
    return (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode()


def _now():
    return dt.datetime.now(dt.timezone.utc)


def create_key(store, node_id, key_type="ec", force=False):
    """Make node.key (0600) and node.csr for node_id; return the identity folder.

    The CSR is what goes to your own CA or AWS IoT Core; bring the
    certificate back with import_cert. An existing key is reused (only a new
    CSR is written) unless force.
    """
    folder = identity_dir(store, node_id)
    key_path = folder / "node.key"
    if key_path.exists() and not force:
        key = load_key(key_path)
        files = {}
    else:
        key = new_key(key_type)
        files = {key_path: (key_pem(key), 0o600)}
        if (folder / "node.crt").exists():
            # A new key makes the old certificate useless: move it aside.
            files.update(_archive(folder))
    files[folder / "node.csr"] = (make_csr(key, node_id).public_bytes(serialization.Encoding.PEM), 0o644)
    files[folder / "node.info"] = (node_id.encode(), 0o644)
    meta = _meta(folder) if not files.get(key_path) else {}
    meta.update({"node_id": node_id, "key_type": key_kind(key), "source": meta.get("source", "external")})
    files[folder / "identity.json"] = (_meta_bytes(meta), 0o644)
    ca.write_files_atomic(files)
    return folder


def _archive(folder):
    """Files that move the current node.crt to old/<serial>.crt."""
    try:
        cert = load_certs(folder / "node.crt")[0]
    except IdentityError:
        return {}
    return {folder / "old" / f"{cert.serial_number:x}.crt": ((folder / "node.crt").read_bytes(), 0o644)}


def issue_local(store, node_id, ca_dir=DEFAULT_CA_DIR, key_type="ec", days=3650, force=False,
                not_before=None, not_after=None):
    """Key, CSR and a certificate from the local CA; return the identity folder."""
    folder = identity_dir(store, node_id)
    if node_id in ca.RESERVED_NODE_IDS:
        raise IdentityError(f"node id {node_id!r} is reserved for the cloud side; choose another")
    if (folder / "node.key").exists() and not force:
        raise IdentityError(f"{folder / 'node.key'} already exists; refusing to overwrite it "
                            "(pass --force to replace the key, or 'renew' for a new certificate)")
    ca.ensure_ca(ca_dir)
    _, ca_cert = ca.load_ca(ca_dir)
    key = new_key(key_type)
    csr = make_csr(key, node_id)
    cert = ca.sign_csr(ca_dir, csr, days, not_before, not_after)
    files = _archive(folder) if (folder / "node.crt").exists() else {}
    meta = {"node_id": node_id, "source": "local-ca", "key_type": key_kind(key),
            "ca_dir": str(Path(ca_dir).resolve())}
    files.update({
        folder / "node.key": (key_pem(key), 0o600),
        folder / "node.csr": (csr.public_bytes(serialization.Encoding.PEM), 0o644),
        folder / "node.crt": (_pem(cert), 0o644),
        folder / "node.info": (node_id.encode(), 0o644),
        folder / "issuer.crt": (_pem(ca_cert), 0o644),
        # The local broker's certificate comes from the same CA.
        folder / "broker-ca.crt": (_pem(ca_cert), 0o644),
        folder / "identity.json": (_meta_bytes(meta), 0o644),
    })
    ca.write_files_atomic(files)
    return folder


def find_by_mac(store, mac):
    """The identity folder for a board: <store>/<MAC> (local CA), or a claim made for that MAC."""
    mac = node_id_from_mac(mac)
    store = Path(store)
    if (store / mac / "node.key").exists():
        return store / mac
    if store.is_dir():
        for d in sorted(store.iterdir()):
            if d.is_dir() and _meta(d).get("mac") == mac and (d / "node.key").exists():
                return d
    return None


def ensure_local(store, node_id, ca_dir=DEFAULT_CA_DIR):
    """The identity folder for node_id, issued by the local CA if there is none yet."""
    folder = identity_dir(store, node_id)
    if (folder / "node.key").exists() and (folder / "node.crt").exists():
        return folder
    return issue_local(store, node_id, ca_dir)


def import_cert(store, node_id, cert_file, issuer_ca=None, broker_ca=None, mqtt_host=None,
                topics=None, force=False):
    """Bring back the certificate your CA (or AWS IoT Core) issued for node.csr.

    Checked before anything is written: it parses, its public key is the
    one of node.key, its CN is the node id, and it is not expired.
    """
    folder = identity_dir(store, node_id)
    if not (folder / "node.key").exists():
        raise IdentityError(f"no key for {node_id} in {folder}; make one with "
                            f"'python -m provisioning.identity csr {node_id}' and have node.csr signed")
    key = load_key(folder / "node.key")
    certs = load_certs(cert_file)
    issuer = load_certs(issuer_ca) if issuer_ca else []
    brokers = load_certs(broker_ca) if broker_ca else []
    from provisioning.bundle import check_identity

    check_identity(node_id, key, certs[0], chain=certs[1:] + issuer, source=str(cert_file))
    if (folder / "node.crt").exists() and not force:
        old = load_certs(folder / "node.crt")[0]
        if old != certs[0]:
            raise IdentityError(f"{folder / 'node.crt'} already exists; pass --force to replace it")
    meta = _meta(folder)
    meta.update({"node_id": node_id, "source": meta.get("source") if meta.get("source") == "rainmaker"
                 else "external", "key_type": key_kind(key)})
    if mqtt_host:
        meta["mqtt_host"] = mqtt_host
    if topics:
        meta["topics"] = topics
    files = _archive(folder) if (folder / "node.crt").exists() and force else {}
    files.update({
        folder / "node.crt": (b"".join(_pem(c) for c in certs), 0o644),
        folder / "identity.json": (_meta_bytes(meta), 0o644),
    })
    if issuer:
        files[folder / "issuer.crt"] = (b"".join(_pem(c) for c in issuer), 0o644)
    if brokers:
        files[folder / "broker-ca.crt"] = (_pem(brokers[0]), 0o644)
    if mqtt_host:
        files[folder / "endpoint.info"] = (mqtt_host.encode(), 0o644)
    ca.write_files_atomic(files)
    return folder


CLAIM_FILES = ("node.key", "node.crt", "node.info")


def find_claim_dir(path):
    """The folder holding node.key/node.crt/node.info: path itself or its one MAC sub-folder."""
    path = Path(path)
    if not path.is_dir():
        raise IdentityError(f"{path} is not a folder; give the --outdir of esp-rainmaker-cli claim")
    if all((path / n).is_file() for n in CLAIM_FILES):
        return path
    subs = [d for d in sorted(path.iterdir()) if d.is_dir() and all((d / n).is_file() for n in CLAIM_FILES)]
    if len(subs) == 1:
        return subs[0]
    if len(subs) > 1:
        raise IdentityError(f"{path} holds claims for several boards ({', '.join(d.name for d in subs)}); "
                            "give the folder of one of them")
    missing = [n for n in CLAIM_FILES if not (path / n).is_file()]
    raise IdentityError(f"{path} is not an esp-rainmaker-cli claim folder (no {', '.join(missing)}); "
                        "give the folder that has node.key, node.crt, node.info and endpoint.info")


def import_claim(store, claim_dir, broker_ca=None, force=False):
    """Import an ESP RainMaker claim (esp-rainmaker-cli claim --outdir); return the identity folder.

    broker_ca is the RainMaker MQTT broker's CA, Amazon Root CA 1
    (AmazonRootCA1.pem); it cannot be downloaded from here, so the user
    supplies it (also possible later, at deploy time).
    """
    src = find_claim_dir(claim_dir)
    node_id = (src / "node.info").read_text(errors="replace").strip()
    try:
        ca.validate_node_id(node_id)
    except ca.CAError:
        raise IdentityError(f"{src / 'node.info'} does not hold a usable node id ({node_id[:70]!r}); "
                            "claim the board again") from None
    key = load_key(src / "node.key")
    certs = load_certs(src / "node.crt")
    from provisioning.bundle import check_identity

    check_identity(node_id, key, certs[0], chain=certs[1:], source=str(src / "node.crt"))
    brokers = load_certs(broker_ca) if broker_ca else []
    folder = identity_dir(store, node_id)
    if (folder / "node.key").exists() and not force:
        if same_public_key(load_key(folder / "node.key"), certs[0]) and \
                load_certs(folder / "node.crt")[0] == certs[0]:
            return folder  # the same claim imported again
        raise IdentityError(f"{folder} already holds another identity for {node_id}; "
                            "pass --force to replace it")
    mqtt_host = None
    if (src / "endpoint.info").is_file():
        mqtt_host = (src / "endpoint.info").read_text(errors="replace").strip() or None
    meta = {"node_id": node_id, "source": "rainmaker", "key_type": key_kind(key),
            "topics": "ingest", "claimed_from": str(src.resolve())}
    if MAC_RE.match(src.name):
        # esp-rainmaker-cli names the folder after the board's MAC: remember it,
        # so a deploy can find this identity from the board it talks to.
        meta["mac"] = node_id_from_mac(src.name)
    if mqtt_host:
        meta["mqtt_host"] = mqtt_host
    files = _archive(folder) if (folder / "node.crt").exists() else {}
    files.update({
        folder / "node.key": (key_pem(key), 0o600),
        folder / "node.crt": (b"".join(_pem(c) for c in certs), 0o644),
        folder / "node.info": (node_id.encode(), 0o644),
        folder / "identity.json": (_meta_bytes(meta), 0o644),
    })
    if mqtt_host:
        files[folder / "endpoint.info"] = (mqtt_host.encode(), 0o644)
    if brokers:
        files[folder / "broker-ca.crt"] = (_pem(brokers[0]), 0o644)
    ca.write_files_atomic(files)
    return folder


# ---------------------------------------------------------------- inventory

def revoked_serials(ca_dir):
    """{serial: revocation date} from ca_dir/crl.pem (empty if there is none)."""
    path = Path(ca_dir) / "crl.pem"
    if not path.exists():
        return {}
    crl = x509.load_pem_x509_crl(path.read_bytes())
    return {r.serial_number: r.revocation_date_utc for r in crl}


def describe(folder, now=None, ca_dirs=None):
    """One inventory row for an identity folder."""
    folder = Path(folder)
    now = now or _now()
    meta = _meta(folder)
    node_id = meta.get("node_id")
    if not node_id and (folder / "node.info").exists():
        node_id = (folder / "node.info").read_text(errors="replace").strip()
    node_id = node_id or folder.name
    row = {"node_id": node_id, "source": meta.get("source", "?"), "key": meta.get("key_type", "?"),
           "serial": None, "fingerprint": None, "not_before": None, "not_after": None, "status": "no certificate",
           "folder": str(folder)}
    if not (folder / "node.crt").exists():
        if (folder / "node.csr").exists():
            row["status"] = "CSR waiting for a certificate"
        return row
    try:
        cert = load_certs(folder / "node.crt")[0]
    except IdentityError:
        row["status"] = "node.crt unreadable"
        return row
    row.update({"serial": f"{cert.serial_number:x}", "fingerprint": fingerprint(cert),
                "not_before": cert.not_valid_before_utc.isoformat(),
                "not_after": cert.not_valid_after_utc.isoformat()})
    revoked = {}
    if meta.get("source") == "local-ca":
        for d in [meta.get("ca_dir")] + list(ca_dirs or []):
            if d and Path(d).exists():
                try:
                    revoked.update(revoked_serials(d))
                except ValueError:
                    pass
    left = (cert.not_valid_after_utc - now).days
    if cert.serial_number in revoked:
        row["status"] = "REVOKED " + revoked[cert.serial_number].date().isoformat()
    elif cert.not_valid_after_utc < now:
        row["status"] = "EXPIRED"
    elif cert.not_valid_before_utc > now:
        row["status"] = "not valid yet"
    elif left < RENEW_WITHIN_DAYS:
        row["status"] = f"renew: expires in {left} d"
    else:
        row["status"] = f"valid ({left} d left)"
    return row


def inventory(store, ca_dir=None):
    """Rows for every identity in the store, sorted by node id."""
    store = Path(store)
    if not store.is_dir():
        return []
    dirs = [d for d in sorted(store.iterdir()) if d.is_dir() and
            ((d / "node.info").exists() or (d / "identity.json").exists() or (d / "node.crt").exists())]
    return [describe(d, ca_dirs=[ca_dir] if ca_dir else None) for d in dirs]


# ---------------------------------------------------------------- revocation and renewal

def _local_cert(store, node_id, ca_dir):
    folder = identity_dir(store, node_id)
    if not (folder / "node.crt").exists():
        raise IdentityError(f"no certificate for {node_id} in {folder}; see 'list' for the identities")
    cert = load_certs(folder / "node.crt")[0]
    _, ca_cert = ca.load_ca(ca_dir)
    try:
        cert.verify_directly_issued_by(ca_cert)
    except Exception:  # wrong issuer, wrong key type: not ours either way
        src = _meta(folder).get("source", "another CA")
        raise IdentityError(f"{node_id}'s certificate was not issued by the local CA in {ca_dir} "
                            f"(source: {src}); revoke or renew it where it was issued") from None
    return folder, cert


def revoke(store, node_id, ca_dir=DEFAULT_CA_DIR, reason="unspecified"):
    """Add node_id's certificate to ca_dir/crl.pem; return its serial.

    Mosquitto (and the embedded broker) read the CRL when they start:
    restart the broker for it to take effect.
    """
    folder, cert = _local_cert(store, node_id, ca_dir)
    ca_key, ca_cert = ca.load_ca(ca_dir)
    crl_path = Path(ca_dir) / "crl.pem"
    entries, number = [], 0
    if crl_path.exists():
        try:
            old = x509.load_pem_x509_crl(crl_path.read_bytes())
        except ValueError:
            raise IdentityError(f"{crl_path} is corrupt; move it away and revoke again "
                                "(certificates in it must then be revoked again)") from None
        if not old.is_signature_valid(ca_cert.public_key()):
            raise IdentityError(f"{crl_path} was not signed by the CA in {ca_dir}; move it away and retry")
        entries = list(old)
        try:
            number = old.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        except x509.ExtensionNotFound:
            number = len(entries)
    if any(e.serial_number == cert.serial_number for e in entries):
        return cert.serial_number
    flags = {f.value: f for f in x509.ReasonFlags} | {f.name: f for f in x509.ReasonFlags}
    if reason not in flags:
        raise IdentityError(f"unknown reason {reason!r}; use one of "
                            f"{', '.join(f.value for f in x509.ReasonFlags)}")
    flag = flags[reason]
    now = _now()
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(ca_cert.subject)
               .last_update(now - dt.timedelta(minutes=5))
               .next_update(now + dt.timedelta(days=CRL_DAYS))
               .add_extension(x509.CRLNumber(number + 1), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                              critical=False))
    for e in entries:
        builder = builder.add_revoked_certificate(e)
    entry = (x509.RevokedCertificateBuilder().serial_number(cert.serial_number).revocation_date(now)
             .add_extension(x509.CRLReason(flag), critical=False).build())
    crl = builder.add_revoked_certificate(entry).sign(ca_key, hashes.SHA256())
    ca.write_files_atomic({crl_path: (crl.public_bytes(serialization.Encoding.PEM), 0o644)})
    return cert.serial_number


def renew(store, node_id, ca_dir=DEFAULT_CA_DIR, days=3650, within_days=RENEW_WITHIN_DAYS, force=False):
    """New certificate for the same key, if it expires within `within_days` (or force).

    Returns the new certificate, or None when no renewal was due. The old
    certificate is kept in old/<serial>.crt; it stays valid until it expires
    unless revoked.
    """
    folder = identity_dir(store, node_id)
    meta = _meta(folder)
    if meta.get("source") == "rainmaker":
        raise IdentityError(f"{node_id} was claimed from ESP RainMaker; renew it by claiming again with "
                            "esp-rainmaker-cli, then import-claim --force")
    if meta.get("source") == "external":
        raise IdentityError(f"{node_id}'s certificate comes from your own CA; have {folder / 'node.csr'} "
                            f"signed again and bring it back with import-cert {node_id} CERT --force")
    _, cert = _local_cert(store, node_id, ca_dir)
    left = cert.not_valid_after_utc - _now()
    if left > dt.timedelta(days=within_days) and not force:
        return None
    key = load_key(folder / "node.key")
    csr = make_csr(key, node_id)
    new = ca.sign_csr(ca_dir, csr, days)
    files = _archive(folder)
    files[folder / "node.crt"] = (_pem(new), 0o644)
    files[folder / "node.csr"] = (csr.public_bytes(serialization.Encoding.PEM), 0o644)
    ca.write_files_atomic(files)
    return new


# ---------------------------------------------------------------- CLI

def _node_id_from_args(args):
    given = [x for x in (args.node_id, args.mac, args.port) if x]
    if len(given) != 1:
        raise IdentityError("give exactly one of NODE_ID, --mac MAC or --port PORT "
                            "(the node id is then the board's MAC)")
    if args.node_id:
        ca.validate_node_id(args.node_id)
        return args.node_id
    if args.mac:
        return node_id_from_mac(args.mac)
    print(f"reading the MAC of the board on {args.port} ({args.via}) ...", file=sys.stderr, flush=True)
    return read_mac(args.port, args.via)


def _print_rows(rows):
    if not rows:
        print("no identities")
        return
    cols = [("node_id", 16), ("source", 9), ("key", 9), ("serial", 12), ("fingerprint", 16),
            ("not_after", 10), ("status", 0)]
    print("  ".join(f"{name:<{w}}" if w else name for name, w in cols))
    for r in rows:
        cells = []
        for name, w in cols:
            v = r.get(name) or "-"
            if name in ("serial", "fingerprint") and len(v) > w:
                v = v[:w - 1] + "~"
            if name == "not_after" and v != "-":
                v = v[:10]
            cells.append(f"{v:<{w}}" if w else v)
        print("  ".join(cells))


def _parser():
    p = argparse.ArgumentParser(
        prog="python -m provisioning.identity",
        description="Device identities for the RainMaker agent: node id, key, CSR, certificate "
                    "(local CA, ESP RainMaker claim, or your own CA / AWS IoT Core), inventory, "
                    "revocation and renewal. Keys are written 0600 and never printed.",
        epilog="Examples: 'issue --port /dev/ttyUSB0' (node id = the board's MAC, local CA); "
               "'import-claim ~/claims/240AC4A1B2C3 --broker-ca AmazonRootCA1.pem'; "
               "'csr 240AC4A1B2C3' then 'import-cert 240AC4A1B2C3 cert.pem --issuer-ca myca.pem "
               "--broker-ca broker-ca.pem --mqtt-host broker.example.com'.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", type=Path, default=DEFAULT_STORE,
                        help="identity store, one folder per node (default: %(default)s)")
    common.add_argument("--ca-dir", type=Path, default=DEFAULT_CA_DIR,
                        help="local CA, also where crl.pem goes (default: %(default)s)")
    who = argparse.ArgumentParser(add_help=False)
    who.add_argument("node_id", nargs="?", metavar="NODE_ID", help=ca.NODE_ID_RULE)
    who.add_argument("--mac", help="derive the node id from this MAC (12 hex digits)")
    who.add_argument("--port", help="read the MAC from the board on this serial port")
    who.add_argument("--via", choices=("esptool", "repl"), default="esptool",
                     help="read the MAC with esptool (any chip, resets it) or over the MicroPython "
                          "REPL (default: %(default)s)")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    s = sub.add_parser("node-id", parents=[who], help="print the node id of a board (from its MAC)",
                       description="Print the node id: NODE_ID as given, or the MAC-based one.")

    s = sub.add_parser("issue", parents=[common, who], help="key + certificate from the local CA (default path)",
                       description="Make a key and a CSR (CN = node id) and have the local CA sign it.")
    s.add_argument("--key-type", choices=KEY_TYPES, default="ec", help="ec = P-256 (default), rsa = RSA-2048")
    s.add_argument("--days", type=int, default=3650, help="validity in days (default: %(default)s)")
    s.add_argument("--force", action="store_true", help="replace an existing key")

    s = sub.add_parser("csr", parents=[common, who], help="key + CSR for your own CA or AWS IoT Core",
                       description="Make node.key (if missing) and node.csr; have node.csr signed by your CA "
                                   "or AWS IoT Core (aws iot create-certificate-from-csr), then import-cert.")
    s.add_argument("--key-type", choices=KEY_TYPES, default="ec", help="ec = P-256 (default), rsa = RSA-2048")
    s.add_argument("--force", action="store_true", help="make a new key even if one exists")

    s = sub.add_parser("import-cert", parents=[common], help="bring back the certificate issued for node.csr",
                       description="Check the certificate against node.key (same public key, CN = node id, "
                                   "not expired, chains to --issuer-ca if given) and store it.")
    s.add_argument("node_id", metavar="NODE_ID")
    s.add_argument("cert", type=Path, metavar="CERT", help="certificate, PEM (chain may follow) or DER")
    s.add_argument("--issuer-ca", type=Path, help="CA certificate that issued CERT (enables the chain check)")
    s.add_argument("--broker-ca", type=Path, help="CA of the MQTT broker's certificate (AWS: AmazonRootCA1.pem)")
    s.add_argument("--mqtt-host", help="MQTT endpoint, e.g. xxxxxxxx-ats.iot.REGION.amazonaws.com")
    s.add_argument("--topics", choices=ca.TOPIC_FORMS, help="publish form (RainMaker/AWS rules: ingest)")
    s.add_argument("--force", action="store_true", help="replace an existing certificate")

    s = sub.add_parser("import-claim", parents=[common], help="import an esp-rainmaker-cli claim folder",
                       description="Import node.key, node.crt, node.info and endpoint.info written by "
                                   "'esp-rainmaker-cli claim --outdir DIR' (the folder or its MAC sub-folder).")
    s.add_argument("claim_dir", type=Path, metavar="DIR")
    s.add_argument("--broker-ca", type=Path,
                   help="Amazon Root CA 1 (AmazonRootCA1.pem from amazontrust.com/repository): the CA of "
                        "the RainMaker MQTT broker; needed before deploying")
    s.add_argument("--force", action="store_true", help="replace another identity with the same node id")

    s = sub.add_parser("list", parents=[common], help="inventory: node id, serial, fingerprint, dates, status")
    s.add_argument("--json", action="store_true", help="machine-readable output")

    s = sub.add_parser("revoke", parents=[common], help="revoke a local-CA certificate (CRL for Mosquitto)",
                       description="Add the certificate to <ca-dir>/crl.pem. The broker reads it when it "
                                   "starts: restart make sim / make cloud to enforce it.")
    s.add_argument("node_id", metavar="NODE_ID")
    s.add_argument("--reason", default="unspecified",
                   help="keyCompromise, superseded, cessationOfOperation, ... (default: %(default)s)")

    s = sub.add_parser("renew", parents=[common], help="new local-CA certificate for the same key when due",
                       description=f"Renew if the certificate expires within --within days "
                                   f"(default {RENEW_WITHIN_DAYS}); the key stays, deploy again to push it.")
    s.add_argument("node_id", metavar="NODE_ID")
    s.add_argument("--days", type=int, default=3650, help="validity of the new certificate (default: %(default)s)")
    s.add_argument("--within", type=int, default=RENEW_WITHIN_DAYS, help="renew when fewer days are left")
    s.add_argument("--force", action="store_true", help="renew now whatever is left")
    return p


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "node-id":
            print(_node_id_from_args(args))
        elif args.cmd == "issue":
            node_id = _node_id_from_args(args)
            folder = issue_local(args.store, node_id, args.ca_dir, args.key_type, args.days, args.force)
            print(f"identity {node_id}: {folder} (local CA {args.ca_dir})")
        elif args.cmd == "csr":
            node_id = _node_id_from_args(args)
            folder = create_key(args.store, node_id, args.key_type, args.force)
            print(f"CSR for {node_id}: {folder / 'node.csr'}")
            print(f"have it signed, then: python -m provisioning.identity import-cert {node_id} CERT.pem")
        elif args.cmd == "import-cert":
            folder = import_cert(args.store, args.node_id, args.cert, args.issuer_ca, args.broker_ca,
                                 args.mqtt_host, args.topics, args.force)
            print(f"certificate for {args.node_id} stored in {folder}")
            if not args.issuer_ca:
                print("note: without --issuer-ca the chain to your CA was not checked", file=sys.stderr)
        elif args.cmd == "import-claim":
            folder = import_claim(args.store, args.claim_dir, args.broker_ca, args.force)
            print(f"RainMaker identity {folder.name} stored in {folder}")
            if not (folder / "broker-ca.crt").exists():
                print("note: give the broker CA (AmazonRootCA1.pem) with --broker-ca here or at deploy time",
                      file=sys.stderr)
        elif args.cmd == "list":
            rows = inventory(args.store, args.ca_dir)
            print(json.dumps(rows, indent=2)) if args.json else _print_rows(rows)
        elif args.cmd == "revoke":
            serial = revoke(args.store, args.node_id, args.ca_dir, args.reason)
            print(f"revoked {args.node_id} (serial {serial:x}) in {Path(args.ca_dir) / 'crl.pem'}; "
                  "restart the broker (make sim / make cloud) to enforce it")
        elif args.cmd == "renew":
            new = renew(args.store, args.node_id, args.ca_dir, args.days, args.within, args.force)
            if new is None:
                print(f"{args.node_id}: not due (more than {args.within} days left; --force renews anyway)")
            else:
                print(f"{args.node_id}: new certificate serial {new.serial_number:x} until "
                      f"{new.not_valid_after_utc.date()}; deploy again to push it to the board")
    except (ca.CAError, OSError) as exc:
        return ca.cli_error(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
