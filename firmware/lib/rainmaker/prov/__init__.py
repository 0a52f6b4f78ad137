# Wi-Fi provisioning: the protocomm endpoints of the ESP RainMaker phone apps
# and esp-rainmaker-cli over SoftAP, with Security 0, 1 or 2 (docs/provisioning.md).
#
# Imported only while the board has no Wi-Fi credentials; unload() drops the
# modules afterwards so their memory goes back to the heap.
import sys
import gc


async def run(cfg, sta, node_id, wifi_file="wifi.json", mapping_file="mapping.json"):
    """Provision; returns "done" (credentials stored) or "timeout"."""
    from .softap import Provisioner

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
