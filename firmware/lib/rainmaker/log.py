# Log lines on the serial console, and the last error kept for status().
#
# Lines look like "rm W mqtt: broker refused us (not authorised)". Nothing
# secret is ever passed here: callers log names and reasons, never key bytes.
from micropython import const

ERROR = const(0)
WARN = const(1)
INFO = const(2)
DEBUG = const(3)

level = INFO
last_error = None  # (tag, text) of the most recent ERROR or WARN
_MAX = const(200)  # a line longer than this is cut: bounded output per event


def log(lvl, tag, msg):
    global last_error
    if lvl <= WARN:
        last_error = (tag, msg)
    if lvl <= level:
        if len(msg) > _MAX:
            msg = msg[:_MAX] + "..."
        print("rm %s %s: %s" % ("EWID"[lvl], tag, msg))


def error(tag, msg):
    log(ERROR, tag, msg)


def warn(tag, msg):
    log(WARN, tag, msg)


def info(tag, msg):
    log(INFO, tag, msg)


def debug(tag, msg):
    log(DEBUG, tag, msg)
