"""HTTPS file server for OTA images in the local cloud.

It serves the files of one directory (``<cloud dir>/ota`` by default) on
127.0.0.1 only, with a server certificate from the local CA: the same
certificate the broker uses (``prepare_credentials`` in tools/broker.py), so a
node that pins the local CA (``certs/ca.der``) for the broker accepts this
server too.

What it does: GET and HEAD, ``Content-Length``, ``Accept-Ranges: bytes``, one
``Range: bytes=N-`` or ``bytes=N-M`` (206 with ``Content-Range``; 416 past the
end), 404 for anything else. It never serves a file outside its directory: the
path is resolved (symlinks included) and must stay under the root, and names
starting with '.' (half-written temporary files) are never served.

For tests it misbehaves on purpose when told to (``Fault``, ``parse_fault``):

* ``stall:N``     send N body bytes, then nothing, holding the connection open
* ``cut:N``       send N body bytes, then close the connection
* ``redirect:P``  answer 302 with Location https://<this server>/P
* ``chunked[:N]`` send the body with chunked transfer coding (N-byte chunks)
* ``status:C``    answer with HTTP status C and a small HTML page
* ``wrong-ca``    do the TLS handshake with a certificate from another CA

A fault may be limited to a number of requests (``,times=K``, ``,once``) and to
one path (``,path=/name``): ``cut:8192,once,path=/app.bin`` cuts the first
download of /app.bin only. A request takes at most one fault; stall, cut and
chunked are only taken by a GET of a file that exists, so a HEAD or a 404 does
not use them up.

Every request is recorded (``OtaServer.requests`` and, with ``log_path``, one
JSON line each): method, path, the Range header, status, the fault applied and
the body bytes actually sent, so a test can check that a resumed download asked
for the right range and how much went over the wire in total.

CLI: ``python -m tools.otaserver --help``.
"""

import argparse
import html
import json
import logging
import os
import signal
import socket
import socketserver
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import unquote, urlsplit

from provisioning.ca import ensure_ca, issue_server, write_files_atomic
from tools.broker import HOST, prepare_credentials

DEFAULT_PORT = 8443
IO_TIMEOUT = 10.0       # a silent client is dropped after this (handshake, request, each write)
MAX_CONNECTIONS = 32    # concurrent connections; more are closed at once
MAX_LOG = 1_000_000     # request log rotated to .1 beyond this
MAX_RECORDS = 10_000    # requests kept in memory
WRITE_CHUNK = 16 * 1024
FAULT_KINDS = ("stall", "cut", "redirect", "chunked", "status", "wrong-ca")
STATE_FILE = "otaserver.json"

log = logging.getLogger("tools.otaserver")


class OtaServerError(RuntimeError):
    """The server cannot start or a fault is malformed; the message says what to fix."""


# ---------------------------------------------------------------- faults

class Fault:
    """One deliberate misbehaviour. times=None: every matching request."""

    def __init__(self, kind, arg=None, path=None, times=None):
        if kind not in FAULT_KINDS:
            raise OtaServerError(f"unknown fault {kind!r}; use one of {', '.join(FAULT_KINDS)}")
        if kind in ("stall", "cut", "status") and not isinstance(arg, int):
            raise OtaServerError(f"fault {kind} needs a number ({kind}:N)")
        if kind in ("stall", "cut") and arg < 0:
            raise OtaServerError(f"fault {kind}: the byte count must be >= 0")
        if kind == "status" and not 200 <= arg <= 599:
            raise OtaServerError(f"fault status:{arg}: give a final HTTP status, 200..599")
        if kind == "chunked":
            arg = 1024 if arg is None else arg
            if not isinstance(arg, int) or arg < 1:
                raise OtaServerError("fault chunked:N: the chunk size must be >= 1")
        if kind == "redirect":
            if not isinstance(arg, str) or not arg:
                raise OtaServerError("fault redirect needs the target path (redirect:/other.bin)")
            arg = arg if arg.startswith("/") else "/" + arg
        if kind == "wrong-ca" and path is not None:
            raise OtaServerError("fault wrong-ca applies to the TLS handshake, before any path is known")
        if times is not None and times < 1:
            raise OtaServerError("a fault's count must be >= 1")
        self.kind, self.arg, self.path, self.times = kind, arg, path, times

    def __repr__(self):
        return format_fault(self)


def parse_fault(text):
    """A Fault from 'KIND[:ARG][,times=K][,path=/P]' ('once' is times=1),
    e.g. 'cut:8192,once,path=/app.bin'."""
    kind_arg, *opts = [w.strip() for w in str(text).split(",")]
    kind, _, arg = kind_arg.partition(":")
    kind, arg = kind.strip(), arg.strip()
    times = path = None
    for o in opts:
        key, _, val = o.partition("=")
        if key == "once" and not val:
            times = 1
        elif key == "times" and val.isdigit() and len(val) < 10:
            times = int(val)
        elif key == "path" and val.startswith("/"):
            path = val
        else:
            raise OtaServerError(f"fault {text!r}: {o!r} is not once, times=K or path=/P")
    if kind in ("stall", "cut", "status", "chunked") and arg:
        if not arg.isdigit() or len(arg) > 12:
            raise OtaServerError(f"fault {text!r}: {arg!r} is not a number")
        arg = int(arg)
    return Fault(kind, arg if arg != "" else None, path, times)


def format_fault(f):
    out = f.kind + ("" if f.arg is None else f":{f.arg}")
    if f.times is not None:
        out += f",times={f.times}"
    if f.path is not None:
        out += f",path={f.path}"
    return out


# ---------------------------------------------------------------- pure helpers

def parse_range(header, size):
    """(first, last) for a single 'bytes=N-' / 'bytes=N-M' / 'bytes=-K' range,
    'unsatisfiable' if it starts at or past the end, None to serve the whole
    file (no header, or one this server does not honour: as HTTP allows, a
    malformed or multi-part range is ignored)."""
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    first, last = first.strip(), last.strip()
    if not dash or (first and not first.isdigit()) or (last and not last.isdigit()):
        return None
    if len(first) > 18 or len(last) > 18:
        return None
    if not first:  # suffix range: the last K bytes
        if not last or int(last) == 0:
            return None if not last else "unsatisfiable"
        k = int(last)
        return (max(0, size - k), size - 1) if size else "unsatisfiable"
    a = int(first)
    if last and int(last) < a:
        return None
    if a >= size:
        return "unsatisfiable"
    b = min(int(last), size - 1) if last else size - 1
    return a, b


def resolve_path(root, url_path):
    """The file under root that url_path names, or None (outside root, hidden,
    not a regular file, or malformed). Never raises on bad input."""
    try:
        path = unquote(urlsplit(url_path).path, errors="strict")
    except (ValueError, UnicodeError):
        return None
    if not path.startswith("/") or "\0" in path or "\\" in path:
        return None
    parts = [p for p in path.split("/") if p]
    if not parts or any(p.startswith(".") for p in parts):  # also refuses '..'
        return None
    root = Path(root).resolve()
    try:
        target = root.joinpath(*parts).resolve()
    except (OSError, RuntimeError):  # symlink loop
        return None
    if target == root or root not in target.parents or not target.is_file():
        return None
    return target


# ---------------------------------------------------------------- server

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/1.0"  # a garbled request line still gets a status line back
    timeout = IO_TIMEOUT

    def version_string(self):
        return "rm-otaserver/1"

    def setup(self):
        raw = self.request
        raw.settimeout(IO_TIMEOUT)
        self.tls_error = None
        self._cut_done = False
        try:
            hello = raw.recv(1, socket.MSG_PEEK)
        except OSError:
            hello = b""
        if not hello:
            # Connected and left without a word (a liveness probe such as
            # running_server's): not a request, and it must not use up a fault.
            self.tls_error = "closed before the TLS handshake"
            super().setup()
            return
        fault = self.server.ota.take_fault(None, handshake=True)
        ctx = self.server.ota.foreign_context() if fault else self.server.ota.context
        try:
            self.request = ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            self.tls_error = str(exc)
            self.server.ota.record({"method": None, "path": None, "range": None, "status": None,
                                    "fault": format_fault(fault) if fault else None,
                                    "sent": 0, "tls_error": self.tls_error})
        super().setup()

    def handle(self):
        if self.tls_error is None:
            try:
                self.handle_one_request()  # one request per connection: Connection: close
            except (OSError, ssl.SSLError):
                pass

    def finish(self):
        super().finish()
        if self.tls_error is None and not self._cut_done:
            # A proper TLS close (close_notify), as a real web server sends;
            # bounded, since the client may never answer it.
            try:
                self.request.settimeout(2.0)
                self.request.unwrap()
            except (OSError, ssl.SSLError, ValueError):
                pass

    def log_message(self, fmt, *args):
        log.debug("%s %s", self.address_string(), fmt % args)

    def do_GET(self):
        self._serve(body=True)

    def do_HEAD(self):
        self._serve(body=False)

    # -- internals

    def _serve(self, body):
        ota = self.server.ota
        rng = self.headers.get("Range")
        entry = {"method": self.command, "path": self.path[:300], "range": rng[:100] if rng else None,
                 "status": None, "fault": None, "sent": 0}
        self._entry = entry
        ota.begin(entry)
        try:
            target = resolve_path(ota.root, self.path)
            where = urlsplit(self.path).path
            fault = ota.take_fault(where, kinds=("redirect", "status"))
            if fault is None and target is not None and body:
                # body faults only where there is a body: a HEAD or a 404 does not use one up
                fault = ota.take_fault(where, kinds=("stall", "cut", "chunked"))
            entry["fault"] = format_fault(fault) if fault else None
            if fault and fault.kind == "redirect":
                return self._plain(302, "Found", {"Location": ota.url(fault.arg)})
            if fault and fault.kind == "status":
                return self._plain(fault.arg, f"deliberate status {fault.arg}")
            if target is None:
                return self._plain(404, "Not Found")
            try:
                f = open(target, "rb")
            except OSError:
                return self._plain(404, "Not Found")
            with f:
                size = os.fstat(f.fileno()).st_size
                r = parse_range(rng, size)
                if r == "unsatisfiable":
                    return self._plain(416, "Range Not Satisfiable", {"Content-Range": f"bytes */{size}"})
                first, last = r if r else (0, size - 1)
                length = last - first + 1 if size else 0
                chunked = fault.arg if fault and fault.kind == "chunked" else None
                self.send_response(206 if r else 200)
                entry["status"] = 206 if r else 200
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Accept-Ranges", "bytes")
                if r:
                    self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
                if chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                else:
                    self.send_header("Content-Length", str(length))
                self.send_header("Connection", "close")
                self.end_headers()
                if not body:
                    return
                f.seek(first)
                limit = fault.arg if fault and fault.kind in ("stall", "cut") else None
                self._send_body(f, length, chunked, limit)
                if fault and fault.kind == "stall":
                    entry["stalled"] = True
                    ota.hold(self.connection)
                elif fault and fault.kind == "cut":
                    self._cut()
        finally:
            ota.done(entry)

    def _plain(self, code, text, headers=None):
        page = f"<html><body><h1>{code} {html.escape(text)}</h1></body></html>\n".encode()
        self.send_response(code)
        self._entry["status"] = code
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(page)

    def _send_body(self, f, length, chunked, limit):
        """Send length bytes from f (at most limit), counting what went out."""
        todo = length if limit is None else min(length, limit)
        while todo > 0:
            piece = f.read(min(todo, chunked or WRITE_CHUNK))
            if not piece:
                break  # the file shrank under us: the client sees a short body
            if chunked:
                self.wfile.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
            else:
                self.wfile.write(piece)
            todo -= len(piece)
            self._entry["sent"] += len(piece)
        if chunked and limit is None:
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _cut(self):
        # Close without TLS close_notify: to the client it looks like a dropped link.
        self.close_connection = True
        self._cut_done = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._entry["cut"] = True


class _TCPServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, addr, ota):
        self.ota = ota
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(addr, _Handler)

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # too many at once: refuse rather than queue
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address):
        log.debug("connection from %s failed", client_address, exc_info=True)


def server_context(certfile, keyfile):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(certfile), str(keyfile))
    return ctx


def foreign_identity(workdir):
    """(crt, key) of a 'localhost' certificate from a second CA that no node
    trusts, kept in workdir/ota-foreign/ (created on first use)."""
    d = Path(workdir) / "ota-foreign"
    ensure_ca(d / "ca")
    if not ((d / "server.crt").exists() and (d / "server.key").exists()):
        issue_server(d / "ca", d, force=True)
    return d / "server.crt", d / "server.key"


class OtaServer:
    """The HTTPS file server; start() returns once it accepts TLS handshakes.

    root: directory to serve; workdir: the cloud directory holding the CA and
    the server certificate (created if missing, as the broker does).
    """

    def __init__(self, root, workdir, port=0, faults=(), log_path=None, state_file=False):
        self.root = Path(root)
        self.workdir = Path(workdir)
        self._port = int(port)
        self.faults = list(faults)
        self.requests = []
        self.log_path = Path(log_path) if log_path else None
        self.state_file = self.workdir / STATE_FILE if state_file else None
        self.context = None
        self._foreign = None
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server = None
        self._thread = None

    host = property(lambda self: HOST)
    port = property(lambda self: self._port)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def url(self, path):
        return f"https://{HOST}:{self._port}/{path.lstrip('/')}"

    def start(self):
        self.root.mkdir(parents=True, exist_ok=True)
        paths = prepare_credentials(self.workdir)
        self.context = server_context(paths["server_crt"], paths["server_key"])
        try:
            self._server = _TCPServer((HOST, self._port), self)
        except OSError as exc:
            raise OtaServerError(f"cannot listen on {HOST}:{self._port} ({exc}); "
                                 "is another file server running? pick another port (0: any free one)") from None
        self._port = self._server.server_address[1]
        self._release.clear()
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                         name=f"otaserver-{self._port}", daemon=True)
        self._thread.start()
        if self.state_file:
            doc = {"host": HOST, "port": self._port, "root": str(self.root.resolve()), "pid": os.getpid()}
            write_files_atomic({self.state_file: (json.dumps(doc).encode() + b"\n", 0o644)})
        return self

    def stop(self):
        server, self._server = self._server, None
        self._release.set()  # let stalled connections go
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        if self.state_file:
            try:
                doc = json.loads(self.state_file.read_text())
                if doc.get("port") == self._port and doc.get("pid") == os.getpid():
                    self.state_file.unlink()
            except (OSError, ValueError, AttributeError):
                pass

    def add_fault(self, fault):
        """Add a Fault (or its text form); it applies to requests from now on."""
        with self._lock:
            self.faults.append(parse_fault(fault) if isinstance(fault, str) else fault)

    def clear(self):
        """Forget the faults and the recorded requests."""
        with self._lock:
            self.faults.clear()
            self.requests.clear()

    def add_file(self, name, data):
        """Put data in the served directory as name (written atomically); its URL."""
        parts = str(name).split("/")
        if not all(p and not p.startswith(".") and "\\" not in p and "\0" not in p for p in parts):
            raise OtaServerError(f"{name!r} is not a name this server would serve (no empty, hidden or '..' parts)")
        write_files_atomic({self.root.joinpath(*parts): (bytes(data), 0o644)})
        return self.url(name)

    def starts(self, path):
        """Where each GET of path asked to start: 0 without a Range, N for
        'bytes=N-', None for any other Range. Shows how a download resumed."""
        out = []
        with self._lock:
            for r in self.requests:
                if r["path"] != path or r["method"] != "GET":
                    continue
                if r["range"] is None:
                    out.append(0)
                    continue
                unit, _, spec = r["range"].partition("=")
                first, dash, last = spec.strip().partition("-")
                ok = unit.strip().lower() == "bytes" and dash and not last.strip() and first.strip().isdigit()
                out.append(int(first) if ok else None)
        return out

    def sent(self, path=None):
        """Body bytes sent in total (for one path, if given)."""
        with self._lock:
            return sum(r["sent"] for r in self.requests if path is None or r["path"] == path)

    def foreign_context(self):
        if self._foreign is None:
            self._foreign = server_context(*foreign_identity(self.workdir))
        return self._foreign

    # -- used by the handler threads

    def take_fault(self, path, handshake=False, kinds=None):
        """The first fault of one of kinds that applies to this request
        (counting it down), or None."""
        with self._lock:
            for f in self.faults:
                if (f.kind == "wrong-ca") != handshake or (kinds and f.kind not in kinds):
                    continue
                if f.path is not None and f.path != path:
                    continue
                taken = Fault(f.kind, f.arg, f.path, f.times)  # as it was when it applied
                if f.times is not None:
                    f.times -= 1
                    if f.times == 0:
                        self.faults.remove(f)
                return taken
        return None

    def hold(self, conn):
        """Keep a stalled connection open, sending nothing, until the client
        goes away or the server stops."""
        while not self._release.is_set():
            try:
                conn.settimeout(0.2)
                if conn.recv(1) == b"":
                    return  # the client closed its end
            except (socket.timeout, ssl.SSLWantReadError):
                continue
            except (OSError, ssl.SSLError):
                return

    def begin(self, entry):
        """Start recording a request; the handler updates entry as it goes, so
        a stalled or running download is visible while it lasts."""
        entry["time"] = round(time.time(), 3)
        with self._lock:
            self.requests.append(entry)
            del self.requests[:-MAX_RECORDS]

    def done(self, entry):
        """The request is over: log it (and append it to log_path)."""
        if self.log_path:
            with self._lock:
                try:
                    if self.log_path.exists() and self.log_path.stat().st_size >= MAX_LOG:
                        os.replace(self.log_path, self.log_path.with_name(self.log_path.name + ".1"))
                    with open(self.log_path, "a", encoding="utf-8") as f:
                        f.write(json.dumps(entry) + "\n")
                except OSError as exc:
                    log.warning("cannot write the request log %s: %s", self.log_path, exc)
        log.info("%s %s range=%s -> %s, %d bytes%s", entry.get("method"), entry.get("path"), entry.get("range"),
                 entry.get("status"), entry.get("sent", 0), f" [{entry['fault']}]" if entry.get("fault") else "")

    def record(self, entry):
        self.begin(entry)
        self.done(entry)


# ---------------------------------------------------------------- finding a running server

def running_server(workdir, timeout=1.0):
    """(host, port, root) of the file server recorded in workdir/otaserver.json
    if its process is alive and its port accepts connections, else None.

    Only a TCP connection, closed without a byte: the server does not count
    that as a request, so a probe never uses up a fault meant for a board.
    """
    try:
        doc = json.loads((Path(workdir) / STATE_FILE).read_text())
        host, port, root, pid = doc["host"], int(doc["port"]), Path(doc["root"]), int(doc["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except PermissionError:
        pass  # alive, someone else's
    except (OSError, OverflowError):
        return None
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return host, port, root
    except OSError:
        return None


# ---------------------------------------------------------------- CLI

def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m tools.otaserver",
        description="Serve OTA images over HTTPS on 127.0.0.1 with a certificate from the local CA "
                    "(the broker's), so boards and the simulator that pin the local CA can download "
                    "them. 'python -m tools.cloud' runs one already; this runs one on its own, e.g. "
                    "with faults for testing.",
        epilog="faults: stall:N (N bytes, then silence), cut:N (N bytes, then close), redirect:/P "
               "(302 to /P), chunked[:N], status:C, wrong-ca (certificate from another CA). Append "
               ",once or ,times=K to apply it to K requests only, ,path=/P to one file: "
               "--fault cut:65536,once,path=/app.bin",
    )
    p.add_argument("--dir", type=Path, default=Path(".cloud"), help="cloud work directory (default: %(default)s)")
    p.add_argument("--root", type=Path, help="directory to serve (default: DIR/ota)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port on 127.0.0.1, 0 for any free one "
                                                                  "(default: %(default)s)")
    p.add_argument("--fault", action="append", default=[], metavar="SPEC", help="misbehave on purpose (see below)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        faults = [parse_fault(s) for s in args.fault]
        server = OtaServer(args.root or args.dir / "ota", args.dir, args.port, faults,
                           log_path=args.dir / "otaserver.log", state_file=True).start()
    except (OtaServerError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"serving {server.root} on https://{server.host}:{server.port}/", flush=True)
    if faults:
        print("faults: " + " ".join(format_fault(f) for f in faults), flush=True)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
