"""Tests of the simulated ESP32 board (tools/sim): real sockets, real TLS, real files."""

import asyncio
import datetime
import errno
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tools.sim import Air, Pins, Runtime
from tools.sim import mp_ssl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RealSocket = socket.socket  # captured before any board is installed
HOME = ("HomeNet", "secret123")


def wait_until(pred, timeout=3.0, step=0.02):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


# ---------------------------------------------------------------------------
# throwaway PKI


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def _leaf(ca_cert, ca_key, cn, client):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca_cert.subject)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(hours=1))
         .not_valid_after(now + datetime.timedelta(days=10))
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH if client
                                               else ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                        critical=False))
    if not client:
        import ipaddress

        b = b.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    return b.sign(ca_key, hashes.SHA256()), key


def _der(cert):
    return cert.public_bytes(serialization.Encoding.DER)


def _pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_der(key):
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca, ca_key = _ca("Test Root CA")
    other, other_key = _ca("Other Root CA")
    srv, srv_key = _leaf(ca, ca_key, "localhost", client=False)
    rogue, rogue_key = _leaf(other, other_key, "localhost", client=False)
    cli, cli_key = _leaf(ca, ca_key, "node-1", client=True)
    files = {}
    for name, blob in (("ca.pem", _pem(ca)), ("srv.pem", _pem(srv)), ("srv_key.pem", _key_pem(srv_key)),
                       ("rogue.pem", _pem(rogue)), ("rogue_key.pem", _key_pem(rogue_key))):
        (d / name).write_bytes(blob)
        files[name] = str(d / name)
    return {"files": files, "ca_der": _der(ca), "ca_pem": _pem(ca), "cli_der": _der(cli),
            "cli_key_der": _key_der(cli_key), "cli_pem": _pem(cli), "cli_key_pem": _key_pem(cli_key),
            "srv_der": _der(srv)}


class EchoServer:
    """127.0.0.1 echo server (optionally TLS requiring a client certificate)."""

    def __init__(self, ctx=None, hello_delay=0):
        self.ctx = ctx
        self.hello_delay = hello_delay  # hold the TLS server's first flight back this long
        self.errors = []
        self.conns = []
        self.received = []
        self.eofs = 0
        self.sock = RealSocket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        c.settimeout(5)
        self.conns.append(c)
        try:
            if self.ctx is not None:
                time.sleep(self.hello_delay)
                c = self.ctx.wrap_socket(c, server_side=True)
            while True:
                data = c.recv(4096)
                if not data:
                    self.eofs += 1
                    break
                self.received.append(data)
                c.sendall(b"echo:" + data)
        except Exception as e:  # handshake failures end up here
            self.errors.append(e)
        finally:
            try:
                c.close()
            except OSError:
                pass

    def close(self):
        self._stop = True
        self.sock.close()


def server_ctx(pki, cert="srv.pem", key="srv_key.pem", require_client=True):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki["files"][cert], pki["files"][key])
    if require_client:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(pki["files"]["ca.pem"])
    return ctx


def tls_server(pki, cert="srv.pem", key="srv_key.pem", require_client=True, hello_delay=0):
    return EchoServer(server_ctx(pki, cert, key, require_client), hello_delay)


# ---------------------------------------------------------------------------
# an in-process board


@pytest.fixture
def board(tmp_path, pki, monkeypatch):
    bd = tmp_path / "board"
    (bd / "certs").mkdir(parents=True)
    (bd / "lib").mkdir()
    (bd / "certs" / "ca.der").write_bytes(pki["ca_der"])
    (bd / "certs" / "client.der").write_bytes(pki["cli_der"])
    (bd / "certs" / "client_key.der").write_bytes(pki["cli_key_der"])
    air = Air(tmp_path / "air.json")
    air.set_network(*HOME)
    rt = Runtime(str(bd), mac="240ac4123456", rtc=time.time() - 946684800).install()
    monkeypatch.chdir(bd)  # the board's cwd is its root
    rt.air = air
    rt.pins_helper = Pins.for_board(bd)
    yield rt
    rt.uninstall()


def wifi_up(rt):
    net = rt.modules["network"]
    w = net.WLAN(net.STA_IF)
    w.active(True)
    w.connect(*HOME)
    assert wait_until(w.isconnected, 3), w.status()
    return w


def run(rt, coro):
    return asyncio.run(coro)


def client_ctx(rt, verify=True):
    ssl_m = rt.modules["ssl"]
    ctx = ssl_m.SSLContext(ssl_m.PROTOCOL_TLS_CLIENT)
    ctx.load_cert_chain("certs/client.der", "certs/client_key.der")
    if verify:
        ctx.verify_mode = ssl_m.CERT_REQUIRED
        ctx.load_verify_locations(cafile="certs/ca.der")
    return ctx


async def tls_exchange(rt, port, ctx, hostname="localhost", msg=b"hello"):
    aio = rt.modules["asyncio"]
    r, w = await aio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=hostname)
    try:
        w.write(msg)
        await w.drain()
        return await aio.wait_for(r.read(100), 3)
    finally:
        await w.wait_closed()


# ---------------------------------------------------------------------------
# TLS


def test_ssl_defaults_mirror_micropython(board, pki):
    ssl_m, tls_m = board.modules["ssl"], board.modules["tls"]
    assert ssl_m.SSLContext(ssl_m.PROTOCOL_TLS_CLIENT).verify_mode == ssl_m.CERT_NONE == 0
    assert tls_m.SSLContext(tls_m.PROTOCOL_TLS_CLIENT).verify_mode == tls_m.CERT_REQUIRED == 2
    assert (ssl_m.CERT_OPTIONAL, ssl_m.PROTOCOL_TLS_CLIENT, ssl_m.PROTOCOL_TLS_SERVER) == (1, 0, 1)
    ctx = ssl_m.SSLContext(ssl_m.PROTOCOL_TLS_CLIENT)
    with pytest.raises(ValueError, match="invalid key"):
        ctx.load_cert_chain(b"not a cert", b"not a key")
    with pytest.raises(ValueError, match="invalid cert"):
        ctx.load_cert_chain(b"not a cert", pki["cli_key_der"])
    with pytest.raises(ValueError, match="invalid cert"):
        ctx.load_verify_locations(cadata=b"-----BEGIN CERTIFICATE-----\ngarbage\n")
    with pytest.raises(OSError):
        ctx.load_verify_locations(cafile="certs/missing.der")


def test_mtls_der_paths_asyncio(board, pki):
    wifi_up(board)
    srv = tls_server(pki)
    try:
        assert run(board, tls_exchange(board, srv.port, client_ctx(board))) == b"echo:hello"
        # the same context is reusable, and works with an IP as server_hostname (SAN IP)
        assert run(board, tls_exchange(board, srv.port, client_ctx(board), "127.0.0.1")) == b"echo:hello"
    finally:
        srv.close()
    assert not srv.errors


def test_mtls_der_and_pem_bytes_blocking_socket(board, pki):
    wifi_up(board)
    sock_m, ssl_m = board.modules["socket"], board.modules["ssl"]
    srv = tls_server(pki)
    try:
        for cert, key, ca in ((pki["cli_der"], pki["cli_key_der"], pki["ca_der"]),
                              (pki["cli_pem"], pki["cli_key_pem"], pki["ca_pem"])):
            ctx = ssl_m.SSLContext(ssl_m.PROTOCOL_TLS_CLIENT)
            ctx.load_cert_chain(cert, key)
            ctx.verify_mode = ssl_m.CERT_REQUIRED
            ctx.load_verify_locations(cadata=ca)
            s = sock_m.socket()
            s.settimeout(5)
            s.connect(sock_m.getaddrinfo("127.0.0.1", srv.port)[0][-1])
            ss = ctx.wrap_socket(s, server_hostname="localhost")
            assert ss.write(b"ping") == 4
            assert ss.read(9) == b"echo:ping"  # read(n) loops until n bytes, like mp_stream_rw
            assert len(ss.getpeercert(True)) > 100
            ss.close()
    finally:
        srv.close()
    assert not srv.errors


def test_cert_required_needs_server_hostname(board, pki):
    wifi_up(board)
    sock_m, ssl_m = board.modules["socket"], board.modules["ssl"]
    srv = tls_server(pki)
    try:
        s = sock_m.socket()
        s.connect(("127.0.0.1", srv.port))
        with pytest.raises(ValueError, match="CERT_REQUIRED requires server_hostname"):
            client_ctx(board).wrap_socket(s)
        s.close()
    finally:
        srv.close()


def test_server_cert_from_another_ca_is_valueerror(board, pki):
    wifi_up(board)
    srv = tls_server(pki, "rogue.pem", "rogue_key.pem")
    try:
        with pytest.raises(ValueError, match="not correctly signed by the trusted CA") as ei:
            run(board, tls_exchange(board, srv.port, client_ctx(board)))
        assert not isinstance(ei.value, OSError)  # mbedTLS raises a plain ValueError
        # without verification the same server is accepted (the MicroPython default!)
        assert run(board, tls_exchange(board, srv.port, client_ctx(board, verify=False))) == b"echo:hello"
    finally:
        srv.close()


def test_concurrent_reader_sees_valueerror_writer_sees_sticky_oserror(board, pki):
    """As in modtls_mbedtls.c: the first operation that meets the verify failure raises
    ValueError, later ones (e.g. a concurrent drain()) get OSError(-9984) from last_error;
    a reading task is woken before a writing task (MicroPython's IOQueue order)."""
    wifi_up(board)
    aio = board.modules["asyncio"]
    # The server answers the ClientHello only after write() has returned, so the failure is met
    # by the waiting tasks, not by write() itself (a busy machine could otherwise deliver the
    # rogue certificate inside write(), which then raises ValueError, as the test above shows).
    srv = tls_server(pki, "rogue.pem", "rogue_key.pem", hello_delay=0.3)

    async def go():
        r, w = await aio.open_connection("127.0.0.1", srv.port, ssl=client_ctx(board),
                                         server_hostname="localhost")
        w.write(b"x")
        rx = aio.create_task(r.read(10))
        with pytest.raises(OSError) as ei:
            await aio.wait_for(w.drain(), 3)
        assert ei.value.errno == mp_ssl.ERR_X509_CERT_VERIFY_FAILED == -9984
        with pytest.raises(ValueError):
            await rx
        await w.wait_closed()

    try:
        run(board, go())
    finally:
        srv.close()


def test_wrong_hostname_is_valueerror(board, pki):
    wifi_up(board)
    srv = tls_server(pki)
    try:
        with pytest.raises(ValueError, match="Common Name"):
            run(board, tls_exchange(board, srv.port, client_ctx(board), hostname="broker.example.com"))
    finally:
        srv.close()


def test_server_rejecting_client_without_cert_is_oserror(board, pki):
    wifi_up(board)
    ssl_m = board.modules["ssl"]
    srv = tls_server(pki)
    try:
        ctx = ssl_m.SSLContext(ssl_m.PROTOCOL_TLS_CLIENT)
        ctx.verify_mode = ssl_m.CERT_REQUIRED
        ctx.load_verify_locations(cafile="certs/ca.der")
        with pytest.raises(OSError) as ei:
            run(board, tls_exchange(board, srv.port, ctx))
        assert ei.value.errno == mp_ssl.ERR_SSL_FATAL_ALERT
    finally:
        srv.close()


def _one_shot_server(pki, after_handshake):
    """A TLS server for one client that sends b"bye" once the handshake is over
    (after_handshake) or, reading the ClientHello, answers with a FIN; either way
    TCP ends with no close_notify (CPython's SSLSocket.close() sends none)."""
    ls = RealSocket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    ctx = server_ctx(pki)

    def serve():
        c, _ = ls.accept()
        c.settimeout(5)
        if after_handshake:
            c = ctx.wrap_socket(c, server_side=True)
            c.sendall(b"bye")
            time.sleep(0.2)
        else:  # read first: closing on unread data would be a reset (ECONNRESET)
            c.recv(4096)
            c.shutdown(socket.SHUT_WR)
            try:
                while c.recv(4096):
                    pass
            except OSError:
                pass
        c.close()
        ls.close()

    threading.Thread(target=serve, daemon=True).start()
    return ls.getsockname()[1]


def test_tcp_ending_without_close_notify_is_eof_once_online_and_conn_eof_in_the_handshake(board, pki):
    # As mbedtls_ssl_read(): MBEDTLS_ERR_SSL_CONN_EOF after the handshake is
    # returned as 0 (the end of the stream); during it, it is the error.
    wifi_up(board)
    aio = board.modules["asyncio"]

    async def go(port):
        r, w = await aio.open_connection("127.0.0.1", port, ssl=client_ctx(board), server_hostname="localhost")
        try:
            got = await aio.wait_for(r.read(3), 3)
            return got, await aio.wait_for(r.read(10), 3)
        finally:
            await w.wait_closed()

    assert run(board, go(_one_shot_server(pki, True))) == (b"bye", b"")
    with pytest.raises(OSError) as ei:
        run(board, go(_one_shot_server(pki, False)))
    assert ei.value.errno == mp_ssl.ERR_SSL_CONN_EOF


def test_unset_rtc_fails_verification_until_ntp(board, pki):
    wifi_up(board)
    board.clock.set(0)  # a fresh power-on: 2000-01-01
    assert board.modules["time"].gmtime()[:3] == (2000, 1, 1)
    srv = tls_server(pki)
    try:
        with pytest.raises(ValueError, match="starts in the future"):
            run(board, tls_exchange(board, srv.port, client_ctx(board)))
        board.modules["ntptime"].settime()
        assert abs(board.modules["time"].time() - (time.time() - 946684800)) < 3
        assert run(board, tls_exchange(board, srv.port, client_ctx(board))) == b"echo:hello"
    finally:
        srv.close()


def test_client_key_goes_only_to_a_private_deleted_temp_file(board, pki, monkeypatch):
    seen = []

    class Spy(ssl.SSLContext):
        def load_cert_chain(self, certfile, keyfile=None, password=None):
            d = os.path.dirname(keyfile)
            seen.append((d, os.stat(d).st_mode & 0o777, os.stat(keyfile).st_mode & 0o777,
                         os.stat(certfile).st_mode & 0o777))
            return super().load_cert_chain(certfile, keyfile, password)

    class FakeSSL:
        def __getattr__(self, name):
            return getattr(ssl, name)

    fake = FakeSSL()
    fake.SSLContext = Spy
    monkeypatch.setattr(mp_ssl, "_ssl", fake)
    wifi_up(board)
    srv = tls_server(pki)
    try:
        assert run(board, tls_exchange(board, srv.port, client_ctx(board))) == b"echo:hello"
    finally:
        srv.close()
    assert seen and all(tuple(x[1:]) == (0o700, 0o600, 0o600) for x in seen)
    for d, *_ in seen:
        assert not os.path.exists(d)
    for base in {tempfile.gettempdir(), "/dev/shm"}:
        if os.path.isdir(base):
            assert not [n for n in os.listdir(base) if n.startswith(mp_ssl.TEMP_PREFIX)]


# ---------------------------------------------------------------------------
# Wi-Fi


def test_wifi_statuses(board):
    net = board.modules["network"]
    w = net.WLAN(net.STA_IF)
    assert w is net.WLAN()  # one object per interface
    assert not hasattr(net.WLAN, "STAT_GOT_IP")  # module-level only, as on the esp32 port
    with pytest.raises(OSError, match="STA must be active"):
        w.scan()
    with pytest.raises(OSError, match="Wifi Not Started"):
        w.connect(*HOME)
    w.active(True)
    assert [s[0] for s in w.scan()] == [b"HomeNet"]
    assert w.status() == net.STAT_IDLE
    assert w.config("mac") == bytes.fromhex("240ac4123456")
    assert net.WLAN(net.AP_IF).config("mac") == bytes.fromhex("240ac4123457")

    w.connect("HomeNet", "wrong-password")
    assert w.status() == net.STAT_CONNECTING
    assert wait_until(lambda: w.status() == net.STAT_WRONG_PASSWORD, 2)
    with pytest.raises(OSError, match="Wifi Internal Error"):  # still retrying
        w.connect(*HOME)
    w.disconnect()
    assert w.status() == net.STAT_IDLE

    w.connect("NoSuchNet", "x")
    assert wait_until(lambda: w.status() == net.STAT_NO_AP_FOUND, 2)
    assert not w.isconnected()
    w.disconnect()

    w.connect(*HOME)
    assert wait_until(lambda: w.status() == net.STAT_GOT_IP, 2)
    assert w.isconnected() and w.status("rssi") == -55
    assert w.ifconfig()[0].startswith("192.168.1.") and w.ipconfig("addr4")[0] == w.ifconfig()[0]


def test_reconnects_limit(board):
    net = board.modules["network"]
    w = net.WLAN(net.STA_IF)
    w.active(True)
    w.config(reconnects=1)
    assert w.config("reconnects") == 1
    w.connect("NoSuchNet", "x")
    # two attempts (first + one retry), then the driver gives up
    assert wait_until(lambda: board.wifi.attempt_due is None and board.wifi.reason == 201, 3)
    assert w.status() == net.STAT_NO_AP_FOUND
    board.air.set_network("NoSuchNet", "x")
    time.sleep(0.6)
    assert not w.isconnected()  # no more retries


def test_link_drop_aborts_and_blocks_then_reconnects(board):
    w = wifi_up(board)
    net, aio, sock_m = (board.modules[n] for n in ("network", "asyncio", "socket"))
    srv = EchoServer()

    async def scenario():
        r, wr = await aio.open_connection("127.0.0.1", srv.port)
        wr.write(b"a")
        await wr.drain()
        assert await aio.wait_for(r.read(10), 2) == b"echo:a"
        pending = aio.create_task(r.read(10))  # blocked reader, woken by the abort
        await aio.sleep_ms(50)
        board.air.drop("HomeNet")
        for _ in range(50):
            if not w.isconnected():
                break
            await aio.sleep_ms(20)
        assert not w.isconnected()
        t0 = time.monotonic()
        wr.write(b"lost")  # a dead radio: accepted, goes nowhere
        await wr.drain()
        with pytest.raises(OSError) as ei:
            await aio.wait_for(pending, 3)
        assert ei.value.errno == errno.ECONNABORTED
        assert time.monotonic() - t0 > 0.5  # Wi-Fi reports the loss before TCP does
        assert b"lost" not in b"".join(srv.received) and srv.eofs == 0  # the peer saw nothing
        with pytest.raises(OSError) as ei:  # the same stream stays dead
            wr.write(b"b")
            await wr.drain()
        with pytest.raises(OSError) as ei:
            await aio.open_connection("127.0.0.1", srv.port)
        assert ei.value.errno == errno.EHOSTUNREACH
        await wr.wait_closed()

    try:
        run(board, scenario())
        s = sock_m.socket()
        with pytest.raises(OSError) as ei:
            s.connect(("127.0.0.1", srv.port))
        assert ei.value.errno == errno.EHOSTUNREACH
        s.close()
        with pytest.raises(OSError) as ei:
            sock_m.getaddrinfo("localhost", 80)
        assert ei.value.errno == -202
        assert w.status() in (net.STAT_CONNECTING, net.STAT_NO_AP_FOUND)
        assert wait_until(lambda: w.status() == net.STAT_NO_AP_FOUND, 2)

        board.air.restore("HomeNet")
        assert wait_until(w.isconnected, 3)  # the driver reconnects by itself
        assert run(board, _echo_once(board, srv.port)) == b"echo:again"
    finally:
        srv.close()


async def _echo_once(rt, port):
    aio = rt.modules["asyncio"]
    r, w = await aio.open_connection("127.0.0.1", port)
    w.write(b"again")
    await w.drain()
    data = await aio.wait_for(r.read(100), 2)
    await w.wait_closed()
    return data


def test_refused_connection_surfaces_on_first_io(board):
    wifi_up(board)
    aio = board.modules["asyncio"]
    s = RealSocket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nobody listens there

    async def go():
        r, w = await aio.open_connection("127.0.0.1", port)  # like MicroPython: no error yet
        with pytest.raises(OSError):
            w.write(b"x")
            await w.drain()
        await w.wait_closed()

    run(board, go())


def test_stream_close_does_nothing_and_wait_closed_closes(board):
    """As in MicroPython 1.28 (extmod/asyncio/stream.py): Stream.close() is a no-op,
    the socket is closed by `await wait_closed()`. Firmware that only calls close()
    leaks the socket on the board, so it must leak here too."""
    wifi_up(board)
    aio = board.modules["asyncio"]
    srv = EchoServer()

    async def go():
        r, w = await aio.open_connection("127.0.0.1", srv.port)
        w.write(b"a")
        await w.drain()
        assert await aio.wait_for(r.read(10), 2) == b"echo:a"
        w.close()
        assert w.s.fileno() >= 0  # still open...
        w.write(b"b")  # ...and still working
        await w.drain()
        assert await aio.wait_for(r.read(10), 2) == b"echo:b"
        assert srv.eofs == 0
        await w.wait_closed()
        assert w.s.fileno() == -1

    try:
        run(board, go())
        assert wait_until(lambda: srv.eofs == 1, 3)  # the peer sees the close now
    finally:
        srv.close()


# ---------------------------------------------------------------------------
# asyncio API shape


def test_asyncio_micropython_semantics(board, capsys):
    aio = board.modules["asyncio"]
    assert not hasattr(aio, "Queue") and not hasattr(aio, "TaskGroup")
    assert not issubclass(aio.TimeoutError, OSError)

    async def main():
        with pytest.raises(TypeError):
            aio.create_task(aio.sleep(1))  # sleep() is not a coroutine on MicroPython
        with pytest.raises(TypeError):
            await aio.wait_for_ms(aio.sleep(10), 50)
        return "ok"

    async def slow():
        await aio.sleep(5)

    async def main2():
        with pytest.raises(aio.TimeoutError):
            await aio.wait_for_ms(slow(), 50)
        flag = aio.ThreadSafeFlag()
        threading.Timer(0.05, flag.set).start()
        await aio.wait_for(flag.wait(), 2)

        async def boom():
            raise RuntimeError("lost")

        aio.create_task(boom())
        await aio.sleep_ms(30)
        return "ok"

    assert aio.run(main()) == "ok"
    assert aio.run(main2()) == "ok"
    out = capsys.readouterr().out
    assert "Task exception wasn't retrieved" in out and "RuntimeError: lost" in out


# ---------------------------------------------------------------------------
# ticks, time, os, imports


def test_ticks_wrap_arithmetic(tmp_path):
    rt = Runtime(str(tmp_path), ticks_wrap_s=0.3).install()
    try:
        t = rt.modules["time"]
        P = 1 << 30
        assert t.ticks_diff(5, P - 5) == 10
        assert t.ticks_diff(P - 5, 5) == -10
        assert t.ticks_add(P - 1, 2) == 1
        assert t.ticks_add(1, -2) == P - 1
        assert t.ticks_diff(t.ticks_add(123, P // 2 - 1), 123) == P // 2 - 1
        with pytest.raises(OverflowError):
            t.ticks_add(0, P // 2)
        a = t.ticks_ms()
        assert a > P - 400  # starts just before the wrap
        time.sleep(0.4)
        b = t.ticks_ms()
        assert b < a  # wrapped ...
        assert 380 <= t.ticks_diff(b, a) < 1000  # ... and ticks_diff still right
        assert 0 <= t.ticks_us() < P
    finally:
        rt.uninstall()


def test_fs_delay_slows_every_filesystem_change(tmp_path):
    # --fs-delay: rename, remove, mkdir and rmdir each take that long (a
    # LittleFS commit on the chip), so a killed board can stop in the middle.
    rt = Runtime(str(tmp_path), fs_delay_ms=60).install()
    try:
        o = rt.modules["os"]
        t = time.monotonic()
        o.mkdir("/d")
        with open(os.path.join(str(tmp_path), "d", "f"), "w") as f:
            f.write("x")
        o.rename("/d/f", "/d/g")
        o.remove("/d/g")
        o.rmdir("/d")
        assert 0.24 <= time.monotonic() - t < 2 and o.listdir("/") == []
        rt.fs_delay = 0
        t = time.monotonic()
        o.mkdir("/e")
        o.rmdir("/e")
        assert time.monotonic() - t < 0.05
    finally:
        rt.uninstall()


def test_time_os_and_import_rules(board):
    t, os_m = board.modules["time"], board.modules["os"]
    assert isinstance(t.time(), int)
    assert abs(t.time() - (time.time() - 946684800)) < 3  # board fixture has a synced RTC
    assert t.mktime(t.gmtime(1000)) == 1000 and t.gmtime(0)[:6] == (2000, 1, 1, 0, 0, 0)
    assert len(t.localtime()) == 8
    assert not hasattr(os_m, "path") and not hasattr(t, "monotonic")
    assert os_m.uname().sysname == "esp32" and os_m.uname().release == "1.27.0"
    assert "certs" in os_m.listdir("/")
    names = {e[0]: e[1] for e in os_m.ilistdir("/")}
    assert names["certs"] == 0x4000
    assert os_m.statvfs("/")[0] == 4096
    with pytest.raises(OSError) as ei:
        os_m.remove("nope.txt")
    assert type(ei.value).__name__ == "OSError" and ei.value.errno == errno.ENOENT
    bd = board.board_dir
    with open(os.path.join(bd, "lib", "fw.py"), "w") as f:
        f.write("import json, time\nfrom micropython import const\nX = const(4)\n"
                "def load():\n    with open('/certs/x.json', 'w') as f:\n        f.write(json.dumps({'a': X}))\n"
                "    return json.loads(open('certs/x.json').read())\n"
                "def bad():\n    import typing\n"
                "def bad2():\n    try:\n        open('nope')\n    except FileNotFoundError:\n        pass\n"
                "def bad3():\n    return json.dumps({}, indent=2)\n")
    fw = board.import_module("fw")
    assert fw.load() == {"a": 4}
    with pytest.raises(ImportError):
        fw.bad()
    with pytest.raises(NameError):
        fw.bad2()
    with pytest.raises(TypeError):
        fw.bad3()


# ---------------------------------------------------------------------------
# pins


def test_errno_has_only_micropythons_names(board):
    e = board.modules["errno"]
    assert e.ECONNRESET == errno.ECONNRESET and e.errorcode[errno.EHOSTUNREACH] == "EHOSTUNREACH"
    for name in ("EPIPE", "EINTR", "ENOSPC", "EWOULDBLOCK"):  # absent from py/moderrno.c's list
        assert not hasattr(e, name), name


def test_pins_outputs_and_irq(board):
    m, aio = board.modules["machine"], board.modules["asyncio"]
    pins = board.pins_helper
    led = m.Pin(2, m.Pin.OUT, value=0)
    led.value(1)
    assert pins.output(2) == 1
    led.off()
    assert pins.output(2) == 0
    pwm = m.PWM(m.Pin(4), freq=1000, duty_u16=32768)
    assert pins.pwm(4) == {"freq": 1000, "duty_u16": 32768}
    pwm.duty_u16(100)
    assert pins.pwm(4)["duty_u16"] == 100
    with pytest.raises(ValueError):
        m.Pin(34, m.Pin.OUT)
    with pytest.raises(ValueError):
        m.Pin(6)

    btn = m.Pin(0, m.Pin.IN, m.Pin.PULL_UP)
    assert btn.value() == 1
    hits = []
    flag = aio.ThreadSafeFlag()

    def on_press(p):
        hits.append((p, p.value(), threading.current_thread().name))
        flag.set()

    btn.irq(handler=on_press, trigger=m.Pin.IRQ_FALLING)

    async def main():
        await aio.sleep_ms(20)
        pins.press(0)
        await aio.wait_for(flag.wait(), 2)
        pins.release(0)  # rising edge: not in the trigger
        await aio.sleep_ms(200)

    aio.run(main())
    assert len(hits) == 1 and hits[0][0] is btn and hits[0][1] == 0
    assert hits[0][2] == threading.main_thread().name  # ran on the asyncio loop's thread
    assert btn.value() == 1


# ---------------------------------------------------------------------------
# the board runner (a real process, real re-exec)


def test_board_runner_reset_and_persistence(tmp_path):
    bd = tmp_path / "board"
    bd.mkdir()
    (bd / "boot.py").write_text("print('boot.py ran')\nGREETING = 'hi'\n")
    (bd / "main.py").write_text(
        "import machine, os\n"
        "print('main.py', GREETING, 'cause', machine.reset_cause())\n"
        "with open('count.txt', 'a') as f:\n    f.write('x')\n"
        "if 'reset_done' not in os.listdir():\n"
        "    open('reset_done', 'w').close()\n"
        "    print('resetting')\n"
        "    machine.reset()\n"
        "print('second boot, count', open('count.txt').read())\n"
        "raise OSError(113)\n")
    p = subprocess.run([sys.executable, "-m", "tools.sim.board", "--dir", str(bd)], cwd=ROOT,
                       capture_output=True, text=True, timeout=20)
    out = p.stdout
    assert out.count("MicroPython v1.27.0 (simulated board") == 2, out + p.stderr
    assert "main.py hi cause 1" in out and "resetting" in out
    assert "main.py hi cause 2" in out and "second boot, count xx" in out
    assert (bd / "count.txt").read_text() == "xx"
    assert 'File "main.py", line 10, in <module>' in out and "OSError: [Errno 113] EHOSTUNREACH" in out
    assert p.returncode == 1


def test_board_runner_watchdog_resets_a_starved_board(tmp_path):
    bd = tmp_path / "board"
    bd.mkdir()
    (bd / "main.py").write_text(
        "import machine, os, time\n"
        "print('main.py cause', machine.reset_cause())\n"
        "if 'fed' not in os.listdir():\n"
        "    w = machine.WDT(timeout=300)\n"
        "    for _ in range(5):\n        time.sleep_ms(100)\n        w.feed()\n"
        "    open('fed', 'w').close()\n"
        "    print('fed for 500 ms')\n"
        "    while True:\n        pass  # starves the watchdog\n"
        "print('after the watchdog')\n")
    p = subprocess.run([sys.executable, "-m", "tools.sim.board", "--dir", str(bd)], cwd=ROOT,
                       capture_output=True, text=True, timeout=20)
    out = p.stdout
    assert "main.py cause 1" in out and "fed for 500 ms" in out, out + p.stderr
    assert "task_wdt: Task watchdog got triggered" in out
    assert "main.py cause 3" in out and "after the watchdog" in out
    assert p.returncode == 0


def test_board_runner_wifi_tcp_and_button(tmp_path):
    """A firmware-like main.py on a real board process: Wi-Fi, asyncio TCP, a button IRQ."""
    srv = EchoServer()
    bd = tmp_path / "board"
    bd.mkdir()
    Air(tmp_path / "air.json").set_network(*HOME)
    pins = Pins.for_board(bd)
    (bd / "cfg.json").write_text(json.dumps({"port": srv.port}))
    (bd / "main.py").write_text('''
import asyncio, json, network, time
from machine import Pin
cfg = json.loads(open("cfg.json").read())
w = network.WLAN(network.STA_IF)
w.active(True)
w.connect("HomeNet", "secret123")
while w.status() != network.STAT_GOT_IP:
    time.sleep_ms(20)
print("wifi up", w.ifconfig()[0])
led = Pin(2, Pin.OUT, value=0)
flag = asyncio.ThreadSafeFlag()
Pin(0, Pin.IN, Pin.PULL_UP).irq(lambda p: flag.set(), Pin.IRQ_FALLING)

async def main():
    r, s = await asyncio.open_connection("127.0.0.1", cfg["port"])
    s.write(b"hi")
    await s.drain()
    print("got", await r.read(20))
    await flag.wait()
    led.on()
    print("button")
    while w.isconnected():
        await asyncio.sleep_ms(20)
    try:
        await asyncio.wait_for(r.read(20), 2)
    except OSError as e:
        print("link lost", e.errno)

asyncio.run(main())
''')
    p = subprocess.Popen([sys.executable, "-m", "tools.sim.board", "--dir", str(bd)], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []

    def expect(text, timeout=5):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            line = p.stdout.readline()
            if not line:
                break
            lines.append(line)
            if text in line:
                return line
        raise AssertionError("no %r in %r (stderr %r)" % (text, lines, p.stderr.read()))

    try:
        expect("wifi up 192.168.1.")
        expect("got b'echo:hi'")
        pins.press(0)
        expect("button")
        assert wait_until(lambda: pins.output(2) == 1, 2)
        Air(tmp_path / "air.json").drop("HomeNet")
        assert "link lost %d" % errno.ECONNABORTED in expect("link lost")
        assert p.wait(5) == 0
    finally:
        if p.poll() is None:
            p.kill()
        p.wait()
        p.stdout.close()
        p.stderr.close()
        srv.close()


def test_the_world_files_are_read_again_only_when_replaced(tmp_path, monkeypatch):
    # Polled every 50 ms: reading them each time would fill the board's heap with
    # copies on the MicroPython backend, where an ESP32's drivers take nothing from it.
    import builtins

    from tools.sim import Air, Pins
    from tools.sim.mpy.simworld import air as air_mod, pins as pins_mod

    opened = []

    def spy(path, *a, **k):
        opened.append(os.path.basename(path))
        return builtins.open(path, *a, **k)

    monkeypatch.setattr(air_mod, "open", spy, raising=False)
    monkeypatch.setattr(pins_mod, "open", spy, raising=False)
    air = Air(tmp_path / "air.json")
    air.set_network("HomeNet", "secret123")
    f = air_mod.AirFile(str(tmp_path / "air.json"))
    assert opened == ["air.json"]
    assert not f.reload() and not f.reload() and opened == ["air.json"]  # unchanged: not even opened
    air.set_network("HomeNet", "secret124")  # same size, same second: still a new file
    assert f.reload() and f.find("HomeNet")["password"] == "secret124" and opened.count("air.json") == 2
    os.remove(tmp_path / "air.json")
    assert f.reload() and f.data == {"networks": []}
    assert not f.reload() and opened.count("air.json") == 3

    pins = Pins(str(tmp_path / "pins.json"), str(tmp_path / "pins_out.json"))
    bank = pins_mod.PinBank(pins.inputs, pins.outputs, threading.Lock(), lambda h, p: None)
    opened.clear()
    bank.poll()
    bank.poll()
    assert opened == []  # no file, nothing read
    pins.set(0, 1)
    bank.poll()
    assert opened == ["pins.json"] and bank.levels == {0: 1}
    bank.poll()
    assert opened == ["pins.json"]
    pins.set(0, 0)  # same size again
    bank.poll()
    assert opened == ["pins.json"] * 2 and bank.levels == {0: 0}
