"""The virtual Wi-Fi environment shared by simulated boards ("the air").

A JSON file, by default BOARD_DIR/../air.json:

    {"networks": [{"ssid": "HomeNet", "password": "secret123", "up": true,
                   "rssi": -55, "channel": 6, "authmode": 3}],
     "assoc_ms": 300, "scan_ms": 100}

Optional per network: "bssid" ("aa:bb:..."), "ip", "gateway", "netmask", "dns".
authmode defaults to 3 (WPA2) with a password, 0 (open) without; an open network
accepts any key. Boards poll the file (~50 ms) and react to changes; writes here are
atomic (temp file + rename) so a board never reads half a file.
"""

import json
import os
import tempfile


class Air:
    def __init__(self, path):
        self.path = os.path.abspath(path)

    def read(self):
        try:
            with open(self.path) as f:
                data = json.load(f)
        except FileNotFoundError:
            return {"networks": []}
        if isinstance(data, list):
            data = {"networks": data}
        data.setdefault("networks", [])
        return data

    def write(self, data):
        d = os.path.dirname(self.path) or "."
        fd, tmp = tempfile.mkstemp(prefix=".air-", dir=d)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=1)
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def _update(self, ssid, **changes):
        data = self.read()
        for n in data["networks"]:
            if n.get("ssid") == ssid:
                n.update(changes)
                break
        else:
            raise KeyError("no network %r in %s" % (ssid, self.path))
        self.write(data)

    def set_network(self, ssid, password="", up=True, rssi=-55, channel=6, authmode=None, **extra):
        """Add or replace the network named ssid."""
        data = self.read()
        net = {"ssid": ssid, "password": password, "up": up, "rssi": rssi, "channel": channel}
        if authmode is not None:
            net["authmode"] = authmode
        net.update(extra)
        data["networks"] = [n for n in data["networks"] if n.get("ssid") != ssid] + [net]
        self.write(data)
        return net

    def drop(self, ssid):
        """The access point goes off the air (boards see a beacon timeout)."""
        self._update(ssid, up=False)

    def restore(self, ssid):
        self._update(ssid, up=True)

    def remove(self, ssid):
        data = self.read()
        data["networks"] = [n for n in data["networks"] if n.get("ssid") != ssid]
        self.write(data)

    def set_option(self, key, value):
        data = self.read()
        data[key] = value
        self.write(data)
