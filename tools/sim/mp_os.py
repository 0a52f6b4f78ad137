"""`os` as on the esp32 port: the MicroPython subset, on the board folder.

Paths starting with '/' are the board's root (BOARD_DIR). There is no os.path,
os.environ, os.getenv... on the board, so in strict mode they do not exist here
either. Everything else is CPython's os doing the work.
"""

import collections
import os as _os
import time as _time
import types

from .runtime import EPOCH_2000, VERSION, VERSION_DATE, oserror, plain_oserror

_uname_result = collections.namedtuple("uname_result", "sysname nodename release version machine")


def make(rt):
    m = types.ModuleType("os")
    m.__doc__ = "os (simulated esp32)"
    bp = rt.board_path

    def wrap(fn):
        def f(*args):
            try:
                return fn(*args)
            except OSError as e:
                raise plain_oserror(e) from None

        f.__name__ = fn.__name__
        return f

    @wrap
    def listdir(path="."):
        return _os.listdir(bp(path))

    @wrap
    def ilistdir(path="."):
        out = []
        with _os.scandir(bp(path)) as it:
            for e in it:
                st = e.stat()
                typ = 0x4000 if e.is_dir() else 0x8000
                out.append((e.name, typ, 0, st.st_size if typ == 0x8000 else 0))
        return iter(out)

    @wrap
    def stat(path):
        s = _os.stat(bp(path))
        mt = int(s.st_mtime) - EPOCH_2000
        return (s.st_mode, 0, 0, 0, 0, 0, s.st_size, mt, mt, mt)

    @wrap
    def statvfs(path="/"):
        bsize = 4096
        total = rt.fs_size // bsize
        used = 0
        for root, dirs, files in _os.walk(rt.board_dir):
            used += 1 + len(dirs)  # littlefs: a metadata block per directory
            for n in files:
                try:
                    used += (_os.path.getsize(_os.path.join(root, n)) + bsize - 1) // bsize or 1
                except OSError:
                    pass
        free = max(0, total - used)
        return (bsize, bsize, total, free, free, 0, 0, 0, 0, 255)

    @wrap
    def getcwd():
        cwd = _os.path.realpath(_os.getcwd())
        if rt.in_board(cwd):
            rel = _os.path.relpath(cwd, rt.board_dir)
            return "/" if rel == "." else "/" + rel
        return cwd

    def chdir(path):
        p = bp(path)
        if not rt.in_board(_os.path.realpath(p)):
            raise oserror(2)
        try:
            _os.chdir(p)
        except OSError as e:
            raise plain_oserror(e) from None

    def uname():
        return _uname_result("esp32", "esp32", VERSION, "v%s on %s" % (VERSION, VERSION_DATE), rt.machine)

    def sync():
        pass

    def dupterm(stream_object=None, index=0):
        return None

    m.listdir = listdir
    m.ilistdir = ilistdir
    def slow(fn):
        # --fs-delay: a change of the filesystem's metadata takes time, as a
        # LittleFS commit to flash does on the chip (a power cut can land in it).
        def f(*args):
            if rt.fs_delay:
                _time.sleep(rt.fs_delay)
            return fn(*args)

        f.__name__ = fn.__name__
        return f

    m.mkdir = slow(wrap(lambda path: _os.mkdir(bp(path))))
    m.mkdir.__name__ = "mkdir"
    m.rmdir = slow(wrap(lambda path: _os.rmdir(bp(path))))
    m.remove = slow(wrap(lambda path: _os.remove(bp(path))))
    m.rename = slow(wrap(lambda old, new: _os.rename(bp(old), bp(new))))
    m.stat = stat
    m.statvfs = statvfs
    m.getcwd = getcwd
    m.chdir = chdir
    m.sync = sync
    m.urandom = _os.urandom
    m.uname = uname
    m.dupterm = dupterm
    m.sep = "/"
    if not rt.strict:
        for k, v in vars(_os).items():
            if not k.startswith("__") and not hasattr(m, k):
                setattr(m, k, v)
    return m
