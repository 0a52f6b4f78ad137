"""Show a board's provisioning QR code in the terminal, for the phone app.

    python -m tools.qr PAYLOAD                   # the JSON the board printed
    make logs PORT=/dev/ttyUSB0 | python -m tools.qr -     # find it in a log
    python -m tools.qr --board .sim/board        # read it from a board folder

While it has no Wi-Fi credentials the board logs a line
`rm I prov: QR {"ver":"v1","name":"PROV_xxxxxx",...}`. The ESP RainMaker app
(Add Device, scan QR code) reads the same payload; the URL printed below opens
Espressif's QR page as a fallback. Needs `pip install segno` for the picture.
"""
import argparse
import json
import sys
from urllib.parse import quote

URL = "https://rainmaker.espressif.com/qrcode.html?data="
MARK = "prov: QR "


def find_payload(lines):
    """The last QR payload in log lines, or None."""
    found = None
    for line in lines:
        if MARK in line:
            found = line.split(MARK, 1)[1].strip()
    return found


def check(payload):
    try:
        data = json.loads(payload)
    except ValueError:
        raise SystemExit("error: not a QR payload (JSON expected): %r" % payload[:80])
    if not isinstance(data, dict) or data.get("ver") != "v1" or not str(data.get("name", "")).startswith("PROV_"):
        raise SystemExit("error: not a RainMaker provisioning payload: %r" % payload[:80])
    return data


def from_board(folder):
    """Derived as the firmware does (rainmaker/prov/ident.py): name and PoP from prov.json's random."""
    from pathlib import Path

    folder = Path(folder)
    cfg = json.loads((folder / "rainmaker.json").read_text())
    rnd = cfg.get("random")
    if not rnd:
        try:
            rnd = json.loads((folder / "prov.json").read_text())["random"]
        except (OSError, ValueError, KeyError):
            raise SystemExit("error: %s has no prov.json yet: boot the board once without Wi-Fi credentials" % folder)
    b = bytes.fromhex(rnd)
    sec = cfg.get("prov_sec", 2)
    out = {"ver": "v1", "name": "PROV_" + b[-3:].hex()}
    if sec == 2:
        out["username"] = "wifiprov"
    if sec:
        out["pop"] = b[:4].hex()
    out["transport"] = "softap"
    return json.dumps(out, separators=(",", ":"))


def render(payload, out=sys.stdout):
    data = check(payload)
    try:
        import segno
    except ImportError:
        print("(pip install segno to draw the QR code here)", file=out)
    else:
        segno.make(payload, error="l").terminal(out=out, compact=True)
    print("name %s   PoP %s   transport %s" % (data["name"], data.get("pop", "(none)"), data.get("transport")), file=out)
    print(URL + quote(payload, safe=""), file=out)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tools.qr", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("payload", nargs="?", help="QR payload JSON, or - to read a board log on stdin")
    p.add_argument("--board", help="a board folder (simulator): derive the payload from its files")
    p.add_argument("--json", action="store_true", help="print only the payload (for scripts)")
    args = p.parse_args(argv)
    if args.board:
        payload = from_board(args.board)
    elif args.payload == "-":
        payload = None
        for line in sys.stdin:  # stop at the first QR line: a live log never ends
            payload = find_payload([line])
            if payload:
                break
        if not payload:
            raise SystemExit("error: no 'prov: QR' line in the log (is the board provisioned already?)")
    elif args.payload:
        payload = args.payload
    else:
        p.error("give a payload, - for a log on stdin, or --board")
    if args.json:
        check(payload)
        print(payload)
        return 0
    render(payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
