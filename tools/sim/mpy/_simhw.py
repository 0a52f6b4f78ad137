# The simulated board's hardware for the MicroPython backend (tools/sim/mpboard.py):
# one radio, one pin bank, the watchdog, and resets, shared by the thin network,
# machine and esp32 modules beside this file. The world model itself (the air,
# the Wi-Fi driver's rules, the pin files) is simworld/, which the CPython sim
# runs too. Configured by the launcher through the environment:
#
#   MPBOARD_AIR, MPBOARD_PINS, MPBOARD_PINS_OUT  the world's files
#   MPBOARD_MAC                                  12 hex digits
#   MPBOARD_CHIP                                 the chip, e.g. esp32c3 (simworld/chip.py)
#   MPBOARD_CTL                                  the launcher's folder: `link` (radio
#                                                state, read by its TCP relay) and
#                                                `reset` (cause of a reset we ask for)
#   MPBOARD_BOOT, MPBOARD_RESET_CAUSE            boot number, machine.reset_cause()
#
# A thread polls the world every 50 ms, as the Wi-Fi driver and the GPIO interrupt
# hardware run beside the interpreter on the ESP32; pin IRQ handlers are handed to
# micropython.schedule, so they run on the main thread between bytecodes.
import os
import sys
import time
import micropython
import _thread
from simworld import air, wlan, pins, chip as _chip, resets as _resets

PWRON_RESET, HARD_RESET, WDT_RESET, DEEPSLEEP_RESET, SOFT_RESET = 1, 2, 3, 4, 5
CAUSES = {"PWRON_RESET": 1, "HARD_RESET": 2, "WDT_RESET": 3, "DEEPSLEEP_RESET": 4, "SOFT_RESET": 5}
_POLL_MS = 50


def _env(name, default=None):
    v = os.getenv(name)
    return default if v is None or v == "" else v


_ctl = _env("MPBOARD_CTL")
_board = os.getcwd()
_parent = _board.rsplit("/", 1)[0]
mac = bytes.fromhex(_env("MPBOARD_MAC", "240AC4000001"))
chip = _chip.check(_env("MPBOARD_CHIP", _chip.DEFAULT))
boot = int(_env("MPBOARD_BOOT", "1"))
reset_cause = CAUSES.get(_env("MPBOARD_RESET_CAUSE", ""), PWRON_RESET)
lock = _thread.allocate_lock()
_t0 = time.ticks_ms()


def clock():
    return time.ticks_diff(time.ticks_ms(), _t0) / 1000


def _write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


# -- the radio -------------------------------------------------------------------
# The firmware's sockets are MicroPython's own, so the radio cannot gate them here:
# its state goes to ctl/link, and the launcher's relay (the board's only way to the
# broker) stalls, then resets, the connections made before a loss.

_epoch = [0]


def _on_link(up, abort_s):
    if not up:
        _epoch[0] += 1
    if _ctl:
        _write(_ctl + "/link", "%d %d %d %d\n" % (boot, _epoch[0], 1 if up else 0, int(abort_s * 1000)))


radio = wlan.Radio(air.AirFile(_env("MPBOARD_AIR", _parent + "/air.json")), mac, clock, time.sleep,
                   lock=lock, on_link=_on_link, assoc_s=0.3, ap_ip="127.0.0.1")
if _ctl:
    _write(_ctl + "/link", "%d 0 0 %d\n" % (boot, int(radio.abort_s() * 1000)))


# -- pins ------------------------------------------------------------------------


def _schedule(handler, pin):
    try:
        micropython.schedule(handler, pin)
    except RuntimeError:  # queue full: the edge is lost, as with a busy ISR queue
        pass


def _warn(text):
    print(text)


bank = pins.PinBank(_env("MPBOARD_PINS", _parent + "/pins.json"),
                    _env("MPBOARD_PINS_OUT", _parent + "/pins_out.json"), lock, _schedule, _warn, chip)


# -- resets and the watchdog ---------------------------------------------------------

wdt = [None, None]  # deadline (clock s), timeout (s)


def hard_reset(cause):
    """Reset now: nothing more of the firmware runs; the launcher boots it again."""
    if _ctl:
        _write(_ctl + "/reset", cause)
    # A reset runs no finally blocks and closes nothing: end the process from outside.
    os.system("kill -KILL $PPID")
    while True:  # pragma: no cover - the signal is on its way
        time.sleep_ms(1000)


def _check_wdt():
    if _resets.expired(wdt, clock()):
        for line in _resets.wdt_lines(time.ticks_diff(time.ticks_ms(), _t0)):
            print(line)
        hard_reset("WDT_RESET")


def _poller():
    while True:
        time.sleep_ms(_POLL_MS)
        try:
            radio.poll(clock())
            bank.poll()
            _check_wdt()
        except Exception as e:  # the board's "hardware" never dies
            sys.print_exception(e)


_thread.start_new_thread(_poller, ())
