"""The simulated board's runtime: state shared by every shim module.

One Runtime object is one ESP32 board. It owns
  * the board clock (ticks with ESP32 wrap-around, the RTC),
  * the Wi-Fi driver state and the "link gate" that cuts TCP when Wi-Fi is down,
  * the pin registry,
  * a watcher thread that polls the air / pins files and runs driver timers,
  * the firmware-facing module objects (``self.modules``) and the import hook
    that hands them to firmware code instead of CPython's modules.

Isolation model: firmware code never sees CPython's ``time``/``os``/``socket``/
``ssl``/``asyncio`` modules. Every module file that lives in BOARD_DIR is loaded
with a ``__builtins__`` of our own (``self.builtins``) whose ``__import__``
serves the shims. CPython's own modules keep using the real ones, so nothing
global is monkey-patched except additive names (``sys.print_exception``,
``gc.mem_free``...) and the asyncio event-loop policy.
"""

import builtins as _builtins
import errno as _errno
import gc as _gc
import importlib.abc
import importlib.machinery
import os
import sys
import threading
import time as _time
import traceback as _traceback
import types
import weakref

VERSION = "1.27.0"
VERSION_DATE = "2025-12-10"
MACHINE = "ESP32 module (simulated) with ESP32"
EPOCH_2000 = 946684800  # seconds between 1970-01-01 and 2000-01-01

# reset causes, values of machine.*_RESET on the esp32 port
PWRON_RESET, HARD_RESET, WDT_RESET, DEEPSLEEP_RESET, SOFT_RESET = 1, 2, 3, 4, 5
_CAUSE_NAMES = {
    "PWRON_RESET": PWRON_RESET,
    "HARD_RESET": HARD_RESET,
    "WDT_RESET": WDT_RESET,
    "DEEPSLEEP_RESET": DEEPSLEEP_RESET,
    "SOFT_RESET": SOFT_RESET,
}

_TICKS_PERIOD = 1 << 30  # MICROPY_PY_TIME_TICKS_PERIOD on esp32 (small-int range)

# Module names that exist on a stock ESP32_GENERIC v1.27 firmware.
# C modules: always win over files on the filesystem.
C_MODULES = {
    "array", "binascii", "builtins", "cmath", "collections", "errno", "gc", "hashlib",
    "heapq", "io", "json", "machine", "math", "micropython", "network", "os", "platform",
    "random", "re", "select", "socket", "struct", "sys", "time", "tls", "uctypes", "esp",
    "esp32", "_thread", "cryptolib", "deflate", "bluetooth", "framebuf", "btree", "vfs",
    "_onewire", "_espnow", "_webrepl", "_asyncio",
}
# Frozen Python modules: a file in the filesystem root shadows them, /lib does not.
FROZEN_MODULES = {
    "asyncio", "uasyncio", "ssl", "ntptime", "neopixel", "onewire", "ds18x20", "dht",
    "espnow", "aioespnow", "requests", "urequests", "umqtt", "mip", "webrepl",
    "webrepl_setup", "upysh", "inisetup", "flashbdev", "_boot", "apa106",
}
# Names served by CPython's own module (semantics close enough, see README).
PASSTHROUGH = {"array", "builtins", "cmath", "gc", "heapq", "io", "math",
               "platform", "random", "re", "sys", "_thread"}

# Builtins that do not exist in MicroPython (docs/micropython.md#missing-builtins):
# OSError subclasses, the builtin TimeoutError, exception groups. Firmware that
# names them dies with NameError on the board, so it does here too.
_REMOVED_BUILTINS = (
    "FileNotFoundError", "FileExistsError", "PermissionError", "IsADirectoryError",
    "NotADirectoryError", "ConnectionError", "ConnectionResetError",
    "ConnectionAbortedError", "ConnectionRefusedError", "BrokenPipeError", "TimeoutError",
    "InterruptedError", "BlockingIOError", "ChildProcessError", "ProcessLookupError",
    "ExceptionGroup", "BaseExceptionGroup", "EncodingWarning",
)

_current = None  # the installed Runtime (one per process in practice)
time_monotonic = _time.monotonic


def current():
    return _current


class MPOSError(OSError):
    """MicroPython has one OSError class. CPython's OSError(errno, msg) turns itself into
    FileNotFoundError, ConnectionResetError, TimeoutError...; a subclass does not, so the
    errors the board raises print as "OSError: [Errno 2] ENOENT" like on the device."""


MPOSError.__name__ = MPOSError.__qualname__ = "OSError"
MPOSError.__module__ = "builtins"


def oserror(code, msg=None):
    """OSError the way MicroPython builds it: args (errno, 'ENAME')."""
    return MPOSError(code, msg or _errno.errorcode.get(code, str(code)))


def plain_oserror(e):
    """Turn CPython's OSError subclasses into MicroPython's one OSError, same errno."""
    if type(e) is MPOSError or (type(e) is OSError and e.errno is None):
        return e
    if isinstance(e, TimeoutError) and e.errno is None:
        return oserror(_errno.ETIMEDOUT)
    if e.errno is not None:
        return oserror(e.errno)
    return MPOSError(*e.args)


# ---------------------------------------------------------------------------
# clock


class BoardClock:
    """ticks_ms/us with the ESP32 period (2**30) and an RTC in 2000-epoch seconds.

    ticks start ``wrap_s`` seconds before their first wrap, so any firmware that
    compares ticks with ``<`` instead of ticks_diff() breaks within a minute.
    """

    def __init__(self, wrap_s=60.0, rtc=None):
        self.t0 = _time.monotonic_ns()
        self.off_ms = (_TICKS_PERIOD - int(wrap_s * 1000)) % _TICKS_PERIOD
        self.off_us = (_TICKS_PERIOD - int(wrap_s * 1000000)) % _TICKS_PERIOD
        self._rtc_base = 0.0 if rtc is None else float(rtc)  # 2000-epoch seconds
        self._rtc_mono = _time.monotonic()

    def ticks_ms(self):
        return ((_time.monotonic_ns() - self.t0) // 1000000 + self.off_ms) & (_TICKS_PERIOD - 1)

    def ticks_us(self):
        return ((_time.monotonic_ns() - self.t0) // 1000 + self.off_us) & (_TICKS_PERIOD - 1)

    def now(self):
        """Board wall clock, float seconds since 2000-01-01 (what time.time() counts)."""
        return self._rtc_base + (_time.monotonic() - self._rtc_mono)

    def set(self, secs2000):
        self._rtc_base = float(secs2000)
        self._rtc_mono = _time.monotonic()


# ---------------------------------------------------------------------------
# link gate: the board's TCP stack


class NetGate:
    """Blocks outbound TCP without Wi-Fi and kills the board's sockets on link loss.

    When the link drops, the sockets that were connected first *stall* (nothing comes
    in, what the board writes goes nowhere, as with a dead radio) and are aborted
    ``abort_after_ms`` later (air.json, default 1000; 0 = at once): from then on every
    operation raises ECONNABORTED. So the Wi-Fi driver reports the loss before TCP
    does, like on the board. The peer is NOT told (a board without Wi-Fi cannot send a
    FIN): the connection is kept half-open by holding a duplicate descriptor, so a
    broker only notices through its keep-alive, as with real hardware.
    """

    LIMBO_MAX = 64

    def __init__(self, rt):
        self.rt = rt
        self._tracked = weakref.WeakSet()
        self._stalled = weakref.WeakSet()
        self._abort_due = None
        self._limbo = []
        self._lock = threading.Lock()
        rt.add_hook(self._poll)

    def link_lost(self, delay_s):
        """The STA lost its IP: stall the connected sockets, abort them after delay_s."""
        with self._lock:
            for s in self._tracked:
                self._stalled.add(s)
            self._tracked = weakref.WeakSet()
            if self._abort_due is None:
                self._abort_due = time_monotonic() + max(0.0, delay_s)
        if delay_s <= 0:
            self._poll(time_monotonic())

    def _poll(self, now):
        with self._lock:
            if self._abort_due is None or now < self._abort_due:
                return
            self._abort_due = None
            socks = list(self._stalled)
            self._stalled = weakref.WeakSet()
        for s in socks:
            self._abort(s)

    def is_stalled(self, sock):
        return sock in self._stalled

    def link_up(self):
        w = self.rt.wifi
        return w is not None and w.sta_has_ip()

    def track(self, sock):
        with self._lock:
            self._tracked.add(sock)

    def untrack(self, sock):
        with self._lock:
            self._tracked.discard(sock)
            stalled = sock in self._stalled
            self._stalled.discard(sock)
        if stalled:
            # Closed while the radio is down: the FIN could never leave the
            # board, so the peer must not see one. Keep the connection
            # half-open, as an abort does.
            self._abort(sock)

    def _abort(self, s):
        import socket as _socket

        try:
            fd = s.fileno()
        except Exception:
            return
        if fd < 0:
            return
        s._sim_aborted = True
        try:
            dup = os.dup(fd)
            with self._lock:
                self._limbo.append(dup)
                while len(self._limbo) > self.LIMBO_MAX:
                    try:
                        os.close(self._limbo.pop(0))
                    except OSError:
                        pass
        except OSError:
            pass
        try:
            # wakes a thread blocked in recv(); SHUT_RD sends nothing to the peer
            _socket.socket.shutdown(s, _socket.SHUT_RD)
        except OSError:
            pass
        self.rt.io.wake_fd(fd)

    def keep_across_exec(self):
        """On reset the board's connections vanish silently: keep them half-open."""
        with self._lock:
            fds = list(self._limbo)
            for s in list(self._tracked) + list(self._stalled):
                try:
                    fd = s.fileno()
                    if fd >= 0:
                        fds.append(fd)
                except Exception:
                    pass
        for fd in fds:
            try:
                os.set_inheritable(fd, True)
            except OSError:
                pass

    def close(self):
        with self._lock:
            for fd in self._limbo:
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._limbo = []


class IORegistry:
    """Waiters of the MicroPython-style streams: fd -> futures, per event loop.

    Several tasks may wait on one descriptor (a TLS reader and a TLS writer that
    both need the socket readable), so one loop reader/writer callback wakes them all,
    reading tasks first: MicroPython's IOQueue pushes a socket's reader task before
    its writer task when poll() reports it, which decides who sees a TLS error first.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._waiters = {}  # fd -> [loop, [(prio, fut)] for read, [(prio, fut)] for write]

    async def wait(self, sock_fd, write, prio=0):
        import asyncio as _aio

        loop = _aio.get_running_loop()
        fut = loop.create_future()
        with self._lock:
            ent = self._waiters.get(sock_fd)
            if ent is None or ent[0] is not loop:
                ent = [loop, [], []]
                self._waiters[sock_fd] = ent
            waiters = ent[2] if write else ent[1]
            first = not waiters
            waiters.append((prio, fut))
        if first:
            try:
                if write:
                    loop.add_writer(sock_fd, self._ready, sock_fd, True)
                else:
                    loop.add_reader(sock_fd, self._ready, sock_fd, False)
            except (OSError, ValueError):
                self._ready(sock_fd, write)
        try:
            await fut
        finally:
            with self._lock:
                ent = self._waiters.get(sock_fd)
                if ent is not None:
                    lst = ent[2] if write else ent[1]
                    lst[:] = [w for w in lst if w[1] is not fut]

    def _ready(self, fd, write):
        with self._lock:
            ent = self._waiters.get(fd)
            if ent is None:
                return
            loop = ent[0]
            waiters = ent[2] if write else ent[1]
            futs = [f for _, f in sorted(waiters, key=lambda w: w[0])]
            waiters.clear()
            if not ent[1] and not ent[2]:
                del self._waiters[fd]
        try:
            if write:
                loop.remove_writer(fd)
            else:
                loop.remove_reader(fd)
        except Exception:
            pass
        for f in futs:
            if not f.done():
                f.set_result(None)

    def forget_fd(self, fd):
        """A descriptor is about to be closed: drop its loop callbacks now (its number
        can be reused at once), waking the waiters so their next call fails."""
        import asyncio as _aio

        with self._lock:
            ent = self._waiters.get(fd)
            loop = ent[0] if ent else None
        if loop is None:
            return
        if _aio._get_running_loop() is loop:
            self._ready(fd, False)
            self._ready(fd, True)
        else:
            self.wake_fd(fd)

    def wake_fd(self, fd):
        """Wake every waiter of fd (any thread), e.g. on link abort or close."""
        with self._lock:
            ent = self._waiters.get(fd)
            loop = ent[0] if ent else None
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._ready, fd, False)
            loop.call_soon_threadsafe(self._ready, fd, True)
        except RuntimeError:
            pass  # loop closed


# ---------------------------------------------------------------------------
# scheduler: micropython.schedule() and pin IRQs


class Scheduler:
    DEPTH = 8  # MICROPY_SCHEDULER_DEPTH

    def __init__(self, rt):
        self.rt = rt
        self.loops = weakref.WeakSet()
        self._lock = threading.Lock()
        self._pending = 0
        self._queue = []
        self._cv = threading.Condition(self._lock)
        self._thread = None
        self._stop = False

    def running_loop(self):
        for lp in list(self.loops):
            try:
                if lp.is_running() and not lp.is_closed():
                    return lp
            except Exception:
                pass
        return None

    def schedule(self, fn, arg, strict_depth=True):
        with self._lock:
            if self._pending >= self.DEPTH:
                if strict_depth:
                    raise RuntimeError("schedule queue full")
                return False
            self._pending += 1
        loop = self.running_loop()
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._run, fn, arg)
                return True
            except RuntimeError:
                pass
        with self._cv:
            self._queue.append((fn, arg))
            if self._thread is None:
                self._thread = threading.Thread(target=self._worker, name="sim-sched", daemon=True)
                self._thread.start()
            self._cv.notify()
        return True

    def _run(self, fn, arg):
        with self._lock:
            self._pending -= 1
        try:
            fn(arg)
        except BaseException as e:  # MicroPython prints the traceback and carries on
            self.rt.print_exception(e)

    def _worker(self):
        while True:
            with self._cv:
                while not self._queue and not self._stop:
                    self._cv.wait(0.5)
                if self._stop:
                    return
                fn, arg = self._queue.pop(0)
            self._run(fn, arg)

    def stop(self):
        with self._cv:
            self._stop = True
            self._cv.notify_all()


# ---------------------------------------------------------------------------
# import machinery for firmware files


class _BoardLoader(importlib.machinery.SourceFileLoader):
    rt = None

    def exec_module(self, module):
        module.__dict__["__builtins__"] = self.rt.builtins
        super().exec_module(module)


class _BoardFinder(importlib.abc.MetaPathFinder):
    """Loads modules that live in BOARD_DIR with the board's builtins."""

    def __init__(self, rt):
        self.rt = rt
        self.loader_cls = type("BoardLoader", (_BoardLoader,), {"rt": rt})

    def find_spec(self, name, path, target=None):
        rt = self.rt
        if path is None:
            # only for imports made by firmware code (through Runtime._import): CPython's
            # own imports must never pick up a firmware file that shares a stdlib name
            if not getattr(rt._tl, "board_import", False):
                return None
            search = [rt.board_dir, os.path.join(rt.board_dir, "lib")]
        else:
            search = [p for p in path if rt.in_board(p)]
            if not search:
                return None
        spec = importlib.machinery.PathFinder.find_spec(name, search)
        if spec is None or spec.origin is None or not rt.in_board(spec.origin):
            if spec is not None and spec.submodule_search_locations is not None and spec.origin is None:
                return spec  # namespace package inside the board
            return None
        if isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            spec.loader = self.loader_cls(spec.loader.name, spec.loader.path)
        elif isinstance(spec.loader, importlib.machinery.SourcelessFileLoader):
            raise ImportError("sim: %s is compiled for CPython, deploy .py sources" % spec.origin)
        return spec


# ---------------------------------------------------------------------------


class Runtime:
    def __init__(self, board_dir, air=None, mac=None, pins=None, pins_out=None,
                 ticks_wrap_s=60.0, rtc=None, strict=True, fs_size=960 * 1024,
                 port_map=None, reset_cause=PWRON_RESET, argv=None, assoc_s=0.3, chip="esp32", flash=None,
                 fs_delay_ms=0):
        from .mpy.simworld import chip as _chip

        self.chip = _chip.check(chip)  # "esp32", "esp32c3"...: os.uname(), esp32, valid pins
        self.machine = _chip.machine(chip)
        self.board_dir = os.path.realpath(board_dir)
        parent = os.path.dirname(self.board_dir)
        self.air_path = os.path.abspath(air) if air else os.path.join(parent, "air.json")
        self.pins_path = os.path.abspath(pins) if pins else os.path.join(parent, "pins.json")
        self.pins_out_path = (os.path.abspath(pins_out) if pins_out
                              else os.path.join(parent, "pins_out.json"))
        self.mac = _parse_mac(mac) if mac else _default_mac(self.board_dir)
        self.clock = BoardClock(ticks_wrap_s, rtc)
        self.strict = strict
        self.fs_size = fs_size
        self.fs_delay = fs_delay_ms / 1000  # s each filesystem change takes (--fs-delay)
        self.port_map = dict(port_map or {})
        self.reset_cause = reset_cause
        self.argv = argv  # for machine.reset(): re-exec with the same arguments
        self.assoc_s = assoc_s
        self.flash = flash  # simworld.flash.Flash, booted; None: made on first use of esp32.Partition
        self._hooks = []
        self.net = NetGate(self)
        self.io = IORegistry()
        self.sched = Scheduler(self)
        self.wifi = None  # set by mp_network
        self.modules = {}
        self.builtins = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._watcher = None
        self._undo = []
        self._finder = None
        self._tl = threading.local()
        self.installed = False

    # -- helpers ------------------------------------------------------------

    def in_board(self, path):
        p = os.path.realpath(path)
        return p == self.board_dir or p.startswith(self.board_dir + os.sep)

    def board_path(self, path):
        """Map a board path ('/certs/ca.der' or relative) to a host path."""
        if isinstance(path, bytes):
            path = path.decode()
        if isinstance(path, str) and path.startswith("/"):
            return os.path.join(self.board_dir, path.lstrip("/"))
        return path

    def add_hook(self, fn):
        self._hooks.append(fn)

    def wake_watcher(self):
        self._wake.set()

    # -- install ------------------------------------------------------------

    def install(self):
        global _current
        if self.installed:
            return self
        # Import every host module the shims need *before* anything else, so
        # they bind to CPython's real modules.
        import asyncio  # noqa: F401
        import json  # noqa: F401
        import socket  # noqa: F401
        import ssl  # noqa: F401
        import tempfile  # noqa: F401

        from . import mp_asyncio, mp_machine, mp_misc, mp_network, mp_os, mp_socket, mp_ssl, mp_time

        _current = self
        mods = self.modules
        mods["time"] = mp_time.make(self)
        mods["os"] = mp_os.make(self)
        mods["socket"] = mp_socket.make(self)
        mods["select"] = mp_misc.make_select(self)
        mods["tls"], mods["ssl"] = mp_ssl.make(self)
        mods["asyncio"] = mp_asyncio.make(self)
        mods["uasyncio"] = mods["asyncio"]
        mods["network"] = mp_network.make(self)
        mods["machine"] = mp_machine.make(self)
        mods["micropython"] = mp_misc.make_micropython(self)
        mods["esp32"] = mp_misc.make_esp32(self)
        mods["esp"] = mp_misc.make_esp(self)
        mods["ntptime"] = mp_misc.make_ntptime(self)
        mods["json"] = mp_misc.make_json(self)
        mods["hashlib"] = mp_misc.make_hashlib(self)
        mods["cryptolib"] = mp_misc.make_cryptolib(self)
        mods["struct"] = mp_misc.view("struct", "calcsize pack pack_into unpack unpack_from", self)
        mods["binascii"] = mp_misc.view("binascii", "hexlify unhexlify a2b_base64 b2a_base64 crc32", self)
        mods["collections"] = mp_misc.view("collections", "deque namedtuple OrderedDict", self)
        mods["errno"] = mp_misc.make_errno(self)

        self._patch(sys, "print_exception", self.print_exception)
        self._patch(_gc, "mem_free", mp_misc.gc_mem_free)
        self._patch(_gc, "mem_alloc", mp_misc.gc_mem_alloc)
        self._patch(_gc, "threshold", mp_misc.gc_threshold)
        mp_asyncio.install_policy(self)

        self.builtins = self._make_builtins()
        self._finder = _BoardFinder(self)
        sys.meta_path.insert(0, self._finder)

        self._watcher = threading.Thread(target=self._watch, name="sim-watcher", daemon=True)
        self._watcher.start()
        self.installed = True
        return self

    def _patch(self, obj, name, value):
        missing = object()
        old = getattr(obj, name, missing)
        self._undo.append((obj, name, old, missing))
        setattr(obj, name, value)

    def uninstall(self):
        """Undo install() (for in-process tests): stop threads, restore patches."""
        global _current
        if not self.installed:
            return
        self._stop.set()
        self._wake.set()
        if self._watcher is not None:
            self._watcher.join(2)
        self.sched.stop()
        if self.wifi is not None:
            self.wifi.shutdown()
        self.net.close()
        for obj, name, old, missing in reversed(self._undo):
            if old is missing:
                try:
                    delattr(obj, name)
                except AttributeError:
                    pass
            else:
                setattr(obj, name, old)
        self._undo = []
        from . import mp_asyncio

        mp_asyncio.uninstall_policy(self)
        if self._finder in sys.meta_path:
            sys.meta_path.remove(self._finder)
        for name in list(sys.modules):
            m = sys.modules[name]
            f = getattr(m, "__file__", None)
            if f and self.in_board(f):
                del sys.modules[name]
        self.installed = False
        if _current is self:
            _current = None

    # -- watcher thread -----------------------------------------------------

    def _watch(self):
        while not self._stop.is_set():
            now = _time.monotonic()
            for fn in list(self._hooks):
                try:
                    fn(now)
                except Exception as e:  # never let the board's "hardware" die
                    sys.stderr.write("sim: watcher hook %r failed: %r\n" % (fn, e))
            self._wake.wait(0.05)
            self._wake.clear()

    # -- builtins and imports ------------------------------------------------

    def _make_builtins(self):
        b = dict(_builtins.__dict__)
        if self.strict:
            for n in _REMOVED_BUILTINS:
                b.pop(n, None)
        real_open = _builtins.open
        real_print = _builtins.print
        rt = self

        def open(file, mode="r", *args, **kw):  # noqa: A001 - the board's open()
            try:
                return real_open(rt.board_path(file), mode, *args, **kw)
            except OSError as e:
                raise plain_oserror(e) from None

        def print(*args, sep=" ", end="\n", file=None):  # noqa: A001 - no flush= on MicroPython
            real_print(*args, sep=sep, end=end, file=file)

        b["open"] = open
        b["print"] = print
        b["__import__"] = self._import
        return b

    def _board_has(self, name, sub=""):
        base = os.path.join(self.board_dir, sub, name)
        return os.path.isfile(base + ".py") or os.path.isdir(base)

    def _host_import(self, board, *args):
        prev = getattr(self._tl, "board_import", False)
        self._tl.board_import = board
        try:
            return _builtins.__import__(*args)
        finally:
            self._tl.board_import = prev

    def _import(self, name, globals=None, locals=None, fromlist=(), level=0):
        if level:
            return self._host_import(True, name, globals, locals, fromlist, level)
        top = name.partition(".")[0]
        mod = self.resolve_top(top)
        if mod is None:  # a firmware module in BOARD_DIR
            cached = sys.modules.get(top)
            f = getattr(cached, "__file__", None) if cached is not None else None
            if cached is not None and not (f and self.in_board(f)) and f is not None:
                raise ImportError("sim: firmware module %r collides with the host module %s"
                                  % (top, f))
            return self._host_import(True, name, globals, locals, fromlist, level)
        if name != top:
            # e.g. "os.path": a submodule of a C module does not exist on the board
            if self.strict:
                raise ImportError("no module named '%s'" % name)
            return self._host_import(False, name, globals, locals, fromlist, level)
        return mod

    def resolve_top(self, top):
        """Module object for a top-level import, or None for a firmware file."""
        if top in self.modules and top in C_MODULES:
            return self.modules[top]
        if top in C_MODULES:
            if top in PASSTHROUGH:
                return self._host_import(False, top)
            if not self.strict:
                try:
                    return self._host_import(False, top)
                except ImportError:
                    pass
            raise ImportError("no module named '%s' (exists on ESP32, not simulated)" % top)
        if self._board_has(top):
            return None
        if top in FROZEN_MODULES:
            if top in self.modules:
                return self.modules[top]
            raise ImportError("no module named '%s' (frozen on ESP32, not simulated)" % top)
        if self._board_has(top, "lib"):
            return None
        # u-prefixed aliases: "import utime" still works on 1.2x
        if top.startswith("u") and (top[1:] in C_MODULES or top[1:] in FROZEN_MODULES):
            return self.resolve_top(top[1:])
        if not self.strict:
            return self._host_import(False, top)
        raise ImportError("no module named '%s'" % top)

    def import_module(self, name):
        """Import a firmware module (from BOARD_DIR) the way the board does."""
        self._import(name)
        return sys.modules[name]

    def exec_file(self, path, namespace=None, filename=None):
        """Run a script (boot.py/main.py) in a namespace with the board's builtins."""
        with _builtins.open(path, "rb") as f:
            src = f.read()
        code = compile(src, filename or os.path.basename(path), "exec", dont_inherit=True)
        ns = namespace if namespace is not None else {"__name__": "__main__"}
        ns["__builtins__"] = self.builtins
        exec(code, ns)
        return ns

    # -- exceptions ---------------------------------------------------------

    def format_exception(self, exc):
        lines = ["Traceback (most recent call last):"]
        frames = _traceback.extract_tb(exc.__traceback__)
        here = os.path.dirname(os.path.abspath(__file__))
        shown = []
        for fs in frames:
            fn = fs.filename
            if os.path.isabs(fn):
                if self.in_board(fn):
                    fn = os.path.relpath(os.path.realpath(fn), self.board_dir)
                elif fn.startswith(here) or "/lib/python" in fn or fn.startswith("<frozen"):
                    continue
            elif fn.startswith("<frozen"):
                continue
            shown.append('  File "%s", line %d, in %s' % (fn, fs.lineno or 0, fs.name))
        lines.extend(shown)
        msg = str(exc)
        if (isinstance(exc, OSError) and len(exc.args) == 1 and isinstance(exc.args[0], int)
                and exc.args[0] in _errno.errorcode):
            msg = "[Errno %d] %s" % (exc.args[0], _errno.errorcode[exc.args[0]])
        lines.append("%s: %s" % (type(exc).__name__, msg) if msg else type(exc).__name__ + ":")
        return "\n".join(lines) + "\n"

    def print_exception(self, exc, file=None):
        """sys.print_exception(exc, file=sys.stdout) in MicroPython's format."""
        out = file if file is not None else sys.stdout
        out.write(self.format_exception(exc))

    # -- resets -------------------------------------------------------------

    def reexec(self, cause):
        """Reboot: replace the process, keep the board folder (like flash)."""
        if not self.argv:
            raise SystemExit("sim: machine reset requested (%s) but no board runner" % cause)
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:
            pass
        env = dict(os.environ)
        env["SIM_RESET_CAUSE"] = cause
        env["SIM_RTC"] = repr(self.clock.now())
        env["SIM_RTC_WALL"] = repr(_time.time())
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        pp = env.get("PYTHONPATH", "")
        if root not in pp.split(os.pathsep):
            env["PYTHONPATH"] = root + (os.pathsep + pp if pp else "")
        self.net.keep_across_exec()
        os.execve(sys.executable, [sys.executable, "-m", "tools.sim.board"] + list(self.argv), env)


def _parse_mac(s):
    if isinstance(s, (bytes, bytearray)):
        if len(s) != 6:
            raise ValueError("MAC must be 6 bytes")
        return bytes(s)
    h = s.replace(":", "").replace("-", "")
    b = bytes.fromhex(h)
    if len(b) != 6:
        raise ValueError("MAC must be 6 bytes, got %r" % s)
    return b


def _default_mac(board_dir):
    import hashlib

    h = hashlib.sha256(board_dir.encode()).digest()
    return b"\x24\x0a\xc4" + h[:3]  # Espressif OUI


def reset_cause_from_env():
    return _CAUSE_NAMES.get(os.environ.get("SIM_RESET_CAUSE", ""), PWRON_RESET)


def rtc_from_env():
    """Board clock carried across machine.reset() (the ESP32 keeps it on soft resets)."""
    v = os.environ.get("SIM_RTC")
    wall = os.environ.get("SIM_RTC_WALL")
    if v is None or wall is None:
        return None
    try:
        return float(v) + max(0.0, _time.time() - float(wall))
    except ValueError:
        return None


def host_rtc():
    return _time.time() - EPOCH_2000


__all__ = ["Runtime", "current", "oserror", "plain_oserror", "types"]
