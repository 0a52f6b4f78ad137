# machine's resets, sleeps and watchdog, written once for both board backends.
# Each backend hands in how it reboots (reboot(cause): nothing of the firmware
# runs after it), its clock (seconds), how it sleeps, and the board's MAC.
# The watchdog state is a list [deadline, timeout] (clock seconds) that the
# backend's own poller checks with expired().

CAUSES = {"PWRON_RESET": 1, "HARD_RESET": 2, "WDT_RESET": 3, "DEEPSLEEP_RESET": 4, "SOFT_RESET": 5}
WAKES = {"PIN_WAKE": 2, "EXT0_WAKE": 2, "EXT1_WAKE": 3, "TIMER_WAKE": 4, "TOUCHPAD_WAKE": 5,
         "ULP_WAKE": 6}


def machine_dict(reboot, reset_cause, mac, sleep_ms, clock, wdt):
    """The functions and the WDT class of the esp32 port's machine module."""

    def reset():
        reboot("HARD_RESET")

    def soft_reset():
        print("MPY: soft reboot")
        reboot("SOFT_RESET")

    def unique_id():
        return bytes(mac)

    def idle():
        sleep_ms(1)

    def lightsleep(ms=None):
        sleep_ms(ms or 0)

    def deepsleep(ms=None):
        if ms is None:
            while True:
                sleep_ms(3600000)
        sleep_ms(ms)
        reboot("DEEPSLEEP_RESET")

    def wake_reason():
        return 0

    def disable_irq():
        return 1

    def enable_irq(state=1):
        return None

    class WDT:
        def __init__(self, id=0, timeout=5000):
            if id != 0:
                raise ValueError("WDT(%d) doesn't exist" % id)
            if timeout < 1:
                raise ValueError("WDT timeout too short")
            wdt[1] = timeout / 1000
            wdt[0] = clock() + wdt[1]

        def feed(self):
            if wdt[1] is not None:
                wdt[0] = clock() + wdt[1]

    d = {"reset": reset, "soft_reset": soft_reset, "reset_cause": reset_cause, "unique_id": unique_id,
         "idle": idle, "lightsleep": lightsleep, "deepsleep": deepsleep, "wake_reason": wake_reason,
         "disable_irq": disable_irq, "enable_irq": enable_irq, "WDT": WDT}
    d.update(CAUSES)
    d.update(WAKES)
    return d


def expired(wdt, now):
    """True once, when the watchdog was not fed in time (the caller reboots)."""
    if wdt[0] is not None and now > wdt[0]:
        wdt[0] = None
        return True
    return False


def wdt_lines(up_ms):
    """What ESP-IDF's task watchdog prints before the reset."""
    return ("E (%d) task_wdt: Task watchdog got triggered. The following tasks/users did "
            "not reset the watchdog in time:" % up_ms,
            "E (%d) task_wdt:  - mp_task (CPU 0)" % up_ms)
