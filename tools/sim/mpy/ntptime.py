# `ntptime` (frozen on the ESP32) for the MicroPython backend. The unix port's clock
# is the host's, already right and counting from 1970, so there is nothing to set;
# like the real module it needs Wi-Fi (getaddrinfo of the host fails without it).
import time as _time
from _simhw import radio as _radio

host = "pool.ntp.org"
timeout = 1


def time():
    if not _radio.sta_has_ip():
        raise OSError(-202)
    return int(_time.time())


def settime():
    time()
