"""`network` for the esp32 port, with a virtual Wi-Fi environment ("the air").

The driver's rules (ports/esp32/network_wlan.c: association, retries, status codes,
"Wifi Internal Error"...) and the WLAN class live in tools/sim/mpy/simworld/wlan.py,
which the MicroPython backend (tools/sim/mpy/network.py) runs too. This file wires
them to the CPython board: the watcher thread polls the air every 50 ms, and a lost
link stalls then aborts the board's TCP sockets (runtime.NetGate).
"""

import threading as _threading
import time as _t
import types

from .mpy.simworld import air as _air
from .mpy.simworld import wlan as _wlan


class Wifi(_wlan.Radio):
    """The board's Wi-Fi driver state (rt.wifi)."""

    def __init__(self, rt):
        self.rt = rt
        super().__init__(_air.AirFile(rt.air_path), rt.mac, clock=_t.monotonic, sleep=_t.sleep,
                         lock=_threading.RLock(), on_link=self._on_link, wake=rt.wake_watcher,
                         assoc_s=rt.assoc_s)
        rt.add_hook(self.poll)

    @property
    def air(self):
        return self.airf.data

    def _on_link(self, up, abort_s):
        if not up:
            self.rt.net.link_lost(abort_s)


def make(rt):
    wifi = Wifi(rt)
    rt.wifi = wifi
    m = types.ModuleType("network")
    m.__doc__ = "network (simulated esp32 Wi-Fi)"
    for k, v in _wlan.module_dict(wifi).items():
        setattr(m, k, v)
    return m
