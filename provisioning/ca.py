"""A small local certificate authority for the RainMaker development cloud.

It issues the three kinds of identities the local setup needs:

* the MQTT broker's server certificate (``issue_server``),
* one device identity per node, whose subject CN is the node_id (``issue_node``),
  because the broker uses the CN as the MQTT identity for its topic ACL,
* cloud-side client identities such as ``console`` (``issue_client``).

``make_board_bundle`` writes the credential layout the firmware reads from the
board's filesystem. All keys are EC P-256 and all signatures ECDSA-SHA256:
P-256 is much cheaper than RSA on an ESP32 and mbedTLS supports it everywhere.

Private keys are written 0600 in directories created 0700, are never
overwritten unless ``force`` is given, and are never printed or logged.

CLI: ``python -m provisioning.ca --help``.
"""

import argparse
import datetime as dt
import ipaddress
import json
import os
import re
import sys
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_COMMON_NAME = "RainMaker Local CA"
DEFAULT_CA_DIR = Path(".cloud") / "ca"
CA_DAYS = 3650

# node ids end up in MQTT topics, ACL patterns and file names, so only a
# conservative alphabet is accepted (no '/', '+', '#', '.', spaces).  63 chars
# matches the 64-byte buffer the C agent uses for node ids.
NODE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,63}$")
NODE_ID_RULE = "1 to 63 characters from A-Z, a-z, 0-9, '_' and '-'"

# Identities the broker ACL treats as privileged; a device must never get one.
RESERVED_NODE_IDS = frozenset({"console"})

TOPIC_FORMS = ("plain", "ingest")

# Clock skew allowance: a freshly issued cert should not be "not yet valid" on
# a board whose clock is a little behind the host.
_BACKDATE = dt.timedelta(hours=1)


class CAError(Exception):
    """A CA operation could not be done; the message says how to fix it."""


# ---------------------------------------------------------------- file helpers

def _mkdir_private(path):
    """Create a directory (and parents) with owner-only access if it is new."""
    path = Path(path)
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask
    return path


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_files_atomic(files):
    """Write {path: (bytes, mode)} so that each file is either old or new.

    All temporary files are written and fsynced before any is renamed into
    place, which keeps the window in which a key and its cert disagree tiny.
    """
    staged = []
    try:
        for path, (data, mode) in files.items():
            path = Path(path)
            _mkdir_private(path.parent)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".", suffix=".tmp")
            staged.append((tmp, path))
            try:
                # mkstemp creates 0600; set the final mode before any data lands.
                os.fchmod(fd, mode)
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        for tmp, path in staged:
            os.replace(tmp, path)
        for parent in {path.parent for _, path in staged}:
            _fsync_dir(parent)
    except BaseException:
        for tmp, _ in staged:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        raise


def _refuse_existing(paths, force):
    if force:
        return
    existing = [str(p) for p in paths if Path(p).exists()]
    if existing:
        raise CAError(
            f"{existing[0]} already exists; refusing to overwrite it "
            "(pass force=True, or --force on the command line, to replace it)"
        )


# ---------------------------------------------------------------- crypto helpers

def _new_key():
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key):
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _key_der_sec1(key):
    # SEC1 ("EC PRIVATE KEY") DER: parsed by every mbedTLS version, including
    # MicroPython 1.23 whose PKCS#8 DER parsing was fragile.
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _cert_pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def _cert_der(cert):
    return cert.public_bytes(serialization.Encoding.DER)


def _now():
    return dt.datetime.now(dt.timezone.utc)


def _aware(when):
    # Naive datetimes are taken as UTC, which is what X.509 validity means.
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def _key_usage(digital_signature=False, cert_sign=False):
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _ca_paths(ca_dir):
    ca_dir = Path(ca_dir)
    return ca_dir / "ca.key", ca_dir / "ca.crt", ca_dir / "ca.der"


def load_ca(ca_dir):
    """Return (private_key, certificate) of the CA in ca_dir, or raise CAError."""
    key_path, crt_path, _ = _ca_paths(ca_dir)
    if not key_path.exists() or not crt_path.exists():
        raise CAError(
            f"no CA in {ca_dir}; create one with 'python -m provisioning.ca init --ca-dir {ca_dir}'"
        )
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate(crt_path.read_bytes())
    except ValueError as exc:
        raise CAError(f"CA files in {ca_dir} are unreadable ({exc}); recreate them with 'init --force'") from None
    return key, cert


def _leaf(ca_dir, common_name, public_key, eku, days, not_before=None, not_after=None, san=None):
    ca_key, ca_cert = load_ca(ca_dir)
    start = _aware(not_before) if not_before is not None else _now() - _BACKDATE
    end = _aware(not_after) if not_after is not None else _now() + dt.timedelta(days=days)
    if end <= start:
        raise CAError("not_after must be later than not_before")
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def validate_node_id(node_id, what="node_id"):
    """Raise CAError unless node_id is safe to use as an MQTT identity."""
    if not isinstance(node_id, str) or not NODE_ID_RE.match(node_id):
        raise CAError(f"invalid {what} {node_id!r}: it must be {NODE_ID_RULE}")
    return node_id


# ---------------------------------------------------------------- public API

def init_ca(ca_dir, force=False):
    """Create a new CA (ca.key 0600, ca.crt, ca.der) in ca_dir; return ca_dir."""
    ca_dir = Path(ca_dir)
    key_path, crt_path, der_path = _ca_paths(ca_dir)
    _refuse_existing([key_path, crt_path, der_path], force)
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        # path_length=0: this CA signs leaves only, never sub-CAs.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _mkdir_private(ca_dir)
    write_files_atomic({
        key_path: (_key_pem(key), 0o600),
        crt_path: (_cert_pem(cert), 0o644),
        der_path: (_cert_der(cert), 0o644),
    })
    return ca_dir


def ensure_ca(ca_dir):
    """Return ca_dir, creating the CA only if there is none yet.

    A half-present CA (only a key, or only a cert) is not repaired silently:
    init_ca refuses and the error names the file.
    """
    key_path, crt_path, der_path = _ca_paths(ca_dir)
    if key_path.exists() and crt_path.exists():
        if not der_path.exists():  # derived file, safe to regenerate
            _, cert = load_ca(ca_dir)
            write_files_atomic({der_path: (_cert_der(cert), 0o644)})
        return Path(ca_dir)
    return init_ca(ca_dir)


def issue_server(ca_dir, out_dir, hosts=("localhost", "127.0.0.1"), days=825, force=False):
    """Issue the broker certificate: out_dir/server.key (0600) and server.crt.

    Each host becomes a SAN entry (IP address or DNS name); CN is hosts[0].
    Returns the path of server.crt.
    """
    hosts = list(hosts)
    if not hosts:
        raise CAError("issue_server needs at least one host name or IP address")
    out_dir = Path(out_dir)
    key_path, crt_path = out_dir / "server.key", out_dir / "server.crt"
    _refuse_existing([key_path, crt_path], force)
    san = []
    for host in hosts:
        try:
            san.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            san.append(x509.DNSName(host))
    key = _new_key()
    cert = _leaf(ca_dir, hosts[0], key.public_key(), ExtendedKeyUsageOID.SERVER_AUTH, days, san=san)
    write_files_atomic({key_path: (_key_pem(key), 0o600), crt_path: (_cert_pem(cert), 0o644)})
    return crt_path


def _node_identity(ca_dir, node_id, days, not_before, not_after):
    validate_node_id(node_id)
    if node_id in RESERVED_NODE_IDS:
        raise CAError(f"node_id {node_id!r} is reserved for the cloud side; choose another node_id")
    key = _new_key()
    cert = _leaf(ca_dir, node_id, key.public_key(), ExtendedKeyUsageOID.CLIENT_AUTH,
                 days, not_before, not_after)
    return key, cert


def issue_node(ca_dir, out_dir, node_id, days=3650, not_before=None, not_after=None, force=False):
    """Issue a device identity with CN = node_id (EKU clientAuth).

    Writes node.key (PEM PKCS8), node.crt (PEM), node.key.der (DER SEC1) and
    node.crt.der (DER) into out_dir. not_before/not_after (aware datetimes)
    override the validity period, e.g. to make an expired certificate.
    Returns the path of node.crt.
    """
    out_dir = Path(out_dir)
    names = ("node.key", "node.crt", "node.key.der", "node.crt.der")
    paths = [out_dir / n for n in names]
    validate_node_id(node_id)
    _refuse_existing(paths, force)
    key, cert = _node_identity(ca_dir, node_id, days, not_before, not_after)
    write_files_atomic({
        paths[0]: (_key_pem(key), 0o600),
        paths[1]: (_cert_pem(cert), 0o644),
        paths[2]: (_key_der_sec1(key), 0o600),
        paths[3]: (_cert_der(cert), 0o644),
    })
    return paths[1]


def sign_csr(ca_dir, csr, days=3650, not_before=None, not_after=None):
    """Issue a device certificate for a CSR (CN = node_id, EKU clientAuth).

    The key stays wherever the CSR was made; only the public key and the CN
    are taken from the request, everything else is set here as for
    issue_node. Returns the certificate object.
    """
    if not csr.is_signature_valid:
        raise CAError("the CSR's signature does not verify; make the CSR again from its key")
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1:
        raise CAError("the CSR must carry exactly one CN (the node_id)")
    node_id = names[0].value
    validate_node_id(node_id)
    if node_id in RESERVED_NODE_IDS:
        raise CAError(f"node_id {node_id!r} is reserved for the cloud side; choose another node_id")
    return _leaf(ca_dir, node_id, csr.public_key(), ExtendedKeyUsageOID.CLIENT_AUTH,
                 days, not_before, not_after)


def issue_client(ca_dir, out_dir, name="console", force=False):
    """Issue a cloud-side client identity: out_dir/<name>.key (0600), <name>.crt.

    The broker grants the identity named 'console' access to every topic.
    Returns the path of <name>.crt.
    """
    validate_node_id(name, what="client name")
    out_dir = Path(out_dir)
    key_path, crt_path = out_dir / f"{name}.key", out_dir / f"{name}.crt"
    _refuse_existing([key_path, crt_path], force)
    key = _new_key()
    cert = _leaf(ca_dir, name, key.public_key(), ExtendedKeyUsageOID.CLIENT_AUTH, 3650)
    write_files_atomic({key_path: (_key_pem(key), 0o600), crt_path: (_cert_pem(cert), 0o644)})
    return crt_path


def make_board_bundle(ca_dir, board_dir, node_id, mqtt_host="127.0.0.1", mqtt_port=8883,
                      server_hostname="localhost", topics="plain", force=False):
    """Issue a node identity and lay out the on-board credential bundle.

    Layout (fixed; the firmware depends on it):
      board_dir/certs/node.crt.der   device certificate, DER
      board_dir/certs/node.key.der   device key, DER SEC1, 0600
      board_dir/certs/ca.der         CA that signed the broker certificate, DER
      board_dir/rainmaker.json       node_id, mqtt_host, mqtt_port, server_hostname, topics
    Returns board_dir as a Path.
    """
    validate_node_id(node_id)
    if topics not in TOPIC_FORMS:
        raise CAError(f"topics must be one of {', '.join(TOPIC_FORMS)}, not {topics!r}")
    if not isinstance(mqtt_port, int) or not 0 < mqtt_port < 65536:
        raise CAError(f"mqtt_port must be an integer from 1 to 65535, not {mqtt_port!r}")
    if not mqtt_host or not server_hostname:
        raise CAError("mqtt_host and server_hostname must not be empty")
    board_dir = Path(board_dir)
    certs = board_dir / "certs"
    crt_der, key_der, ca_der = certs / "node.crt.der", certs / "node.key.der", certs / "ca.der"
    conf = board_dir / "rainmaker.json"
    _refuse_existing([key_der, crt_der, conf, ca_der], force)
    _, ca_cert = load_ca(ca_dir)
    key, cert = _node_identity(ca_dir, node_id, 3650, None, None)
    settings = {
        "node_id": node_id,
        "mqtt_host": mqtt_host,
        "mqtt_port": mqtt_port,
        "server_hostname": server_hostname,
        "topics": topics,
    }
    _mkdir_private(certs)
    write_files_atomic({
        crt_der: (_cert_der(cert), 0o644),
        key_der: (_key_der_sec1(key), 0o600),
        ca_der: (_cert_der(ca_cert), 0o644),
        conf: ((json.dumps(settings, indent=2) + "\n").encode(), 0o644),
    })
    return board_dir


# ---------------------------------------------------------------- CLI

def _parser():
    p = argparse.ArgumentParser(
        prog="python -m provisioning.ca",
        description="Local certificate authority for the RainMaker development cloud. "
                    "Keys are EC P-256, written 0600, and never printed.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--ca-dir", type=Path, default=DEFAULT_CA_DIR,
                        help="directory holding ca.key/ca.crt/ca.der (default: %(default)s)")
    common.add_argument("--force", action="store_true",
                        help="replace existing keys/certificates instead of refusing")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    sub.add_parser("init", parents=[common], help="create the CA",
                   description="Create the CA key and certificate in --ca-dir.")

    s = sub.add_parser("server", parents=[common], help="issue the broker certificate",
                       description="Issue server.key/server.crt for the MQTT broker.")
    s.add_argument("--out", type=Path, help="output directory (default: parent of --ca-dir)")
    s.add_argument("--host", action="append", dest="hosts", metavar="NAME_OR_IP",
                   help="SAN entry; repeat for several (default: localhost and 127.0.0.1)")
    s.add_argument("--days", type=int, default=825, help="validity in days (default: %(default)s)")

    n = sub.add_parser("node", parents=[common], help="issue a device identity (CN = NODE_ID)",
                       description="Issue node.key/node.crt (PEM) and node.key.der/node.crt.der.")
    n.add_argument("node_id", metavar="NODE_ID", help=NODE_ID_RULE)
    n.add_argument("--out", type=Path,
                   help="output directory (default: <parent of --ca-dir>/identities/NODE_ID)")
    n.add_argument("--days", type=int, default=3650, help="validity in days (default: %(default)s)")

    c = sub.add_parser("client", parents=[common], help="issue a cloud-side client identity",
                       description="Issue NAME.key/NAME.crt; 'console' may use every topic.")
    c.add_argument("name", metavar="NAME", help=NODE_ID_RULE)
    c.add_argument("--out", type=Path, help="output directory (default: parent of --ca-dir)")

    b = sub.add_parser("bundle", parents=[common], help="write a board's credential bundle",
                       description="Issue a node identity and write BOARD_DIR/certs/*.der "
                                   "and BOARD_DIR/rainmaker.json for the firmware.")
    b.add_argument("node_id", metavar="NODE_ID", help=NODE_ID_RULE)
    b.add_argument("board_dir", metavar="BOARD_DIR", type=Path, help="board filesystem directory")
    b.add_argument("--host", default="127.0.0.1", help="MQTT host the board connects to (default: %(default)s)")
    b.add_argument("--port", type=int, default=8883, help="MQTT port (default: %(default)s)")
    b.add_argument("--server-hostname", default="localhost",
                   help="name checked against the broker certificate (default: %(default)s)")
    b.add_argument("--topics", choices=TOPIC_FORMS, default="plain",
                   help="how the node publishes: 'plain' node/<id>/... or 'ingest' "
                        "(AWS basic-ingest $aws/rules/<rule>/node/<id>/...); the local "
                        "broker accepts both (default: %(default)s)")
    return p


def _ensure_ca_noisy(ca_dir):
    if not (Path(ca_dir) / "ca.key").exists():
        ensure_ca(ca_dir)
        print(f"created CA in {ca_dir}", file=sys.stderr)


def cli_error(exc):
    """One line on stderr for a CLI failure; returns the exit code (2)."""
    if isinstance(exc, OSError) and not isinstance(exc, CAError):
        print(f"error: {exc.strerror or exc}: {exc.filename or ''} (check the path and its permissions)",
              file=sys.stderr)
    else:
        print(f"error: {exc}", file=sys.stderr)
    return 2


def main(argv=None):
    args = _parser().parse_args(argv)
    ca_dir = args.ca_dir
    try:
        if args.cmd == "init":
            init_ca(ca_dir, force=args.force)
            print(f"CA certificate: {ca_dir / 'ca.crt'}")
        elif args.cmd == "server":
            _ensure_ca_noisy(ca_dir)
            hosts = args.hosts or ["localhost", "127.0.0.1"]
            out = args.out or ca_dir.parent
            print(f"server certificate: {issue_server(ca_dir, out, hosts, args.days, args.force)}")
        elif args.cmd == "node":
            _ensure_ca_noisy(ca_dir)
            validate_node_id(args.node_id)
            out = args.out or ca_dir.parent / "identities" / args.node_id
            crt = issue_node(ca_dir, out, args.node_id, days=args.days, force=args.force)
            print(f"node certificate: {crt}")
        elif args.cmd == "client":
            _ensure_ca_noisy(ca_dir)
            out = args.out or ca_dir.parent
            print(f"client certificate: {issue_client(ca_dir, out, args.name, args.force)}")
        elif args.cmd == "bundle":
            _ensure_ca_noisy(ca_dir)
            board = make_board_bundle(ca_dir, args.board_dir, args.node_id, args.host, args.port,
                                      args.server_hostname, args.topics, args.force)
            print(f"board bundle: {board / 'rainmaker.json'} and {board / 'certs'}/")
    except (CAError, OSError) as exc:
        return cli_error(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
