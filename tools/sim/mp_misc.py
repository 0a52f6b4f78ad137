"""Smaller board modules: micropython, esp32 (Partition over the shared flash model), esp, ntptime, json, hashlib, cryptolib,
select, restricted views of struct/binascii/collections, and the gc additions."""

import gc as _gc
import hashlib as _hashlib
import importlib
import json as _json
import os
import select as _select
import time as _t
import types

from . import runtime as _r
from .mpy.simworld import chip
from .mpy.simworld import bootloader, flash
from .runtime import EPOCH_2000

# -- gc ------------------------------------------------------------------------
# Not a measure of anything on the ESP32: a fixed 110 KiB "heap" minus an estimate
# from the number of live Python objects, so the numbers move and stay plausible.
_HEAP = 112 * 1024
_threshold = [-1]


def gc_mem_alloc():
    n = len(_gc.get_objects())
    return min(_HEAP - 4096, 8192 + n * 2)


def gc_mem_free():
    return _HEAP - gc_mem_alloc()


def gc_threshold(*args):
    if not args:
        return _threshold[0]
    _threshold[0] = int(args[0])
    return None


def view(name, names, rt):
    """A module with only the attributes MicroPython's version has (strict mode)."""
    real = importlib.import_module(name)
    if not rt.strict:
        return real
    m = types.ModuleType(name)
    for n in names.split():
        setattr(m, n, getattr(real, n))
    return m


# -- errno -----------------------------------------------------------------------
# The names of py/moderrno.c's default list, which the esp32 and unix ports use:
# no EPIPE, EINTR, ENOSPC... Firmware that names one of those dies with
# AttributeError on the board. The numbers are the host's (Linux's), consistent
# with the errors the simulated sockets raise.
ERRNO_NAMES = ("EPERM ENOENT EIO EBADF EAGAIN ENOMEM EACCES EEXIST ENODEV EISDIR EINVAL "
               "EOPNOTSUPP EADDRINUSE ECONNABORTED ECONNRESET ENOBUFS ENOTCONN ETIMEDOUT "
               "ECONNREFUSED EHOSTUNREACH EALREADY EINPROGRESS")


def make_errno(rt):
    import errno as _errno

    if not rt.strict:
        return _errno
    m = types.ModuleType("errno")
    for n in ERRNO_NAMES.split():
        setattr(m, n, getattr(_errno, n))
    m.errorcode = {getattr(_errno, n): n for n in ERRNO_NAMES.split()}
    return m


# -- micropython -----------------------------------------------------------------


def make_micropython(rt):
    m = types.ModuleType("micropython")

    def const(x):
        return x

    def schedule(fn, arg):
        rt.sched.schedule(fn, arg)

    def mem_info(*args):
        used = gc_mem_alloc()
        print("stack: 736 out of 15360")
        print("GC: total: %d, used: %d, free: %d, max new split: 110592" % (_HEAP, used, _HEAP - used))
        print(" No. of 1-blocks: %d, 2-blocks: %d, max blk sz: 64, max free sz: %d"
              % (used // 40, used // 160, (_HEAP - used) // 16))

    def qstr_info(*args):
        print("qstr pool: n_pool=1, n_qstr=100, n_str_data_bytes=1000, n_total_bytes=2000")

    def identity(f):
        return f

    m.const = const
    m.schedule = schedule
    m.mem_info = mem_info
    m.qstr_info = qstr_info
    m.alloc_emergency_exception_buf = lambda n: None
    m.opt_level = lambda *a: 0 if not a else None
    m.stack_use = lambda: 736
    m.heap_lock = lambda: 0
    m.heap_unlock = lambda: 0
    m.kbd_intr = lambda chr: None
    m.native = identity
    m.viper = identity
    m.bytecode = identity
    return m


# -- esp32 / esp -------------------------------------------------------------------


def make_esp32(rt):
    m = types.ModuleType("esp32")
    m.HEAP_DATA = chip.HEAP_DATA
    m.HEAP_EXEC = chip.HEAP_EXEC
    m.WAKEUP_ALL_LOW = chip.WAKEUP_ALL_LOW
    m.WAKEUP_ANY_HIGH = chip.WAKEUP_ANY_HIGH
    m.idf_heap_info = lambda capabilities: chip.idf_heap_info(capabilities, gc_mem_alloc())
    for name, fn in chip.temperature_functions(rt.chip).items():  # one of them, per chip
        setattr(m, name, fn)

    def getattr_(name):
        # Partition is made on first use: the flash model is loaded only by firmware that
        # touches partitions (as on the MicroPython backend, where it costs heap).
        if name != "Partition":
            raise AttributeError("module 'esp32' has no attribute '%s'" % name)
        m.Partition = flash.partition_class(board_flash(rt), rt_error)
        return m.Partition

    m.__getattr__ = getattr_
    return m


def rt_error(code, msg=None):
    return _r.oserror(code, msg)


def board_flash(rt):
    """The runtime's flash; an in-process Runtime made without one gets the default
    (BOARD_DIR/../flash, OTA layout), booted here."""
    if rt.flash is None:
        fl = bootloader.Flash(os.path.join(os.path.dirname(rt.board_dir), "flash"), "ota", rt.chip)
        fl.prepare()
        fl.boot(print)
        rt.flash = fl

    def panic(text):
        print(text)
        print("Rebooting...")
        rt.reexec("HARD_RESET")

    rt.flash.panic = panic
    return rt.flash


def make_esp(rt):
    m = types.ModuleType("esp")
    m.LOG_NONE, m.LOG_ERROR, m.LOG_WARNING, m.LOG_INFO, m.LOG_DEBUG, m.LOG_VERBOSE = range(6)
    m.osdebug = lambda *a, **k: None
    m.flash_size = lambda: 4 * 1024 * 1024
    m.flash_user_start = lambda: 0x200000
    m.gpio_matrix_in = lambda *a: None
    m.gpio_matrix_out = lambda *a: None
    return m


# -- ntptime (frozen micropython-lib module) ------------------------------------------


def make_ntptime(rt):
    """ntptime: the host clock stands in for pool.ntp.org; needs Wi-Fi like the real one."""
    m = types.ModuleType("ntptime")
    m.host = "pool.ntp.org"
    m.timeout = 1

    def time():
        if not rt.net.link_up():
            raise OSError(-202, "EAI_FAIL")  # getaddrinfo(host) fails without a network
        return int(_t.time()) - EPOCH_2000

    def settime():
        t = time()
        tm = rt.modules["time"].gmtime(t)
        rt.modules["machine"].RTC().datetime((tm[0], tm[1], tm[2], tm[6] + 1, tm[3], tm[4], tm[5], 0))

    m.time = time
    m.settime = settime
    return m


# -- json ------------------------------------------------------------------------------


def make_json(rt):
    if not rt.strict:
        return _json
    m = types.ModuleType("json")

    def dumps(obj, separators=None):
        if separators is None:
            return _json.dumps(obj)
        return _json.dumps(obj, separators=separators)

    def dump(obj, stream, separators=None):
        stream.write(dumps(obj, separators))

    def loads(s):
        try:
            return _json.loads(s)
        except ValueError:
            raise ValueError("syntax error in JSON") from None

    def load(stream):
        return loads(stream.read())

    m.dumps, m.dump, m.loads, m.load = dumps, dump, loads, load
    return m


# -- hashlib ------------------------------------------------------------------------------


def make_hashlib(rt):
    if not rt.strict:
        return _hashlib
    m = types.ModuleType("hashlib")

    def mk(algo):
        class H:
            def __init__(self, data=None):
                self._h = _hashlib.new(algo)
                self._final = False
                if data is not None:
                    self.update(data)

            def update(self, data):
                if self._final:
                    raise ValueError("hash is final")
                self._h.update(data)

            def digest(self):
                if self._final:
                    raise ValueError("hash is final")
                self._final = True
                return self._h.digest()

        H.__name__ = algo
        return H

    m.sha256 = mk("sha256")
    m.sha1 = mk("sha1")
    m.md5 = mk("md5")
    return m


# -- cryptolib ----------------------------------------------------------------------------------


def make_cryptolib(rt):
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    m = types.ModuleType("cryptolib")

    class aes:
        def __init__(self, key, mode, IV=None):
            key = bytes(key)
            if len(key) not in (16, 32):
                raise ValueError("key")
            if mode == 1:
                md = modes.ECB()
            elif mode == 2:
                if IV is None or len(bytes(IV)) != 16:
                    raise ValueError("IV")
                md = modes.CBC(bytes(IV))
            else:
                raise ValueError("mode")
            self._c = Cipher(algorithms.AES(key), md)
            self._ctx = None
            self._dir = None

        def _run(self, direction, data, out):
            data = bytes(data)
            if len(data) % 16:
                raise ValueError("blksize")
            if self._dir is None:
                self._dir = direction
                self._ctx = self._c.encryptor() if direction == "e" else self._c.decryptor()
            elif self._dir != direction:
                raise ValueError("can't encrypt & decrypt")
            r = self._ctx.update(data)
            if out is None:
                return r
            memoryview(out)[:len(r)] = r
            return None

        def encrypt(self, in_buf, out_buf=None):
            return self._run("e", in_buf, out_buf)

        def decrypt(self, in_buf, out_buf=None):
            return self._run("d", in_buf, out_buf)

    m.aes = aes
    return m


# -- select ---------------------------------------------------------------------------------------


def make_select(rt):
    """select.poll() returning (obj, event) tuples like MicroPython; ms timeouts."""
    m = types.ModuleType("select")
    m.POLLIN, m.POLLOUT, m.POLLERR, m.POLLHUP = 1, 4, 8, 16

    def fd_of(obj):
        if isinstance(obj, int):
            return obj
        f = getattr(obj, "_sim_fd", None)
        return f() if f is not None else obj.fileno()

    class Poll:
        def __init__(self):
            self._p = _select.poll()
            self._objs = {}
            self._masks = {}

        def register(self, obj, eventmask=5):
            fd = fd_of(obj)
            self._objs[fd] = obj
            self._masks[fd] = eventmask
            self._p.register(fd, eventmask)

        def unregister(self, obj):
            fd = fd_of(obj)
            self._objs.pop(fd, None)
            self._masks.pop(fd, None)
            try:
                self._p.unregister(fd)
            except KeyError:
                pass

        def modify(self, obj, eventmask):
            fd = fd_of(obj)
            if fd not in self._objs:
                raise OSError(2)
            self._masks[fd] = eventmask
            self._p.modify(fd, eventmask)

        def poll(self, timeout=-1):
            ready = []
            for fd, obj in self._objs.items():  # TLS data already decrypted counts as readable
                ssl_obj = getattr(obj, "_obj", None)
                if self._masks[fd] & 1 and ssl_obj is not None and getattr(ssl_obj, "pending", None):
                    try:
                        if ssl_obj.pending():
                            ready.append((obj, 1))
                    except Exception:
                        pass
            if ready:
                return ready
            res = self._p.poll(None if timeout is None or timeout < 0 else timeout)
            return [(self._objs[fd], ev) for fd, ev in res if fd in self._objs]

        def ipoll(self, timeout=-1, flags=0):
            return iter(self.poll(timeout))

    m.poll = Poll
    m.select = _select.select
    return m


__all__ = ["view", "gc_mem_free", "gc_mem_alloc", "gc_threshold"]
