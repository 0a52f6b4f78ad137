"""The credential bundle: what a board needs to reach its MQTT broker.

One layout on the board's filesystem root, the same on a real ESP32 and in
the simulator's folder; firmware/lib/rainmaker/agent.py reads it:

  rainmaker.json       {"node_id", "mqtt_host", "mqtt_port", "server_hostname",
                        "topics": "plain"|"ingest", "keepalive"?}
  certs/node.crt.der   device certificate, DER
  certs/node.key.der   device key, DER (SEC1 for EC, PKCS#1 for RSA); 0600 on a host
  certs/ca.der         CA of the broker's certificate, DER (RainMaker: Amazon Root CA 1)
  wifi.json            {"ssid", "password"}, only for boards not provisioned over the air

A bundle is checked before it is built, so nothing is pushed that cannot
work: the key matches the certificate, the certificate chains to its CA
(when the CA is known), is valid now and not revoked, and its CN is the node id.

CLI: ``python -m provisioning.bundle --help``.
"""
import argparse
import datetime as dt
import json
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from provisioning import ca
from provisioning import identity as ident

DEFAULT_PORT = 8883


class BundleError(ident.IdentityError):
    """The bundle cannot be built or would not work; the message says how to fix it."""


def _day(when):
    return when.strftime("%Y-%m-%d %H:%M UTC")


def check_identity(node_id, key, cert, chain=(), now=None, source="node.crt", revoked=None):
    """Raise BundleError with the first problem; return warnings (list of str)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    warnings = []
    if not ident.same_public_key(key, cert):
        raise BundleError(f"the key does not match the certificate {source} (different public keys); "
                          "use the node.key whose CSR this certificate was issued for")
    cn = ident.common_name(cert)
    if cn != node_id:
        raise BundleError(f"the certificate {source} is for node {cn!r}, not {node_id!r}; "
                          "use the certificate issued for this node (the broker takes the CN as its identity)")
    if cert.not_valid_after_utc < now:
        raise BundleError(f"the certificate {source} expired on {_day(cert.not_valid_after_utc)}; renew it "
                          f"(python -m provisioning.identity renew {node_id}) and deploy again")
    if cert.not_valid_before_utc > now:
        raise BundleError(f"the certificate {source} is not valid before {_day(cert.not_valid_before_utc)}; "
                          "check the host's clock")
    if revoked and cert.serial_number in revoked:
        raise BundleError(f"the certificate {source} (serial {cert.serial_number:x}) was revoked; issue a new "
                          f"identity (python -m provisioning.identity issue {node_id} --force)")
    issuers = [c for c in chain if c.subject == cert.issuer]
    if chain and not issuers:
        raise BundleError(f"the certificate {source} was not issued by the given CA "
                          f"({ident.common_name(chain[0]) or chain[0].subject.rfc4514_string()}); "
                          "give the CA that issued it")
    if issuers:
        try:
            cert.verify_directly_issued_by(issuers[0])
        except Exception:
            raise BundleError(f"the certificate {source} does not chain to its CA "
                              f"{ident.common_name(issuers[0])!r} (bad signature); the CA file is "
                              "not the one that issued it") from None
    else:
        warnings.append(f"{source}: issuer CA unknown, chain not checked")
    return warnings


def _live_ca(meta):
    """(CA certificate, revoked serials) of the local CA an identity came from, if it is here."""
    d = meta.get("ca_dir")
    if meta.get("source") != "local-ca" or not d or not (Path(d) / "ca.crt").exists():
        return None, {}
    _, cert = ca.load_ca(d)
    try:
        revoked = ident.revoked_serials(d)
    except ValueError:
        raise BundleError(f"{Path(d) / 'crl.pem'} is corrupt; move it away and revoke again") from None
    return cert, revoked


def build(folder, mqtt_host=None, mqtt_port=None, server_hostname=None, topics=None, broker_ca=None,
          keepalive=None, wifi=None, now=None):
    """Check an identity folder and return (files, warnings).

    files maps board paths to (bytes, mode). Settings given here win over
    the identity's own (identity.json, endpoint.info).
    """
    folder = Path(folder)
    if not (folder / "node.key").exists():
        raise BundleError(f"no identity in {folder} (no node.key); make one with "
                          "python -m provisioning.identity issue|csr|import-claim")
    if not (folder / "node.crt").exists():
        raise BundleError(f"{folder} has a key but no certificate yet; import it with "
                          f"python -m provisioning.identity import-cert {folder.name} CERT")
    meta = ident._meta(folder)
    node_id = meta.get("node_id") or folder.name
    key = ident.load_key(folder / "node.key")
    certs = ident.load_certs(folder / "node.crt")
    chain = certs[1:]
    live, revoked = _live_ca(meta)
    if live is not None:
        chain.append(live)
    elif (folder / "issuer.crt").exists():
        chain += ident.load_certs(folder / "issuer.crt")
    warnings = check_identity(node_id, key, certs[0], chain, now, str(folder / "node.crt"), revoked)

    if broker_ca:
        broker = ident.load_certs(broker_ca)[0]
    elif live is not None:
        broker = live  # the local broker's certificate comes from the same CA
    elif (folder / "broker-ca.crt").exists():
        broker = ident.load_certs(folder / "broker-ca.crt")[0]
    else:
        hint = (" For ESP RainMaker it is Amazon Root CA 1 (AmazonRootCA1.pem, from "
                "amazontrust.com/repository)." if meta.get("source") == "rainmaker" else "")
        raise BundleError(f"no broker CA for {node_id}: give the CA of the MQTT broker's certificate with "
                          f"--broker-ca FILE.{hint}")

    host = mqtt_host or meta.get("mqtt_host")
    if not host:
        raise BundleError(f"no MQTT host for {node_id}: give --mqtt-host (the broker's name or address "
                          "as the board sees it)")
    topics = topics or meta.get("topics") or "plain"
    if topics not in ca.TOPIC_FORMS:
        raise BundleError(f"topics must be one of {', '.join(ca.TOPIC_FORMS)}, not {topics!r}")
    port = mqtt_port or meta.get("mqtt_port") or DEFAULT_PORT
    if not isinstance(port, int) or not 0 < port < 65536:
        raise BundleError(f"the MQTT port must be 1..65535, not {port!r}")
    settings = {"node_id": node_id, "mqtt_host": host, "mqtt_port": port,
                "server_hostname": server_hostname or host, "topics": topics}
    if keepalive is not None:
        if not isinstance(keepalive, int) or not 5 <= keepalive <= 1200:
            raise BundleError(f"keepalive must be 5..1200 s, not {keepalive!r}")
        settings["keepalive"] = keepalive
    der = serialization.Encoding.DER
    files = {
        "certs/node.crt.der": (certs[0].public_bytes(der), 0o644),
        "certs/node.key.der": (ident.key_der_for_board(key), 0o600),
        "certs/ca.der": (broker.public_bytes(der), 0o644),
        "rainmaker.json": ((json.dumps(settings, indent=2) + "\n").encode(), 0o644),
    }
    if wifi:
        ssid, password = wifi
        if not ssid or len(ssid.encode()) > 32:
            raise BundleError("the Wi-Fi SSID must be 1 to 32 bytes")
        if password and not 8 <= len(password) <= 64:
            raise BundleError("a WPA2 Wi-Fi password has 8 to 63 characters (64 hex digits); check it")
        files["wifi.json"] = ((json.dumps({"ssid": ssid, "password": password or ""}) + "\n").encode(), 0o600)
    return files, warnings


def check_board_dir(board_dir, issuer_ca=None, now=None):
    """Check a bundle already laid out in a folder; return (node_id, warnings)."""
    board_dir = Path(board_dir)
    try:
        settings = json.loads((board_dir / "rainmaker.json").read_text())
        node_id = settings["node_id"]
    except (OSError, ValueError, KeyError, TypeError):
        raise BundleError(f"{board_dir / 'rainmaker.json'} is missing or has no node_id; deploy a bundle") from None
    key = ident.load_key(board_dir / "certs" / "node.key.der")
    cert = ident.load_certs(board_dir / "certs" / "node.crt.der")[0]
    chain = ident.load_certs(issuer_ca) if issuer_ca else []
    broker = ident.load_certs(board_dir / "certs" / "ca.der")[0]
    if not chain and broker.subject == cert.issuer:
        chain = [broker]  # local CA: the broker's CA issued the device certificate too
    return node_id, check_identity(node_id, key, cert, chain, now, str(board_dir / "certs" / "node.crt.der"))


def write(files, out_dir, force=False):
    """Lay the bundle out in out_dir (refusing to replace a key unless force)."""
    out_dir = Path(out_dir)
    paths = {out_dir / rel: v for rel, v in files.items()}
    if not force and (out_dir / "certs" / "node.key.der").exists():
        raise BundleError(f"{out_dir / 'certs' / 'node.key.der'} already exists; pass --force to replace it")
    ca.write_files_atomic(paths)
    return out_dir


def _parser():
    p = argparse.ArgumentParser(
        prog="python -m provisioning.bundle",
        description="Build or check the on-board credential bundle (rainmaker.json, certs/*.der, "
                    "wifi.json). make deploy builds and pushes it for you; use this to inspect it or to "
                    "copy it with your own tools.")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    b = sub.add_parser("build", help="write the bundle of an identity into a folder")
    b.add_argument("node_id", metavar="NODE_ID")
    b.add_argument("out", type=Path, metavar="OUT_DIR")
    b.add_argument("--store", type=Path, default=ident.DEFAULT_STORE, help="identity store (default: %(default)s)")
    b.add_argument("--mqtt-host")
    b.add_argument("--mqtt-port", type=int)
    b.add_argument("--server-hostname", help="name checked against the broker certificate (default: the host)")
    b.add_argument("--topics", choices=ca.TOPIC_FORMS)
    b.add_argument("--broker-ca", type=Path, help="CA of the broker's certificate, PEM or DER")
    b.add_argument("--force", action="store_true", help="replace a bundle already in OUT_DIR")
    c = sub.add_parser("check", help="check a bundle laid out in a folder (e.g. .sim/board)")
    c.add_argument("dir", type=Path, metavar="DIR")
    c.add_argument("--issuer-ca", type=Path, help="CA that issued the device certificate, if not certs/ca.der")
    return p


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "build":
            files, warnings = build(ident.identity_dir(args.store, args.node_id), args.mqtt_host,
                                    args.mqtt_port, args.server_hostname, args.topics, args.broker_ca)
            write(files, args.out, args.force)
            print(f"bundle for {args.node_id} in {args.out}")
        else:
            node_id, warnings = check_board_dir(args.dir, args.issuer_ca)
            print(f"bundle in {args.dir} is good for {node_id}")
        for w in warnings:
            print(f"note: {w}", file=sys.stderr)
    except ca.CAError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc.strerror or exc}: {exc.filename or ''}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
