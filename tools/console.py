"""Cloud-side developer console for the local RainMaker cloud.

  python -m tools.console nodes                     known nodes (from the recorder's store)
  python -m tools.console show NODE_ID              config + current params
  python -m tools.console set NODE_ID Light.Power=false Light.Brightness=40
  python -m tools.console set NODE_ID '{"Light":{"Power":false}}'
  python -m tools.console watch [NODE_ID] [--count N] [--timeout S]
  python -m tools.console schedule add NODE_ID --id eve1 --name Evening --at 18:30 --days mon,fri Light.Power=true
  python -m tools.console schedule list|remove|enable|disable NODE_ID [ID]
  python -m tools.console scene add NODE_ID --id s1 --name Movie Light.Brightness=10
  python -m tools.console scene list|remove|activate|deactivate NODE_ID [ID]
  python -m tools.console ota NODE_ID app.rmb [--version V] [--timeout S] [--no-wait]

It connects with the privileged 'console' identity in --dir. The broker
address comes from --port, else from DIR/broker.json (written by the broker).

Assignment syntax for 'set': DEVICE.PARAM=VALUE, split at the FIRST '.' and
the first '=' after it, so device names must not contain '.' (quote names with
spaces: 'My Light.Power=true'). VALUE is parsed as a JSON literal when it is
one (true, 40, 2.5, null, "text", [..], {..}); anything else is a string.
"""

import argparse
import datetime as dt
import hashlib
import json
import os
import queue
import re
import secrets
import string
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from provisioning.ca import NODE_ID_RE, NODE_ID_RULE, write_files_atomic
from tools.broker import HOST, BrokerError, console_tls_context
from tools.cloud import (  # noqa: F401  (OTA_STATUSES: part of this module's API too)
    OTA_STATUSES,
    normalise_topic,
    parse_status,
    parse_topic,
    read_json,
    save_ota_job,
    status_outcome,
)

CONNECT_TIMEOUT = 5.0


class ConsoleError(Exception):
    """A user-facing error; the message says what to fix."""


# ---------------------------------------------------------------- store access

def check_node_id(node_id):
    if not NODE_ID_RE.match(node_id or ""):
        raise ConsoleError(f"invalid node id {node_id!r}: it must be {NODE_ID_RULE}")
    return node_id


def list_nodes(workdir):
    """[{node_id, name, type, last_seen}] for every node in the store, sorted."""
    root = Path(workdir) / "nodes"
    rows = []
    if not root.is_dir():
        return rows
    for ndir in sorted(p for p in root.iterdir() if p.is_dir() and NODE_ID_RE.match(p.name)):
        config = read_json(ndir / "config.json", {}) or {}
        info = config.get("info", {}) if isinstance(config, dict) else {}
        state = read_json(ndir / "state.json", {}) or {}
        rows.append({
            "node_id": ndir.name,
            "name": info.get("name") if isinstance(info, dict) else None,
            "type": info.get("type") if isinstance(info, dict) else None,
            "last_seen": state.get("last_seen") if isinstance(state, dict) else None,
        })
    return rows


def load_node(workdir, node_id):
    """(config or None, params or None) from the recorder's store."""
    ndir = Path(workdir) / "nodes" / check_node_id(node_id)
    if not ndir.is_dir():
        raise ConsoleError(f"node {node_id!r} is unknown here; is 'python -m tools.cloud' running "
                           f"with --dir {workdir}, and has the node connected?")
    return read_json(ndir / "config.json"), read_json(ndir / "params.json")


def _entities(config):
    """Devices and services of a node config, keyed by name."""
    out = {}
    for key in ("devices", "services"):
        for dev in config.get(key, []) or []:
            if isinstance(dev, dict) and "name" in dev:
                out[dev["name"]] = dev
    return out


def _fmt_time(ts):
    if not ts:
        return "never"
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def format_nodes(rows):
    if not rows:
        return "no nodes recorded yet"
    lines = [f"{'NODE_ID':<24} {'NAME':<24} {'TYPE':<16} LAST SEEN"]
    for r in rows:
        lines.append(f"{r['node_id']:<24} {str(r['name'] or '-'):<24} {str(r['type'] or '-'):<16} "
                     f"{_fmt_time(r['last_seen'])}")
    return "\n".join(lines)


def format_node(node_id, config, params):
    params = params if isinstance(params, dict) else {}
    lines = [f"node {node_id}"]
    if not isinstance(config, dict):
        lines.append("  (no config recorded yet)")
        for dev, values in params.items():
            lines.append(f"  {dev}: {json.dumps(values)}")
        return "\n".join(lines)
    info = config.get("info", {})
    lines.append(f"  name: {info.get('name', '-')}   type: {info.get('type', '-')}   "
                 f"fw: {info.get('fw_version', '-')}   platform: {info.get('platform', '-')}")
    for kind in ("devices", "services"):
        for dev in config.get(kind, []) or []:
            name = dev.get("name")
            lines.append(f"  [{kind[:-1]}] {name}  ({dev.get('type', '-')})")
            current = params.get(name, {}) if isinstance(params.get(name), dict) else {}
            for prm in dev.get("params", []) or []:
                pname = prm.get("name")
                value = json.dumps(current[pname]) if pname in current else "?"
                extra = [prm.get("data_type", "?"), ",".join(prm.get("properties", []))]
                if "bounds" in prm:
                    b = prm["bounds"]
                    extra.append(f"{b.get('min', '')}..{b.get('max', '')}"
                                 + (f" step {b['step']}" if "step" in b else ""))
                if "valid_strs" in prm:
                    extra.append("one of " + "|".join(map(str, prm["valid_strs"])))
                lines.append(f"      {pname} = {value}    [{'; '.join(x for x in extra if x)}]")
    return "\n".join(lines)


# ---------------------------------------------------------------- set

def parse_value(text):
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_assignments(args):
    """Turn CLI words into a params write document {device: {param: value}}."""
    if not args:
        raise ConsoleError("nothing to set; give DEVICE.PARAM=VALUE pairs or one JSON object")
    if len(args) == 1 and args[0].lstrip().startswith("{"):
        try:
            doc = json.loads(args[0])
        except ValueError as exc:
            raise ConsoleError(f"the JSON argument does not parse: {exc}") from None
        if not isinstance(doc, dict) or not all(isinstance(v, dict) for v in doc.values()):
            raise ConsoleError('the JSON must look like {"Device": {"Param": value}}')
        return doc
    doc = {}
    for word in args:
        lhs, eq, rhs = word.partition("=")
        device, dot, param = lhs.partition(".")
        if not eq or not dot or not device or not param:
            raise ConsoleError(f"cannot read {word!r}: expected DEVICE.PARAM=VALUE (device names cannot contain '.')")
        doc.setdefault(device, {})[param] = parse_value(rhs)
    return doc


def _type_ok(data_type, value):
    if data_type == "bool":
        return isinstance(value, bool)
    if data_type == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if data_type == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if data_type == "string":
        return isinstance(value, str)
    if data_type == "object":
        return isinstance(value, dict)
    if data_type == "array":
        return isinstance(value, list)
    return True  # unknown type: let the node decide


def validate_params(config, doc):
    """List of problems of a params write against a node config (empty = fine)."""
    problems = []
    entities = _entities(config)
    for device, values in doc.items():
        dev = entities.get(device)
        if dev is None:
            known = ", ".join(sorted(entities)) or "none"
            problems.append(f"node has no device {device!r} (devices/services: {known})")
            continue
        params = {p.get("name"): p for p in dev.get("params", []) or [] if isinstance(p, dict)}
        for pname, value in values.items():
            prm = params.get(pname)
            if prm is None:
                known = ", ".join(sorted(map(str, params))) or "none"
                problems.append(f"device {device!r} has no param {pname!r} (params: {known})")
                continue
            where = f"{device}.{pname}"
            if "write" not in (prm.get("properties") or []):
                problems.append(f"{where} is read-only")
            data_type = prm.get("data_type")
            if not _type_ok(data_type, value):
                problems.append(f"{where} needs a {data_type} value, got {json.dumps(value)}")
                continue
            bounds = prm.get("bounds") or {}
            if data_type in ("int", "float"):
                if "min" in bounds and value < bounds["min"] or "max" in bounds and value > bounds["max"]:
                    problems.append(f"{where}={value} is outside {bounds.get('min')}..{bounds.get('max')}")
            if data_type == "string" and prm.get("valid_strs") and value not in prm["valid_strs"]:
                problems.append(f"{where} must be one of {', '.join(map(str, prm['valid_strs']))}")
    return problems


# ---------------------------------------------------------------- schedules and scenes

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # bit 0 = Monday, as the apps send it
_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_ID_MAX, _NAME_MAX = 8, 32


def _hhmm(text):
    h, colon, m = (text or "").partition(":")
    if not colon or not h.isdigit() or not m.isdigit() or int(h) > 23 or int(m) > 59:
        raise ConsoleError(f"--at {text!r}: expected HH:MM, 00:00..23:59")
    return int(h) * 60 + int(m)


def schedule_trigger(at=None, days=None, date=None, yearly=False, after=None):
    """The trigger object of a schedule, in the form the phone apps send."""
    if after is not None:
        if at or days or date:
            raise ConsoleError("--in cannot be combined with --at, --days or --date")
        if after <= 0:
            raise ConsoleError("--in needs a positive number of seconds")
        return {"rsec": after}
    if at is None:
        raise ConsoleError("say when: --at HH:MM (with --days or --date), or --in SECONDS")
    minutes = _hhmm(at)
    if date:
        if days:
            raise ConsoleError("--days and --date exclude each other")
        try:
            d = dt.date.fromisoformat(date)
        except ValueError:
            raise ConsoleError(f"--date {date!r}: expected YYYY-MM-DD") from None
        trig = {"m": minutes, "dd": d.day, "mm": 1 << (d.month - 1), "yy": d.year}
        if yearly:
            trig["r"] = True
        return trig
    mask = 0
    for word in (days or "").split(",") if days else []:
        word = word.strip().lower()
        full = [d for d in _FULL_DAYS if len(word) >= 3 and d.startswith(word)]
        if not full:
            raise ConsoleError(f"--days: {word!r} is not one of {','.join(DAYS)}")
        mask |= 1 << _FULL_DAYS.index(full[0])
    return {"m": minutes, "d": mask}  # d 0: once, at the next HH:MM


def _check_id(sid):
    if not sid or len(sid) > _ID_MAX:
        raise ConsoleError(f"id {sid!r}: 1..{_ID_MAX} characters")
    return sid


def _item(op, sid, name, action, info, more=None):
    # One element of a Schedules or Scenes write: add/edit carry name and action.
    doc = {"operation": op, "id": _check_id(sid)}
    if op in ("add", "edit"):
        if not name or len(name) > _NAME_MAX:
            raise ConsoleError(f"--name: 1..{_NAME_MAX} characters")
        if not action:
            raise ConsoleError("give the action as DEVICE.PARAM=VALUE pairs")
        doc["name"] = name
        doc.update(more or {})
        doc["action"] = action
        if info:
            doc["info"] = info
    return doc


def schedule_op(op, sid, name=None, trigger=None, action=None, info=None):
    """One element of a Schedules write: add/edit carry name, trigger and action."""
    return {"Schedule": {"Schedules": [_item(op, sid, name, action, info, {"triggers": [trigger]})]}}


def scene_op(op, sid, name=None, action=None, info=None):
    return {"Scenes": {"Scenes": [_item(op, sid, name, action, info)]}}


def _when(trig):
    if not isinstance(trig, dict):
        return "?"
    if "rsec" in trig:
        return f"in {trig['rsec']} s"
    m = trig.get("m", 0)
    at = f"{m // 60:02d}:{m % 60:02d}" if isinstance(m, int) else "?"
    if "dd" in trig:
        months = [dt.date(2000, i + 1, 1).strftime("%b") for i in range(12) if trig.get("mm", 0) >> i & 1]
        year = "every year" if trig.get("r") else trig.get("yy", "")
        return f"{at} on {trig['dd']} {'/'.join(months) or 'next month'} {year}".rstrip()
    mask = trig.get("d", 0)
    days = ",".join(d for i, d in enumerate(DAYS) if mask >> i & 1) if isinstance(mask, int) else "?"
    return f"{at} {days or 'once'}"


def format_schedules(params, key="Schedule", pname="Schedules"):
    items = ((params or {}).get(key) or {}).get(pname)
    if not isinstance(items, list) or not items:
        return f"no {pname.lower()} reported"
    lines = []
    for s in items:
        if not isinstance(s, dict):
            continue
        trig = (s.get("triggers") or [{}])[0]
        state = "" if key != "Schedule" else ("on " if s.get("enabled") else "off ")
        when = "" if key != "Schedule" else f"{_when(trig):<28} "
        nxt = ""
        if isinstance(trig, dict) and trig.get("ts"):
            nxt = f"  next {_fmt_time(trig['ts'])}"
        lines.append(f"{str(s.get('id')):<9} {state}{str(s.get('name')):<20} {when}"
                     f"{json.dumps(s.get('action'), separators=(',', ':'))}{nxt}")
    return "\n".join(lines)


# ---------------------------------------------------------------- MQTT

def broker_address(workdir, port=None):
    """(host, port) from --port or DIR/broker.json."""
    if port:
        return HOST, int(port)
    info = read_json(Path(workdir) / "broker.json")
    if not isinstance(info, dict) or "port" not in info:
        raise ConsoleError(f"no running broker recorded in {Path(workdir) / 'broker.json'}; "
                           "start 'python -m tools.cloud' or pass --port")
    return info.get("host", HOST), int(info["port"])


def connect(workdir, host, port, timeout=CONNECT_TIMEOUT):
    """A connected, looping paho client with the console identity."""
    connected = threading.Event()
    result = {}

    def on_connect(client, userdata, flags, reason_code, properties):
        result["rc"] = reason_code
        connected.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                         client_id=f"console-{os.getpid()}-{secrets.token_hex(3)}")
    try:
        client.tls_set_context(console_tls_context(workdir))
    except BrokerError as exc:
        raise ConsoleError(str(exc)) from None
    client.on_connect = on_connect
    try:
        client.connect(host, port, keepalive=30)
    except OSError as exc:
        raise ConsoleError(f"cannot reach the broker at {host}:{port} ({exc}); is it running?") from None
    client.loop_start()
    if not connected.wait(timeout) or result["rc"].is_failure:
        client.loop_stop()
        raise ConsoleError(f"broker at {host}:{port} did not accept the console "
                           f"({result.get('rc', 'no CONNACK')})")
    return client


def publish_params(workdir, node_id, doc, host, port, timeout=CONNECT_TIMEOUT):
    """Publish a params write (QoS 1) and wait for the PUBACK; returns the topic."""
    topic = f"node/{check_node_id(node_id)}/params/remote"
    client = connect(workdir, host, port, timeout)
    try:
        info = client.publish(topic, json.dumps(doc, separators=(",", ":")), qos=1)
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError) as exc:  # paho: connection lost / queue full
            raise ConsoleError(f"publish failed: {exc}") from None
        if not info.is_published():
            raise ConsoleError(f"no PUBACK from the broker within {timeout}s")
    finally:
        client.disconnect()
        client.loop_stop()
    return topic


def watch(workdir, host, port, node_id=None, count=None, timeout=None, out=sys.stdout, ready=None):
    """Print live traffic; returns the number of messages printed."""
    who = check_node_id(node_id) if node_id else "+"
    filters = [(f"node/{who}/#", 1), (f"$aws/rules/+/node/{who}/#", 1)]
    done = threading.Event()
    subscribed = threading.Event()
    seen = [0]

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        subscribed.set()

    def on_message(client, userdata, msg):
        if done.is_set():
            return
        parsed = parse_topic(msg.topic)
        via = f"  (via $aws/rules/{parsed[2]})" if parsed and parsed[2] else ""
        stamp = dt.datetime.now().strftime("%H:%M:%S.%f")[:-3]
        text = msg.payload.decode("utf-8", "replace")
        print(f"{stamp} {normalise_topic(msg.topic)} {text}{via}", file=out, flush=True)
        seen[0] += 1
        if count and seen[0] >= count:
            done.set()

    client = connect(workdir, host, port)
    client.on_message = on_message
    client.on_subscribe = on_subscribe
    try:
        client.subscribe(filters)
        if not subscribed.wait(CONNECT_TIMEOUT):
            raise ConsoleError("the broker did not acknowledge the subscription")
        if ready is not None:
            ready()
        done.wait(timeout)
    finally:
        client.disconnect()
        client.loop_stop()
    return seen[0]


# ---------------------------------------------------------------- OTA

OTA_TIMEOUT = 600.0
MAX_OTA_FILE = 16 * 1024 * 1024  # larger than any app slot
_JOB_ID_CHARS = set(string.ascii_letters + string.digits + "-_.:")
_PROGRESS = re.compile(r"Downloaded (\d{1,3})% Firmware Image")


def describe_ota_file(data):
    """('firmware image' | 'app bundle', version) of an OTA file, or
    ConsoleError saying what the node would make of it."""
    from tools import bundle as bundle_tool

    reader_mod = bundle_tool._reader()  # puts firmware/lib on sys.path, with a stand-in micropython.const
    if data[:4] == reader_mod.MAGIC:
        # The node's own reader, told where the file ends, so a short bundle is refused too.
        reader = reader_mod.Reader()
        try:
            for _ in reader.feed(data):
                pass
            for _ in reader.feed(b""):
                pass
        except reader_mod.BundleError as exc:
            raise ConsoleError(f"not a valid bundle: {exc}; rebuild it with 'make bundle'") from None
        return "app bundle", reader.manifest["version"]
    if data[:1] == b"\xe9":
        from rainmaker import image

        try:
            return "firmware image", image.info(data[:image.HEAD])["version"]
        except image.ImageError as exc:
            raise ConsoleError(f"not a usable firmware image: {exc}") from None
    raise ConsoleError("the file is neither an app bundle ('make bundle') nor an ESP32 application image "
                       "(the .app-bin of a MicroPython -OTA build, not the combined .bin flashed over USB); "
                       "the node would refuse it")


def check_job_id(job_id):
    """Job ids are echoed in every otastatus and stored by the node: 1..63 plain characters."""
    if not job_id or len(job_id) > 63 or not set(job_id) <= _JOB_ID_CHARS:
        raise ConsoleError(f"--job-id {job_id!r}: 1 to 63 characters from A-Z a-z 0-9 - _ . :")
    return job_id


def new_job_id():
    return "ota-" + dt.datetime.now().strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def ota_file_name(job_id, path):
    """The name the file is served under: the job id and the file's own name,
    reduced to URL-safe characters (never starting with '.', which the server
    does not serve)."""
    base = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in Path(path).name)
    return f"{job_id.replace(':', '_')}-{base.lstrip('.') or 'image'}"[:120]


def build_job(job_id, url, data, version):
    """The otaurl payload, in the cloud's key order."""
    job = {"ota_job_id": job_id, "url": url, "file_size": len(data),
           "file_md5": hashlib.md5(data).hexdigest()}
    if version:
        job["fw_version"] = version
    return job


def status_progress(st):
    """The percentage of a 'Downloaded N% Firmware Image' report, else None."""
    m = _PROGRESS.search(st["additional_info"]) if st["status"] == "in-progress" else None
    return min(int(m.group(1)), 100) if m else None


def progress_bar(pct, width=30):
    full = width * pct // 100
    return "[" + "#" * full + "-" * (width - full) + f"] {pct:3d}%"


def format_status(st, now=None):
    stamp = (now or dt.datetime.now()).strftime("%H:%M:%S")
    line = f"{stamp} {st['status']:<11} {st['additional_info']}"
    pct = status_progress(st)
    return line + "  " + progress_bar(pct) if pct is not None else line


def follow_job(events, job_id, timeout, out=None, on_fetch=None, clock=time.monotonic):
    """Print the job's statuses until it ends; returns 'success', 'failed',
    'rejected' or 'timeout'. Transport-free: events is a queue of
    ('status', payload bytes) and ('fetch', payload bytes) items.

    on_fetch(): called when the node asks for a job (otafetch) while this one
    is not over (the cloud's recorder answers it with the pending job).
    """
    out = out or sys.stdout
    deadline = clock() + timeout
    while True:
        left = deadline - clock()
        if left <= 0:
            return "timeout"
        try:
            kind, payload = events.get(timeout=min(left, 0.5))
        except queue.Empty:
            continue
        if kind == "fetch":
            if on_fetch is not None:
                on_fetch()
            continue
        st = parse_status(payload)
        if st is None:
            text = payload[:80].decode("utf-8", "replace") if isinstance(payload, (bytes, bytearray)) else "?"
            print(f"ignored a malformed otastatus: {text!r}", file=out, flush=True)
            continue
        if st["ota_job_id"] != job_id:
            continue  # another job's report (an older console run, the real cloud)
        print(format_status(st), file=out, flush=True)
        result = status_outcome(st)
        if result:
            return result


def find_or_start_server(workdir, start=True):
    """(base URL, served directory, server started here or None): the cloud's
    file server if one answers, else (start=True) a new one for this process."""
    from tools.otaserver import OtaServer, OtaServerError, running_server

    found = running_server(workdir)
    if found:
        host, port, root = found
        return f"https://{host}:{port}", root, None
    if not start:
        raise ConsoleError(f"no OTA file server is running for {workdir}: start 'make cloud' (it runs one), "
                           "or leave out --no-wait so the console serves the file while it waits")
    try:
        server = OtaServer(Path(workdir) / "ota", workdir, 0, log_path=Path(workdir) / "otaserver.log").start()
    except (OtaServerError, OSError) as exc:
        raise ConsoleError(f"cannot start the OTA file server: {exc}") from None
    return f"https://{server.host}:{server.port}", server.root, server


def run_ota(workdir, node_id, file, version=None, job_id=None, timeout=OTA_TIMEOUT, wait=True,
            wait_fetch=False, broker_port=None, out=None, ready=None):
    """Serve FILE, send the job to node_id and (wait) follow it; returns the
    outcome ('sent' without wait). Raises ConsoleError for anything to fix
    first, before anything is sent. broker_port: as --port (default: DIR/broker.json)."""
    out = out or sys.stdout
    check_node_id(node_id)
    job_id = check_job_id(job_id) if job_id else new_job_id()
    if timeout is not None and not 0 < timeout < 1e7:
        raise ConsoleError(f"--timeout {timeout:g}: give a number of seconds > 0")
    path = Path(file)
    if not path.is_file():
        raise ConsoleError(f"{file}: no such file; build a bundle with 'make bundle ARGS=\"--version 1.2.0 -o app.rmb\"' "
                           "or take the .app-bin of a MicroPython -OTA build")
    size = path.stat().st_size
    if not 0 < size <= MAX_OTA_FILE:
        raise ConsoleError(f"{file} is {size} bytes: an OTA file has 1 to {MAX_OTA_FILE} bytes")
    data = path.read_bytes()
    kind, found_version = describe_ota_file(data)
    if version and found_version and version != found_version:
        print(f"warning: --version {version} but the {kind} says {found_version}; the node will report "
              f"{found_version} once it runs it", file=sys.stderr)
    config, _ = load_node(workdir, node_id)  # raises for an unknown node, naming the fix
    running = ((config or {}).get("info") or {}).get("fw_version") if isinstance(config, dict) else None
    if running and running == found_version and kind == "firmware image":
        print(f"warning: the node reports fw_version {running} already; it will reject the image "
              "(Same version received)", file=sys.stderr)
    host, port = broker_address(workdir, broker_port)
    base, root, server = find_or_start_server(workdir, start=wait)
    client = None
    try:
        name = ota_file_name(job_id, path)
        write_files_atomic({Path(root) / name: (data, 0o644)})
        job = build_job(job_id, f"{base}/{name}", data, version or found_version)
        text = json.dumps(job, separators=(",", ":"))
        print(f"{kind} {path.name}, version {found_version}, {size} bytes, md5 {job['file_md5']}", file=out)
        print(f"serving {Path(root) / name} as {job['url']}", file=out, flush=True)

        events = queue.Queue()
        subscribed = threading.Event()
        client = connect(workdir, host, port)

        def on_message(c, userdata, msg):
            parsed = parse_topic(msg.topic)
            if parsed and parsed[0] == node_id and parsed[1] in ("otastatus", "otafetch"):
                events.put(("status" if parsed[1] == "otastatus" else "fetch", msg.payload))

        client.on_message = on_message
        client.on_subscribe = lambda *a: subscribed.set()
        if wait:
            client.subscribe([(f"node/{node_id}/otastatus", 1), (f"$aws/rules/+/node/{node_id}/otastatus", 1),
                              (f"node/{node_id}/otafetch", 1), (f"$aws/rules/+/node/{node_id}/otafetch", 1)])
            if not subscribed.wait(CONNECT_TIMEOUT):
                raise ConsoleError("the broker did not acknowledge the subscription to otastatus")

        topic = f"node/{node_id}/otaurl"

        def send():
            info = client.publish(topic, text, qos=1)
            try:
                info.wait_for_publish(CONNECT_TIMEOUT)
            except (RuntimeError, ValueError) as exc:
                raise ConsoleError(f"publish failed: {exc}") from None
            if not info.is_published():
                raise ConsoleError(f"no PUBACK from the broker within {CONNECT_TIMEOUT}s")
            print(f"published to {topic}: {text}", file=out, flush=True)

        # The cloud's recorder answers the node's otafetch with this job until it is over.
        save_ota_job(workdir, node_id, job)
        if wait_fetch:
            print(f"job {job_id} waits for the node to ask (otafetch: at its boot, or after a delay)",
                  file=out, flush=True)
        else:
            send()
        if ready is not None:
            ready()
        if not wait:
            return "sent"

        def on_fetch():
            print("the node asked for its job (otafetch); the cloud answers with this one", file=out, flush=True)

        result = follow_job(events, job_id, timeout, out, on_fetch)
        if result == "timeout":
            print(f"timeout: no final status for job {job_id} within {timeout:g}s", file=out, flush=True)
        return result
    finally:
        if client is not None:
            client.disconnect()
            client.loop_stop()
        if server is not None:
            server.stop()


# ---------------------------------------------------------------- CLI

def _parser():
    p = argparse.ArgumentParser(
        prog="python -m tools.console",
        description="Developer console for the local RainMaker cloud (see 'python -m tools.cloud').",
        epilog="set syntax: DEVICE.PARAM=VALUE, split at the first '.' (device names cannot contain "
               "'.'); VALUE is a JSON literal if it parses, else a string. Or one JSON object.",
    )
    p.add_argument("--dir", type=Path, default=Path(".cloud"), help="cloud work directory (default: %(default)s)")
    p.add_argument("--port", type=int, help="broker port (default: from DIR/broker.json)")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    sub.add_parser("nodes", help="list known nodes")
    s = sub.add_parser("show", help="show a node's config and current params")
    s.add_argument("node_id", metavar="NODE_ID")
    s = sub.add_parser("set", help="write params to a node (node/<id>/params/remote, QoS 1)",
                       description="Write params, e.g.: set NODE Light.Power=false Light.Brightness=40 "
                                   "or set NODE '{\"Light\":{\"Power\":false}}'. Names are checked "
                                   "against the recorded node config when there is one.")
    s.add_argument("node_id", metavar="NODE_ID")
    s.add_argument("assignments", nargs="+", metavar="DEVICE.PARAM=VALUE")
    s.add_argument("--no-validate", action="store_true", help="skip the checks against the node config")
    s.add_argument("--timeout", type=float, default=CONNECT_TIMEOUT, help="seconds to wait (default: %(default)s)")
    s = sub.add_parser("watch", help="print live node traffic until Ctrl-C")
    s.add_argument("node_id", metavar="NODE_ID", nargs="?", help="only this node (default: all)")
    s.add_argument("--count", type=int, help="stop after N messages")
    s.add_argument("--timeout", type=float, help="stop after S seconds")
    s = sub.add_parser("schedule", help="list, add, edit, remove, enable or disable a node's schedules",
                       description="Schedules run on the board from its own clock, in its time zone "
                                   "(the Time service), even with the cloud away. --at HH:MM with "
                                   "--days mon,tue,... (none: once), or with --date YYYY-MM-DD "
                                   "[--yearly]; or --in SECONDS (once).")
    s.add_argument("op", choices=("list", "add", "edit", "remove", "enable", "disable"))
    s.add_argument("node_id", metavar="NODE_ID")
    s.add_argument("sid", metavar="ID", nargs="?", help="the schedule's id (1..8 characters)")
    s.add_argument("action", nargs="*", metavar="DEVICE.PARAM=VALUE", help="what the schedule sets")
    s.add_argument("--id", dest="id_opt", metavar="ID", help="same as the positional ID")
    s.add_argument("--name")
    s.add_argument("--info")
    s.add_argument("--at", metavar="HH:MM")
    s.add_argument("--days", metavar="mon,tue,...")
    s.add_argument("--date", metavar="YYYY-MM-DD")
    s.add_argument("--yearly", action="store_true", help="with --date: every year")
    s.add_argument("--in", dest="after", type=int, metavar="SECONDS", help="once, SECONDS from now")
    s.add_argument("--timeout", type=float, default=CONNECT_TIMEOUT, help="seconds to wait (default: %(default)s)")
    s = sub.add_parser("scene", help="list, add, edit, remove, activate or deactivate a node's scenes")
    s.add_argument("op", choices=("list", "add", "edit", "remove", "activate", "deactivate"))
    s.add_argument("node_id", metavar="NODE_ID")
    s.add_argument("sid", metavar="ID", nargs="?", help="the scene's id (1..8 characters)")
    s.add_argument("action", nargs="*", metavar="DEVICE.PARAM=VALUE", help="what the scene sets")
    s.add_argument("--id", dest="id_opt", metavar="ID", help="same as the positional ID")
    s.add_argument("--name")
    s.add_argument("--info")
    s.add_argument("--timeout", type=float, default=CONNECT_TIMEOUT, help="seconds to wait (default: %(default)s)")
    s = sub.add_parser(
        "ota", help="update a node over the air: serve FILE over HTTPS, send the job, follow its progress",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Update a node over the air, as the RainMaker cloud does with an OTA job.\n\n"
                    "FILE is an app bundle (make bundle) or a firmware image (the .app-bin of a\n"
                    "MicroPython -OTA build). It is copied to DIR/ota/ and served over HTTPS by the\n"
                    "cloud's file server (or, if none runs, by this command while it waits), with a\n"
                    "certificate from the local CA the node already trusts for the broker. The job\n"
                    "{ota_job_id, url, file_size, file_md5, fw_version} goes to node/<id>/otaurl\n"
                    "(QoS 1); then every otastatus report for the job is printed, with a progress\n"
                    "bar for the 'Downloaded N%' steps, until success, rejected, or failed after\n"
                    "the last attempt. Until then the job is the node's pending one: the cloud's\n"
                    "recorder (make cloud, make sim) answers each otafetch from the node with it,\n"
                    "as the RainMaker cloud does.",
        epilog="exit status: 0 success (or sent, with --no-wait), 1 failed, rejected or timeout, 2 an error\n"
               "to fix first (unknown node, no broker, missing or unusable file).\n\n"
               "examples:\n  make bundle ARGS=\"--version 1.2.0 --chip esp32 -o app.rmb\"\n"
               "  make console ARGS=\"ota 240AC4A1B2C3 app.rmb\"")
    s.add_argument("node_id", metavar="NODE_ID")
    s.add_argument("file", metavar="FILE", help="app bundle (.rmb) or firmware image (.app-bin)")
    s.add_argument("--version", help="fw_version to announce (default: the version inside FILE)")
    s.add_argument("--job-id", help="the job's id, 1..63 characters (default: ota-<date>-<time>-<random>)")
    s.add_argument("--timeout", type=float, default=OTA_TIMEOUT,
                   help="seconds to wait for the final status (default: %(default)s)")
    s.add_argument("--no-wait", action="store_true",
                   help="send the job and exit (needs the cloud's file server: 'make cloud')")
    s.add_argument("--wait-fetch", action="store_true",
                   help="do not send the job now: the cloud hands it out when the node asks for one "
                        "(otafetch, at its boot), as for a job created while the node was offline; with "
                        "--no-wait: queue the job and exit")
    return p


def _organise(args):
    # "schedule add NODE --id x ... Light.Power=true": argparse puts the first
    # assignment in ID when --id is used; put it back with the action.
    if args.id_opt:
        if args.sid:
            args.action.insert(0, args.sid)
        args.sid = args.id_opt
    if args.op != "list" and not args.sid:
        raise ConsoleError(f"{args.cmd} {args.op} needs the {args.cmd}'s ID")
    return parse_assignments(args.action) if args.action else None


def main(argv=None):
    parser = _parser()
    # Assignments may follow the options of schedule/scene (argparse would
    # not take positionals after them): they come back as extras here.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.cmd not in ("schedule", "scene") or any(w.startswith("-") for w in extra):
            parser.error("unrecognized arguments: " + " ".join(extra))
        args.action += extra
    try:
        if args.cmd == "nodes":
            print(format_nodes(list_nodes(args.dir)))
        elif args.cmd == "show":
            config, params = load_node(args.dir, args.node_id)
            print(format_node(args.node_id, config, params))
        elif args.cmd == "set":
            check_node_id(args.node_id)
            doc = parse_assignments(args.assignments)
            config = read_json(Path(args.dir) / "nodes" / args.node_id / "config.json")
            if isinstance(config, dict) and not args.no_validate:
                problems = validate_params(config, doc)
                if problems:
                    raise ConsoleError("; ".join(problems) + " (use --no-validate to send anyway)")
            host, port = broker_address(args.dir, args.port)
            topic = publish_params(args.dir, args.node_id, doc, host, port, args.timeout)
            print(f"published to {topic}: {json.dumps(doc, separators=(',', ':'))}")
        elif args.cmd in ("schedule", "scene"):
            check_node_id(args.node_id)
            if args.op == "list":
                _, params = load_node(args.dir, args.node_id)
                key = ("Schedule", "Schedules") if args.cmd == "schedule" else ("Scenes", "Scenes")
                print(format_schedules(params, *key))
                return 0
            action = _organise(args)
            if args.cmd == "schedule":
                trig = None
                if args.op in ("add", "edit"):
                    trig = schedule_trigger(args.at, args.days, args.date, args.yearly, args.after)
                doc = schedule_op(args.op, args.sid, args.name, trig, action, args.info)
            else:
                doc = scene_op(args.op, args.sid, args.name, action, args.info)
            host, port = broker_address(args.dir, args.port)
            topic = publish_params(args.dir, args.node_id, doc, host, port, args.timeout)
            print(f"published to {topic}: {json.dumps(doc, separators=(',', ':'))}")
        elif args.cmd == "ota":
            result = run_ota(args.dir, args.node_id, args.file, args.version, args.job_id, args.timeout,
                             wait=not args.no_wait, wait_fetch=args.wait_fetch, broker_port=args.port)
            return 0 if result in ("success", "sent") else 1
        elif args.cmd == "watch":
            host, port = broker_address(args.dir, args.port)
            ready = lambda: print("watching (Ctrl-C to stop)", file=sys.stderr, flush=True)  # noqa: E731
            got = watch(args.dir, host, port, args.node_id, args.count, args.timeout, ready=ready)
            if args.count and got < args.count:
                print(f"timeout: got {got} of {args.count} messages", file=sys.stderr)
                return 1
    except ConsoleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 1 if args.cmd == "ota" else 0  # an interrupted update is not a success
    return 0


if __name__ == "__main__":
    sys.exit(main())
