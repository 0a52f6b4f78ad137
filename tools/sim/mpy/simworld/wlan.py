# `network` for the esp32 port: the Wi-Fi driver's rules, driven by the air.
#
# The state machine follows ports/esp32/network_wlan.c:
#   * connect() does not block: an association attempt resolves after assoc_ms
#     (air.json, default 300) into GOT_IP, WRONG_PASSWORD (202) or NO_AP_FOUND (201);
#   * after connect() the driver retries forever on any disconnect, unless
#     config(reconnects=n) (n retries, -1 = forever); the counter is reset only by
#     connect() and by activating the STA, as on the board;
#   * status() reproduces the C logic: 201/202 stick while retrying, a beacon
#     timeout (200) shows as CONNECTING while retrying, disconnect() gives IDLE;
#   * connect() while connected or while an attempt/retry is under way raises
#     OSError("Wifi Internal Error") (IDF: "sta is connecting, return error",
#     micropython#17661) - call disconnect() first;
#   * when the network goes down (air "up": false or removed) the link drops at once:
#     isconnected() False, on_link(False, abort_s) tells the backend to cut TCP, and
#     the driver retries.
# STAT_* constants are module-level only (the esp32 WLAN type has none).
#
# Shared by both backends (CPython and MicroPython subset): the backend supplies the
# clock (seconds, monotonic), a lock, and the link callback; module_dict(radio) gives
# the names of the `network` module.
from . import air as _air

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
_REASON_4WAY_TIMEOUT = 15

IF_STA, IF_AP = 0, 1
MODE_STA, MODE_AP = 1, 2

SEC = (("SEC_OPEN", 0), ("SEC_WEP", 1), ("SEC_WPA", 2), ("SEC_WPA2", 3), ("SEC_WPA_WPA2", 4),
       ("SEC_WPA2_ENT", 5), ("SEC_WPA3", 6), ("SEC_WPA2_WPA3", 7), ("SEC_WAPI", 8), ("SEC_OWE", 9))
AUTH = (("AUTH_OPEN", 0), ("AUTH_WEP", 1), ("AUTH_WPA_PSK", 2), ("AUTH_WPA2_PSK", 3),
        ("AUTH_WPA_WPA2_PSK", 4), ("AUTH_WPA2_ENTERPRISE", 5), ("AUTH_WPA3_PSK", 6),
        ("AUTH_WPA2_WPA3_PSK", 7), ("AUTH_WAPI_PSK", 8), ("AUTH_OWE", 9), ("AUTH_MAX", 10))
STATS = (("STAT_IDLE", STAT_IDLE), ("STAT_CONNECTING", STAT_CONNECTING), ("STAT_GOT_IP", STAT_GOT_IP),
         ("STAT_BEACON_TIMEOUT", STAT_BEACON_TIMEOUT), ("STAT_NO_AP_FOUND", STAT_NO_AP_FOUND),
         ("STAT_WRONG_PASSWORD", STAT_WRONG_PASSWORD), ("STAT_ASSOC_FAIL", STAT_ASSOC_FAIL),
         ("STAT_HANDSHAKE_TIMEOUT", STAT_HANDSHAKE_TIMEOUT),
         ("STAT_NO_AP_FOUND_W_COMPATIBLE_SECURITY", STAT_NO_AP_FOUND_W_COMPATIBLE_SECURITY),
         ("STAT_NO_AP_FOUND_IN_AUTHMODE_THRESHOLD", STAT_NO_AP_FOUND_IN_AUTHMODE_THRESHOLD),
         ("STAT_NO_AP_FOUND_IN_RSSI_THRESHOLD", STAT_NO_AP_FOUND_IN_RSSI_THRESHOLD),
         ("STAT_CONNECT_FAIL", STAT_ASSOC_FAIL))
_NOT_FOUND = (STAT_NO_AP_FOUND, STAT_NO_AP_FOUND_IN_RSSI_THRESHOLD,
              STAT_NO_AP_FOUND_IN_AUTHMODE_THRESHOLD, STAT_NO_AP_FOUND_W_COMPATIBLE_SECURITY)


def _s(v):
    if v is None:
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, (bytes, bytearray, memoryview)):
        return str(bytes(v), "utf-8")
    raise TypeError("object with buffer protocol required")


class _NoLock:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


class Radio:
    """Driver state shared by WLAN(IF_STA) and WLAN(IF_AP).

    air: an air.AirFile; mac: 6 bytes; clock(): monotonic seconds; lock: a lock
    (with-statement; never taken twice by one caller); on_link(up, abort_s): called
    (under the lock) when the station gets or loses its IP; wake(): called after
    connect() so a backend's poller can shorten its wait; sleep(s): blocks (scan).
    """

    def __init__(self, air, mac, clock, sleep, lock=None, on_link=None, wake=None,
                 assoc_s=0.3, ap_ip="192.168.4.1"):
        self.airf = air
        self.clock = clock
        self.sleep = sleep
        self.lock = lock if lock is not None else _NoLock()
        self.on_link = on_link
        self.wake = wake
        self.assoc_default_s = assoc_s
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
        self.dns = None
        self.txpower = 20.0
        self.pm = 1
        self.protocol = 7
        mac = bytes(mac)
        self.sta_mac = mac
        self.ap_mac = mac[:5] + bytes([(mac[5] + 1) & 0xFF])
        self.ap = {"ssid": "ESP_%02X%02X%02X" % (self.ap_mac[3], self.ap_mac[4], self.ap_mac[5]),
                   "key": "", "security": 0, "hidden": False, "max_clients": 10, "channel": 1}
        self.ap_ip = (ap_ip, "255.255.255.0", ap_ip, "0.0.0.0")
        self.ap_stations = []

    # -- the air --------------------------------------------------------------

    def _assoc_s(self):
        ms = self.airf.data.get("assoc_ms")
        return self.assoc_default_s if ms is None else ms / 1000

    def abort_s(self):
        return self.airf.option_s("abort_after_ms", 1000)

    def _find(self):
        return self.airf.find(self.ssid, self.bssid)

    def _link(self, up):
        if self.on_link is not None:
            self.on_link(up, self.abort_s())

    # -- driver events ----------------------------------------------------------

    def poll(self, now=None):
        """Re-read the air and run the driver's timers; call every ~50 ms."""
        changed = self.airf.reload()
        if now is None:
            now = self.clock()
        with self.lock:
            if self.attempt_due is not None and now >= self.attempt_due:
                self._resolve_attempt(now)
            elif self.connected and (changed or self.current is None):
                net = self._find()
                if net is None:
                    self._link_lost(STAT_BEACON_TIMEOUT, now)
                elif not _air.key_ok(net, self.key):
                    self._link_lost(_REASON_4WAY_TIMEOUT, now)  # the AP changed its key
                else:
                    self.current = net

    def _resolve_attempt(self, now):
        self.attempt_due = None
        if not self.mode & MODE_STA:
            return
        net = self._find()
        if net is None:
            self._fail(STAT_NO_AP_FOUND, now)
        elif not _air.key_ok(net, self.key):
            self._fail(STAT_WRONG_PASSWORD, now)
        else:
            self._link(True)  # the backend learns of the IP before the firmware can use it
            self.connected = True
            self.reason = 0
            self.current = net

    def _fail(self, reason, now):
        self.reason = reason
        self.connected = False
        self.current = None
        if self.connect_requested and self.mode & MODE_STA:
            if self.conf_reconnects:
                self.reconnects += 1
                if self.reconnects >= self.conf_reconnects:
                    return
            self.attempt_due = now + self._assoc_s()

    def _drop(self):
        self.connected = False
        self.current = None
        self._link(False)

    def _link_lost(self, reason, now):
        self._drop()
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
                if bit == MODE_STA and value and not self.mode & MODE_STA:
                    self.reconnects = 0  # WIFI_EVENT_STA_START
                if bit == MODE_STA and not value and self.mode & MODE_STA:
                    if self.connected or self.attempt_due is not None:
                        self.reason = _REASON_ASSOC_LEAVE
                    self.attempt_due = None
                    if self.connected:
                        self._drop()
                if bit == MODE_AP and not value:
                    self.ap_stations = []
                self.started = mode != 0
                self.mode = mode
            return bool(self.mode & bit)

    def connect(self, ssid=None, key=None, bssid=None, given=False):
        with self.lock:
            if not self.started:
                raise OSError("Wifi Not Started")
            if not self.mode & MODE_STA:
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
            self.attempt_due = self.clock() + self._assoc_s()
        if self.wake is not None:
            self.wake()

    def disconnect(self):
        with self.lock:
            if not self.started:
                raise OSError("Wifi Not Started")
            self.connect_requested = False
            busy = self.connected or self.attempt_due is not None
            self.attempt_due = None
            if self.connected:
                self._drop()
            if busy:
                self.reason = _REASON_ASSOC_LEAVE

    def status(self):
        with self.lock:
            r = self.reason
            if self.connected:
                return STAT_GOT_IP
            if r in _NOT_FOUND:
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
            if not self.mode & MODE_STA:
                raise OSError("STA must be active")
        self.airf.reload()
        self.sleep(self.airf.option_s("scan_ms", 100))  # scan() blocks the interpreter
        return self.airf.scan()

    def sta_ifconfig(self):
        if self.static_ip is not None:
            return self.static_ip
        if not self.connected:
            return ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")
        n = self.current or {}
        ip = n.get("ip") or "192.168.1.%d" % (100 + self.sta_mac[5] % 100)
        gw = n.get("gateway", "192.168.1.1")
        return (ip, n.get("netmask", "255.255.255.0"), gw, n.get("dns", gw))

    def set_hostname(self, v):
        name = _s(v)
        if len(name) > 32:
            raise ValueError("hostname too long")
        self.hostname = name


class WLANBase:
    """network.WLAN over a Radio: wlan_class(radio) makes the class for one board."""

    IF_STA = IF_STA
    IF_AP = IF_AP
    PM_NONE, PM_PERFORMANCE, PM_POWERSAVE = 0, 1, 2
    _radio = None
    _objs = None

    def __new__(cls, interface_id=IF_STA):
        if interface_id not in (IF_STA, IF_AP):
            raise ValueError("invalid WLAN interface identifier")
        o = cls._objs.get(interface_id)
        if o is None:
            o = object.__new__(cls)
            o._if = interface_id
            cls._objs[interface_id] = o
        return o

    def __init__(self, interface_id=IF_STA):
        pass

    def __repr__(self):
        return "<WLAN %s>" % ("STA" if self._if == IF_STA else "AP")

    def _bit(self):
        return MODE_STA if self._if == IF_STA else MODE_AP

    def _require(self, want):
        if self._if != want:
            raise OSError("STA required" if want == IF_STA else "AP required")

    def active(self, *args):
        if len(args) > 1:
            raise TypeError("function takes at most 2 positional arguments")
        return self._radio.active(self._bit(), bool(args[0]) if args else None)

    def connect(self, ssid=None, key=None, *, bssid=None):
        self._require(IF_STA)
        given = ssid is not None or key is not None or bssid is not None
        self._radio.connect(ssid, key, bssid, given)

    def disconnect(self):
        self._radio.disconnect()

    def isconnected(self):
        r = self._radio
        if self._if == IF_STA:
            return r.connected
        return bool(r.ap_stations)

    def status(self, *args):
        r = self._radio
        if not args:
            return r.status() if self._if == IF_STA else None
        what = args[0]
        if what == "rssi":
            self._require(IF_STA)
            with r.lock:
                if not r.connected:
                    raise OSError("Wifi Not Connected")
                return int((r.current or {}).get("rssi", -60))
        if what == "stations":
            self._require(IF_AP)
            return [(mac, ip) for mac, ip in r.ap_stations]
        raise ValueError("unknown status param")

    def scan(self):
        return self._radio.scan()

    def config(self, *args, **kw):
        if args and kw:
            raise TypeError("either pos or kw args are allowed")
        if kw:
            for k in kw:
                self._set(k, kw[k])
            return None
        if len(args) != 1:
            raise TypeError("can query only one param")
        return self._get(args[0])

    def _set(self, k, v):
        r = self._radio
        sta = self._if == IF_STA
        with r.lock:
            if k == "mac":
                b = bytes(v)
                if len(b) != 6:
                    raise ValueError("invalid buffer length")
                if sta:
                    r.sta_mac = b
                else:
                    r.ap_mac = b
            elif k in ("ssid", "essid"):
                self._require(IF_AP)
                r.ap["ssid"] = _s(v)[:32]
            elif k == "hidden":
                self._require(IF_AP)
                r.ap["hidden"] = bool(v)
            elif k in ("security", "authmode"):
                self._require(IF_AP)
                r.ap["security"] = int(v)
            elif k in ("key", "password"):
                self._require(IF_AP)
                r.ap["key"] = _s(v)[:63]
            elif k == "channel":
                r.ap["channel"] = int(v)
            elif k in ("hostname", "dhcp_hostname"):
                r.set_hostname(v)
            elif k == "max_clients":
                self._require(IF_AP)
                r.ap["max_clients"] = int(v)
            elif k == "reconnects":
                self._require(IF_STA)
                n = int(v)
                r.conf_reconnects = 0 if n == -1 else n + 1
            elif k == "txpower":
                r.txpower = int(float(v) * 4) / 4
            elif k == "protocol":
                r.protocol = int(v)
            elif k == "pm":
                r.pm = int(v)
            else:
                raise ValueError("unknown config param")

    def _get(self, k):
        r = self._radio
        sta = self._if == IF_STA
        with r.lock:
            if k == "mac":
                return r.sta_mac if sta else r.ap_mac
            if k in ("ssid", "essid"):
                return r.ssid if sta else r.ap["ssid"]
            if k == "hidden":
                self._require(IF_AP)
                return r.ap["hidden"]
            if k in ("security", "authmode"):
                self._require(IF_AP)
                return r.ap["security"]
            if k == "channel":
                if sta and r.current:
                    return int(r.current.get("channel", 6))
                return r.ap["channel"]
            if k == "ifname":
                return "sta" if sta else "ap"
            if k in ("hostname", "dhcp_hostname"):
                self._require(IF_STA)
                return r.hostname
            if k == "max_clients":
                return r.ap["max_clients"]
            if k == "reconnects":
                self._require(IF_STA)
                return r.conf_reconnects - 1
            if k == "txpower":
                return r.txpower
            if k == "protocol":
                return r.protocol
            if k == "pm":
                return r.pm
        raise ValueError("unknown config param")

    def _set_ip(self, new):
        if self._if == IF_STA:
            self._radio.static_ip = new
        else:
            self._radio.ap_ip = new

    def ifconfig(self, *args):
        r = self._radio
        with r.lock:
            if not args:
                if self._if == IF_STA:
                    return r.sta_ifconfig()
                return r.ap_ip if r.mode & MODE_AP else ("0.0.0.0",) * 4
            cfg = args[0]
            if isinstance(cfg, str):
                if cfg != "dhcp" or self._if != IF_STA:
                    raise ValueError("invalid arguments")
                r.static_ip = None
                return None
            if len(cfg) != 4:
                raise ValueError("invalid arguments")
            self._set_ip(tuple(cfg))
            return None

    def ipconfig(self, *args, **kw):
        r = self._radio
        with r.lock:
            ipc = r.sta_ifconfig() if self._if == IF_STA else r.ap_ip
            if kw:
                for k in kw:
                    v = kw[k]
                    if k == "dhcp4":
                        if self._if == IF_STA and v:
                            r.static_ip = None
                    elif k == "addr4":
                        ip, _, bits = str(v).partition("/")
                        mask = ipc[1]
                        if bits:
                            n = int(bits)
                            mask = ".".join([str((0xFFFFFFFF << (32 - n) >> s) & 255)
                                             for s in (24, 16, 8, 0)])
                        self._set_ip((ip, mask, ipc[2], ipc[3]))
                    elif k == "gw4":
                        self._set_ip((ipc[0], ipc[1], str(v), ipc[3]))
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
                return self._if == IF_STA and r.static_ip is None
            if k == "has_dhcp4":
                return self._if == IF_STA and r.connected
            raise ValueError("unexpected key")


for _k, _v in SEC:
    setattr(WLANBase, _k, _v)


def wlan_class(radio):
    class WLAN(WLANBase):
        _radio = radio
        _objs = {}

    return WLAN


def module_dict(radio):
    """The names of the `network` module for one board."""
    d = {}

    def hostname(*args):
        if not args:
            return radio.hostname
        radio.set_hostname(args[0])
        return None

    def ipconfig(*args, **kw):
        if kw:
            for k in kw:
                if k == "dns":
                    radio.dns = str(kw[k])
                elif k != "prefer":
                    raise ValueError("unexpected key")
            return None
        if len(args) != 1:
            raise TypeError("can query only one param")
        if args[0] == "dns":
            return radio.dns or radio.sta_ifconfig()[3]
        if args[0] == "prefer":
            return 4
        raise ValueError("unexpected key")

    def country(*args):
        if not args:
            return radio.country
        radio.country = _s(args[0])
        return None

    def phy_mode(*args):
        return None

    d["WLAN"] = wlan_class(radio)
    d["STA_IF"] = IF_STA
    d["AP_IF"] = IF_AP
    d["hostname"] = hostname
    d["ipconfig"] = ipconfig
    d["country"] = country
    d["phy_mode"] = phy_mode
    d["MODE_11B"], d["MODE_11G"], d["MODE_11N"], d["MODE_LR"] = 1, 2, 4, 8
    for k, v in AUTH:
        d[k] = v
    for k, v in STATS:
        d[k] = v
    return d
