# ESP RainMaker agent for MicroPython.
#
#   import rainmaker as rm
#   from rainmaker import std
#   node = rm.Node("My Light", "Lightbulb")
#   node.add(std.lightbulb("Light", cb=on_write))
#   rm.run(node, my_task())
#
# At the REPL: rm.status() prints Wi-Fi, MQTT, the last error and the heap;
# rm.wifi_reset() forgets the network and reboots into provisioning.
# The I/O layer (rainmaker.agent) is imported on first use, so the model and
# protocol modules load without network or ssl (and in tests, without a board).
from .node import Node, Device, Param, READ, WRITE, TIME_SERIES, SIMPLE_TS, PERSIST, chip


def run(node, *coros, **kw):
    # The node is built: the builders (std) go before the agent's code loads,
    # so the two are never in the heap together (an app that keeps its own
    # name for std keeps the module; the example deletes it).
    from .node import unload

    unload("std")
    unload("conf")
    # The TLS context is the largest block the agent keeps (about 1.7 KB):
    # taken now, before the agent's code cuts the heap into smaller holes,
    # it finds room in a heap where it would not later. The agent fills it.
    import gc
    import ssl

    gc.collect()  # (the lowest hole that fits: the app's garbage first)
    try:
        kw["tls"] = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    except MemoryError:
        pass  # the agent tries again, and says so if it cannot
    from .agent import run

    run(node, *coros, **kw)


def status():
    from .diag import status

    status()


def wifi_reset(reboot=True, path="wifi.json"):
    """Forget the Wi-Fi credentials; with reboot, restart into provisioning.

    path is the file given to run() as wifi= (the default unless you changed it).
    """
    import os
    from . import log

    try:
        os.remove(path)
    except OSError:
        pass
    log.warn("wifi", "Wi-Fi credentials erased%s" % ("; rebooting into provisioning" if reboot else ""))
    if reboot:
        import machine

        machine.reset()
