# Runs first at every boot, before main.py. It is also the recovery path of an
# app update over the air, so it depends on nothing an update can replace
# (no import from lib/) and an update never replaces it.
#
# An app update (rainmaker's app bundles) is staged under ota/new/ and then
# switched in by switch(): each replaced file is moved to ota/old/ first, and
# ota/state.json says how far the switch got, so a power cut at any point is
# finished at the next boot. The new app then runs on trial: if main.py
# raises at import, or the board boots _MAX_BOOTS times without the agent
# confirming it (MQTT connected), revert() puts the old files back.
import gc
import os

_STATE = "ota/state.json"
_MAX_BOOTS = 3


def _load():
    import json

    try:
        with open(_STATE) as f:
            st = json.load(f)
        return st if isinstance(st, dict) else None
    except (OSError, ValueError):
        return None


def _save(st):
    import json

    with open(_STATE + ".tmp", "w") as f:
        json.dump(st, f)
    _rename(_STATE + ".tmp", _STATE)


def _exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False


def _rename(a, b):
    try:
        os.rename(a, b)  # replaces b on LittleFS, the ESP32's default
    except OSError:
        os.remove(b)  # FAT refuses to replace: the source is still there
        os.rename(a, b)


def _move(a, b):
    d = ""
    for part in b.split("/")[:-1]:
        d = d + "/" + part if d else part
        if not _exists(d):
            os.mkdir(d)
    _rename(a, b)


def switch(st=None):
    """Put the staged files in place (again, after a power cut: each step is checked)."""
    st = st or _load()
    if not st:
        return
    for p, op in st["files"]:
        old = "ota/old/" + p
        if op == "put":
            new = "ota/new/" + p
            if _exists(new):
                if _exists(p) and not _exists(old):
                    _move(p, old)
                _move(new, p)
        elif _exists(p) and not _exists(old):  # "del": a .py that would shadow a new .mpy
            _move(p, old)
    st["step"] = "trial"
    st["boots"] = 0
    _save(st)


def revert(st=None, why="the new app failed"):
    """Put the previous app's files back; the state says why, for the agent to report."""
    st = st or _load()
    if not st:
        return
    if st.get("step") != "revert":
        st["step"] = "revert"  # a power cut from here on: the next boot goes on reverting
        st["why"] = why
        _save(st)
    absent = st.get("absent", ())
    for p, op in reversed(st["files"]):
        old = "ota/old/" + p
        if _exists(old):
            _move(old, p)
        elif op == "put" and p in absent and _exists(p):
            os.remove(p)
    st["step"] = "reverted"
    _save(st)
    print("boot: app update rolled back: %s" % st["why"])


def confirm():
    """The new app reached the broker: it stays, and the old files go. (The
    agent now does this itself, rainmaker.stage.settle; an agent from before
    that, which an app bundle may bring back, still calls this.)"""
    st = _load()
    if not st or st.get("step") != "trial":
        return
    st["step"] = "confirmed"
    _save(st)
    _wipe("ota/old")
    _wipe("ota/new")


def _wipe(path):
    try:
        names = os.listdir(path)
    except OSError:
        return
    for n in names:
        p = path + "/" + n
        try:
            os.remove(p)
        except OSError:
            _wipe(p)
    os.rmdir(path)


def _trial(st):
    # Runs main.py here, so an exception at import is seen: the port would
    # otherwise stop at the REPL with the broken app and never reboot.
    st["boots"] = st.get("boots", 0) + 1
    _save(st)
    if st["boots"] > _MAX_BOOTS:
        revert(st, "not confirmed after %d boots" % _MAX_BOOTS)
        return
    try:
        # Compiled first, so that the source text is garbage before the app
        # runs: passed to exec() as text, it stayed alive for as long as the
        # app did (exec never returns), several KB of the app's heap gone
        # for its trial boot alone.
        with open("main.py") as f:
            code = compile(f.read(), "main.py", "exec")
        gc.collect()
        exec(code, {"__name__": "__main__"})
    except KeyboardInterrupt:
        raise
    except Exception as e:
        import sys

        sys.print_exception(e)
        revert(st, "main.py raised %s" % type(e).__name__)
        import machine

        machine.reset()


def finish():
    """Complete a switch or a revert that a reset interrupted. Returns the state."""
    st = _load()
    if st is not None:
        step = st.get("step")
        if step == "switch":
            switch(st)
        elif step == "revert":
            revert(st)
    return st


def _boot():
    if not _exists(_STATE):
        return  # the common case: one stat
    st = finish()
    if st is not None and st.get("step") == "trial":
        _trial(st)


if __name__ == "__main__":
    _boot()
    # main.py runs in this same namespace: the update code would stay in its
    # heap. (It is loaded again, as the module boot, when an update needs it.)
    del _load, _save, _exists, _rename, _move, switch, revert, confirm, _wipe, _trial, finish, _boot
gc.collect()
