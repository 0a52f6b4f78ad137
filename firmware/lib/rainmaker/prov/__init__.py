# Wi-Fi provisioning: the protocomm endpoints of the ESP RainMaker phone apps
# and esp-rainmaker-cli over SoftAP, with Security 0, 1 or 2 (docs/provisioning.md).
#
# Imported only while the board has no Wi-Fi credentials; unload() drops the
# modules afterwards so their memory goes back to the heap.
import sys
import gc


async def run(cfg, sta, node_id, wifi_file="wifi.json", mapping_file="mapping.json"):
    """Provision; returns "done" (credentials stored) or "timeout"."""
    # Collections between the steps that make long-lived objects (the code's
    # module dicts, then the provisioner's objects, the server's, each
    # connection's): each step's objects go into the holes the last one's
    # garbage left low in the heap, not above that garbage, where they would
    # cut up the free part that the handshakes' big numbers need.
    gc.collect()
    from .softap import Provisioner

    gc.collect()
    return await Provisioner(cfg, sta, node_id, wifi_file, mapping_file).run()


def unload():
    for name in list(sys.modules):
        if name.startswith("rainmaker.prov"):
            del sys.modules[name]
    pkg = sys.modules.get("rainmaker")
    if pkg is not None:
        try:
            delattr(pkg, "prov")
        except (AttributeError, TypeError):
            pass
    gc.collect()
