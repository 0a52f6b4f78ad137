"""tests/esp_image.py builds images esptool itself calls valid, and the
board's head check (firmware/lib/rainmaker/image.py) takes them or refuses
them with the SDK's reasons."""
import subprocess
import sys

import pytest

from rainmaker import bundle, image
from tests import esp_image


def image_info(path, chip=None):
    cmd = [sys.executable, "-m", "esptool"] + (["--chip", chip] if chip else []) + ["image-info", str(path)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout + r.stderr


@pytest.mark.parametrize("chip", sorted(esp_image.CHIPS))
def test_esptool_calls_our_images_valid(chip, tmp_path):
    f = tmp_path / "app.bin"
    f.write_bytes(esp_image.build(chip, version="2.1.0", project="micropython", size=6000))
    rc, out = image_info(f, chip)
    assert rc == 0, out
    assert "Checksum:" in out and "(valid)" in out.split("Checksum:")[1].splitlines()[0]
    assert "(valid)" in out.split("Validation hash:")[1].splitlines()[0]
    assert "App version: 2.1.0" in out and "Project name: micropython" in out
    assert f"Chip ID: {esp_image.CHIPS[chip][0]} " in out


def test_esptool_sees_our_corruption(tmp_path):
    """The helper's checksum and hash are real: esptool notices a flipped byte."""
    data = bytearray(esp_image.build("esp32"))
    data[600] ^= 1
    f = tmp_path / "bad.bin"
    f.write_bytes(bytes(data))
    rc, out = image_info(f, "esp32")
    assert "invalid" in out


@pytest.mark.parametrize("chip", sorted(esp_image.CHIPS))
def test_check_accepts_a_valid_image(chip):
    data = esp_image.build(chip, version="2.0", project="micropython", min_rev=0, max_rev=399)
    assert bundle.kind(data[:1]) == "image"
    assert image.check(data[:image.HEAD], chip, "1.0", "micropython", chip_rev=300) == ("2.0", "micropython")


def test_check_refuses_bad_images():
    good = esp_image.build("esp32", version="2.0")
    cases = [
        (b"\x00" + good[1:], "Not an ESP app image"),
        (esp_image.build("esp32s3", version="2.0"), "Chip mismatch: image is for esp32s3 (chip id 9), this board is esp32 (chip id 0)"),
        (esp_image.build("esp32", version="1.0"), "Same version received"),
        (esp_image.build("esp32", version="2.0", project="other"), "Project Name mismatch"),
        (esp_image.build("esp32", version="2.0", min_rev=301), "Chip revision mismatch"),
        (good[:200], "too short"),
    ]
    for data, reason in cases:
        with pytest.raises(image.ImageError) as e:
            image.check(data[:image.HEAD], "esp32", "1.0", "micropython", chip_rev=100)
        assert reason in str(e.value)


def test_core_test_heads_match_the_helper():
    """tests/core/test_image.py builds heads by hand (it runs on MicroPython too); they agree with this helper."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("core_test_image", esp_image.__file__.replace("esp_image.py", "core/test_image.py"))
    core = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(core)

    full = esp_image.build("esp32", version="1.0.0", project="micropython")
    mine = core.head(chip_id=0, version="1.0.0", project="micropython", seglen=len(full))
    assert full[:24] == mine[:24]  # header
    assert full[32:32 + 144] == mine[32:32 + 144]  # app description up to the ELF hash
