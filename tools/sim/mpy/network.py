# `network` (esp32 port) for the MicroPython backend of the simulated board: the
# shared Wi-Fi driver model (simworld/wlan.py) over this board's radio (_simhw).
from simworld import wlan as _wlan
from _simhw import radio as _radio

globals().update(_wlan.module_dict(_radio))
