"""Bring a simulated board online against the local cloud (`make sim`).

Creates what is missing (certificate authority, broker certificate, the
board's identity and credential bundle, a virtual Wi-Fi network), starts the
broker and the cloud recorder, deploys the firmware into the board's folder,
and boots the board in the foreground. Ctrl-C stops everything.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from provisioning import ca
from tools.broker import Broker
from tools.cloud import Recorder
from tools.deploy import deploy
from tools.sim.mpy.simworld.chip import CHIPS
from tools.transport import FolderBoard

ROOT = Path(__file__).resolve().parent.parent
SIM_SSID = "SimNet"
SIM_PASSWORD = "simnet-pass"


def write_json(path, data):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def prepare_board(cloud, board, air, node_id, port, keepalive=None, wifi=True, prov_port=None):
    """Firmware, identity and settings for a simulated board. Returns the node id.

    port is the MQTT port the board connects to: the broker's, or on the MicroPython
    backend the board's radio relay in front of it. prov_port: the provisioning
    server's port (rainmaker.json "prov_port"; the board's default is 80).
    """
    board.mkdir(parents=True, exist_ok=True)
    # Same deploy as `make deploy BOARD=sim`: only changed files, atomically.
    deploy(FolderBoard(board), progress=None, reset=False)
    cfg_path = board / "rainmaker.json"
    if not cfg_path.exists():
        ca.make_board_bundle(cloud / "ca", board, node_id, mqtt_host="127.0.0.1", mqtt_port=port,
                             server_hostname="localhost", topics="plain")
    cfg = json.loads(cfg_path.read_text())
    cfg["mqtt_port"] = port  # the local broker's port may change between runs
    if keepalive:
        cfg["keepalive"] = keepalive
    if prov_port:
        cfg["prov_port"] = prov_port
    write_json(cfg_path, cfg)
    if wifi and not (board / "wifi.json").exists():
        # Stands in for provisioning: the board already knows the network.
        write_json(board / "wifi.json", {"ssid": SIM_SSID, "password": SIM_PASSWORD})
    if not air.exists():
        write_json(air, {"networks": [{"ssid": SIM_SSID, "password": SIM_PASSWORD, "up": True,
                                       "rssi": -52, "channel": 6, "authmode": 3}]})
    return cfg["node_id"]


def board_command(board, air, mac, micropython=None, relay=None, chip="esp32", ota=True, app_version=None):
    """The command that boots the board: on CPython (tools.sim.board), or with
    micropython=BIN on MicroPython itself (tools.sim.mpboard), where relay=(port,
    (host, target)) is the radio in front of the broker. chip: "esp32", "esp32c3"...
    ota=False: the partition table without OTA (one factory app); app_version: the
    version of the app image a new flash starts with (default 1.0.0)."""
    flash = ([] if ota else ["--no-ota"]) + (["--app-version", app_version] if app_version else [])
    if not micropython:
        return [sys.executable, "-u", "-m", "tools.sim.board", "--dir", str(board), "--air", str(air), "--mac", mac,
                "--chip", chip] + flash
    cmd = [sys.executable, "-u", "-m", "tools.sim.mpboard", "--micropython", str(micropython),
           "--dir", str(board), "--air", str(air), "--mac", mac, "--chip", chip] + flash
    if relay:
        port, (host, target) = relay
        cmd += ["--relay", "%d=%s:%d" % (port, host, target)]
    return cmd


def main(argv=None):
    p = argparse.ArgumentParser(prog="make sim", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cloud", default=".cloud", help="local cloud state: CA, broker, recorded nodes (default .cloud)")
    p.add_argument("--board", default=".sim/board", help="the simulated board's filesystem (default .sim/board)")
    p.add_argument("--port", type=int, default=8883, help="broker TLS port on 127.0.0.1 (default 8883; 0 = any free)")
    p.add_argument("--mac", default="240AC4A1B2C3", help="the board's Wi-Fi MAC; the node id is derived from it")
    p.add_argument("--provision", action="store_true",
                   help="start without Wi-Fi credentials: the board runs Wi-Fi provisioning (SoftAP)")
    p.add_argument("--prov-port", type=int, default=18080,
                   help="host port for the board's provisioning server, its port 80 (default 18080)")
    p.add_argument("--micropython", metavar="BIN", default=os.environ.get("MICROPYTHON") or None,
                   help="run the board on this MicroPython unix-port binary instead of CPython "
                        "(default $MICROPYTHON): a unix-port build, 32-bit for ESP32-like heap figures")
    p.add_argument("--chip", default="esp32", choices=sorted(CHIPS),
                   help="the simulated chip (default esp32); the example app picks its pins by it")
    p.add_argument("--no-ota", action="store_true",
                   help="partition table without OTA: one factory app (default: the OTA build's two slots)")
    p.add_argument("--app-version", default=None,
                   help="version of the app image in a new flash folder (default 1.0.0)")
    args = p.parse_args(argv)
    if args.micropython and not os.path.isfile(args.micropython):
        p.error("--micropython: no such file: %s" % args.micropython)

    cloud = Path(args.cloud).resolve()
    board = Path(args.board).resolve()
    air = board.parent / "air.json"
    mac = args.mac.replace(":", "").upper()
    if len(mac) != 12 or any(c not in "0123456789ABCDEF" for c in mac):
        p.error("--mac must be 12 hex digits, e.g. 240AC4A1B2C3")

    broker = Broker(cloud, port=args.port)
    try:
        broker.start()
    except Exception as e:
        print(f"error: could not start the broker on 127.0.0.1:{args.port}: {e}\n"
              f"       is another `make sim` running? try: make sim ARGS=--port=0", file=sys.stderr)
        return 2
    recorder = Recorder(cloud, broker.host, broker.port)
    recorder.start()
    relay = None
    mqtt_port = broker.port
    if args.micropython:
        # The firmware's sockets are real there: it reaches the broker through its radio.
        from tools.sim.relay import free_port

        relay = (free_port(), (broker.host, broker.port))
        mqtt_port = relay[0]
    node_id = prepare_board(cloud, board, air, mac, mqtt_port, wifi=not args.provision,
                            prov_port=args.prov_port if args.micropython else None)
    if args.provision:
        (board / "wifi.json").unlink(missing_ok=True)  # as a Wi-Fi reset does
    print(f"""
  local cloud  {broker.engine} on {broker.host}:{broker.port} (mutual TLS), CA in {cloud / 'ca'}
  board        {board}  node id {node_id}  chip {args.chip}
               {"on MicroPython " + args.micropython + " (radio relay 127.0.0.1:%d)" % relay[0] if relay else "on CPython (tools/sim)"}
  Wi-Fi        {air} (edit "up" to drop the network)
  flash        {board.parent / 'flash'} ({"one factory app" if args.no_ota else "OTA slots ota_0/ota_1, otadata"})

  In a second terminal:
    make console ARGS="nodes"
    make console ARGS="show {node_id}"
    make console ARGS="set {node_id} Light.Power=true Light.Brightness=40"
    make console ARGS="watch"

  Ctrl-C stops the board and the cloud.
""", flush=True)
    if args.provision:
        print(f"""  Provisioning: the board serves it on 127.0.0.1:{args.prov_port} (its port 80).
    python -m tools.qr --board {board}
    python -m tools.provision --host 127.0.0.1:{args.prov_port} --qr "$(python -m tools.qr --board {board} --json)" \\
        --ssid SimNet --password {SIM_PASSWORD}
""", flush=True)
    if args.micropython:
        cmd = board_command(board, air, mac, args.micropython, relay, chip=args.chip, ota=not args.no_ota,
                            app_version=args.app_version)
    else:
        cmd = board_command(board, air, mac, chip=args.chip, ota=not args.no_ota,
                            app_version=args.app_version) + ["--port-map", "80=%d" % args.prov_port]
    proc = subprocess.Popen(cmd, cwd=ROOT)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
        return 0
    finally:
        recorder.stop()
        broker.stop()


if __name__ == "__main__":
    sys.exit(main())
