# The checks of an OTA job from node/<id>/otaurl (docs/protocol.md#ota-jobs).
# Loaded only when a job arrives and dropped right after (ota.py), so a node
# that is not being updated does not keep this code in RAM.
import json
from micropython import const
from .sync import _shallow

_MAX_PAYLOAD = const(2048)
_MAX_URL = const(512)
_MAX_ID = const(63)  # the SDK keeps the job id in a 64-byte buffer
_DEPTH = const(4)  # {"metadata":{"validity":{...}}} is 3
_NO_TIME_RETRY = const(30)  # s before fetching again when the clock is not set
_SLACK = const(5)  # s added to a wait for a time window, so it has begun
_TIME_VALID = const(1546300800)  # 2019-01-01: before it the clock is not set

JSON_ERROR = "Aborted. JSON Payload error"
NO_ID = "Aborted. OTA Updated ID not found in JSON"  # sic: the SDK's text


def parse(payload):
    """An otaurl payload (bytes) -> (job id, error, job).

    job is (url, size, md5, metadata) when it may start; else error is the
    text of the `failed` report, and job id is None when the payload has no
    usable one. Never raises.
    """
    if len(payload) > _MAX_PAYLOAD or not _shallow(payload, _DEPTH):
        # Not parsed at all: a recursive parser could be made to exhaust the stack.
        return None, JSON_ERROR, None
    try:
        d = json.loads(payload)
    except ValueError:  # UnicodeError is one too
        return None, JSON_ERROR, None
    job = d.get("ota_job_id") if isinstance(d, dict) else None
    if not id_ok(job):
        return None, NO_ID, None
    assert isinstance(d, dict)
    url = d.get("url")
    if not isinstance(url, str):
        return job, "Aborted. URL not found in JSON", None
    if len(url) > _MAX_URL:
        return job, "Aborted. URL longer than %d characters" % _MAX_URL, None
    if not url.startswith("https://"):
        return job, "Aborted. URL must start with https://", None
    # The optional fields are dropped when they have the wrong type, as the SDK's parser does.
    size = d.get("file_size")
    if type(size) is not int or size < 0:
        size = 0  # unknown: no progress reports
    md5 = d.get("file_md5")
    if not isinstance(md5, str) or len(md5) != 32 or not _hex(md5):
        md5 = None
    meta = d.get("metadata")
    if not isinstance(meta, dict):
        meta = None
    return job, None, (url, size, md5, meta)


def window(meta, utc, tz):
    """The job's time constraints: None to go ahead, else (status, info, re-fetch s or None)."""
    win = meta.get("download_window")
    val = meta.get("validity")
    if not isinstance(win, dict):
        win = None
    if not isinstance(val, dict):
        val = None
    if win is None and val is None:
        return None
    if utc is None or utc < _TIME_VALID:
        return "delayed", "No time information available yet.", _NO_TIME_RETRY
    start = _int(val, "start")
    end = _int(val, "end")
    if start != -1 and utc < start:
        return "delayed", "Not within valid window.", start - utc + _SLACK
    if end != -1 and utc > end:
        return "failed", "OTA download window lapsed.", None
    lo = _int(win, "start")
    if lo == -1:
        return None
    hi = _int(win, "end")
    if hi == -1 or not 0 <= lo < 1440 or not 0 <= hi < 1440:
        return "failed", "Invalid download window specified.", None
    cur = (utc + tz) // 60 % 1440
    # Minutes since the window opened, on a 24 h circle, so a window that
    # wraps past midnight (lo > hi) needs no case of its own.
    if (cur - lo) % 1440 <= (hi - lo) % 1440:
        return None
    return "delayed", "Not within download window.", (lo - cur) % 1440 * 60 + _SLACK


def id_ok(job):
    """A job id we can store and echo: 1 to 63 printable ASCII, no quote or backslash."""
    if not isinstance(job, str) or not 0 < len(job) <= _MAX_ID:
        return False
    for c in job:
        if c < " " or c > "~" or c == '"' or c == "\\":
            return False
    return True


def _int(d, key):
    v = d.get(key) if d else None
    return v if type(v) is int else -1


def _hex(s):
    for c in s:
        if c not in "0123456789abcdefABCDEF":
            return False
    return True
