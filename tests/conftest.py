# Test set-up shared by every suite.
#
# Firmware modules import MicroPython-only names (micropython.const). Under
# plain CPython unit tests a minimal stand-in provides them; the simulated
# board (tools/sim) provides the full set when firmware runs end to end.
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "firmware" / "lib"))
sys.path.insert(0, str(ROOT / "tests" / "core"))
sys.path.insert(0, str(ROOT))

if "micropython" not in sys.modules:
    mp = types.ModuleType("micropython")
    mp.const = lambda x: x
    sys.modules["micropython"] = mp
