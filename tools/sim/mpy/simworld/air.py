# The air: air.json, the Wi-Fi networks around the board (tools/sim/README.md).
#
#   {"networks": [{"ssid": "HomeNet", "password": "secret123", "up": true,
#                  "rssi": -55, "channel": 6, "authmode": 3}],
#    "assoc_ms": 300, "scan_ms": 100, "abort_after_ms": 1000}
#
# Shared by both backends (CPython and MicroPython subset).
import json
from . import stamp

try:
    import hashlib
except ImportError:  # pragma: no cover - both interpreters have it
    hashlib = None


def parse(text):
    """air.json text -> {"networks": [...], ...}; a bare list is the networks."""
    data = json.loads(text)
    if isinstance(data, list):
        data = {"networks": data}
    if not isinstance(data, dict):
        raise ValueError("air.json must hold an object")
    if "networks" not in data:
        data["networks"] = []
    return data


class AirFile:
    """The air file, re-read on poll(); a half-written or missing file is handled."""

    def __init__(self, path):
        self.path = path
        self.data = {"networks": []}
        self._text = None
        self._stamp = False  # not read yet (None: no file)
        self.reload()

    def reload(self):
        """Read the file if it was replaced; True if what it says changed."""
        st = stamp(self.path)
        if st == self._stamp:
            return False
        try:
            with open(self.path) as f:
                text = f.read()
        except OSError:
            text = ""
        if text == self._text:
            self._stamp = st
            return False
        if not text:
            self._text, self._stamp = text, st
            self.data = {"networks": []}
            return True
        try:
            data = parse(text)
        except (ValueError, TypeError):
            return False  # half-written? try again next poll
        self._text, self._stamp = text, st
        self.data = data
        return True

    def option_s(self, key, default_ms):
        v = self.data.get(key)
        return (default_ms if v is None else v) / 1000

    def find(self, ssid, bssid=None):
        """The strongest network that is up with this ssid (and bssid, if given)."""
        best = None
        for n in self.data.get("networks", []):
            if n.get("ssid") == ssid and n.get("up", True):
                if bssid is not None and bssid_of(n) != bssid:
                    continue
                if best is None or n.get("rssi", -60) > best.get("rssi", -60):
                    best = n
        return best

    def scan(self):
        """WLAN.scan() tuples: (ssid, bssid, channel, rssi, authmode, hidden)."""
        out = []
        for n in self.data.get("networks", []):
            if not n.get("up", True):
                continue
            out.append((n["ssid"].encode(), bssid_of(n), int(n.get("channel", 6)),
                        int(n.get("rssi", -60)), authmode(n), False))
        return out


def authmode(net):
    if "authmode" in net:
        return int(net["authmode"])
    return 3 if net.get("password") else 0


def secured(net):
    return authmode(net) != 0


def key_ok(net, key):
    """Open networks accept any key."""
    return not secured(net) or net.get("password", "") == key


def bssid_of(net):
    if net.get("bssid"):
        return bytes.fromhex(net["bssid"].replace(":", ""))
    return b"\x02" + hashlib.sha256(net["ssid"].encode()).digest()[:5]
