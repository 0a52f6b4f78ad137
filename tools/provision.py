"""Provision a board over SoftAP with esp-rainmaker-cli's own client code.

    python -m tools.provision [--host 192.168.4.1:80] [--qr PAYLOAD | --sec N --pop POP]
                              [--ssid SSID --password PW] [--user-id ID --secret-key KEY]

Runs the CLI's `provision_device` flow (proto-ver, session handshake with its
Security0/1/2 classes, cloud_user_assoc, Wi-Fi scan, credentials, status polls)
against a board's provisioning endpoint. The default host is the SoftAP
address of a real board (join its PROV_xxxxxx network first); a simulated
board serves it on loopback (`--port-map 80=18080` -> --host 127.0.0.1:18080).
Without --ssid the board's scan list is shown and you pick a network.

The last line printed is `RESULT {json}`: node_id, scan list, outcome.
Needs `pip install esp-rainmaker-cli`.
"""
import argparse
import builtins
import getpass
import json
import sys
import time
import types


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m tools.provision", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="192.168.4.1:80", help="board address:port (default 192.168.4.1:80)")
    p.add_argument("--qr", help="the QR payload JSON the board printed (gives PoP and security)")
    p.add_argument("--sec", type=int, choices=(0, 1, 2), help="security version (default: what the board says)")
    p.add_argument("--pop", default="", help="proof of possession (Security 1 and 2)")
    p.add_argument("--ssid", help="network to join (default: choose from the board's scan)")
    p.add_argument("--password", default=None, help="its passphrase (asked if not given)")
    p.add_argument("--user-id", default="sim-user", help="user id for cloud_user_assoc (default sim-user)")
    p.add_argument("--secret-key", default="sim-secret", help="secret key for cloud_user_assoc")
    p.add_argument("--poll", type=float, default=5.0, help="seconds between Wi-Fi status polls (CLI: 5)")
    p.add_argument("--think", type=float, default=0.0,
                   help="seconds the (scripted) user takes to pick the network, as a person at the prompt would")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.qr:
        qr = json.loads(args.qr)
        args.pop = qr.get("pop", args.pop)
        if args.sec is None:
            args.sec = 2 if "username" in qr else (1 if "pop" in qr else 0)
    try:
        from rmaker_tools.rmaker_prov import esp_rainmaker_prov as cli
        from rmaker_tools.rmaker_prov.prov import prov_util
        from rmaker_tools.common import transport
    except ImportError:
        print("error: esp-rainmaker-cli is not installed (pip install esp-rainmaker-cli)", file=sys.stderr)
        return 2

    result = {"node_id": None, "scan": None, "ok": False}
    # The CLI's SoftAP transport, pointed at --host instead of 192.168.4.1:80.
    prov_util.get_transport = lambda mode, name: transport.Transport_HTTP(args.host, timeout=30)
    cli.esp_prov = prov_util
    real_scan = prov_util.scan_wifi_APs

    def scan(*a):
        aps = real_scan(*a)
        result["scan"] = aps
        return aps

    prov_util.scan_wifi_APs = scan
    cli.esp_prov.scan_wifi_APs = scan
    # Pick --ssid from the scan list when it is given; the CLI asks otherwise.
    if args.ssid is not None:
        def pick(prompt=""):
            if "Select AP" in prompt:
                time.sleep(args.think)  # the CLI's connection stays open meanwhile
                names = [ap["ssid"] for ap in result["scan"] or []]
                return str(names.index(args.ssid) + 1) if args.ssid in names else str(len(names) + 1)
            if "Enter ssid" in prompt:
                return args.ssid
            if "retry" in prompt.lower() or "re-enter" in prompt.lower():
                return "n"
            return ""

        cli.input = pick
        if args.password is not None:
            cli.getpass = lambda prompt="": args.password
    poll = max(0.1, args.poll)
    cli.time = types.SimpleNamespace(time=time.time, sleep=lambda s: time.sleep(min(s, poll)))
    try:
        out = cli.provision_device("softap", args.pop, args.user_id, args.secret_key,
                                   security_version=args.sec, sec2_username="wifiprov" if args.sec == 2 else "",
                                   sec2_password=args.pop, no_retry=True)
    except (RuntimeError, OSError) as e:
        result["error"] = str(e)
        out = None
    if isinstance(out, tuple) and out and out[0]:
        result["node_id"] = out[0]
        result["ok"] = True
    print("RESULT " + json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
