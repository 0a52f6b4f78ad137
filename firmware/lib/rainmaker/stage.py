# An app bundle's files, staged under ota/new/ as they arrive, then handed to
# boot.py's switch (docs/ota.md#app-bundles).
#
# Nothing the running app uses is touched until every file has arrived and
# matched its SHA-256 (the bundle reader checks each one). Then
# ota/state.json lists the files to put in place and the ones to move aside,
# and boot.py does the switch, the trial and, if the new app fails, the
# revert: the code that undoes an update is never part of one.
import json
import os
from micropython import const

_ROOT = "ota"
_NEW = "ota/new/"
STATE = "ota/state.json"
# The manifest's file entries while a bundle is downloaded and until its plan
# is written (bundle.Listed): kept on flash, not in the heap. Outside ota/,
# which begin() wipes after the list is made, and which holds the state of
# the app in place that a refused bundle must not touch.
LIST = "ota.lst"
_SPARE = const(16384)  # bytes of the filesystem left free after staging


class StageError(ValueError):
    pass


def _top():
    """The state file's top-level string values ({"step": ..., "version": ...,
    "prev": ...}), read 64 bytes at a time: the plan's lists, a few KB as
    objects for a big bundle, are skipped, never built. {} if there is no
    such file or it holds no JSON object."""
    out = {}
    try:
        f = open(STATE, "rb")
    except OSError:
        return out
    buf = bytearray(64)
    depth = 0
    obj = False  # the top level is an object
    key = True  # the next string at the top level is a key
    name = None  # the key whose value comes next
    s = None  # the top-level string being read (raw bytes, escapes kept)
    instr = esc = False
    with f:
        while True:
            n = f.readinto(buf)
            if not n:
                return out
            for i in range(n):
                c = buf[i]
                if instr:
                    if esc:
                        esc = False
                    elif c == 0x5C:  # backslash: the next byte is escaped
                        esc = True
                    elif c == 0x22:  # the closing quote
                        instr = False
                        if s is not None:
                            try:
                                v = json.loads(b'"' + s + b'"')
                            except ValueError:
                                return {}
                            if key:
                                name = v
                            elif name is not None:
                                out[name] = v
                            s = None
                        continue
                    if s is not None:
                        s.append(c)
                elif c == 0x22:
                    instr = True
                    if depth == 1 and obj:
                        s = bytearray()
                elif c == 0x7B or c == 0x5B:  # { [
                    if depth == 0:
                        obj = c == 0x7B
                    depth += 1
                elif c == 0x7D or c == 0x5D:  # } ]
                    depth -= 1
                elif depth == 1:
                    if c == 0x3A:  # : a value follows
                        key = False
                    elif c == 0x2C:  # , a key follows
                        key, name = True, None


def app_version():
    """The version of the app files in place: the last bundle switched in and
    not reverted ("-" if none). With the app slot's label it names what runs."""
    st = _top()
    step = st.get("step")
    if step in ("switch", "trial", "confirmed"):
        return str(st.get("version"))
    if step in ("revert", "reverted"):
        return str(st.get("prev") or "-")
    return "-"


def allowed(path):
    """Only the library (lib/) and the app's modules at the top, never boot.py,
    credentials, settings or state (a bundle must not be able to replace the
    node's identity or the recovery path)."""
    if path.startswith("lib/"):
        return True  # the library: code and its data (the time-zone table)
    if path == "boot.py" or "/" in path:
        return False
    return path.endswith(".py") or path.endswith(".mpy")


def _counterpart(p):
    # A stale lib/x.py would be imported instead of a new lib/x.mpy (the .py
    # is found first), and the other way round a stale .mpy is only noise:
    # the old twin is moved aside either way, and restored by a revert.
    if p.endswith(".mpy"):
        return p[:-4] + ".py"
    if p.endswith(".py"):
        return p[:-3] + ".mpy"
    return None


def _exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False


def _wipe(path):
    # ota/ from an earlier update: removed depth first.
    try:
        names = os.listdir(path)
    except OSError:
        try:
            os.remove(path)
        except OSError:
            pass
        return
    for n in names:
        _wipe(path + "/" + n)
    os.rmdir(path)


def _mkdirs(path):
    d = ""
    for part in path.split("/")[:-1]:
        d = d + "/" + part if d else part
        if not _exists(d):
            os.mkdir(d)


def forget():
    """Remove the file list of an update that is over (or that a power cut
    ended: each bundle also starts a new, empty one)."""
    try:
        os.remove(LIST)
    except OSError:
        pass


def _op(f, p, op, more=True):
    # One step of the plan: ["path", "op"], then a comma unless it is the last.
    f.write("[")
    json.dump(p, f)
    f.write(', "put"]' if op == "put" else ', "del"]')
    if more:
        f.write(", ")


def _put_state(st):
    with open(STATE + ".tmp", "w") as f:
        json.dump(st, f)
    os.rename(STATE + ".tmp", STATE)


def settle(ok, why=None):
    """End the trial of a new app: it reached the broker (ok), or it did not
    in time (why). Confirmed, the state keeps only the version, and the old
    and staged files go; not, the step is "revert", which boot.py carries out
    as the board restarts (the caller restarts it), as it finishes a revert a
    power cut interrupted. Done here, not by importing boot.py, which would be
    compiled from source into the node's heap at its most crowded moment.
    False if no app is on trial."""
    top = _top()
    if top.get("step") != "trial":
        return False
    if ok:
        # Read without the plan: a big bundle's plan, loaded, took the KB
        # that a node at its smallest heap still needs online.
        _put_state({"step": "confirmed", "version": top.get("version")})
        _wipe(_ROOT + "/old")
        _wipe(_NEW[:-1])
        return True
    with open(STATE) as f:
        st = json.load(f)  # the plan is needed: boot.py reverts by it
    st["step"] = "revert"
    st["why"] = why
    _put_state(st)
    return True


class Stage:
    def __init__(self):
        self.manifest = None
        self.prev = "-"
        self._f = None
        self._list = None  # LIST, open while the update lasts

    def entries(self):
        """An empty bundle.Listed in LIST, for the bundle's Reader: where the
        manifest's entries go, until commit() or abort() removes it."""
        from .bundle import Listed

        self._list = open(LIST, "w+b")  # emptied: a leftover of an update a power cut ended
        return Listed(self._list)

    def end(self):
        """The update is over, staged or not: its file list goes."""
        if self._list:
            self._list.close()
            self._list = None
        forget()

    def begin(self, manifest):
        """The bundle's manifest has been read: check it, make room."""
        for e in manifest["files"]:
            if not allowed(e["path"]):
                raise StageError("bundle may not write %s (only lib/ and the app's .py/.mpy modules)" % e["path"])
        try:
            st = os.statvfs("/")
            free = st[0] * st[3]
        except (OSError, AttributeError):
            free = None
        if free is not None and free < manifest["total"] + _SPARE:
            raise StageError("not enough flash: the bundle needs %d bytes, %d are free" % (manifest["total"] + _SPARE, free))
        self.prev = app_version()  # before the old state goes with ota/
        _wipe(_ROOT)  # a staging from an earlier, unfinished update
        os.mkdir(_ROOT)
        if self.prev != "-":
            # The state file also names the app in place: a power cut during
            # this download must not leave the node without its version (it
            # would take the same bundle again as new).
            _put_state({"step": "confirmed", "version": self.prev})
        os.mkdir(_NEW[:-1])
        self.manifest = manifest

    def open(self, entry):
        p = _NEW + entry["path"]
        _mkdirs(p)
        self._f = open(p, "wb")

    def write(self, data):
        f = self._f
        assert f is not None  # open() came first (the reader's FILE event)
        f.write(data)

    def close(self):
        if self._f:
            self._f.close()
            self._f = None

    def abort(self):
        # Only the staged files and the file list: the state file names the
        # app in place (and a bundle refused at its manifest has not staged
        # anything).
        self.close()
        try:
            _wipe(_NEW[:-1])
        finally:
            self.end()

    def commit(self, job=None):
        """Every file is staged and verified: write the switch plan for boot.py
        to ota/state.json, {"step": "switch", "files": [[path, "put" or
        "del"], ...], "absent": [paths new to the board], "version", "job",
        "prev"}. It is written as it is made, entry by entry from the file
        list: the plan in RAM (~60 bytes a file, in a list that grows) did not
        fit where the download had."""
        self.close()
        try:
            m = self.manifest
            assert m is not None
            files = m["files"]
            n = len(files)
            new = bytearray(n)  # 1: the file is not on the board yet ("absent": a revert removes it)
            with open(STATE + ".tmp", "w") as f:
                f.write('{"step": "switch", "version": ')
                json.dump(m["version"], f)
                f.write(', "job": ')
                json.dump(job, f)
                f.write(', "prev": ')
                json.dump(self.prev, f)
                f.write(', "files": [')
                for i in range(n):
                    p = files[i]["path"]
                    twin = _counterpart(p)
                    if twin and _exists(twin):
                        _op(f, twin, "del")  # moved aside: it would shadow (or be shadowed by) the new one
                    new[i] = not _exists(p)
                    _op(f, p, "put", i < n - 1)
                f.write('], "absent": [')
                sep = False
                for i in range(n):
                    if new[i]:
                        if sep:
                            f.write(", ")
                        json.dump(files[i]["path"], f)
                        sep = True
                f.write("]}")
            os.rename(STATE + ".tmp", STATE)
        finally:
            self.end()
