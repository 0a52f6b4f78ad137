"""`tls` (the C module) and `ssl` (micropython-lib's wrapper) backed by CPython's OpenSSL.

Mirrors MicroPython's layering:
  * tls.SSLContext(PROTOCOL_TLS_CLIENT) verifies by default (C layer), servers do not;
  * ssl.SSLContext(...) is the wrapper that sets verify_mode = CERT_NONE, reads str
    arguments of load_cert_chain/load_verify_locations as file paths and bytes as data.
Data may be DER or PEM (PEM if it contains b"-----BEGIN "). Bad key -> ValueError("invalid
key"), bad cert -> ValueError("invalid cert"). Client + CERT_REQUIRED + no server_hostname
-> ValueError("CERT_REQUIRED requires server_hostname"). Certificate verification failures
raise ValueError with mbedTLS's verify text; other TLS failures raise OSError(-code, text)
with mbedTLS's error codes. CERT_OPTIONAL verifies nothing (as on mbedTLS ports). TLS 1.2
only (ESP-IDF's mbedTLS has 1.3 off). With CERT_REQUIRED the peer certificate's validity is
also checked against the *board* clock, like mbedTLS does, so a board that never set its RTC
(2000-01-01) fails with "The certificate validity starts in the future".

The TLS engine is an ssl.SSLObject over memory BIOs fed from the board socket, so the
handshake happens inside read()/write() like mbedTLS, errors surface there, and a Wi-Fi
drop reaches TLS through the board socket. CPython needs the client certificate and key as
files: they go to a 0600 file in a 0700 directory (in /dev/shm when available) that is
deleted right after loading; the key is never written anywhere else nor logged.
"""

import datetime as _dt
import errno as _errno
import os as _os
import select as _select
import ssl as _ssl
import tempfile as _tempfile
import time as _time
import types

from cryptography import x509 as _x509
from cryptography.hazmat.primitives import serialization as _ser
from cryptography.hazmat.primitives.asymmetric import ec as _ec
from cryptography.hazmat.primitives.asymmetric import rsa as _rsa

from .runtime import EPOCH_2000, oserror, plain_oserror

CERT_NONE, CERT_OPTIONAL, CERT_REQUIRED = 0, 1, 2
PROTOCOL_TLS_CLIENT, PROTOCOL_TLS_SERVER, PROTOCOL_DTLS_CLIENT, PROTOCOL_DTLS_SERVER = 0, 1, 2, 3
MBEDTLS_VERSION = "Mbed TLS 3.6.2 (simulated by %s)" % _ssl.OPENSSL_VERSION
TEMP_PREFIX = "simtls-"

# mbedTLS error codes and mbedtls_strerror() texts
ERR_X509_CERT_VERIFY_FAILED = -0x2700
ERR_SSL_CONN_EOF = -0x7280
ERR_SSL_FATAL_ALERT = -0x7780
ERR_SSL_NO_CLIENT_CERT = -0x7480
ERR_SSL_INTERNAL = -0x6C00
_ERR_TEXT = {
    ERR_X509_CERT_VERIFY_FAILED: "X509 - Certificate verification failed, e.g. CRL, CA or signature check failed",
    ERR_SSL_CONN_EOF: "SSL - The connection indicated an EOF",
    ERR_SSL_FATAL_ALERT: "SSL - A fatal alert message was received from our peer",
    ERR_SSL_NO_CLIENT_CERT: "SSL - No client certification received from the client, but required by the authentication mode",
    ERR_SSL_INTERNAL: "SSL - Internal error (eg, unexpected failure in lower-level module)",
}

# mbedtls_x509_crt_verify_info() texts
V_EXPIRED = "The certificate validity has expired"
V_REVOKED = "The certificate has been revoked (is on a CRL)"
V_CN_MISMATCH = "The certificate Common Name (CN) does not match with the expected CN"
V_NOT_TRUSTED = "The certificate is not correctly signed by the trusted CA"
V_FUTURE = "The certificate validity starts in the future"
V_EXT_KEY_USAGE = "Usage does not match the extendedKeyUsage extension"

_OPENSSL_TO_MBEDTLS = {
    9: V_FUTURE,  # X509_V_ERR_CERT_NOT_YET_VALID
    10: V_EXPIRED,  # X509_V_ERR_CERT_HAS_EXPIRED
    23: V_REVOKED,  # X509_V_ERR_CERT_REVOKED
    26: V_EXT_KEY_USAGE,  # X509_V_ERR_INVALID_PURPOSE
    62: V_CN_MISMATCH,  # X509_V_ERR_HOSTNAME_MISMATCH
    64: V_CN_MISMATCH,  # X509_V_ERR_IP_ADDRESS_MISMATCH
}

_CURVES = (_ec.SECP192R1, _ec.SECP224R1, _ec.SECP256R1, _ec.SECP384R1, _ec.SECP521R1, _ec.SECP256K1)


def _mbed_error(code, detail=None):
    text = _ERR_TEXT.get(code, "SSL error")
    if detail:
        text = "%s [sim: %s]" % (text, detail)
    return OSError(code, text)


def _verify_error(text):
    return ValueError("\n%s\n" % text)


def _data(obj):
    if isinstance(obj, str):
        return obj.encode()
    try:
        return bytes(obj)
    except TypeError:
        raise TypeError("object with buffer protocol required") from None


def _key_ok(pub):
    if isinstance(pub, _rsa.RSAPublicKey):
        return True
    if isinstance(pub, _ec.EllipticCurvePublicKey):
        return isinstance(pub.curve, _CURVES)
    return False  # Ed25519/X25519/DSA...: not in ESP-IDF's mbedTLS


def parse_key(obj):
    data = _data(obj)
    try:
        if b"-----BEGIN " in data:
            key = _ser.load_pem_private_key(data, password=None)
        else:
            key = _ser.load_der_private_key(data, password=None)
    except Exception:
        raise ValueError("invalid key") from None
    if not _key_ok(key.public_key()):
        raise ValueError("invalid key")
    return key


def parse_certs(obj):
    data = _data(obj)
    try:
        if b"-----BEGIN " in data:
            certs = _x509.load_pem_x509_certificates(data)
        else:
            certs = [_x509.load_der_x509_certificate(data)]
    except Exception:
        raise ValueError("invalid cert") from None
    for c in certs:
        try:
            ok = _key_ok(c.public_key())
        except Exception:
            ok = False
        if not ok:
            raise ValueError("invalid cert")
    return certs


def _pem(cert):
    return cert.public_bytes(_ser.Encoding.PEM)


def _load_chain_via_tempfiles(ctx, chain, key):
    """CPython only loads a cert chain from files: write them 0600, load, delete."""
    key_pem = key.private_bytes(_ser.Encoding.PEM, _ser.PrivateFormat.PKCS8, _ser.NoEncryption())
    cert_pem = b"".join(_pem(c) for c in chain)
    base = "/dev/shm" if _os.path.isdir("/dev/shm") and _os.access("/dev/shm", _os.W_OK) else None
    d = _tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=base)  # mode 0700
    paths = (_os.path.join(d, "cert.pem"), _os.path.join(d, "key.pem"))
    try:
        for p, blob in zip(paths, (cert_pem, key_pem)):
            fd = _os.open(p, _os.O_WRONLY | _os.O_CREAT | _os.O_EXCL, 0o600)
            with _os.fdopen(fd, "wb") as f:
                f.write(blob)
        ctx.load_cert_chain(paths[0], paths[1])
    finally:
        for p in paths:
            try:
                _os.unlink(p)
            except OSError:
                pass
        try:
            _os.rmdir(d)
        except OSError:
            pass
        del key_pem


def make(rt):
    """Returns (tls module, ssl module)."""

    def recv1(sock, n):
        f = getattr(sock, "_sim_recv", None)
        if f is not None:
            return f(n)
        try:
            return sock.recv(n)
        except (BlockingIOError, InterruptedError):
            return None

    def send1(sock, data):
        f = getattr(sock, "_sim_send", None)
        if f is not None:
            return f(data)
        try:
            return sock.send(data)
        except (BlockingIOError, InterruptedError):
            return None

    class SSLContext:
        """tls.SSLContext: the C-layer context."""

        def __init__(self, protocol):
            protocol = int(protocol)
            if protocol & 2:
                raise NotImplementedError("sim: DTLS is not simulated")
            if protocol not in (PROTOCOL_TLS_CLIENT, PROTOCOL_TLS_SERVER):
                raise ValueError("invalid protocol")
            self._server = protocol == PROTOCOL_TLS_SERVER
            self._verify = CERT_NONE if self._server else CERT_REQUIRED
            self._key = None
            self._chain = None
            self._cas = []
            self._real = None

        @property
        def verify_mode(self):
            return self._verify

        @verify_mode.setter
        def verify_mode(self, val):
            self._verify = int(val)
            self._real = None

        def load_cert_chain(self, certfile, keyfile):
            key = parse_key(keyfile)  # the C code parses the key first
            chain = parse_certs(certfile)
            self._key, self._chain = key, chain
            self._real = None

        def load_verify_locations(self, cadata):
            self._cas.extend(parse_certs(cadata))
            self._real = None

        def get_ciphers(self):
            return [c["name"] for c in self._real_ctx().get_ciphers()]

        def set_ciphers(self, ciphers):
            raise NotImplementedError("sim: set_ciphers is not simulated")

        def _real_ctx(self):
            if self._real is not None:
                return self._real
            proto = _ssl.PROTOCOL_TLS_SERVER if self._server else _ssl.PROTOCOL_TLS_CLIENT
            ctx = _ssl.SSLContext(proto)
            ctx.minimum_version = _ssl.TLSVersion.TLSv1_2
            ctx.maximum_version = _ssl.TLSVersion.TLSv1_2
            if self._verify == CERT_REQUIRED:
                if not self._server:
                    ctx.check_hostname = True
                ctx.verify_mode = _ssl.CERT_REQUIRED
                if self._cas:
                    ctx.load_verify_locations(cadata="".join(_pem(c).decode() for c in self._cas))
            else:  # CERT_NONE and CERT_OPTIONAL verify nothing on mbedTLS ports
                if not self._server:
                    ctx.check_hostname = False
                ctx.verify_mode = _ssl.CERT_NONE
            if self._key is not None:
                try:
                    _load_chain_via_tempfiles(ctx, self._chain, self._key)
                except _ssl.SSLError as e:
                    raise _mbed_error(ERR_SSL_INTERNAL, "certificate and key do not match: %s"
                                      % e.reason) from None
            self._real = ctx
            return ctx

        def wrap_socket(self, sock, *, server_side=False, do_handshake_on_connect=True,
                        server_hostname=None):
            if server_hostname is None and self._verify == CERT_REQUIRED and not server_side:
                raise ValueError("CERT_REQUIRED requires server_hostname")
            return SSLSocket(self, sock, self._server, server_hostname, do_handshake_on_connect)

    class SSLSocket:
        def __init__(self, ctx, sock, server_side, server_hostname, do_handshake):
            self._ctx = ctx
            self._sock = sock
            self._verify = ctx._verify
            self._server = server_side
            self._in = _ssl.MemoryBIO()
            self._out = _ssl.MemoryBIO()
            hostname = server_hostname if server_hostname else None
            if isinstance(hostname, bytes):
                hostname = hostname.decode()
            self._obj = ctx._real_ctx().wrap_bio(self._in, self._out, server_side=server_side,
                                                 server_hostname=hostname)
            self._pend = b""
            self._hs = False
            self._err = None
            self._want = "r"
            self._closed = False
            if do_handshake:
                self._blocking_handshake()

        def __repr__(self):
            return "<SSLSocket %x>" % id(self)

        # -- plumbing ---------------------------------------------------------

        def _flush(self):
            data = self._out.read()
            if data:
                self._pend += data
            while self._pend:
                n = send1(self._sock, self._pend)
                if n is None:
                    return False
                self._pend = self._pend[n:]
            return True

        def _fill(self):
            data = recv1(self._sock, 16 * 1024 + 512)
            if data is None:
                return False
            if data:
                self._in.write(data)
            else:
                self._in.write_eof()
            return True

        def _check(self):
            if self._closed:
                raise oserror(_errno.EBADF)
            if self._err is not None:
                raise self._err

        def _map(self, e):
            """Translate an OpenSSL failure into what MicroPython/mbedTLS raises."""
            if isinstance(e, _ssl.SSLCertVerificationError):
                self._err = _mbed_error(ERR_X509_CERT_VERIFY_FAILED)
                self._flush_quietly()
                return _verify_error(_OPENSSL_TO_MBEDTLS.get(e.verify_code, V_NOT_TRUSTED))
            if isinstance(e, _ssl.SSLEOFError):
                err = _mbed_error(ERR_SSL_CONN_EOF)
            else:
                reason = (getattr(e, "reason", None) or str(e)).upper()
                if "PEER_DID_NOT_RETURN_A_CERTIFICATE" in reason:
                    err = _mbed_error(ERR_SSL_NO_CLIENT_CERT)
                elif "ALERT" in reason:
                    err = _mbed_error(ERR_SSL_FATAL_ALERT, getattr(e, "reason", None))
                else:
                    err = _mbed_error(ERR_SSL_INTERNAL, getattr(e, "reason", None) or str(e))
            self._err = err
            self._flush_quietly()
            return err

        def _flush_quietly(self):
            try:
                self._flush()
            except OSError:
                pass

        def _after_handshake(self):
            if self._hs or self._obj.version() is None:
                return
            self._hs = True
            if self._verify == CERT_REQUIRED and not self._server:
                der = self._obj.getpeercert(True)
                if der:
                    cert = _x509.load_der_x509_certificate(der)
                    now = _dt.datetime.fromtimestamp(rt.clock.now() + EPOCH_2000, _dt.timezone.utc)
                    text = None
                    if now < cert.not_valid_before_utc:
                        text = V_FUTURE
                    elif now > cert.not_valid_after_utc:
                        text = V_EXPIRED
                    if text:
                        self._obj = None
                        self._err = _mbed_error(ERR_X509_CERT_VERIFY_FAILED)
                        raise _verify_error(text)

        def _op(self, fn, writing):
            """Run an SSLObject call; None means 'would block' (see self._want)."""
            self._check()
            if writing and self._pend and not self._flush():
                self._want = "w"
                return None
            while True:
                try:
                    r = fn()
                except _ssl.SSLWantReadError:
                    if not self._flush():
                        self._want = "w"
                        return None
                    if not self._fill():
                        self._want = "r"
                        return None
                    continue
                except _ssl.SSLWantWriteError:
                    if not self._flush():
                        self._want = "w"
                        return None
                    continue
                except _ssl.SSLZeroReturnError:
                    self._flush_quietly()
                    return b""
                except _ssl.SSLEOFError as e:
                    # TCP ended with no close_notify. mbedtls_ssl_read() calls
                    # that the end of the stream once the handshake is over
                    # (read returns 0); during the handshake it is CONN_EOF.
                    if self._hs and not writing:
                        return b""
                    raise self._map(e) from None
                except _ssl.SSLError as e:
                    raise self._map(e) from None
                except OSError as e:
                    raise plain_oserror(e) from None
                self._after_handshake()
                try:
                    self._flush()
                except OSError:
                    if not writing:
                        pass
                    else:
                        raise
                return r

        def _blocking_handshake(self):
            # like mbedtls_ssl_handshake() + mp_event_wait_ms(1): blocks the interpreter
            while True:
                r = self._op(self._obj.do_handshake, True)
                if r is not None or self._hs:
                    return
                fd = self._sock.fileno()
                if self._sim_stalled():
                    _time.sleep(0.02)
                elif self._want == "w":
                    _select.select([], [fd], [], 0.05)
                else:
                    _select.select([fd], [], [], 0.05)

        def _rd1(self, n):
            if n == 0:
                return b""
            return self._op(lambda: self._obj.read(n), False)

        def _wr1(self, data):
            if not len(data):
                return 0
            return self._op(lambda: self._obj.write(data), True)

        # -- for the asyncio streams -----------------------------------------

        def _sim_fd(self):
            return self._sock.fileno()

        def _sim_stalled(self):
            f = getattr(self._sock, "_sim_stalled", None)
            return bool(f is not None and f())

        def _sim_pending_out(self):
            return bool(self._pend)

        def _sim_flush(self):
            return self._flush()

        # -- the SSLSocket API --------------------------------------------------

        def read(self, n=-1):
            from .mp_socket import stream_read

            return stream_read(self._rd1, n)

        def readinto(self, buf, nbytes=None):
            from .mp_socket import stream_readinto

            return stream_readinto(self._rd1, buf, nbytes)

        def readline(self):
            from .mp_socket import stream_readline

            return stream_readline(self._rd1)

        def write(self, buf):
            from .mp_socket import stream_write

            return stream_write(self._wr1, buf)

        def recv(self, n):
            return self._rd1(n)

        def recv_into(self, buf, nbytes=None):
            mv = memoryview(buf)
            r = self._rd1(len(mv) if nbytes is None else nbytes)
            if r is None:
                return None
            mv[:len(r)] = r
            return len(r)

        def send(self, data):
            return self._wr1(data)

        def sendall(self, data):
            return self.write(data)

        def setblocking(self, flag):
            self._sock.setblocking(flag)

        def settimeout(self, t):
            self._sock.settimeout(t)

        def getpeercert(self, binary_form=False):
            if not binary_form:
                raise NotImplementedError("")
            if self._obj is None:
                return None
            return self._obj.getpeercert(True)

        def cipher(self):
            c = self._obj.cipher() if self._obj is not None else None
            return (c[0], c[1]) if c else None

        def close(self):
            # mbedtls_ssl_free() sends no close_notify; the socket below is closed
            if self._closed:
                return
            self._closed = True
            self._obj = None
            try:
                self._sock.close()
            except OSError:
                pass

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.close()

    tls = types.ModuleType("tls")
    tls.__doc__ = "tls (simulated mbedTLS, backed by OpenSSL)"
    tls.SSLContext = SSLContext
    tls.MBEDTLS_VERSION = MBEDTLS_VERSION
    for k, v in (("CERT_NONE", CERT_NONE), ("CERT_OPTIONAL", CERT_OPTIONAL),
                 ("CERT_REQUIRED", CERT_REQUIRED), ("PROTOCOL_TLS_CLIENT", PROTOCOL_TLS_CLIENT),
                 ("PROTOCOL_TLS_SERVER", PROTOCOL_TLS_SERVER),
                 ("PROTOCOL_DTLS_CLIENT", PROTOCOL_DTLS_CLIENT),
                 ("PROTOCOL_DTLS_SERVER", PROTOCOL_DTLS_SERVER)):
        setattr(tls, k, v)

    def _read_file(path):
        try:
            with open(rt.board_path(path), "rb") as f:
                return f.read()
        except OSError as e:
            raise plain_oserror(e) from None

    class WrapperContext:
        """ssl.SSLContext (micropython-lib python-stdlib/ssl): verify_mode starts at CERT_NONE."""

        def __init__(self, *args):
            self._context = SSLContext(*args)
            self._context.verify_mode = CERT_NONE

        @property
        def verify_mode(self):
            return self._context.verify_mode

        @verify_mode.setter
        def verify_mode(self, val):
            self._context.verify_mode = val

        def load_cert_chain(self, certfile, keyfile):
            if isinstance(certfile, str):
                certfile = _read_file(certfile)
            if isinstance(keyfile, str):
                keyfile = _read_file(keyfile)
            self._context.load_cert_chain(certfile, keyfile)

        def load_verify_locations(self, cafile=None, cadata=None):
            if cafile:
                cadata = _read_file(cafile)
            self._context.load_verify_locations(cadata)

        def wrap_socket(self, sock, server_side=False, do_handshake_on_connect=True,
                        server_hostname=None):
            return self._context.wrap_socket(sock, server_side=server_side,
                                             do_handshake_on_connect=do_handshake_on_connect,
                                             server_hostname=server_hostname)

    def wrap_socket(sock, server_side=False, key=None, cert=None, cert_reqs=CERT_NONE,
                    cadata=None, server_hostname=None, do_handshake=True):
        con = WrapperContext(PROTOCOL_TLS_SERVER if server_side else PROTOCOL_TLS_CLIENT)
        if cert or key:
            con.load_cert_chain(cert, key)
        if cadata:
            con.load_verify_locations(cadata=cadata)
        con.verify_mode = cert_reqs
        return con.wrap_socket(sock, server_side=server_side, do_handshake_on_connect=do_handshake,
                               server_hostname=server_hostname)

    ssl = types.ModuleType("ssl")
    ssl.__doc__ = "ssl (micropython-lib wrapper over the simulated tls module)"
    ssl.SSLContext = WrapperContext
    ssl.wrap_socket = wrap_socket
    for k in ("CERT_NONE", "CERT_OPTIONAL", "CERT_REQUIRED", "MBEDTLS_VERSION",
              "PROTOCOL_TLS_CLIENT", "PROTOCOL_TLS_SERVER"):
        setattr(ssl, k, getattr(tls, k))
    ssl.tls = tls
    return tls, ssl
