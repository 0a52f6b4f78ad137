"""firmware/ type-checks clean against the ESP32 MicroPython stubs, and that check
catches a call that exists only in CPython.

basedpyright runs with the repository's pyrightconfig.json (tools/typecheck.py), which
gives it micropython-esp32-stubs as its whole world: MicroPython's standard library as
the typeshed, no CPython library, no host package. Alone: ``make typecheck``.

Known limits: modules the stubs themselves are written with (typing, abc, enum, ...)
resolve, and the stubs' standard library is a cut-down copy of CPython's typeshed that
still names a few things the board lacks (json.JSONDecodeError, re.fullmatch). Imports
are also held to the board's module list by test_firmware.py.
"""
import shutil

import pytest

from tools import typecheck

ROOT = typecheck.ROOT
CHECKED = [p for p in (ROOT / "firmware").rglob("*.py")
           if "__pycache__" not in p.parts and p.name != "manifest.py"]

# (id, code planted into a copy of the firmware, a name the checker's error must give)
CPYTHON_ONLY = [
    ("os.path", "import os\nos.path.join('certs', 'ca.der')\n", "path"),
    ("time.monotonic", "import time\nt = time.monotonic()\n", "monotonic"),
    ("time.perf_counter", "import time\nt = time.perf_counter()\n", "perf_counter"),
    ("socket.create_connection", "import socket\ns = socket.create_connection(('broker', 8883))\n",
     "create_connection"),
    ("ssl.create_default_context", "import ssl\nctx = ssl.create_default_context()\n", "create_default_context"),
    ("asyncio.get_running_loop", "import asyncio\nloop = asyncio.get_running_loop()\n", "get_running_loop"),
    # In CPython's library and in the checker's own bundled typeshed: neither may leak in.
    ("import subprocess", "import subprocess\n", "subprocess"),
    ("from dataclasses", "from dataclasses import dataclass\n", "dataclasses"),
    # Installed in the host venv, not on the board.
    ("import paho", "import paho.mqtt.client\n", "paho"),
    # The ESP32 stubs are really the ones in use: machine exists, this name does not.
    ("machine.NoSuchThing", "import machine\nx = machine.NoSuchThing\n", "NoSuchThing"),
]

# MicroPython-only APIs the ESP32 stubs know: these must pass.
ESP32_OK = [
    ("machine.Pin", "import machine\nmachine.Pin(2, machine.Pin.OUT).value(1)\n"),
    ("time.ticks", "import time\nt = time.ticks_ms()\nd = time.ticks_diff(time.ticks_ms(), t)\n"),
    ("asyncio.sleep_ms", "import asyncio\n\n\nasync def f():\n    await asyncio.sleep_ms(1)\n"),
    ("esp32.NVS", "import esp32\nnvs = esp32.NVS('rm')\n"),
    ("network.WLAN", "import network\nok = network.WLAN(network.STA_IF).isconnected()\n"),
]


def _module(case_id):
    return "_plant_" + "".join(c if c.isalnum() else "_" for c in case_id) + ".py"


@pytest.fixture(scope="module")
def available():
    try:
        typecheck.checker()
        typecheck.build_stubs()
    except typecheck.Unavailable as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def planted(available, tmp_path_factory):
    """One copy of firmware/ with every case in a module of its own beside the
    agent's, checked in a single run. Returns {module name: [diagnostics]}."""
    project = tmp_path_factory.mktemp("typecheck")
    shutil.copytree(ROOT / "firmware", project / "firmware",
                    ignore=shutil.ignore_patterns("__pycache__"))
    typecheck.write_config(project)
    pkg = project / "firmware" / "lib" / "rainmaker"
    for case_id, code, *_ in CPYTHON_ONLY + ESP32_OK:
        (pkg / _module(case_id)).write_text(code)
    diags, summary = typecheck.check(project)
    assert summary.get("filesAnalyzed", 0) >= len(CHECKED) + len(CPYTHON_ONLY) + len(ESP32_OK)
    by_file = {}
    for d in diags:
        by_file.setdefault(d["file"].rsplit("/", 1)[-1], []).append(d)
    return by_file


def test_firmware_is_clean_against_esp32_stubs(available):
    diags, summary = typecheck.check(ROOT)
    assert not diags, "firmware/ fails the type check against the ESP32 stubs:\n" + "\n".join(
        typecheck.format_diag(d) for d in diags)
    # The config really covers the firmware (an include that matched nothing would pass too).
    assert summary.get("filesAnalyzed", 0) >= len(CHECKED)


@pytest.mark.parametrize("case_id,code,name", CPYTHON_ONLY, ids=[c[0] for c in CPYTHON_ONLY])
def test_cpython_only_call_fails_the_check(planted, case_id, code, name):
    errors = [d for d in planted.get(_module(case_id), []) if d["severity"] == "error"]
    assert errors, "the checker let %r through" % code
    assert any(name in d["message"] for d in errors), [d["message"] for d in errors]


@pytest.mark.parametrize("case_id,code", ESP32_OK, ids=[c[0] for c in ESP32_OK])
def test_esp32_api_passes_the_check(planted, case_id, code):
    diags = planted.get(_module(case_id), [])
    assert not diags, "\n".join(typecheck.format_diag(d) for d in diags)
