# Test set-up shared by every suite.
#
# Firmware modules import MicroPython-only names (micropython.const). Under
# plain CPython unit tests a minimal stand-in provides them; the simulated
# board (tools/sim) provides the full set when firmware runs end to end.
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "firmware" / "lib"))
sys.path.insert(0, str(ROOT / "tests" / "core"))
sys.path.insert(0, str(ROOT))

if "micropython" not in sys.modules:
    mp = types.ModuleType("micropython")
    mp.const = lambda x: x
    sys.modules["micropython"] = mp


@pytest.fixture(scope="module", params=["cpython", "micropython"])
def backend(request):
    """The board backend of an end-to-end test: the CPython sim, or MicroPython itself
    (the unix port named by $MICROPYTHON, default ../shared/micropython/micropython32)."""
    if request.param == "micropython":
        from tools.sim.mpboard import default_micropython

        if not default_micropython():
            import os

            given = os.environ.get("MICROPYTHON")
            pytest.skip("MICROPYTHON=%s: no such file" % given if given else
                        "no MicroPython unix-port binary: set MICROPYTHON=/path/to/micropython32 "
                        "(default ../shared/micropython/micropython32)")
    return request.param
