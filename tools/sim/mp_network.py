"""`network` for the esp32 port, with a virtual Wi-Fi environment ("the air").

The driver state machine follows ports/esp32/network_wlan.c:
  * connect() does not block: an association attempt resolves after ~0.3 s
    (air.json "assoc_ms") into GOT_IP, WRONG_PASSWORD (202) or NO_AP_FOUND (201);
  * after connect() the driver retries forever on any disconnect, unless
    config(reconnects=n) (n retries, -1 = forever); the counter is reset only by
    connect() and by activating the STA, as on the board;
  * status() reproduces the C logic: 201/202 stick while retrying, a beacon
    timeout (200) shows as CONNECTING while retrying, disconnect() gives IDLE;
  * connect() while connected or while an attempt/retry is under way raises
    OSError("Wifi Internal Error") (IDF: "sta is connecting, return error",
    micropython#17661) - call disconnect() first;
  * when the network goes down (air "up": false or removed) the link drops at once:
    isconnected() False, the board's TCP sockets are aborted, retries start.
STAT_* constants are module-level only (the esp32 WLAN type has none).
"""

import json as _json
import os as _os
import threading as _threading
import time as _t
import types

STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_BEACON_TIMEOUT = 200
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202
STAT_ASSOC_FAIL = 203
STAT_HANDSHAKE_TIMEOUT = 204
STAT_CONNECTION_FAIL = 205
STAT_NO_AP_FOUND_W_COMPATIBLE_SECURITY = 210
STAT_NO_AP_FOUND_IN_AUTHMODE_THRESHOLD = 211
STAT_NO_AP_FOUND_IN_RSSI_THRESHOLD = 212
_REASON_ASSOC_LEAVE = 8

IF_STA, IF_AP = 0, 1
_MODE_STA, _MODE_AP = 1, 2

SEC = {"SEC_OPEN": 0, "SEC_WEP": 1, "SEC_WPA": 2, "SEC_WPA2": 3, "SEC_WPA_WPA2": 4,
       "SEC_WPA2_ENT": 5, "SEC_WPA3": 6, "SEC_WPA2_WPA3": 7, "SEC_WAPI": 8, "SEC_OWE": 9}
AUTH = {"AUTH_OPEN": 0, "AUTH_WEP": 1, "AUTH_WPA_PSK": 2, "AUTH_WPA2_PSK": 3,
        "AUTH_WPA_WPA2_PSK": 4, "AUTH_WPA2_ENTERPRISE": 5, "AUTH_WPA3_PSK": 6,
        "AUTH_WPA2_WPA3_PSK": 7, "AUTH_WAPI_PSK": 8, "AUTH_OWE": 9, "AUTH_MAX": 10}


def _s(v):
    if v is None:
        return None
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).decode("utf-8", "replace")
    if isinstance(v, str):
        return v
    raise TypeError("object with buffer protocol required")


class Wifi:
    """Driver state shared by WLAN(IF_STA) and WLAN(IF_AP)."""

    def __init__(self, rt):
        self.rt = rt
        self.lock = _threading.RLock()
        self.started = False
        self.mode = 0
        self.connect_requested = False
        self.connected = False
        self.reason = 0
        self.conf_reconnects = 0  # 0 = forever, else n+1 attempts
        self.reconnects = 0
        self.ssid = ""
        self.key = ""
        self.bssid = None
        self.attempt_due = None
        self.current = None
        self.static_ip = None  # STA ifconfig() override
        self.hostname = "mpy-esp32"
        self.country = "01"
        self.txpower = 20.0
        self.pm = 1
        self.protocol = 7
        self.sta_mac = bytes(rt.mac)
        self.ap_mac = bytes(rt.mac[:5]) + bytes([(rt.mac[5] + 1) & 0xFF])
        self.ap = {"ssid": "ESP_%02X%02X%02X" % tuple(self.ap_mac[3:]), "key": "",
                   "security": 0, "hidden": False, "max_clients": 10, "channel": 1}
        self.ap_ip = ("192.168.4.1", "255.255.255.0", "192.168.4.1", "0.0.0.0")
        self.ap_stations = []
        self.air = {"networks": []}
        self._air_sig = None
        self._reload_air()
        rt.add_hook(self.poll)

    # -- the air --------------------------------------------------------------

    def _reload_air(self):
        try:
            st = _os.stat(self.rt.air_path)
            sig = (st.st_mtime_ns, st.st_ino, st.st_size)
        except OSError:
            sig = None
        if sig == self._air_sig:
            return False
        self._air_sig = sig
        if sig is None:
            self.air = {"networks": []}
            return True
        try:
            with open(self.rt.air_path) as f:
                data = _json.load(f)
        except (OSError, ValueError):
            self._air_sig = None  # half-written? try again next poll
            return False
        if isinstance(data, list):
            data = {"networks": data}
        self.air = data
        return True

    def _assoc_s(self):
        ms = self.air.get("assoc_ms")
        return self.rt.assoc_s if ms is None else ms / 1000

    def _find(self, ssid):
        best = None
        for n in self.air.get("networks", []):
            if n.get("ssid") == ssid and n.get("up", True):
                if self.bssid is not None and _bssid(n) != self.bssid:
                    continue
                if best is None or n.get("rssi", -60) > best.get("rssi", -60):
                    best = n
        return best

    # -- driver events (hold self.lock) ----------------------------------------

    def poll(self, now):
        changed = self._reload_air()
        with self.lock:
            if self.attempt_due is not None and now >= self.attempt_due:
                self._resolve_attempt(now)
            elif self.connected and (changed or self.current is None):
                net = self._find(self.ssid)
                if net is None:
                    self._link_lost(STAT_BEACON_TIMEOUT, now)
                elif _secured(net) and net.get("password", "") != self.key:
                    self._link_lost(15, now)  # 4-way handshake timeout: AP changed its key
                else:
                    self.current = net

    def _resolve_attempt(self, now):
        self.attempt_due = None
        if not self.mode & _MODE_STA:
            return
        net = self._find(self.ssid)
        if net is None:
            self._fail(STAT_NO_AP_FOUND, now)
        elif _secured(net) and net.get("password", "") != self.key:
            self._fail(STAT_WRONG_PASSWORD, now)
        else:
            self.connected = True
            self.reason = 0
            self.current = net

    def _fail(self, reason, now):
        self.reason = reason
        self.connected = False
        self.current = None
        if self.connect_requested and self.mode & _MODE_STA:
            if self.conf_reconnects:
                self.reconnects += 1
                if self.reconnects >= self.conf_reconnects:
                    return
            self.attempt_due = now + self._assoc_s()

    def _drop_tcp(self):
        ms = self.air.get("abort_after_ms", 1000)
        self.rt.net.link_lost(ms / 1000)

    def _link_lost(self, reason, now):
        self.connected = False
        self.current = None
        self._drop_tcp()
        self._fail(reason, now)

    def sta_has_ip(self):
        return self.connected

    def shutdown(self):
        with self.lock:
            self.attempt_due = None
            self.connect_requested = False

    # -- API used by WLAN -------------------------------------------------------

    def active(self, bit, value=None):
        with self.lock:
            if value is not None:
                mode = (self.mode | bit) if value else (self.mode & ~bit)
                if bit == _MODE_STA and value and not self.mode & _MODE_STA:
                    self.reconnects = 0  # WIFI_EVENT_STA_START
                if bit == _MODE_STA and not value and self.mode & _MODE_STA:
                    if self.connected or self.attempt_due is not None:
                        self.reason = _REASON_ASSOC_LEAVE
                    self.attempt_due = None
                    if self.connected:
                        self.connected = False
                        self.current = None
                        self._drop_tcp()
                if bit == _MODE_AP and not value:
                    self.ap_stations = []
                self.started = mode != 0
                self.mode = mode
            return bool(self.mode & bit)

    def connect(self, ssid=None, key=None, bssid=None, given=False):
        with self.lock:
            if not self.started:
                raise OSError("Wifi Not Started")
            if not self.mode & _MODE_STA:
                raise OSError("Wifi Invalid Mode")
            if self.connected or self.attempt_due is not None:
                raise OSError("Wifi Internal Error")
            if given:
                self.ssid = _s(ssid)[:32] if ssid is not None else ""
                self.key = _s(key)[:64] if key is not None else ""
                if bssid is not None:
                    b = bytes(bssid)
                    if len(b) != 6:
                        raise ValueError()
                    self.bssid = b
                else:
                    self.bssid = None
            self.reconnects = 0
            self.connect_requested = True
            self.attempt_due = _t.monotonic() + self._assoc_s()
        self.rt.wake_watcher()

    def disconnect(self):
        with self.lock:
            if not self.started:
                raise OSError("Wifi Not Started")
            self.connect_requested = False
            busy = self.connected or self.attempt_due is not None
            self.attempt_due = None
            if self.connected:
                self.connected = False
                self.current = None
                self._drop_tcp()
            if busy:
                self.reason = _REASON_ASSOC_LEAVE

    def status(self):
        with self.lock:
            r = self.reason
            if self.connected:
                return STAT_GOT_IP
            if r in (STAT_NO_AP_FOUND, STAT_NO_AP_FOUND_IN_RSSI_THRESHOLD,
                     STAT_NO_AP_FOUND_IN_AUTHMODE_THRESHOLD,
                     STAT_NO_AP_FOUND_W_COMPATIBLE_SECURITY):
                return r
            if r in (STAT_WRONG_PASSWORD, STAT_CONNECTION_FAIL):
                return STAT_WRONG_PASSWORD
            if r == _REASON_ASSOC_LEAVE:
                return STAT_IDLE
            if self.connect_requested and (self.conf_reconnects == 0
                                           or self.reconnects < self.conf_reconnects):
                return STAT_CONNECTING
            if r == 0:
                return STAT_IDLE
            return r

    def scan(self):
        with self.lock:
            if not self.mode & _MODE_STA:
                raise OSError("STA must be active")
        self._reload_air()
        _t.sleep(self.air.get("scan_ms", 100) / 1000)  # scan() blocks the interpreter
        out = []
        for n in self.air.get("networks", []):
            if not n.get("up", True):
                continue
            out.append((n["ssid"].encode(), _bssid(n), int(n.get("channel", 6)),
                        int(n.get("rssi", -60)), _authmode(n), False))
        return out

    def sta_ifconfig(self):
        if self.static_ip is not None:
            return self.static_ip
        if not self.connected:
            return ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")
        n = self.current or {}
        ip = n.get("ip") or "192.168.1.%d" % (100 + self.sta_mac[5] % 100)
        gw = n.get("gateway", "192.168.1.1")
        return (ip, n.get("netmask", "255.255.255.0"), gw, n.get("dns", gw))


def _secured(net):
    return _authmode(net) != 0


def _authmode(net):
    if "authmode" in net:
        return int(net["authmode"])
    return 3 if net.get("password") else 0


def _bssid(net):
    if net.get("bssid"):
        return bytes.fromhex(net["bssid"].replace(":", ""))
    import hashlib

    return b"\x02" + hashlib.sha256(net["ssid"].encode()).digest()[:5]


def make(rt):
    wifi = Wifi(rt)
    rt.wifi = wifi
    m = types.ModuleType("network")
    m.__doc__ = "network (simulated esp32 Wi-Fi)"
    objs = {}

    class WLAN:
        IF_STA = IF_STA
        IF_AP = IF_AP

        def __new__(cls, interface_id=IF_STA):
            if interface_id not in (IF_STA, IF_AP):
                raise ValueError("invalid WLAN interface identifier")
            o = objs.get(interface_id)
            if o is None:
                o = object.__new__(cls)
                o._if = interface_id
                objs[interface_id] = o
            return o

        def __repr__(self):
            return "<WLAN %s>" % ("STA" if self._if == IF_STA else "AP")

        def _bit(self):
            return _MODE_STA if self._if == IF_STA else _MODE_AP

        def _require(self, want):
            if self._if != want:
                raise OSError("STA required" if want == IF_STA else "AP required")

        def active(self, *args):
            if len(args) > 1:
                raise TypeError("function takes at most 2 positional arguments")
            return wifi.active(self._bit(), bool(args[0]) if args else None)

        def connect(self, ssid=None, key=None, *, bssid=None):
            self._require(IF_STA)
            given = ssid is not None or key is not None or bssid is not None
            wifi.connect(ssid, key, bssid, given)

        def disconnect(self):
            wifi.disconnect()

        def isconnected(self):
            if self._if == IF_STA:
                return wifi.connected
            return bool(wifi.ap_stations)

        def status(self, *args):
            if not args:
                return wifi.status() if self._if == IF_STA else None
            what = args[0]
            if what == "rssi":
                self._require(IF_STA)
                with wifi.lock:
                    if not wifi.connected:
                        raise OSError("Wifi Not Connected")
                    return int((wifi.current or {}).get("rssi", -60))
            if what == "stations":
                self._require(IF_AP)
                return [(mac, ip) for mac, ip in wifi.ap_stations]
            raise ValueError("unknown status param")

        def scan(self):
            return wifi.scan()

        def config(self, *args, **kw):
            if args and kw:
                raise TypeError("either pos or kw args are allowed")
            if kw:
                for k, v in kw.items():
                    self._set(k, v)
                return None
            if len(args) != 1:
                raise TypeError("can query only one param")
            return self._get(args[0])

        def _set(self, k, v):
            sta = self._if == IF_STA
            with wifi.lock:
                if k == "mac":
                    b = bytes(v)
                    if len(b) != 6:
                        raise ValueError("invalid buffer length")
                    if sta:
                        wifi.sta_mac = b
                    else:
                        wifi.ap_mac = b
                elif k in ("ssid", "essid"):
                    self._require(IF_AP)
                    wifi.ap["ssid"] = _s(v)[:32]
                elif k == "hidden":
                    self._require(IF_AP)
                    wifi.ap["hidden"] = bool(v)
                elif k in ("security", "authmode"):
                    self._require(IF_AP)
                    wifi.ap["security"] = int(v)
                elif k in ("key", "password"):
                    self._require(IF_AP)
                    wifi.ap["key"] = _s(v)[:63]
                elif k == "channel":
                    wifi.ap["channel"] = int(v)
                elif k in ("hostname", "dhcp_hostname"):
                    hostname(v)
                elif k == "max_clients":
                    self._require(IF_AP)
                    wifi.ap["max_clients"] = int(v)
                elif k == "reconnects":
                    self._require(IF_STA)
                    n = int(v)
                    wifi.conf_reconnects = 0 if n == -1 else n + 1
                elif k == "txpower":
                    wifi.txpower = int(float(v) * 4) / 4
                elif k == "protocol":
                    wifi.protocol = int(v)
                elif k == "pm":
                    wifi.pm = int(v)
                else:
                    raise ValueError("unknown config param")

        def _get(self, k):
            sta = self._if == IF_STA
            with wifi.lock:
                if k == "mac":
                    return wifi.sta_mac if sta else wifi.ap_mac
                if k in ("ssid", "essid"):
                    return wifi.ssid if sta else wifi.ap["ssid"]
                if k == "hidden":
                    self._require(IF_AP)
                    return wifi.ap["hidden"]
                if k in ("security", "authmode"):
                    self._require(IF_AP)
                    return wifi.ap["security"]
                if k == "channel":
                    if sta and wifi.current:
                        return int(wifi.current.get("channel", 6))
                    return wifi.ap["channel"]
                if k == "ifname":
                    return "sta" if sta else "ap"
                if k in ("hostname", "dhcp_hostname"):
                    self._require(IF_STA)
                    return wifi.hostname
                if k == "max_clients":
                    return wifi.ap["max_clients"]
                if k == "reconnects":
                    self._require(IF_STA)
                    return wifi.conf_reconnects - 1
                if k == "txpower":
                    return wifi.txpower
                if k == "protocol":
                    return wifi.protocol
                if k == "pm":
                    return wifi.pm
            raise ValueError("unknown config param")

        def ifconfig(self, *args):
            with wifi.lock:
                if not args:
                    if self._if == IF_STA:
                        return wifi.sta_ifconfig()
                    return wifi.ap_ip if wifi.mode & _MODE_AP else ("0.0.0.0",) * 4
                cfg = args[0]
                if isinstance(cfg, str):
                    if cfg != "dhcp" or self._if != IF_STA:
                        raise ValueError("invalid arguments")
                    wifi.static_ip = None
                    return None
                if len(cfg) != 4:
                    raise ValueError("invalid arguments")
                if self._if == IF_STA:
                    wifi.static_ip = tuple(cfg)
                else:
                    wifi.ap_ip = tuple(cfg)
                return None

        def ipconfig(self, *args, **kw):
            with wifi.lock:
                ipc = wifi.sta_ifconfig() if self._if == IF_STA else wifi.ap_ip
                if kw:
                    for k, v in kw.items():
                        if k == "dhcp4":
                            if self._if == IF_STA and v:
                                wifi.static_ip = None
                        elif k == "addr4":
                            ip, _, bits = str(v).partition("/")
                            mask = ipc[1]
                            if bits:
                                n = int(bits)
                                mask = ".".join(str((0xFFFFFFFF << (32 - n) >> s) & 255)
                                                for s in (24, 16, 8, 0))
                            new = (ip, mask, ipc[2], ipc[3])
                            if self._if == IF_STA:
                                wifi.static_ip = new
                            else:
                                wifi.ap_ip = new
                        elif k == "gw4":
                            new = (ipc[0], ipc[1], str(v), ipc[3])
                            if self._if == IF_STA:
                                wifi.static_ip = new
                            else:
                                wifi.ap_ip = new
                        else:
                            raise ValueError("unexpected key")
                    return None
                if len(args) != 1:
                    raise TypeError("can query only one param")
                k = args[0]
                if k == "addr4":
                    return (ipc[0], ipc[1])
                if k == "gw4":
                    return ipc[2]
                if k == "dhcp4":
                    return self._if == IF_STA and wifi.static_ip is None
                if k == "has_dhcp4":
                    return self._if == IF_STA and wifi.connected
                raise ValueError("unexpected key")

    for k, v in SEC.items():
        setattr(WLAN, k, v)
    WLAN.PM_NONE, WLAN.PM_PERFORMANCE, WLAN.PM_POWERSAVE = 0, 1, 2

    def hostname(*args):
        if not args:
            return wifi.hostname
        name = _s(args[0])
        if len(name) > 32:
            raise ValueError("hostname too long")
        wifi.hostname = name
        return None

    def ipconfig(*args, **kw):
        if kw:
            for k, v in kw.items():
                if k == "dns":
                    m._dns = str(v)
                elif k == "prefer":
                    pass
                else:
                    raise ValueError("unexpected key")
            return None
        if len(args) != 1:
            raise TypeError("can query only one param")
        if args[0] == "dns":
            return getattr(m, "_dns", None) or wifi.sta_ifconfig()[3]
        if args[0] == "prefer":
            return 4
        raise ValueError("unexpected key")

    def country(*args):
        if not args:
            return wifi.country
        wifi.country = _s(args[0])
        return None

    def phy_mode(*args):
        return None

    m.WLAN = WLAN
    m.STA_IF = IF_STA
    m.AP_IF = IF_AP
    m.hostname = hostname
    m.ipconfig = ipconfig
    m.country = country
    m.phy_mode = phy_mode
    m.MODE_11B, m.MODE_11G, m.MODE_11N, m.MODE_LR = 1, 2, 4, 8
    for k, v in AUTH.items():
        setattr(m, k, v)
    for k in ("STAT_IDLE", "STAT_CONNECTING", "STAT_GOT_IP", "STAT_BEACON_TIMEOUT",
              "STAT_NO_AP_FOUND", "STAT_WRONG_PASSWORD", "STAT_ASSOC_FAIL",
              "STAT_HANDSHAKE_TIMEOUT", "STAT_NO_AP_FOUND_W_COMPATIBLE_SECURITY",
              "STAT_NO_AP_FOUND_IN_AUTHMODE_THRESHOLD", "STAT_NO_AP_FOUND_IN_RSSI_THRESHOLD"):
        setattr(m, k, globals()[k])
    m.STAT_CONNECT_FAIL = STAT_ASSOC_FAIL
    return m
