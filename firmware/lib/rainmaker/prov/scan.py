# prov-scan (docs/provisioning.md#prov-scan): Wi-Fi scan start, status and results.
#
# scanner() is the radio: a list of (ssid, bssid, channel, rssi, authmode,
# hidden) tuples as network.WLAN.scan() returns them. It blocks, so every
# start is answered after the scan, blocking requested or not.
from micropython import const
from . import pb
from .errors import Refused

MAX_ENTRIES = const(16)


class Scan:
    def __init__(self, scanner):
        self.scanner = scanner
        self.results = []
        self.finished = False

    def handle(self, plain):
        d = pb.decode(plain)
        msg = pb.get_int(d, 1)
        if msg == 0:
            pb.get_msg(d, 10)  # CmdScanWifiStart: options are accepted, not needed
            st = self._scan()
            return pb.f_int(1, 1) + pb.f_int(2, st) + pb.f_msg(11, b"")
        if msg == 2:
            body = pb.f_bool(1, self.finished) + pb.f_int(2, len(self.results))
            return pb.f_int(1, 3) + pb.f_msg(13, body)
        if msg == 4:
            cmd = pb.get_msg(d, 14)
            start = pb.get_int(cmd, 1)
            count = pb.get_int(cmd, 2)
            if start + count > len(self.results):
                raise Refused("scan results %d..%d requested, %d available" % (start, start + count, len(self.results)))
            out = b""
            for ssid, bssid, ch, rssi, auth in self.results[start:start + count]:
                e = pb.f_bytes(1, ssid) + pb.f_int(2, ch) + pb.f_int(3, rssi) + pb.f_bytes(4, bssid) + pb.f_int(5, auth)
                out += pb.f_msg(1, e)
            return pb.f_int(1, 5) + pb.f_msg(15, out)
        raise Refused("unknown prov-scan message %d" % msg)

    def _scan(self):
        self.finished = False
        try:
            found = self.scanner()
        except OSError:
            self.results = []
            return 5  # InternalError
        res = []
        for ap in found:
            ssid = bytes(ap[0])[:32]
            bssid = bytes(ap[1])
            if len(bssid) != 6:
                continue
            res.append((ssid, bssid, ap[2] & 0xFF, ap[3], ap[4] & 0xFF))
        res.sort(key=lambda r: -r[3])
        self.results = res[:MAX_ENTRIES]
        self.finished = True
        return 0
