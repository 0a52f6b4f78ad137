# The System service's actions: reboot, factory reset and Wi-Fi reset, asked
# for by the phone app (docs/protocol.md#system-service). Loaded only once an
# action has been asked for; the board reboots afterwards, so it is never
# unloaded. The agent's keeper calls due() every pass until it returns the
# action, then act().
import os
from micropython import const
from . import log
from .session import diff

_DELAY = const(2000)  # ms from the write to the action (SDK: 2 s), so its echo reaches the app

_at = None  # tick at which the action runs
_acked = False  # the cloud acknowledged the user mapping reset


def due(agent, req, now):
    """req once its delay has run, else None (the first call starts the delay)."""
    global _at
    if _at is None:
        _at = now + _DELAY
        log.warn("system", "%s requested from the app: in %d s" % (req, _DELAY // 1000))
        if req == "Factory-Reset":
            # As the SDK: the cloud is told the user mapping is void before
            # anything is erased.
            agent.link.post("user/mapping", '{"node_id":"%s","user_id":"esp-rmaker","secret_key":"failed","reset":true}'
                            % agent.node.node_id, _unmapped)
            _at += _DELAY  # at most 2 s more, unless the PUBACK comes first
        return None
    if diff(now, _at) >= 0 or _acked and diff(now, _at) >= -_DELAY:
        return req
    return None


def _unmapped(now):
    global _acked
    log.info("system", "user mapping reset acknowledged")
    _acked = True


async def act(agent, req):
    """Erase what the action forgets, then reboot (without DISCONNECT)."""
    if req != "Reboot":
        files = [agent.wifi_file]
        if req == "Factory-Reset":
            # Besides Wi-Fi and the params, the user's state (mapping, local
            # control PoP), never the node's: its identity stays, so the board
            # can be provisioned again.
            from .agent import MAPPING

            files += [agent.params_file, MAPPING, "lctl.json"]
            agent.sync.store = None  # the keeper must not write the params back
        for f in files:
            try:
                os.remove(f)
            except OSError:
                pass
        log.warn("system", "%s: %s erased" % (req, ", ".join(files)))
    await agent.reboot(req)
