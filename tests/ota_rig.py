"""Shared by the end-to-end OTA tests (test_ota_e2e.py, test_ota_power.py):
the local cloud and its HTTPS file server (module fixtures), and `Rig`, a
board running tests/apps/ota_main.py with the helpers to push a job and read
its otastatus reports.
"""
import hashlib
import json
import shutil
import time

import pytest

from tests.harness import Cloud, Board, ROOT
from tools import bundle as tb
from tools.otaserver import OtaServer
from tools.sim.relay import free_port

NODE = "240AC4E2E0B1"
APP = ROOT / "tests" / "apps" / "ota_main.py"
FINAL = ("success", "rejected")


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    c = Cloud(tmp_path_factory.mktemp("cloud")).start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def server(cloud, tmp_path_factory):
    s = OtaServer(tmp_path_factory.mktemp("ota"), cloud.workdir).start()
    yield s
    s.stop()


class Rig:
    """A board running tests/apps/ota_main.py, and how it reaches the file server."""

    def __init__(self, cloud, server, backend, root, ota_timeout=None, main=APP, cfg=None, args=(), start=True):
        """cfg: more rainmaker.json settings; args: more board options; start:
        boot the board and wait until it is online."""
        self.cloud, self.server, self.backend = cloud, server, backend
        args = list(args)
        self.port = server.port
        if backend == "micropython":  # its sockets reach the server through its radio relay
            self.port = free_port()
            args += ["--relay", f"{self.port}=127.0.0.1:{server.port}"]
        elif "--fs-size" not in args:
            # The CPython board runs the agent as sources, and its bundles carry
            # them again (it cannot load .mpy): ~400 KB twice, with the bundle's
            # file list and the 16 KB a bundle must leave free, is at the very
            # edge of the 960 KB partition a board holds .mpy files in.
            args += ["--fs-size", str(1536 * 1024)]
        self.board = Board(cloud, root, NODE, main=main, keepalive=30, backend=backend, args=args)
        cfg = dict(cfg or {})
        if ota_timeout:
            cfg["ota_timeout"] = ota_timeout
        if cfg:
            p = self.board.dir / "rainmaker.json"
            c = json.loads(p.read_text())
            c.update(cfg)
            p.write_text(json.dumps(c))
        if start:
            self.board.start()
            self.board.wait_line("online as " + NODE, timeout=40)

    def url(self, name):
        return f"https://127.0.0.1:{self.port}/{name}"

    def push(self, name, data, job, md5=True, version=None, serve=None):
        (self.server.root / name).write_bytes(data if serve is None else serve)
        doc = {"ota_job_id": job, "url": self.url(name), "file_size": len(data)}
        if md5:
            doc["file_md5"] = hashlib.md5(data).hexdigest() if md5 is True else md5
        if version:
            doc["fw_version"] = version
        since = self.cloud.mark()
        self.cloud.publish(f"node/{NODE}/otaurl", doc)
        return since, doc

    def statuses(self, since, job):
        out = []
        with self.cloud._cond:
            msgs = list(self.cloud.messages[since:])
        for topic, payload, _ in msgs:
            if topic.endswith(f"{NODE}/otastatus"):
                d = json.loads(payload)
                if d.get("ota_job_id") == job:
                    out.append((d["status"], d["additional_info"]))
        return out

    def outcome(self, since, job, timeout=90):
        """Statuses of the job up to its end: success, rejected, or the last attempt's failure."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.statuses(since, job)
            if st and (st[-1][0] in FINAL or st[-1][0] == "failed" and not st[-1][1].startswith(
                    ("OTA Attempt 1/", "OTA Attempt 2/"))):
                return st
            time.sleep(0.1)
        raise AssertionError(f"job {job} did not end within {timeout} s: {self.statuses(since, job)}\n"
                             + "\n".join(self.board.lines()[-30:]))

    def stop(self):
        self.board.stop()


@pytest.fixture()
def rig(cloud, server, backend, tmp_path):
    server.clear()
    r = Rig(cloud, server, backend, tmp_path)
    yield r
    r.stop()


def bundle(tmp_path, version, main_text, mpy):
    fw = tmp_path / "fw"
    shutil.copytree(ROOT / "firmware", fw, ignore=shutil.ignore_patterns("__pycache__"))
    (fw / "main.py").write_text(main_text)
    return tb.build(version, firmware=fw, mpy=mpy)


def app_main(version, extra=""):
    return APP.read_text().replace('fw_version="1.0.0"', f'fw_version="{version}"') + extra
