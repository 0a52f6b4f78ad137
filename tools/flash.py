"""Flash MicroPython onto an ESP32 with esptool (`make flash PORT=... FIRMWARE=...bin`).

1. detect the chip on the port (esptool's ROM bootloader protocol);
2. read the image: the chip it was built for (ESP image header), its
   partition table (OTA slots?) and its MicroPython version (app descriptor);
3. refuse an image for another chip, or MicroPython older than 1.23, before
   anything is erased; warn when it has no OTA partitions;
4. erase the flash, write the image at the chip's bootloader offset and
   verify it, each step an ``esptool`` command (printed, then run through
   esptool's Python API, with esptool's own progress output).

Offsets (MicroPython's ports/esp32/boards/*/board.json, micropython-esp32.md
section 8.2): 0x1000 for ESP32 and ESP32-S2, 0x0 for S3/C2/C3/C6/H2, 0x2000
for C5 and P4.

CLI: ``python -m tools.flash --help``.
"""
import argparse
import re
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

# esptool CHIP_NAME -> (esptool --chip value, bootloader offset, ESP image chip id,
#                       mpy-cross arch, micropython.org board name)
CHIPS = {
    "ESP32": ("esp32", 0x1000, 0, "xtensawin", "ESP32_GENERIC"),
    "ESP32-S2": ("esp32s2", 0x1000, 2, "xtensawin", "ESP32_GENERIC_S2"),
    "ESP32-S3": ("esp32s3", 0x0, 9, "xtensawin", "ESP32_GENERIC_S3"),
    "ESP32-C2": ("esp32c2", 0x0, 12, "rv32imc", "ESP32_GENERIC_C2"),
    "ESP32-C3": ("esp32c3", 0x0, 5, "rv32imc", "ESP32_GENERIC_C3"),
    "ESP32-C6": ("esp32c6", 0x0, 13, "rv32imc", "ESP32_GENERIC_C6"),
    "ESP32-H2": ("esp32h2", 0x0, 16, "rv32imc", "ESP32_GENERIC_H2"),
    "ESP32-C5": ("esp32c5", 0x2000, 23, "rv32imc", "ESP32_GENERIC_C5"),
    "ESP32-P4": ("esp32p4", 0x2000, 18, "rv32imc", "ESP32_GENERIC_P4"),
}
CHIP_BY_IMAGE_ID = {v[2]: name for name, v in CHIPS.items()}
DOWNLOAD_URL = "https://micropython.org/download/{board}/"
MIN_VERSION = (1, 23)
BAUD = 460800

IMAGE_MAGIC = 0xE9
APP_DESC_MAGIC = 0xABCD5432
PART_MAGIC = b"\xaa\x50"
TYPE_APP, SUBTYPE_OTA_MIN, SUBTYPE_OTA_MAX = 0x00, 0x10, 0x1F


class FlashError(Exception):
    """Flashing cannot go on; the message names the cause and the fix."""


# ---------------------------------------------------------------- chips

def chip_info(chip):
    """CHIPS entry for an esptool chip name ('ESP32-S3') or --chip value ('esp32s3')."""
    for name, entry in CHIPS.items():
        if chip in (name, entry[0]) or chip.upper() == name:
            return name, entry
    raise FlashError(f"{chip} is not a chip this agent supports (ESP32, S2, S3, C2, C3, C5, C6, H2, P4); "
                     "MicroPython's ESP8266 port lacks what the agent needs")


def offset_for(chip):
    return chip_info(chip)[1][1]


def arch_for(chip):
    return chip_info(chip)[1][3]


def download_hint(chip, ota=True):
    name, entry = chip_info(chip)
    board = entry[4]
    if ota and name == "ESP32":
        return (f"download ESP32_GENERIC-OTA-<date>-v1.xx.x.bin (the OTA variant) from "
                f"{DOWNLOAD_URL.format(board=board)}")
    return f"download {board}-<date>-v1.xx.x.bin from {DOWNLOAD_URL.format(board=board)}"


# ---------------------------------------------------------------- images

@dataclass
class ImageInfo:
    path: str
    size: int
    chip: str | None = None  # chip the bootloader was built for
    partitions: list = field(default_factory=list)  # (label, type, subtype, offset, size)
    version: tuple | None = None  # MicroPython version from the app descriptor
    version_text: str = ""
    project: str = ""

    @property
    def ota_slots(self):
        return [p for p in self.partitions if p[1] == TYPE_APP and SUBTYPE_OTA_MIN <= p[2] <= SUBTYPE_OTA_MAX]


def _cstr(raw):
    return raw.split(b"\0", 1)[0].decode("ascii", "replace")


def parse_partitions(data, at):
    parts = []
    for off in range(at, min(at + 0xC00, len(data) - 31), 32):
        entry = data[off:off + 32]
        if entry[:2] != PART_MAGIC:
            break
        ptype, subtype, offset, size = struct.unpack_from("<BBII", entry, 2)
        parts.append((_cstr(entry[12:28]), ptype, subtype, offset, size))
    return parts


def analyze_image(path, chip=None):
    """Read what a MicroPython .bin holds. Raises FlashError if it is not a flashable image."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise FlashError(f"cannot read the firmware image {path} ({e.strerror}); check FIRMWARE=...") from None
    info = ImageInfo(str(path), len(data))
    if len(data) < 0x8000 or data[0] != IMAGE_MAGIC:
        raise FlashError(f"{path} is not an ESP32 firmware image (no image header); download the .bin "
                         "for your board from micropython.org/download")
    info.chip = CHIP_BY_IMAGE_ID.get(struct.unpack_from("<H", data, 12)[0])
    # The partition table sits at flash 0x8000; in the file that is 0x8000
    # minus the bootloader offset, which depends on the chip. Try each.
    offsets = [offset_for(chip)] if chip else sorted({v[1] for v in CHIPS.values()})
    if info.chip:
        offsets = [offset_for(info.chip)] + offsets
    base = None
    for boot in offsets:
        at = 0x8000 - boot
        if data[at:at + 2] == PART_MAGIC:
            info.partitions = parse_partitions(data, at)
            base = boot
            break
    if base is None:
        raise FlashError(f"{path} has no partition table: it looks like an application-only image (.app-bin, "
                         "for OTA updates); flash the full .bin instead")
    apps = [p for p in info.partitions if p[1] == TYPE_APP]
    if apps:
        app = apps[0][3] - base
        desc = app + 24 + 8  # image header, first segment header
        if desc + 112 <= len(data) and struct.unpack_from("<I", data, desc)[0] == APP_DESC_MAGIC:
            info.version_text = _cstr(data[desc + 16:desc + 48])
            info.project = _cstr(data[desc + 48:desc + 80])
            m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", info.version_text)
            if m:
                info.version = tuple(int(x or 0) for x in m.groups())
    return info


def check_image(info, chip, force=False):
    """Refuse an image that cannot work on `chip`; return warnings (list of str)."""
    name, _ = chip_info(chip)
    if info.chip and info.chip != name:
        raise FlashError(f"{Path(info.path).name} is built for {info.chip}, but the board is an {name}; "
                         f"{download_hint(name)}")
    warnings = []
    if info.chip is None:
        warnings.append(f"{Path(info.path).name}: chip id in the image header is unknown to this tool")
    if info.version is None:
        warnings.append(f"{Path(info.path).name}: MicroPython version unknown ({info.version_text or 'no app descriptor'})")
    elif info.version[:2] < MIN_VERSION and not force:
        raise FlashError(f"{Path(info.path).name} is MicroPython {info.version_text}, too old for the agent "
                         f"(needs >= 1.23); {download_hint(name)}")
    if not info.ota_slots:
        if name == "ESP32":
            warnings.append(f"this image has no OTA partitions (single app); over-the-air updates need the "
                            f"ESP32_GENERIC-OTA variant: {download_hint(name)}")
        else:
            warnings.append(f"this image has no OTA partitions; there is no stock MicroPython OTA build for "
                            f"{name}, over-the-air updates need a custom build with an OTA partition table")
    return warnings


# ---------------------------------------------------------------- esptool

def flash_commands(chip, port, image, baud=BAUD):
    """The esptool commands (argument lists, without the program name) that flash the image."""
    name, entry = chip_info(chip)
    base = ["--chip", entry[0], "--port", port, "--baud", str(baud)]
    off = f"0x{entry[1]:x}"
    return [
        base + ["erase-flash"],
        base + ["write-flash", off, str(image)],  # also checks the written data's hash
        base + ["verify-flash", off, str(image)],
    ]


def _esptool_error(exc, port):
    text = str(exc)
    if "No such file" in text or "Errno 2]" in text:
        return f"no board on {port}: the port does not exist; plug the board in and check the port name"
    if "Permission denied" in text or "Errno 13]" in text:
        return f"no permission to open {port}; add yourself to the 'dialout' group and log in again"
    if "exclusively lock" in text or "Errno 16]" in text or "Errno 11]" in text:
        return (f"the port {port} is busy: another program has it open (make repl, make logs, screen, "
                "an IDE); close it and retry")
    if "No serial data received" in text or "Failed to connect" in text or "Wrong boot mode" in text:
        return (f"no ESP chip answered on {port}: hold BOOT (IO0) down, tap RESET (EN), release BOOT and "
                "retry; if it still fails, this is not the board's port")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return f"esptool failed on {port}: {lines[0] if lines else type(exc).__name__}"


def probe_chip(port, attempts=3):
    """{'chip': 'ESP32-S3', 'mac': '240AC4A1B2C3'} of the board in the ROM bootloader on `port`."""
    import serial
    from esptool.cmds import detect_chip
    from esptool.util import FatalError

    try:
        esp = detect_chip(port, connect_attempts=attempts)
    except (FatalError, serial.SerialException, OSError) as e:
        raise FlashError(_esptool_error(e, port)) from None
    try:
        mac = esp.read_mac("BASE_MAC")
        name = esp.CHIP_NAME
    except (FatalError, serial.SerialException, OSError) as e:
        raise FlashError(_esptool_error(e, port)) from None
    finally:
        try:
            esp.hard_reset()  # back to the app
        except Exception:
            pass
        try:
            esp._port.close()
        except Exception:
            pass
    return {"chip": name, "mac": "".join(f"{b:02X}" for b in mac)}


def run_esptool(argv):
    import esptool

    esptool.main(argv)


def flash(port, image, chip=None, baud=BAUD, force=False, run=run_esptool, detect=probe_chip, say=print):
    """Detect, check, erase, write, verify. Returns the list of esptool commands run."""
    if chip is None:
        say(f"detecting the chip on {port} ...")
        found = detect(port)
        chip = found["chip"]
        say(f"chip: {chip}, MAC {found['mac']}")
    name, entry = chip_info(chip)
    if image is None:
        raise FlashError(f"no firmware image given; {download_hint(name)}, then make flash PORT={port} "
                         "FIRMWARE=path/to/that.bin")
    info = analyze_image(image, name)
    say(f"image: {Path(image).name}, {info.size // 1024} KiB, for {info.chip or '?'}, "
        f"MicroPython {info.version_text or '?'}, partitions: "
        + ", ".join(p[0] for p in info.partitions))
    for w in check_image(info, name, force):
        say(f"warning: {w}")
    commands = flash_commands(name, port, image, baud)
    steps = ("erasing the flash", f"writing at 0x{entry[1]:x}", "verifying")
    import serial
    from esptool.util import FatalError

    for step, argv in zip(steps, commands):
        say(f"{step}: esptool {' '.join(argv)}")
        try:
            run(argv)
        except (FatalError, serial.SerialException, OSError) as e:
            raise FlashError(_esptool_error(e, port)) from None
        except SystemExit as e:  # esptool's CLI exits on bad arguments
            raise FlashError(f"esptool stopped (exit {e.code}) during {step}; see its output above") from None
    say(f"done: MicroPython is on the {name}; next: make deploy PORT={port}")
    return commands


def _parser():
    p = argparse.ArgumentParser(
        prog="python -m tools.flash",
        description="Flash a MicroPython firmware image onto an ESP32-family board: detect the chip, check "
                    "the image is for that chip and is MicroPython >= 1.23, erase, write at the chip's "
                    "offset (0x1000 ESP32/S2, 0x0 S3/C2/C3/C6/H2, 0x2000 C5/P4) and verify. Erasing also "
                    "wipes the board's filesystem (deployed files and credentials).",
        epilog="Images: https://micropython.org/download/ (for over-the-air updates on an ESP32, the "
               "ESP32_GENERIC-OTA variant).")
    p.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB0")
    p.add_argument("--firmware", type=Path, help="the .bin to write (without it: say which one to download)")
    p.add_argument("--chip", help="skip detection, e.g. esp32s3")
    p.add_argument("--baud", type=int, default=BAUD, help="write speed (default: %(default)s; try 115200 "
                                                          "if writing fails)")
    p.add_argument("--force", action="store_true", help="flash even a MicroPython older than 1.23")
    p.add_argument("--dry-run", action="store_true", help="check the image and print the commands only")
    return p


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        if args.dry_run:
            if not args.chip or not args.firmware:
                raise FlashError("--dry-run needs --chip and --firmware")
            flash(args.port, args.firmware, args.chip, args.baud, args.force, run=lambda argv: None)
        else:
            flash(args.port, args.firmware, args.chip, args.baud, args.force)
    except FlashError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; flash again before using the board", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
