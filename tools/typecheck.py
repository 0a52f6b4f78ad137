"""Type-check firmware/ against the ESP32 MicroPython stubs (`make typecheck`).

The checker is basedpyright, with micropython-esp32-stubs and the
micropython-stdlib-stubs it builds on (all pinned in requirements.txt; the
checker brings its own Node.js). pyrightconfig.json at the repository root
points it at .venv/esp32-stubs, a folder laid out like a virtual environment
that holds the files of those two stub packages and nothing else:

- as the checker's typeshed, so the standard library it knows is
  MicroPython's (``time.monotonic``, ``os.path``, ``socket.create_connection``
  do not exist there);
- as its Python environment, so neither CPython's own library nor a package of
  the host venv (paho, cryptography, ...) can satisfy an import in firmware/.

An editor that reads pyrightconfig.json (Pylance, pyright, basedpyright) sees
the same once the folder exists: `make` builds it with the venv.

    build_stubs() -> Path        (re)build .venv/esp32-stubs when out of date
    check(project) -> (diags, summary)   run the checker on a project folder

CLI: ``python -m tools.typecheck`` checks the repository (extra arguments go to
basedpyright); ``--stubs`` only builds the folder.
"""
import importlib.metadata
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "pyrightconfig.json"
STUB_DISTS = ("micropython-stdlib-stubs", "micropython-esp32-stubs")
_STAMP = "stubs.txt"


class Unavailable(Exception):
    """The checker or the stubs are not installed in this Python."""


def load_config(path=CONFIG):
    """pyrightconfig.json as a dict (pyright allows // comment lines; json does not)."""
    lines = [ln for ln in Path(path).read_text().splitlines() if not ln.lstrip().startswith("//")]
    return json.loads("\n".join(lines))


def stubs_dir(config=None):
    """The stub environment named by the config (venvPath/venv), absolute."""
    c = config or load_config()
    return (ROOT / c["venvPath"] / c["venv"]).resolve()


def _dists():
    try:
        return [importlib.metadata.distribution(name) for name in STUB_DISTS]
    except importlib.metadata.PackageNotFoundError as e:
        raise Unavailable("%s is not installed: pip install -r requirements.txt" % e.args[0])


def build_stubs(dest=None):
    """Copy the stub packages' files into <dest>/lib/site-packages, unless they are there already."""
    dest = Path(dest) if dest else stubs_dir()
    dists = _dists()
    stamp = "".join("%s==%s\n" % (d.metadata["Name"], d.version) for d in dists)
    if (dest / _STAMP).is_file() and (dest / _STAMP).read_text() == stamp:
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    site = dest / "lib" / "site-packages"
    for d in dists:
        for f in d.files or ():
            name = str(f)
            if ".dist-info" in name or not (name.endswith(".pyi") or name == "stdlib/VERSIONS"):
                continue
            out = site / name
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(d.locate_file(f), out)
    if not (site / "stdlib" / "VERSIONS").is_file() or not (site / "machine.pyi").is_file():
        raise Unavailable("the stub packages in %s look incomplete" % sys.prefix)
    (dest / _STAMP).write_text(stamp)
    return dest


def checker():
    """The command that runs basedpyright from this Python."""
    if importlib.util.find_spec("basedpyright") is None:
        raise Unavailable("basedpyright is not installed: pip install -r requirements.txt")
    return [sys.executable, "-m", "basedpyright"]


def write_config(project):
    """Put the repository's checker config into another project folder (a copy of
    firmware/ under test), with its stub paths made absolute."""
    c = load_config()
    c["typeshedPath"] = str((ROOT / c["typeshedPath"]).resolve())
    c["venvPath"] = str((ROOT / c["venvPath"]).resolve())
    Path(project, "pyrightconfig.json").write_text(json.dumps(c, indent=2))


def check(project=ROOT, timeout=300):
    """Run the checker on `project`. Returns (diagnostics, summary): the errors and
    warnings (dicts with file, severity, message, rule, range), and the checker's
    summary (filesAnalyzed, errorCount, ...)."""
    cmd = checker()
    build_stubs()
    r = subprocess.run(cmd + ["--outputjson", "-p", str(project)], cwd=str(project),
                       capture_output=True, text=True, timeout=timeout)
    try:
        out = json.loads(r.stdout)
    except ValueError:
        raise RuntimeError("basedpyright failed (exit %d): %s%s" % (r.returncode, r.stdout[-2000:], r.stderr[-2000:]))
    diags = [d for d in out.get("generalDiagnostics", []) if d.get("severity") in ("error", "warning")]
    return diags, out.get("summary", {})


def format_diag(d, root=ROOT):
    path = Path(d["file"])
    try:
        path = path.relative_to(root)
    except ValueError:
        pass
    start = d.get("range", {}).get("start", {})
    rule = " (%s)" % d["rule"] if d.get("rule") else ""
    return "%s:%d:%d: %s: %s%s" % (path, start.get("line", 0) + 1, start.get("character", 0) + 1,
                                   d["severity"], d["message"].splitlines()[0], rule)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        build_stubs()
        if argv == ["--stubs"]:
            return 0
        cmd = checker()
    except Unavailable as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    return subprocess.call(cmd + ["-p", str(ROOT)] + argv, cwd=str(ROOT))


if __name__ == "__main__":
    sys.exit(main())
