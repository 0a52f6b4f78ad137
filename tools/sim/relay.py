"""The radio of a MicroPython-backend board, as a TCP relay on 127.0.0.1.

On the MicroPython backend the firmware's sockets are MicroPython's own, so the
simulated Wi-Fi cannot gate them the way the CPython sim's NetGate does. The board
reaches the broker through this relay instead (its rainmaker.json names the relay's
port), and the relay applies the same rules (tools/sim/README.md, "The air"):

* The board's radio state comes from ``<ctl>/link``, written by the board's network
  module (tools/sim/mpy/_simhw.py): ``"<boot> <epoch> <up> <abort_after_ms>"``. The
  epoch counts link losses, so the board's ``isconnected()`` is False before the
  relay acts.
* A link loss *stalls* the connections made before it: nothing comes in, what the
  board writes goes nowhere. After ``abort_after_ms`` the board side is reset (RST);
  the broker side is kept half-open without a FIN (a board without Wi-Fi cannot send
  one), so the broker notices only through keep-alive. A stalled connection is never
  resumed.
* A connection the board opens while its radio has no IP is reset at once.
* When the board's interpreter ends (a reset or power cycle), its connections vanish
  silently as well: the broker side is kept half-open. A close by the live board is
  passed on as a FIN, and the broker's FIN or RST is passed to the board.
* The broker side's half-open sockets are read and discarded until the broker drops
  them.
"""

import errno
import selectors
import socket
import struct
import threading
import time

_GONE_WAIT = 0.3  # after a board-side EOF: time for the launcher to see the interpreter end
_CHUNK = 65536


def read_link(path):
    """(boot, epoch, up, abort_s) from the link file, or None."""
    try:
        with open(path) as f:
            parts = f.read().split()
        boot, epoch, up, abort_ms = (int(p) for p in parts[:4])
    except (OSError, ValueError):
        return None
    return boot, epoch, bool(up), abort_ms / 1000


def _rst(sock):
    """Close with a RST instead of a FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class _Conn:
    def __init__(self, b, u, boot, epoch):
        self.b = b  # board side
        self.u = u  # broker side
        self.boot = boot
        self.epoch = epoch
        self.state = "connecting"  # -> open -> stalled (link lost)
        self.to_b = bytearray()
        self.to_u = bytearray()
        self.abort_at = None
        self.b_eof_at = None  # the board side ended: a close, or the interpreter ended?
        self.u_eof = False  # the broker sent its FIN


class Relay:
    """127.0.0.1:listen_port -> target (host, port), gated by the board's link file.

    alive(boot) tells whether that boot's interpreter still runs (the launcher knows).
    """

    def __init__(self, listen_port, target, link_path, alive=None):
        self.target = target
        self.link_path = link_path
        self.alive = alive
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", listen_port))
        self.ls.listen(16)
        self.ls.setblocking(False)
        self.port = self.ls.getsockname()[1]
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.ls, selectors.EVENT_READ, None)
        self.conns = []
        self.limbo = []  # broker-side sockets kept half-open
        self.link = (0, 0, False, 1.0)
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="radio-relay", daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop = True
        self._thread.join(2)
        for c in self.conns:
            for s in (c.b, c.u):
                if s is not None:
                    s.close()
        for s in self.limbo:
            s.close()
        self.ls.close()
        self.sel.close()

    # -- the loop ------------------------------------------------------------------

    def _run(self):
        while not self._stop:
            for key, ev in self.sel.select(0.02):
                if key.data is None:
                    self._accept()
                elif key.data[0] == "limbo":
                    self._drain_limbo(key.fileobj)
                elif key.data[0] == "b":
                    self._board_event(key.data[1], ev)
                else:
                    self._broker_event(key.data[1], ev)
            self._poll_link()
            self._timers()

    def _watch(self, sock, ev, data):
        if sock is None:
            return
        try:
            if ev:
                try:
                    self.sel.modify(sock, ev, data)
                except KeyError:
                    self.sel.register(sock, ev, data)
            else:
                self.sel.unregister(sock)
        except (KeyError, ValueError):
            pass

    def _update(self, c):
        """Event masks from each side's state."""
        R, W = selectors.EVENT_READ, selectors.EVENT_WRITE
        self._watch(c.b, (R if c.b_eof_at is None else 0) | (W if c.to_b else 0), ("b", c))
        self._watch(c.u, (0 if c.u_eof else R) | (W if c.to_u or c.state == "connecting" else 0), ("u", c))

    def _accept(self):
        try:
            b, _ = self.ls.accept()
        except OSError:
            return
        b.setblocking(False)
        link = read_link(self.link_path) or self.link  # fresh: the board writes it before using its IP
        self.link = link
        boot, epoch, up, _ = link
        if not up:
            _rst(b)  # no IP: the board could not have reached anything
            return
        u = socket.socket()
        u.setblocking(False)
        # A radio forwards each frame as it comes: without this, Nagle's
        # algorithm here meets delayed ACKs and adds ~40 ms to an echo.
        for sock in (b, u):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if u.connect_ex(self.target) not in (0, errno.EINPROGRESS):
            u.close()
            _rst(b)
            return
        c = _Conn(b, u, boot, epoch)
        self.conns.append(c)
        self._update(c)

    @staticmethod
    def _send(sock, buf):
        try:
            n = sock.send(buf)
            del buf[:n]
        except BlockingIOError:
            pass
        except OSError:
            del buf[:]

    @staticmethod
    def _recv(sock):
        """bytes, b"" on EOF, None if nothing yet, or the OSError of a reset."""
        try:
            return sock.recv(_CHUNK)
        except BlockingIOError:
            return None
        except OSError as e:
            return e

    def _board_event(self, c, ev):
        # One select() can report a socket that an earlier event of the same
        # batch has closed already (a reset, the broker's FIN): nothing to do.
        if c.b is None:
            return
        if ev & selectors.EVENT_READ and c.b_eof_at is None:
            data = self._recv(c.b)
            if isinstance(data, bytes) and data:
                if c.state != "stalled":
                    c.to_u += data
                # stalled: the radio is dead, the bytes go nowhere
            elif data is not None:
                c.b_eof_at = time.monotonic()
        if ev & selectors.EVENT_WRITE and c.to_b:
            self._send(c.b, c.to_b)
        self._after(c)

    def _broker_event(self, c, ev):
        if c.u is None:  # closed by an earlier event of the same select() batch
            return
        if c.state == "connecting" and ev & selectors.EVENT_WRITE:
            if c.u.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                return self._end(c, "rst")  # broker unreachable: the board's connection is reset
            c.state = "open"
        if ev & selectors.EVENT_READ and not c.u_eof:
            data = self._recv(c.u)
            if isinstance(data, bytes) and data:
                if c.state == "open":
                    c.to_b += data
            elif data is not None:
                if c.state == "stalled":  # the broker gave up on the dead link; the board is not told
                    self._watch(c.u, 0, None)
                    c.u.close()
                    c.u = None
                    return
                if isinstance(data, OSError):
                    return self._end(c, "rst")
                c.u_eof = True
        if ev & selectors.EVENT_WRITE and c.to_u and c.state == "open":
            self._send(c.u, c.to_u)
        self._after(c)

    def _after(self, c):
        if c.state == "open" and c.u_eof and not c.to_b:
            return self._end(c, "fin")  # the broker closed: so does the board's side
        self._update(c)

    def _end(self, c, how):
        """fin: close both sides; rst: reset the board's side; limbo: the board's side
        is gone without a word, the broker's is kept half-open."""
        self._watch(c.b, 0, None)
        self._watch(c.u, 0, None)
        if c.b is not None:
            (_rst if how == "rst" else socket.socket.close)(c.b)
        if c.u is not None:
            if how == "limbo" and not c.u_eof:
                self.limbo.append(c.u)
                self.sel.register(c.u, selectors.EVENT_READ, ("limbo", None))
            else:
                c.u.close()
        c.b = c.u = None
        if c in self.conns:
            self.conns.remove(c)

    def _drain_limbo(self, s):
        data = self._recv(s)
        if data is not None and not (isinstance(data, bytes) and data):
            self._watch(s, 0, None)
            if s in self.limbo:
                self.limbo.remove(s)
            s.close()

    # -- the radio and the board's life ------------------------------------------------

    def _poll_link(self):
        link = read_link(self.link_path)
        if link is None:
            return
        self.link = link
        boot, epoch, up, abort_s = link
        for c in self.conns:
            if c.state != "stalled" and c.boot == boot and c.epoch != epoch:
                c.state = "stalled"  # the radio died under this connection
                del c.to_b[:]
                del c.to_u[:]
                c.abort_at = time.monotonic() + abort_s
                self._update(c)

    def _timers(self):
        now = time.monotonic()
        for c in list(self.conns):
            if c.state == "stalled" and now >= c.abort_at:
                # lwIP gives up on the dead link: the board's socket is reset
                if c.b is not None:
                    self._watch(c.b, 0, None)
                    _rst(c.b)
                    c.b = None
                self._end(c, "limbo")
            elif c.b_eof_at is not None:
                if self.alive is not None and not self.alive(c.boot):
                    self._end(c, "limbo")  # a reset or power cycle: no FIN from a dead board
                elif c.state == "stalled":
                    pass  # closed by the board while the radio is dead: nothing leaves it
                elif now - c.b_eof_at >= _GONE_WAIT and (not c.to_u or now - c.b_eof_at > 5):
                    self._end(c, "fin")  # a close by the live board: its FIN goes out


def free_port():
    """A port on 127.0.0.1 that nothing listens on now."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
