"""The local "cloud": a recorder that stores what the RainMaker cloud knows about nodes.

The recorder connects to the broker with the privileged ``console`` identity,
subscribes to every node's topics in both forms (plain ``node/<id>/<suffix>``
and AWS basic-ingest ``$aws/rules/<rule>/node/<id>/<suffix>``), and keeps:

  <workdir>/nodes/<node_id>/config.json   last node config (from .../config)
  <workdir>/nodes/<node_id>/params.json   params: replaced by params/local/init,
                                          updated per device by params/local
  <workdir>/nodes/<node_id>/state.json    last_seen time and topic
  <workdir>/nodes/<node_id>/ota.json      the node's latest OTA job (written by the
                                          console) and its state: pending until an
                                          otastatus ends it; while pending, an otafetch
                                          from the node is answered with it on otaurl,
                                          as the RainMaker cloud does
  <workdir>/traffic.log                   one JSON line per message (payload
                                          cut at 2 KB), rotated to .1 at ~1 MB

With the broker and the recorder it runs the OTA file server (tools/otaserver.py):
files in <workdir>/ota/ over HTTPS on 127.0.0.1, with a certificate from the
same local CA, so a board that pins that CA can download them. Its address is in
<workdir>/otaserver.json and each request goes to <workdir>/otaserver.log.

CLI: ``python -m tools.cloud --help`` runs the broker and the recorder together.
"""

import argparse
import datetime as dt
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from provisioning.ca import NODE_ID_RE, write_files_atomic
from tools.broker import HOST, Broker, BrokerError, console_tls_context
from tools.otaserver import DEFAULT_PORT as OTA_PORT
from tools.otaserver import OtaServer, OtaServerError, parse_fault

MAX_PAYLOAD_LOG = 2048
MAX_TRAFFIC_LOG = 1_000_000
SUBSCRIPTIONS = ("node/+/#", "$aws/rules/+/node/+/#")
OTA_STATUSES = ("in-progress", "success", "failed", "delayed", "rejected")
MAX_STATUS = 4096  # an otastatus larger than this is not one
_ATTEMPT = re.compile(r"OTA Attempt (\d+)/(\d+) failed")

log = logging.getLogger("tools.cloud")


# ---------------------------------------------------------------- topics

def parse_topic(topic):
    """Split a node topic into (node_id, suffix, rule); None if it is not one.

    rule is the basic-ingest rule name, or None for the plain form. node ids
    that are not safe path components are rejected here, because the store
    uses them as directory names.
    """
    parts = topic.split("/")
    if len(parts) >= 3 and parts[0] == "node":
        node_id, rest, rule = parts[1], parts[2:], None
    elif len(parts) >= 6 and parts[:2] == ["$aws", "rules"] and parts[3] == "node":
        node_id, rest, rule = parts[4], parts[5:], parts[2]
    else:
        return None
    suffix = "/".join(rest)
    if not NODE_ID_RE.match(node_id) or not suffix:
        return None
    return node_id, suffix, rule


def normalise_topic(topic):
    """The plain node/<id>/<suffix> form of either topic form."""
    parsed = parse_topic(topic)
    if parsed is None:
        return topic
    return f"node/{parsed[0]}/{parsed[1]}"


# ---------------------------------------------------------------- OTA jobs

def parse_status(payload):
    """An otastatus payload as {ota_job_id, status, additional_info, ts}, or
    None if it is not a well-formed one (a node's bug must not stop the console)."""
    if not isinstance(payload, (bytes, bytearray)) or len(payload) > MAX_STATUS:
        return None
    try:
        doc = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("ota_job_id"), str):
        return None
    if doc.get("status") not in OTA_STATUSES:
        return None
    info = doc.get("additional_info")
    ts = doc.get("ts")
    return {"ota_job_id": doc["ota_job_id"], "status": doc["status"],
            "additional_info": info[:300] if isinstance(info, str) else "",
            "ts": ts if isinstance(ts, (int, float)) and not isinstance(ts, bool) else None}


def status_outcome(st):
    """'success', 'failed' or 'rejected' if this status ends the job, else None.

    A failed attempt that is not the last ('OTA Attempt 1/3 failed: ...') is
    followed by the next attempt; any other failed report ends the job.
    """
    if st["status"] in ("success", "rejected"):
        return st["status"]
    if st["status"] == "failed":
        m = _ATTEMPT.search(st["additional_info"])
        if m and int(m.group(1)) < int(m.group(2)):
            return None
        return "failed"
    return None


def save_ota_job(workdir, node_id, job):
    """Make job node_id's pending OTA job: the answer to its next otafetch."""
    ndir = node_dir(workdir, node_id)
    ndir.mkdir(parents=True, exist_ok=True)
    _write_json(ndir / "ota.json", {"job": job, "state": "pending", "updated": time.time()})


def pending_ota_job(workdir, node_id):
    """node_id's OTA job if it is not over yet, else None."""
    doc = read_json(node_dir(workdir, node_id) / "ota.json")
    if isinstance(doc, dict) and doc.get("state") == "pending" and isinstance(doc.get("job"), dict):
        return doc["job"]
    return None


def _ota_status(ndir, payload, now):
    """Close the pending job when a status ends it."""
    st = parse_status(payload)
    doc = read_json(ndir / "ota.json")
    if st is None or not isinstance(doc, dict) or doc.get("state") != "pending":
        return
    job = doc.get("job")
    if not isinstance(job, dict) or job.get("ota_job_id") != st["ota_job_id"]:
        return
    end = status_outcome(st)
    if end:
        _write_json(ndir / "ota.json", {**doc, "state": end, "updated": now})


# ---------------------------------------------------------------- store

def node_dir(workdir, node_id):
    if not NODE_ID_RE.match(node_id or ""):
        raise ValueError(f"invalid node id {node_id!r}")
    return Path(workdir) / "nodes" / node_id


def read_json(path, default=None):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def _write_json(path, obj):
    data = (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode()
    write_files_atomic({path: (data, 0o644)})


def merge_params(current, delta):
    """Apply a params/local report: per device, each reported param replaces
    the stored value (object-typed values are replaced whole, not merged)."""
    merged = dict(current)
    for device, values in delta.items():
        if isinstance(values, dict) and isinstance(merged.get(device), dict):
            merged[device] = {**merged[device], **values}
        else:
            merged[device] = values
    return merged


def append_traffic(workdir, topic, payload, now):
    path = Path(workdir) / "traffic.log"
    try:
        if path.stat().st_size >= MAX_TRAFFIC_LOG:
            os.replace(path, path.with_name("traffic.log.1"))
    except FileNotFoundError:
        pass
    cut = payload[:MAX_PAYLOAD_LOG]
    entry = {
        "time": dt.datetime.fromtimestamp(now, dt.timezone.utc).isoformat(timespec="milliseconds"),
        "topic": topic,
        "payload": cut.decode("utf-8", "replace"),
    }
    if len(payload) > MAX_PAYLOAD_LOG:
        entry["truncated"] = len(payload)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


def record_message(workdir, topic, payload, now=None):
    """Log one message and update the node store; returns what was done.

    Never raises on bad input: malformed JSON or non-object payloads are
    logged and skipped, since one misbehaving node must not stop the cloud.
    """
    now = time.time() if now is None else now
    if isinstance(payload, str):
        payload = payload.encode()
    append_traffic(workdir, topic, payload, now)
    parsed = parse_topic(topic)
    if parsed is None:
        log.warning("ignoring message on unexpected topic %r", topic)
        return "ignored: topic"
    node_id, suffix, _rule = parsed
    ndir = node_dir(workdir, node_id)
    ndir.mkdir(parents=True, exist_ok=True)
    _write_json(ndir / "state.json", {"last_seen": now, "last_topic": f"node/{node_id}/{suffix}"})

    if suffix == "otastatus":
        _ota_status(ndir, payload, now)
        return "ota-status"
    if suffix == "otafetch":
        return "ota-fetch"
    if suffix not in ("config", "params/local/init") and not suffix.startswith("params/local"):
        return "logged"
    try:
        doc = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        log.warning("ignoring malformed JSON from %s on %s: %s", node_id, suffix, exc)
        return "ignored: malformed"
    if not isinstance(doc, dict):
        log.warning("ignoring non-object payload from %s on %s", node_id, suffix)
        return "ignored: not an object"

    if suffix == "config":
        _write_json(ndir / "config.json", doc)
        return "config"
    if suffix == "params/local/init":
        _write_json(ndir / "params.json", doc)
        return "params-init"
    # params/local and params/local/<group_id> both carry changed params.
    current = read_json(ndir / "params.json", {})
    if not isinstance(current, dict):
        current = {}
    _write_json(ndir / "params.json", merge_params(current, doc))
    return "params-delta"


# ---------------------------------------------------------------- recorder

class Recorder:
    """MQTT client (console identity) that feeds record_message()."""

    def __init__(self, workdir, host=HOST, port=8883):
        self.workdir = Path(workdir)
        self.host = host
        self.port = int(port)
        self.count = 0
        self._client = None
        self._subscribed = threading.Event()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def start(self, timeout=5.0):
        """Connect and subscribe; returns once the broker acknowledged the subscriptions."""
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                             client_id=f"cloud-recorder-{os.getpid()}-{id(self) & 0xffff:x}")
        client.tls_set_context(console_tls_context(self.workdir))
        # Reconnect quickly after a broker restart; on_connect re-subscribes.
        client.reconnect_delay_set(min_delay=0.2, max_delay=2)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._client = client
        client.connect(self.host, self.port, keepalive=30)
        client.loop_start()
        if not self._subscribed.wait(timeout):
            self.stop()
            raise TimeoutError(f"recorder got no SUBACK from {self.host}:{self.port} within {timeout}s")
        return self

    def stop(self):
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.error("recorder connection refused: %s", reason_code)
            return
        client.subscribe([(topic, 1) for topic in SUBSCRIPTIONS])

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        if all(not rc.is_failure for rc in reason_codes):
            self._subscribed.set()
        else:
            log.error("recorder subscription refused: %s", reason_codes)

    def _on_message(self, client, userdata, msg):
        try:
            if record_message(self.workdir, msg.topic, msg.payload) == "ota-fetch":
                self._answer_fetch(client, parse_topic(msg.topic)[0])
        except Exception:  # keep the network thread alive whatever happens
            log.exception("failed to record message on %s", msg.topic)
        self.count += 1

    def _answer_fetch(self, client, node_id):
        job = pending_ota_job(self.workdir, node_id)
        if job is None:
            return  # nothing pending: a real cloud says nothing either
        log.info("otafetch from %s: sending job %s", node_id, job.get("ota_job_id"))
        client.publish(f"node/{node_id}/otaurl", json.dumps(job, separators=(",", ":")), qos=1)


def start_ota_server(workdir, port=OTA_PORT, faults=()):
    """The OTA file server on port, or on any free port if that one is taken
    (a job's URL names the port, so a fixed one survives a cloud restart)."""
    def make(p):
        return OtaServer(Path(workdir) / "ota", workdir, p, faults, log_path=Path(workdir) / "otaserver.log",
                         state_file=True).start()
    try:
        return make(port)
    except OtaServerError as exc:
        if not port:
            raise
        log.warning("%s; using any free port instead", exc)
        return make(0)


def run_cloud(workdir=".cloud", port=8883, engine="auto", stop_event=None, ota_port=OTA_PORT, ota_faults=()):
    """Run Broker + Recorder + OTA file server until Ctrl-C/SIGTERM (or
    stop_event is set); ota_port None: no file server."""
    stop_event = stop_event or threading.Event()
    broker = Broker(workdir, port, engine)
    broker.start()
    recorder = ota = None
    try:
        recorder = Recorder(workdir, broker.host, broker.port).start()
        if ota_port is not None:
            ota = start_ota_server(workdir, ota_port, ota_faults)
        print(f"broker: {broker.engine} on mqtts://{broker.host}:{broker.port}", flush=True)
        if ota is not None:
            print(f"OTA files: {ota.root} on https://{ota.host}:{ota.port}/"
                  + (f" (faults: {' '.join(map(repr, ota.faults))})" if ota.faults else ""), flush=True)
        print(f"CA: {Path(workdir) / 'ca' / 'ca.crt'}")
        print(f"store: {Path(workdir) / 'nodes'}  traffic: {Path(workdir) / 'traffic.log'}")
        print("Ctrl-C to stop", flush=True)
        while not stop_event.wait(0.5):
            if not broker.running:
                raise BrokerError(f"broker exited unexpectedly; see logs in {workdir}")
    finally:
        if ota is not None:
            ota.stop()
        if recorder is not None:
            recorder.stop()
        broker.stop()


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m tools.cloud",
        description="Run the local RainMaker cloud: the MQTT broker (mutual TLS) plus a recorder "
                    "that stores node configs and params under DIR/nodes and logs traffic.",
    )
    p.add_argument("--dir", type=Path, default=Path(".cloud"), help="work directory (default: %(default)s)")
    p.add_argument("--port", type=int, default=8883, help="broker TLS port (default: %(default)s)")
    p.add_argument("--engine", choices=("auto", "mosquitto", "embedded"), default="auto",
                   help="broker engine (default: %(default)s)")
    p.add_argument("--ota-port", type=int, default=OTA_PORT,
                   help="HTTPS port of the OTA file server, 0 for any free one (default: %(default)s)")
    p.add_argument("--no-ota", action="store_true", help="do not run the OTA file server")
    p.add_argument("--ota-fault", action="append", default=[], metavar="SPEC",
                   help="make the OTA file server misbehave, for testing (see python -m tools.otaserver --help)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        faults = [parse_fault(f) for f in args.ota_fault]
        run_cloud(args.dir, args.port, args.engine, ota_port=None if args.no_ota else args.ota_port,
                  ota_faults=faults)
    except KeyboardInterrupt:
        return 0
    except (BrokerError, OtaServerError, TimeoutError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
