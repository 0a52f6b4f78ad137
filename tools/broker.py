"""Local MQTT broker with mutual TLS and a per-node topic ACL.

Two engines, same rules:

* ``mosquitto`` (preferred, used when the binary is installed and our small
  plugin, ``tools/mosquitto_identity.c``, can be built: a C compiler and the
  Debian packages ``mosquitto-dev``, ``libmosquitto-dev`` and ``libssl-dev``):
  a generated config with ``require_certificate``, the plugin (it makes the
  client certificate's CN the MQTT username and checks the client id), plus an
  ACL file.
* ``embedded``: amqtt (pure Python) in a child process, with the TLS context
  switched to CERT_REQUIRED, a protocol handler that checks the client id on
  CONNECT (before amqtt looks up the session) and drops clients silent for 1.5x
  their keep-alive (so their will goes out), and two small plugins that take
  the identity from the certificate CN and enforce the same ACL.

Identity: the CN of the verified client certificate. A node (CN = node_id) may
only connect with client id == CN, as with the RainMaker cloud's AWS IoT
policy; any other CONNECT is refused with CONNACK "not authorised" before it
can take over another node's session or trigger its will. The identity
``console`` may use any client id.

ACL: the identity ``console`` may use every topic. Any other identity (a node,
CN = node_id) may publish/subscribe ``node/<CN>/#`` and publish
``$aws/rules/+/node/<CN>/#`` (AWS basic-ingest form), nothing else.

Files under the work directory (e.g. ``.cloud``): ``ca/`` (the CA),
``server.crt``/``server.key``, ``console.crt``/``console.key``, generated
``mosquitto.conf``/``acl``, logs, and ``broker.json`` (host/port/engine of the
running broker, read by the console).

CLI: ``python -m tools.broker --help``.
"""

import argparse
import atexit
import functools
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

from provisioning.ca import (
    NODE_ID_RE,
    ensure_ca,
    issue_client,
    issue_server,
    write_files_atomic,
)

HOST = "127.0.0.1"
CONSOLE = "console"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
ENGINES = ("auto", "mosquitto", "embedded")
ENGINE_ENV = "RM_BROKER"  # if set, what "auto" means: mosquitto or embedded
PROJECT_ROOT = Path(__file__).resolve().parents[1]
MOSQUITTO_PLUGIN_SOURCE = Path(__file__).resolve().with_name("mosquitto_identity.c")
MOSQUITTO_PLUGIN_PACKAGES = "mosquitto-dev libmosquitto-dev libssl-dev gcc"

log = logging.getLogger("tools.broker")


class BrokerError(RuntimeError):
    """The broker could not be started or configured."""


# ---------------------------------------------------------------- credentials

def credential_paths(workdir):
    """Paths of every credential file the broker and cloud tools use."""
    workdir = Path(workdir)
    ca_dir = workdir / "ca"
    return {
        "ca_dir": ca_dir,
        "ca_crt": ca_dir / "ca.crt",
        "crl": ca_dir / "crl.pem",
        "server_crt": workdir / "server.crt",
        "server_key": workdir / "server.key",
        "console_crt": workdir / f"{CONSOLE}.crt",
        "console_key": workdir / f"{CONSOLE}.key",
    }


def prepare_credentials(workdir):
    """Create the CA, server and console identities if missing; return paths."""
    paths = credential_paths(workdir)
    ensure_ca(paths["ca_dir"])
    if not (paths["server_crt"].exists() and paths["server_key"].exists()):
        issue_server(paths["ca_dir"], workdir)
    elif _expires_soon(paths["server_crt"]):
        # Only the broker uses this key, so renewing it silently is safe.
        issue_server(paths["ca_dir"], workdir, force=True)
    if not (paths["console_crt"].exists() and paths["console_key"].exists()):
        issue_client(paths["ca_dir"], workdir, CONSOLE)
    return paths


def _expires_soon(cert_path, days=30):
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    remaining = cert.not_valid_after_utc.timestamp() - time.time()
    return remaining < days * 86400


def client_tls_context(ca_file, certfile=None, keyfile=None):
    """TLS client context that verifies the broker (chain and host name).

    The broker certificate carries both 'localhost' and '127.0.0.1', so
    connecting by IP still gets a real host name check.
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    if certfile:
        ctx.load_cert_chain(str(certfile), str(keyfile))
    return ctx


def console_tls_context(workdir, create=False):
    """TLS context for the privileged 'console' identity in workdir.

    Without create, missing files are an error rather than a fresh CA: a new
    CA in a mistyped directory would only fail later, and more confusingly.
    """
    paths = prepare_credentials(workdir) if create else credential_paths(workdir)
    for key in ("ca_crt", "console_crt", "console_key"):
        if not paths[key].exists():
            raise BrokerError(f"{paths[key]} is missing; start the broker once with "
                              f"'python -m tools.cloud --dir {workdir}' to create it")
    return client_tls_context(paths["ca_crt"], paths["console_crt"], paths["console_key"])


# ---------------------------------------------------------------- ACL

def topic_within(topic, pattern):
    """True if every topic matched by `topic` (a name or a filter) matches `pattern`.

    For a plain topic name this is ordinary MQTT matching. For a subscription
    filter it is containment: 'node/A/#' is within 'node/A/#', but 'node/+/x'
    is not, because it would also match other nodes' topics.
    """
    t_levels = topic.split("/")
    p_levels = pattern.split("/")
    for i, p in enumerate(p_levels):
        if p == "#":
            return True
        if i >= len(t_levels):
            return False
        t = t_levels[i]
        if t == "#":
            return False
        if p == "+":
            continue
        if t != p:  # a '+' in the topic is broader than a literal level
            return False
    return len(t_levels) == len(p_levels)


def client_id_allowed(identity, client_id):
    """A node may only use its own CN as client id; the console may use any."""
    if identity == CONSOLE:
        return True
    return bool(identity) and client_id == identity


def acl_allows(identity, action, topic):
    """The broker's access rule; action is 'publish', 'subscribe' or 'receive'."""
    if identity == CONSOLE:
        return True
    if not identity or not NODE_ID_RE.match(identity) or not topic:
        return False
    own = f"node/{identity}/#"
    if action == "publish":
        return topic_within(topic, own) or topic_within(topic, f"$aws/rules/+/node/{identity}/#")
    if action in ("subscribe", "receive"):
        return topic_within(topic, own)
    return False


ACL_FILE_TEXT = """\
# Generated by tools/broker.py (overwritten on every start).
# The identity (%u) is the client certificate CN, set by the identity plugin.
# Nodes: only their own topics; AWS basic-ingest form for publishing only.
pattern readwrite node/%u/#
pattern write $aws/rules/+/node/%u/#

# The cloud-side console/recorder sees everything. '#' does not match
# topics starting with '$', hence the second line.
user console
topic readwrite #
topic readwrite $aws/#
"""


# ---------------------------------------------------------------- helpers

def find_mosquitto():
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _compiler():
    return shutil.which(os.environ.get("CC") or "cc") or shutil.which("gcc")


@functools.lru_cache(maxsize=None)
def mosquitto_plugin_problem():
    """None if the identity plugin can be built here, else why not."""
    hint = f"to build it, install {MOSQUITTO_PLUGIN_PACKAGES} (apt)"
    cc = _compiler()
    if not cc:
        return f"no C compiler for the mosquitto identity plugin; {hint}"
    headers = "".join(f"#include <{h}>\n" for h in (
        "mosquitto.h", "mosquitto_broker.h", "mosquitto_plugin.h", "openssl/x509.h"))
    try:
        done = subprocess.run([cc, "-E", "-x", "c", "-", "-o", os.devnull], input=headers.encode(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{cc} failed ({exc}); {hint}"
    if done.returncode:
        missing = done.stderr.decode("utf-8", "replace").strip().splitlines()[:1]
        return f"headers for the mosquitto identity plugin are missing ({' '.join(missing)}); {hint}"
    return None


def mosquitto_unavailable():
    """None if the mosquitto engine can run here, else why not."""
    if not find_mosquitto():
        return "mosquitto is not installed"
    return mosquitto_plugin_problem()


def build_mosquitto_plugin(workdir):
    """Compile tools/mosquitto_identity.c into workdir (once per source); return its path."""
    source = MOSQUITTO_PLUGIN_SOURCE.read_bytes()
    out = Path(workdir).resolve() / f"mosquitto_identity-{hashlib.sha256(source).hexdigest()[:12]}.so"
    if out.exists():
        return out
    problem = mosquitto_plugin_problem()
    if problem:
        raise BrokerError(problem)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    cmd = [_compiler(), "-shared", "-fPIC", "-O2", "-Wall", "-o", str(tmp),
           str(MOSQUITTO_PLUGIN_SOURCE), "-lcrypto"]
    try:
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        if done.returncode:
            raise BrokerError("could not build the mosquitto identity plugin:\n"
                              + done.stdout.decode("utf-8", "replace")[-2000:])
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def resolve_engine(engine):
    if engine not in ENGINES:
        raise BrokerError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
    if engine == "auto":
        forced = os.environ.get(ENGINE_ENV, "").strip()
        if forced:
            if forced not in ("mosquitto", "embedded"):
                raise BrokerError(f"{ENGINE_ENV}={forced!r}: use mosquitto or embedded")
            return resolve_engine(forced)
        why_not = mosquitto_unavailable()
        if why_not and find_mosquitto():
            log.info("using the embedded broker: %s", why_not)
        return "embedded" if why_not else "mosquitto"
    if engine == "mosquitto":
        why_not = mosquitto_unavailable()
        if why_not:
            raise BrokerError(f"{why_not}; fix that or use --engine embedded")
    return engine


def free_port(host=HOST):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def tls_probe(host, port, ctx, timeout=1.0):
    """True if a full TLS handshake with the given client context succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with ctx.wrap_socket(raw, server_hostname=host):
                return True
    except (OSError, ssl.SSLError):
        return False


def _tail(path, offset=0, lines=20):
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _file_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def write_mosquitto_config(workdir, port, paths, plugin):
    """Write mosquitto.conf and acl into workdir; return the config path.

    plugin: the built identity plugin (build_mosquitto_plugin). It replaces
    use_identity_as_username, which would make mosquitto skip it; without it
    mosquitto would refuse every client (allow_anonymous false, no password file).
    """
    workdir = Path(workdir).resolve()
    conf = workdir / "mosquitto.conf"
    acl = workdir / "acl"
    lines = [
        "# Generated by tools/broker.py (overwritten on every start).",
        "per_listener_settings false",
        "allow_anonymous false",
        "persistence false",
        f"acl_file {acl}",
        f"log_dest file {workdir / 'mosquitto.log'}",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "connection_messages true",
        # Small MQTT packets both ways: without this, Nagle's algorithm on the
        # broker's sockets meets delayed ACKs and adds ~40 ms to each echo.
        "set_tcp_nodelay true",
        # Identity = certificate CN (as MQTT username); nodes must use it as client id.
        f"plugin {Path(plugin).resolve()}",
        f"plugin_opt_privileged_identity {CONSOLE}",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # Started as root, mosquitto 2 drops to user 'mosquitto', which could
        # not read our 0600 keys; this is a local dev broker, so stay as is.
        lines.append("user root")
    lines += [
        "",
        f"listener {port} {HOST}",
        f"cafile {Path(paths['ca_crt']).resolve()}",
        f"certfile {Path(paths['server_crt']).resolve()}",
        f"keyfile {Path(paths['server_key']).resolve()}",
        "require_certificate true",
    ]
    if Path(paths["crl"]).exists():
        lines.append(f"crlfile {Path(paths['crl']).resolve()}")
    write_files_atomic({
        acl: (ACL_FILE_TEXT.encode(), 0o600),
        conf: (("\n".join(lines) + "\n").encode(), 0o600),
    })
    return conf


# ---------------------------------------------------------------- Broker

class Broker:
    """A broker child process (mosquitto or embedded amqtt) on 127.0.0.1.

    start() returns once the broker completes TLS handshakes, and writes
    workdir/broker.json; stop() ends the child and removes broker.json.
    """

    def __init__(self, workdir, port=0, engine="auto"):
        self.workdir = Path(workdir)
        self._port = int(port)
        self._engine = resolve_engine(engine)
        self._proc = None
        self._out = None

    host = property(lambda self: HOST)
    port = property(lambda self: self._port)
    engine = property(lambda self: self._engine)

    @property
    def running(self):
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        if self.running:
            return self
        self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        paths = prepare_credentials(self.workdir)
        if self._port == 0:
            self._port = free_port()
        self._spawn(paths)
        write_files_atomic({
            self.workdir / "broker.json": (
                json.dumps({"host": HOST, "port": self._port, "engine": self._engine}).encode() + b"\n",
                0o644,
            ),
        })
        atexit.register(self._kill_quietly)
        return self

    def stop(self):
        self._terminate()
        atexit.unregister(self._kill_quietly)
        try:
            (self.workdir / "broker.json").unlink()
        except FileNotFoundError:
            pass

    def restart(self):
        """Stop and start again on the same port (sessions are not kept)."""
        self._terminate()
        self._spawn(prepare_credentials(self.workdir))

    # -- internals

    def _command(self, paths):
        if self._engine == "mosquitto":
            plugin = build_mosquitto_plugin(self.workdir)
            conf = write_mosquitto_config(self.workdir, self._port, paths, plugin)
            return [find_mosquitto(), "-c", str(conf)], self.workdir / "mosquitto.log"
        cmd = [sys.executable, "-m", "tools.broker", "--serve-embedded",
               "--dir", str(self.workdir.resolve()), "--port", str(self._port),
               "--parent-pid", str(os.getpid())]
        return cmd, None

    def _spawn(self, paths):
        cmd, log_path = self._command(paths)
        out_path = self.workdir / "broker.out"
        # Remember where this run's output starts so errors show only it.
        offsets = {out_path: _file_size(out_path)}
        if log_path:
            offsets[log_path] = _file_size(log_path)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
        self._out = open(out_path, "ab")
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._out,
                                      stderr=subprocess.STDOUT, env=env, cwd=str(PROJECT_ROOT))
        ctx = client_tls_context(paths["ca_crt"], paths["console_crt"], paths["console_key"])
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self._proc.poll() is not None:
                break
            if tls_probe(HOST, self._port, ctx, timeout=0.5):
                return
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        code = self._proc.poll()
        self._terminate()
        tails = "\n".join(t for t in (_tail(p, o) for p, o in offsets.items()) if t)
        state = f"exited with code {code}" if code is not None else f"not ready after {START_TIMEOUT:.0f}s"
        raise BrokerError(f"{self._engine} broker on {HOST}:{self._port} {state}; log tail:\n{tails}")

    def _terminate(self):
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT)
        if self._out is not None:
            self._out.close()
            self._out = None

    def _kill_quietly(self):
        try:
            self._terminate()
        except Exception:  # interpreter shutdown: best effort only
            pass


# ---------------------------------------------------------------- embedded engine (amqtt)

def peer_common_name(ssl_object):
    """CN of the verified client certificate, or None."""
    if ssl_object is None:
        return None
    cert = ssl_object.getpeercert()  # only populated after successful verification
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return None


@functools.lru_cache(maxsize=None)
def _amqtt_classes():
    """Build the amqtt plugin/broker classes (amqtt is imported only here)."""
    import asyncio

    import amqtt.broker
    from amqtt.broker import Broker as AmqttBroker
    from amqtt.contexts import Action
    from amqtt.errors import MQTTError
    from amqtt.events import BrokerEvents
    from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket
    from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
    from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin

    class StrictProtocolHandler(BrokerProtocolHandler):
        """amqtt's broker-side protocol handler, with two rules amqtt lacks.

        * A CONNECT whose client id is not the certificate CN is refused. This
          has to come before amqtt looks up the session: for a clean session
          amqtt deletes the existing one (the victim's subscriptions) and
          otherwise takes it over, both before it asks the auth plugins.
        * A client silent for 1.5x its keep-alive is disconnected, so its will
          goes out (MQTT 3.1.1, 3.1.2.10); amqtt would keep the dead link open.
        """

        @classmethod
        async def init_from_connect(cls, reader, writer, plugins_manager, loop=None):
            handler, session = await super().init_from_connect(reader, writer, plugins_manager, loop)
            ident = peer_common_name(session.ssl_object)
            if not client_id_allowed(ident, session.client_id):
                log.warning("refusing client id %r: certificate CN %r may only connect as itself",
                            session.client_id, ident)
                await ConnackPacket.build(0, NOT_AUTHORIZED).to_stream(writer)
                await writer.close()
                raise MQTTError(f"client id {session.client_id!r} refused for certificate CN {ident!r}")
            if session.keep_alive > 0:
                # amqtt's reader times out after session.keep_alive seconds without a packet.
                session.keep_alive = (session.keep_alive * 3 + 1) // 2
            return handler, session

        def handle_read_timeout(self):
            log.info("%s: nothing received for 1.5x its keep-alive; closing, will follows",
                     self.session.client_id if self.session else "?")
            # As if the link had closed: the broker publishes the will and stops this handler.
            self._expired = asyncio.ensure_future(self.handle_connection_closed())

    # amqtt's Broker takes its handler class from its module; this runs in the
    # embedded broker's own process (or wherever these classes are used).
    amqtt.broker.BrokerProtocolHandler = StrictProtocolHandler

    class CertIdentityAuth(BaseAuthPlugin):
        """Identity = CN of the (already verified) client certificate."""

        async def authenticate(self, *, session):
            ident = peer_common_name(session.ssl_object)
            if ident is None:
                log.warning("refusing %s: no verified client certificate", session.client_id)
                return False
            if not client_id_allowed(ident, session.client_id):  # already refused on CONNECT
                log.warning("refusing client id %r: certificate CN %r", session.client_id, ident)
                return False
            # amqtt publishes a will without any topic check, so check it here.
            if session.will_flag and not acl_allows(ident, "publish", session.will_topic or ""):
                log.warning("refusing %s: will topic %r not allowed", ident, session.will_topic)
                return False
            # Whatever username the client sent is replaced, as with mosquitto's
            # use_identity_as_username.
            session.username = ident
            session.is_anonymous = False
            return True

    class NodeTopicACL(BaseTopicPlugin):
        """Per-node topic ACL (same rule as the mosquitto ACL file)."""

        async def topic_filtering(self, *, session=None, topic=None, action=None):
            if session is None or topic is None or action is None:
                return False
            allowed = acl_allows(session.username, str(action.value), topic)
            if not allowed:
                log.info("denied %s %s %s", session.username, action.value, topic)
            return allowed

    class StrictBroker(AmqttBroker):
        """amqtt broker that requires client certificates and allows $aws/rules publishes."""

        crl_file = None

        @staticmethod
        def _create_ssl_context(listener):
            ctx = AmqttBroker._create_ssl_context(listener)
            # amqtt uses CERT_OPTIONAL, which lets certificate-less clients in.
            ctx.verify_mode = ssl.CERT_REQUIRED
            if StrictBroker.crl_file:
                ctx.load_verify_locations(cafile=str(StrictBroker.crl_file))
                ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
            return ctx

        async def _handle_message_delivery(self, client_session, handler, wait_deliver):
            message = wait_deliver.result()
            topic = getattr(message, "topic", None) or ""
            if not topic.startswith("$aws/rules/"):
                return await super()._handle_message_delivery(client_session, handler, wait_deliver)
            # amqtt drops the connection on any publish to a '$' topic; the
            # RainMaker SDK publishes to AWS basic-ingest topics, so those get
            # the normal path (ACL check, then fan-out; never retained).
            await self.plugins_manager.fire_event(
                BrokerEvents.MESSAGE_RECEIVED, client_id=client_session.client_id, message=message)
            if "#" in topic or "+" in topic:
                return False
            if not await self._topic_filtering(client_session, topic=topic, action=Action.PUBLISH):
                return True
            await self.plugins_manager.fire_event(
                BrokerEvents.MESSAGE_BROADCAST, client_id=client_session.client_id, message=message)
            await self._broadcast_message(client_session, topic, message.data)
            return True

    return {"CertIdentityAuth": CertIdentityAuth, "NodeTopicACL": NodeTopicACL,
            "StrictBroker": StrictBroker, "StrictProtocolHandler": StrictProtocolHandler}


def __getattr__(name):
    # amqtt loads plugins by dotted path ("tools.broker.NodeTopicACL"); resolve
    # them lazily so importing this module does not import amqtt.
    if name in ("CertIdentityAuth", "NodeTopicACL", "StrictBroker"):
        return _amqtt_classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def serve_embedded(workdir, port, parent_pid=None):
    """Run the amqtt broker in this process until SIGTERM/SIGINT (or parent exit)."""
    import asyncio

    paths = prepare_credentials(workdir)
    classes = _amqtt_classes()
    strict = classes["StrictBroker"]
    strict.crl_file = paths["crl"] if paths["crl"].exists() else None
    config = {
        "listeners": {
            "default": {
                "type": "tcp",
                "bind": f"{HOST}:{port}",
                "ssl": True,
                "cafile": str(paths["ca_crt"]),
                "certfile": str(paths["server_crt"]),
                "keyfile": str(paths["server_key"]),
            },
        },
        "plugins": {
            "tools.broker.CertIdentityAuth": {},
            "tools.broker.NodeTopicACL": {},
        },
    }

    async def run():
        broker = strict(config)
        await broker.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info("embedded broker listening on %s:%s", HOST, port)
        while not stop.is_set():
            # An orphaned broker would keep the port busy; leave with the parent.
            if parent_pid and os.getppid() != parent_pid:
                break
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except asyncio.TimeoutError:
                pass
        await broker.shutdown()

    asyncio.run(run())


# ---------------------------------------------------------------- CLI

def _parser():
    p = argparse.ArgumentParser(
        prog="python -m tools.broker",
        description="Run the local MQTT broker (mutual TLS, per-node topic ACL) in the "
                    "foreground until Ctrl-C. Creates the CA, server and console "
                    "certificates in --dir on first use.",
    )
    p.add_argument("--dir", type=Path, default=Path(".cloud"),
                   help="work directory for CA, certificates, config and logs (default: %(default)s)")
    p.add_argument("--port", type=int, default=8883, help="TLS port on 127.0.0.1; 0 picks a free one "
                                                          "(default: %(default)s)")
    p.add_argument("--engine", choices=ENGINES, default="auto",
                   help="mosquitto, embedded (amqtt), or auto = $RM_BROKER if set, else mosquitto if it "
                        "is installed and its identity plugin can be built (default: %(default)s)")
    # Internal: how Broker runs the embedded engine in a child process.
    p.add_argument("--serve-embedded", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)
    return p


def _raise_interrupt(signum, frame):
    # Treat SIGTERM like Ctrl-C so the child broker is stopped on the way out.
    raise KeyboardInterrupt


def main(argv=None):
    args = _parser().parse_args(argv)
    if args.serve_embedded:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        logging.getLogger("transitions").setLevel(logging.WARNING)  # state-machine chatter
        serve_embedded(args.dir, args.port, args.parent_pid)
        return 0
    try:
        broker = Broker(args.dir, args.port, args.engine)
        broker.start()
    except (BrokerError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    paths = credential_paths(args.dir)
    print(f"engine: {broker.engine}")
    print(f"listening: mqtts://{broker.host}:{broker.port} (client certificate required)")
    print(f"CA: {paths['ca_crt']}")
    print("Ctrl-C to stop", flush=True)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        while broker.running:
            time.sleep(0.5)
        print("error: broker exited; see the log in " + str(args.dir), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        broker.stop()


if __name__ == "__main__":
    sys.exit(main())
