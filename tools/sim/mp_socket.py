"""`socket` as on the esp32 port, behind the Wi-Fi link gate.

* connect() without an IP (STA not connected) -> OSError(EHOSTUNREACH).
* getaddrinfo() of a name without Wi-Fi -> OSError(-202) (lwIP EAI_FAIL), and it
  returns IPv4 only, one entry, SOCK_STREAM by default, like lwIP.
* Sockets that connected are tracked; when the link drops they are aborted:
  every later call raises OSError(ECONNABORTED).
* MicroPython's stream methods exist: read(n) (loops until n bytes or EOF),
  readinto, readline, write; makefile() returns the socket itself.
* bind() is forced to 127.0.0.1 (and --port-map applies).
* Errors are plain OSError(errno) (no ConnectionResetError & co. on the board);
  a timeout is OSError(ETIMEDOUT).
"""

import errno as _errno
import ipaddress
import socket as _s
import time as _t
import types

from .runtime import oserror, plain_oserror

EAI_FAIL = -202


def _numeric(host):
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def make_getaddrinfo(rt):
    def getaddrinfo(host, port, af=0, type=0, proto=0, flags=0):
        if isinstance(host, bytes):
            host = host.decode()
        if host == "":
            host = "0.0.0.0"
        if not _numeric(host) and not rt.net.link_up():
            raise OSError(EAI_FAIL, "EAI_FAIL")
        try:
            res = _s.getaddrinfo(host, port, af or _s.AF_INET, type or _s.SOCK_STREAM, proto, flags)
        except OSError:
            raise OSError(EAI_FAIL, "EAI_FAIL") from None
        return [(int(f), int(t), p, c, a) for (f, t, p, c, a) in res[:1]]

    return getaddrinfo


def make_socket_class(rt, getaddrinfo):
    class socket(_s.socket):
        """A board socket (CPython socket + MicroPython stream methods + link gate)."""

        _sim_aborted = False

        def __init__(self, af=_s.AF_INET, type=_s.SOCK_STREAM, proto=0, fileno=None):
            super().__init__(af, type, proto, fileno)

        def __repr__(self):
            return "<socket state=%d timeout=%r incoming=0 off=0>" % (
                1 if self.fileno() >= 0 else 0, self.gettimeout())

        # -- gate -----------------------------------------------------------

        def _inet(self):
            return self.family in (_s.AF_INET, _s.AF_INET6)

        def _addr(self, addr):
            if self._inet() and isinstance(addr, tuple) and isinstance(addr[0], (str, bytes)):
                host = addr[0].decode() if isinstance(addr[0], bytes) else addr[0]
                if not _numeric(host):
                    addr = getaddrinfo(host, addr[1])[0][-1]
            return addr

        def _abort_error(self):
            return oserror(getattr(self, "_sim_error_errno", _errno.ECONNABORTED))

        def _check(self):
            if self._sim_aborted:
                raise self._abort_error()

        # A socket stalls between the Wi-Fi loss and its abort: nothing comes in and
        # what is written goes nowhere (see runtime.NetGate).

        def _sim_stalled(self):
            return rt.net.is_stalled(self)

        def _stall_read(self):
            """True if the caller must report "would block"; blocks blocking sockets
            until the abort (then raises) or their timeout."""
            t = self.gettimeout()
            if t == 0:
                return True
            end = None if t is None else _t.monotonic() + t
            while rt.net.is_stalled(self):
                if end is not None and _t.monotonic() >= end:
                    raise oserror(_errno.ETIMEDOUT)
                _t.sleep(0.02)
            self._check()
            return False

        def connect(self, address):
            address = self._addr(address)
            if self._inet():
                if not rt.net.link_up():
                    raise oserror(_errno.EHOSTUNREACH)
                if self.type == _s.SOCK_STREAM:
                    rt.net.track(self)
            try:
                super().connect(address)
            except OSError as e:
                raise plain_oserror(e) from None

        def bind(self, address):
            if self._inet() and isinstance(address, tuple):
                port = rt.port_map.get(address[1], address[1])
                address = ("127.0.0.1", port) + tuple(address[2:])
            try:
                super().bind(address)
            except OSError as e:
                raise plain_oserror(e) from None

        def accept(self):
            try:
                fd, addr = self._accept()
            except OSError as e:
                raise plain_oserror(e) from None
            sock = type(self)(self.family, self.type, self.proto, fileno=fd)
            if _s.getdefaulttimeout() is None and self.gettimeout():
                sock.setblocking(True)
            return sock, addr

        def close(self):
            rt.net.untrack(self)
            try:
                fd = self.fileno()
            except OSError:
                fd = -1
            if fd >= 0:
                rt.io.forget_fd(fd)
            super().close()

        # -- raw ops used by the streams and TLS (None = would block) --------

        def _sim_recv(self, n):
            self._check()
            if rt.net.is_stalled(self) and self._stall_read():
                return None
            try:
                data = super().recv(n)
            except (BlockingIOError, InterruptedError):
                return None
            except OSError as e:
                raise plain_oserror(e) from None
            if not data and self._sim_aborted:
                raise self._abort_error()
            return data

        def _sim_send(self, data):
            self._check()
            if rt.net.is_stalled(self):
                return len(data)
            try:
                return super().send(data)
            except (BlockingIOError, InterruptedError):
                return None
            except OSError as e:
                raise plain_oserror(e) from None

        def _sim_fd(self):
            return self.fileno()

        # -- socket API ------------------------------------------------------

        def recv(self, bufsize, flags=0):
            self._check()
            if rt.net.is_stalled(self) and self._stall_read():
                raise oserror(_errno.EAGAIN)
            try:
                data = super().recv(bufsize, flags)
            except OSError as e:
                raise plain_oserror(e) from None
            if not data and self._sim_aborted:
                raise self._abort_error()
            return data

        def recvfrom(self, bufsize, flags=0):
            self._check()
            if rt.net.is_stalled(self) and self._stall_read():
                raise oserror(_errno.EAGAIN)
            try:
                return super().recvfrom(bufsize, flags)
            except OSError as e:
                raise plain_oserror(e) from None

        def recv_into(self, buf, nbytes=0, flags=0):
            self._check()
            if rt.net.is_stalled(self) and self._stall_read():
                raise oserror(_errno.EAGAIN)
            try:
                return super().recv_into(buf, nbytes, flags)
            except OSError as e:
                raise plain_oserror(e) from None

        def send(self, data, flags=0):
            self._check()
            if rt.net.is_stalled(self):
                return len(data)
            try:
                return super().send(data, flags)
            except OSError as e:
                raise plain_oserror(e) from None

        def sendall(self, data, flags=0):
            self._check()
            if rt.net.is_stalled(self):
                return None
            try:
                return super().sendall(data, flags)
            except OSError as e:
                raise plain_oserror(e) from None

        def sendto(self, data, address):
            self._check()
            if rt.net.is_stalled(self):
                return len(data)
            address = self._addr(address)
            try:
                return super().sendto(data, address)
            except OSError as e:
                raise plain_oserror(e) from None

        # -- MicroPython stream protocol ----------------------------------

        def read(self, n=-1):
            return stream_read(self._sim_recv, n)

        def readinto(self, buf, nbytes=None):
            return stream_readinto(self._sim_recv, buf, nbytes)

        def readline(self):
            return stream_readline(self._sim_recv)

        def write(self, buf):
            return stream_write(self._sim_send, buf)

        def makefile(self, mode="rb", buffering=0):
            return self

    return socket


# MicroPython's mp_stream_rw() semantics over a "read once" / "write once" pair.


def stream_read(rd1, n=-1):
    unbounded = n is None or n < 0  # read to EOF, or until it would block
    out = b""
    while unbounded or len(out) < n:
        r = rd1(4096 if unbounded else n - len(out))
        if r is None:
            return out if out else None
        if not r:
            break
        out += r
    return out


def stream_readinto(rd1, buf, nbytes=None):
    mv = memoryview(buf)
    n = len(mv) if nbytes is None else min(nbytes, len(mv))
    got = 0
    while got < n:
        r = rd1(n - got)
        if r is None:
            return got if got else None
        if not r:
            break
        mv[got:got + len(r)] = r
        got += len(r)
    return got


def stream_readline(rd1):
    out = b""
    while True:
        r = rd1(1)
        if r is None:
            return out if out else None
        if not r:
            return out
        out += r
        if r == b"\n":
            return out


def stream_write(wr1, buf):
    mv = memoryview(buf if not isinstance(buf, str) else buf.encode())
    done = 0
    while done < len(mv):
        r = wr1(mv[done:])
        if r is None:
            return done if done else None
        if r == 0:
            break
        done += r
    return done


def make(rt):
    getaddrinfo = make_getaddrinfo(rt)
    m = types.ModuleType("socket")
    m.__doc__ = "socket (simulated esp32)"
    m.socket = make_socket_class(rt, getaddrinfo)
    m.getaddrinfo = getaddrinfo
    for name in ("AF_INET", "AF_INET6", "SOCK_STREAM", "SOCK_DGRAM", "SOCK_RAW", "IPPROTO_IP",
                 "IPPROTO_TCP", "IPPROTO_UDP", "IPPROTO_IPV6", "SOL_SOCKET", "SO_REUSEADDR",
                 "SO_BROADCAST", "SO_KEEPALIVE", "SO_RCVTIMEO", "SO_SNDTIMEO", "TCP_NODELAY",
                 "IP_ADD_MEMBERSHIP", "IP_DROP_MEMBERSHIP", "MSG_DONTWAIT", "MSG_PEEK"):
        if hasattr(_s, name):
            setattr(m, name, int(getattr(_s, name)))
    m.inet_ntop = _s.inet_ntop
    m.inet_pton = _s.inet_pton
    m.EAI_FAIL = EAI_FAIL
    return m
