# Run by tests/test_app_update.py on CPython and on MicroPython (unix port):
# an app update's switch and revert (firmware/boot.py, rainmaker.stage) cut
# by a power loss after every filesystem change, then finished by the next
# boot. Prints one line: "OK <cut points tried>" or "FAIL <why>".
import sys
import os

FW = sys.argv[1]
sys.path.insert(0, FW + "/lib")
sys.path.insert(0, FW)
try:
    import micropython  # noqa: F401
except ImportError:
    import types

    sys.modules["micropython"] = types.ModuleType("micropython")
    sys.modules["micropython"].const = lambda x: x

import boot
from rainmaker import stage as stg

OLD = {"main.py": "v1", "lib/rainmaker/a.py": "A1", "lib/b.mpy": "B1", "lib/c.py": "C1", "keep.json": "K"}
NEW = {"main.py": "v2", "lib/rainmaker/a.py": "A2", "lib/c.mpy": "C2", "lib/d.py": "D2"}


class Cut(Exception):
    pass


class FaultyOS:
    # The filesystem calls boot.py makes, failing like a power cut after n changes.
    def __init__(self, n):
        self.n = n

    def _step(self):
        if self.n == 0:
            raise Cut()
        self.n -= 1

    def rename(self, a, b):
        self._step()
        os.rename(a, b)

    def remove(self, p):
        self._step()
        os.remove(p)

    def mkdir(self, p):
        self._step()
        os.mkdir(p)

    def stat(self, p):
        return os.stat(p)


def wipe(p):
    try:
        names = os.listdir(p)
    except OSError:
        try:
            os.remove(p)
        except OSError:
            pass
        return
    for n in names:
        wipe(p + "/" + n)
    os.rmdir(p)


def write(p, data):
    d = ""
    for part in p.split("/")[:-1]:
        d = d + "/" + part if d else part
        try:
            os.mkdir(d)
        except OSError:
            pass
    with open(p, "w") as f:
        f.write(data)


def tree(p="."):
    out = {}
    for n in os.listdir(p):
        q = n if p == "." else p + "/" + n
        if q == "ota":
            continue
        if os.stat(q)[0] & 0x4000:
            out.update(tree(q))
        else:
            with open(q) as f:
                out[q] = f.read()
    return out


def fresh():
    for n in os.listdir("."):
        wipe(n)
    for p in OLD:
        write(p, OLD[p])
    s = stg.Stage()
    files = s.entries()  # the manifest's entries in ota.lst, as the board keeps them
    for p in NEW:
        files.add({"path": p, "size": len(NEW[p]), "sha256": "%064x" % len(p)})
    s.begin({"files": files, "total": 10, "version": "2.0.0"})
    for e in files:
        s.open(e)
        s.write(NEW[e["path"]].encode())
        s.close()
    s.commit("job1")
    if stg.LIST in os.listdir("."):
        raise AssertionError("the file list outlived the commit")


def expect_new():
    want = dict(OLD)
    want.update(NEW)
    del want["lib/c.py"]  # moved aside: the new c.mpy would be shadowed by it
    return want


def run():
    cuts = 0
    for phase in ("switch", "revert"):
        n = 0
        while True:
            fresh()
            if phase == "revert":
                boot.switch()
            boot.os = FaultyOS(n)
            try:
                if phase == "switch":
                    boot.switch()
                else:
                    boot.revert(why="test")
                done = True
            except Cut:
                done = False
            boot.os = os
            if not done:
                cuts += 1
                # the next boot: boot.py finishes whatever step the state names
                boot.finish()
            got = tree()
            st = boot._load()
            if phase == "switch":
                if got != expect_new() or st["step"] != "trial":
                    return "FAIL switch cut at %d: %r %r" % (n, got, st["step"])
                boot.revert()
                if tree() != OLD:
                    return "FAIL revert after switch cut at %d: %r" % (n, tree())
            elif st["step"] == "trial" and not done:
                # cut before the revert was recorded: the new app is whole, on trial
                if got != expect_new():
                    return "FAIL revert cut at %d left a mixed app: %r" % (n, got)
            elif got != OLD or st["step"] != "reverted" or st["why"] != "test":
                return "FAIL revert cut at %d: %r %r" % (n, got, st["step"])
            if done:
                break
            n += 1
    return "OK %d" % cuts


print(run())
