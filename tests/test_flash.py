"""Flashing without a board: chips, offsets, image checks, the esptool commands, and errors.

test_hil_* at the end needs a real board: make hil PORT=/dev/ttyUSB0 [FIRMWARE=...bin]
(skipped unless RM_HIL_PORT is set).
"""
import os
import struct
import time
import tty

import pytest

from tools import flash

# Every chip the agent supports, with MicroPython's bootloader offset (board.json
# of ESP32_GENERIC*) and the esptool --chip name.
EXPECTED = {
    "ESP32": (0x1000, "esp32", "xtensawin"),
    "ESP32-S2": (0x1000, "esp32s2", "xtensawin"),
    "ESP32-S3": (0x0, "esp32s3", "xtensawin"),
    "ESP32-C2": (0x0, "esp32c2", "rv32imc"),
    "ESP32-C3": (0x0, "esp32c3", "rv32imc"),
    "ESP32-C6": (0x0, "esp32c6", "rv32imc"),
    "ESP32-H2": (0x0, "esp32h2", "rv32imc"),
    "ESP32-C5": (0x2000, "esp32c5", "rv32imc"),
    "ESP32-P4": (0x2000, "esp32p4", "rv32imc"),
}


def make_image(path, chip="ESP32", ota=True, version="v1.24.1", app_only=False):
    """A minimal MicroPython-shaped firmware image: bootloader header (chip id), partition
    table at flash 0x8000, app image with an esp_app_desc_t holding the version."""
    boot = flash.offset_for(chip)
    data = bytearray(b"\xff" * (0x10000 - boot + 0x200))
    chip_id = flash.CHIPS[chip][2]
    # esp_image_header_t: magic, segments, flash mode, size/freq, entry, extended header (chip id at 12)
    header = struct.pack("<BBBBIBBBBHBHH4sB", 0xE9, 1, 2, 0x20, 0x40080000, 0xEE, 0, 0, 0,
                         chip_id, 0, 0, 0xFFFF, b"\0" * 4, 1)
    data[0:len(header)] = header
    parts = [("nvs", 1, 2, 0x9000, 0x4000), ("otadata", 1, 0, 0xD000, 0x2000), ("phy_init", 1, 1, 0xF000, 0x1000)]
    parts += ([("ota_0", 0, 0x10, 0x10000, 0x180000), ("ota_1", 0, 0x11, 0x190000, 0x180000)] if ota
              else [("factory", 0, 0, 0x10000, 0x1F0000)])
    at = 0x8000 - boot
    for i, (label, ptype, sub, off, size) in enumerate(parts):
        entry = b"\xaa\x50" + struct.pack("<BBII", ptype, sub, off, size) + label.encode().ljust(16, b"\0") + b"\0" * 4
        data[at + 32 * i:at + 32 * (i + 1)] = entry
    app = 0x10000 - boot
    data[app:app + len(header)] = header
    desc = app + 32
    data[desc:desc + 16] = struct.pack("<IIII", 0xABCD5432, 0, 0, 0)
    data[desc + 16:desc + 48] = version.encode().ljust(32, b"\0")
    data[desc + 48:desc + 80] = b"micropython".ljust(32, b"\0")
    if app_only:
        data = data[app:] + b"\xff" * 0x8000
    path.write_bytes(bytes(data))
    return path


class Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, argv):
        self.calls.append(argv)


def detect(chip):
    return lambda port: {"chip": chip, "mac": "240AC4A1B2C3"}


# ---------------------------------------------------------------- chips and commands

@pytest.mark.parametrize("chip", sorted(EXPECTED))
def test_offset_chip_name_and_arch_for_every_supported_chip(chip):
    offset, esptool_name, arch = EXPECTED[chip]
    assert flash.offset_for(chip) == offset
    assert flash.offset_for(esptool_name) == offset
    assert flash.arch_for(chip) == arch
    assert flash.flash_commands(chip, "/dev/ttyUSB0", "fw.bin") == [
        ["--chip", esptool_name, "--port", "/dev/ttyUSB0", "--baud", "460800", "erase-flash"],
        ["--chip", esptool_name, "--port", "/dev/ttyUSB0", "--baud", "460800", "write-flash", hex(offset), "fw.bin"],
        ["--chip", esptool_name, "--port", "/dev/ttyUSB0", "--baud", "460800", "verify-flash", hex(offset), "fw.bin"],
    ]


def test_chips_match_esptool_definitions():
    from esptool.targets import CHIP_DEFS

    for name, (esptool_name, offset, image_id, _, _) in flash.CHIPS.items():
        cls = CHIP_DEFS[esptool_name]
        assert cls.CHIP_NAME == name and cls.IMAGE_CHIP_ID == image_id


def test_unsupported_chip_is_refused():
    with pytest.raises(flash.FlashError, match="ESP8266 is not a chip this agent supports"):
        flash.offset_for("ESP8266")


# ---------------------------------------------------------------- images

@pytest.mark.parametrize("chip", sorted(EXPECTED))
def test_image_analysis(tmp_path, chip):
    info = flash.analyze_image(make_image(tmp_path / "fw.bin", chip))
    assert info.chip == chip and info.version == (1, 24, 1) and info.project == "micropython"
    assert [p[0] for p in info.ota_slots] == ["ota_0", "ota_1"]


def test_flash_runs_erase_write_verify_at_the_chip_offset(tmp_path):
    img = make_image(tmp_path / "ESP32_GENERIC_S3-v1.24.1.bin", "ESP32-S3", ota=False)
    run, said = Recorder(), []
    flash.flash("/dev/ttyACM0", img, run=run, detect=detect("ESP32-S3"), say=said.append)
    assert [c[6] for c in run.calls] == ["erase-flash", "write-flash", "verify-flash"]
    assert run.calls[1][-2:] == ["0x0", str(img)]
    assert any("no stock MicroPython OTA build for ESP32-S3" in s for s in said)
    assert said[-1].startswith("done:") and "make deploy PORT=/dev/ttyACM0" in said[-1]


def test_image_for_another_chip_is_refused_before_erasing(tmp_path):
    img = make_image(tmp_path / "ESP32_GENERIC_C3.bin", "ESP32-C3")
    run = Recorder()
    with pytest.raises(flash.FlashError, match="built for ESP32-C3, but the board is an ESP32; download "
                                               "ESP32_GENERIC-OTA"):
        flash.flash("/dev/ttyUSB0", img, run=run, detect=detect("ESP32"), say=lambda s: None)
    assert run.calls == []


def test_image_without_ota_partitions_warns_and_names_the_download(tmp_path):
    img = make_image(tmp_path / "ESP32_GENERIC-v1.24.1.bin", "ESP32", ota=False)
    said = []
    flash.flash("/dev/ttyUSB0", img, run=Recorder(), detect=detect("ESP32"), say=said.append)
    warning = [s for s in said if s.startswith("warning:")]
    assert len(warning) == 1 and "no OTA partitions" in warning[0]
    assert "ESP32_GENERIC-OTA" in warning[0] and "micropython.org/download/ESP32_GENERIC/" in warning[0]
    said.clear()
    flash.flash("/dev/ttyUSB0", make_image(tmp_path / "ota.bin"), run=Recorder(), detect=detect("ESP32"),
                say=said.append)
    assert not [s for s in said if s.startswith("warning:")]


def test_micropython_too_old_is_refused(tmp_path):
    img = make_image(tmp_path / "old.bin", "ESP32", version="v1.22.2")
    run = Recorder()
    with pytest.raises(flash.FlashError, match=r"MicroPython v1\.22\.2, too old for the agent \(needs >= 1\.23\)"):
        flash.flash("/dev/ttyUSB0", img, run=run, detect=detect("ESP32"), say=lambda s: None)
    assert run.calls == []
    flash.flash("/dev/ttyUSB0", img, force=True, run=run, detect=detect("ESP32"), say=lambda s: None)
    assert len(run.calls) == 3


def test_app_only_and_non_images_are_refused(tmp_path):
    with pytest.raises(flash.FlashError, match=r"application-only image \(\.app-bin"):
        flash.analyze_image(make_image(tmp_path / "fw.app-bin", app_only=True), "ESP32")
    (tmp_path / "notes.txt").write_bytes(b"hello" * 10000)
    with pytest.raises(flash.FlashError, match="not an ESP32 firmware image"):
        flash.analyze_image(tmp_path / "notes.txt")
    with pytest.raises(flash.FlashError, match="cannot read the firmware image"):
        flash.analyze_image(tmp_path / "missing.bin")


def test_no_image_says_which_file_to_download():
    with pytest.raises(flash.FlashError, match="ESP32_GENERIC_C6-<date>.*micropython.org/download/ESP32_GENERIC_C6/"):
        flash.flash("/dev/ttyUSB0", None, run=Recorder(), detect=detect("ESP32-C6"), say=lambda s: None)


def test_cli_dry_run_and_one_line_errors(tmp_path, capsys):
    img = make_image(tmp_path / "fw.bin", "ESP32")
    assert flash.main(["--port", "/dev/ttyUSB0", "--chip", "esp32", "--firmware", str(img), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"esptool --chip esp32 --port /dev/ttyUSB0 --baud 460800 write-flash 0x1000 {img}" in out
    assert flash.main(["--port", "/dev/ttyUSB0", "--chip", "esp32s3", "--firmware", str(img), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: fw.bin is built for ESP32, but the board is an ESP32-S3") and err.count("\n") == 1


# ---------------------------------------------------------------- errors at the port (real esptool)

def test_wrong_port(tmp_path):
    with pytest.raises(flash.FlashError, match="no board on .*ttyUSB5: the port does not exist"):
        flash.probe_chip(str(tmp_path / "ttyUSB5"), attempts=1)


@pytest.fixture
def pty():
    master, slave = os.openpty()
    tty.setraw(slave)
    yield os.ttyname(slave)
    os.close(master)
    os.close(slave)


def test_busy_port(pty):
    import serial

    holder = serial.Serial(pty, exclusive=True)  # e.g. make repl in another terminal
    try:
        with pytest.raises(flash.FlashError, match="is busy: another program has it open"):
            flash.probe_chip(pty, attempts=1)
    finally:
        holder.close()


def test_port_where_no_esp_answers(pty):
    t0 = time.monotonic()
    with pytest.raises(flash.FlashError, match="no ESP chip answered .* hold BOOT"):
        flash.probe_chip(pty, attempts=1)
    assert time.monotonic() - t0 < 15


# ---------------------------------------------------------------- hardware in the loop

HIL_PORT = os.environ.get("RM_HIL_PORT")


@pytest.mark.skipif(not HIL_PORT, reason="no board: run make hil PORT=/dev/ttyUSB0 [FIRMWARE=...bin]")
def test_hil_flash_deploy_and_node_online():
    """Flash (if RM_HIL_FIRMWARE), deploy with the board's identity, wait for 'online'.

    The board must reach a broker: an identity in .cloud/identities for its node id
    whose broker is reachable from the board (an ESP RainMaker claim, or a broker on
    the LAN via RM_HIL_MQTT_HOST), and Wi-Fi via RM_HIL_WIFI_SSID / RM_HIL_WIFI_PASSWORD
    unless the board is provisioned. The local broker of make sim listens on
    127.0.0.1 only and cannot serve a real board.
    """
    from tools import deploy as dep
    from tools.transport import SerialBoard

    firmware = os.environ.get("RM_HIL_FIRMWARE")
    if firmware:
        flash.flash(HIL_PORT, firmware)
        time.sleep(3)  # first boot formats the filesystem
    args = dep._parser().parse_args(["--port", HIL_PORT] + (
        ["--mqtt-host", os.environ["RM_HIL_MQTT_HOST"]] if os.environ.get("RM_HIL_MQTT_HOST") else []) + (
        ["--wifi-ssid", os.environ["RM_HIL_WIFI_SSID"]] if os.environ.get("RM_HIL_WIFI_SSID") else []))
    args.wifi_password = os.environ.get("RM_HIL_WIFI_PASSWORD", "")
    with SerialBoard(HIL_PORT) as board:
        files, _ = dep.board_bundle(board, args)
        result = dep.deploy(board, bundle=files, log_seconds=float(os.environ.get("RM_HIL_WAIT", "90")))
    assert any("online as" in line for line in result.log), "\n".join(result.log[-20:])
