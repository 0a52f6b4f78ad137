# OTA jobs on topics (rainmaker.ota) on a fake clock: when the job logic asks
# its caller for an otafetch (the caller sends it, and sends it again until
# its PUBACK: the agent, tests/test_ota_idle.py), the otastatus texts and
# their order, refusals, time windows, bad payloads, and the state kept across
# the reboot into the new image (and across a power cut at each point where
# it is written).
import json
from rainmaker import log
from rainmaker.ota import Ota, NO_SLOT, IDLE, RUNNING, VERIFYING
from util import MemStore

log.level = -1

T0 = 1767225600  # 2026-01-01 00:00:00 UTC
JOB = b'{"ota_job_id":"J1","url":"https://ota.example/fw.bin","file_size":100000,"fw_version":"2.0"}'
START = ("in-progress", "Starting OTA Upgrade (HTTPS attempt 1/3)")
DOWNLOADING = ("in-progress", "Downloading Firmware Image")
COMPLETE = ("in-progress", "Firmware Image download complete")
VERIFIED = ("success", "OTA Upgrade finished and verified successfully")
ROLLED_BACK = ("rejected", "Firmware rolled back")


class Rig:
    """Drives an Ota the way the link and agent will: tick, then publish all it has."""

    def __init__(self, store=None, fw="1.0", utc=T0, **kw):
        self.store = store if store is not None else MemStore()
        self.now = 1000
        self.utc0 = utc  # utc at now == 0; None: clock not set
        self.asks = []  # the fetch hook's calls: the tick of an otafetch wanted, None when withdrawn
        self.ota = Ota("N1", fw, self.store, self.now, self.asks.append, **kw)
        self.pubs = []  # (tick, suffix, payload text, pid)
        self.acts = []
        self.pid = 0
        self.ack = True
        self.fail = False  # publishes fail (too big, window full): sent(0)
        self.failed = 0
        self.spare = 100

    def utc(self):
        return None if self.utc0 is None else self.utc0 + self.now // 1000

    def step(self, ms=0):
        self.now += ms
        self.acts += self.ota.tick(self.now, self.utc())
        self.flush()

    def flush(self):
        while True:
            item = self.ota.take(self.now, self.spare)
            if item is None:
                return
            assert item[0] == "otastatus", item  # the otafetch is the caller's to send
            if self.fail:
                self.failed += 1
                self.ota.sent(0, self.now)
                continue
            self.pid += 1
            self.ota.sent(self.pid, self.now)
            self.pubs.append((self.now, item[0], item[1], self.pid))
            if self.ack:
                self.ota.puback(self.pid, self.now)

    def run(self, ms, every=1000):
        end = self.now + ms
        while self.now < end:
            self.step(min(every, end - self.now))

    def statuses(self):
        return [(js["status"], js["additional_info"]) for js in self.status_docs()]

    def status_docs(self):
        return [json.loads(p[2]) for p in self.pubs if p[1] == "otastatus"]

    def fetch_times(self):
        """The ticks at which an otafetch was asked for."""
        return [t for t in self.asks if t is not None]

    def take_acts(self):
        a = self.acts
        self.acts = []
        return a

    def job(self, payload=JOB):
        self.ota.message(payload, self.now)
        self.step()

    def download(self, size=100000, chunk=10000):
        """The driver's side of one good attempt, publishing after each step."""
        self.ota.checked(self.now)
        self.flush()
        n = 0
        while n < size:
            n = min(size, n + chunk)
            self.ota.progress(n, self.now)
            self.flush()
        self.ota.finished(True, None, self.now)
        self.step()


def online(r):
    r.ota.online(r.now)
    r.step()


def to_reboot(r):
    """A job downloaded and activated; returns once the reboot action is out."""
    online(r)
    r.job()
    assert r.take_acts() == [("download", "https://ota.example/fw.bin", 100000, None, 0)]
    r.download()
    assert r.take_acts() == [("activate",)]
    r.ota.activated(r.now)
    r.run(10000)
    assert r.take_acts() == [("reboot",)]


# -- otafetch ---------------------------------------------------------------------


def test_the_boot_fetch_is_the_callers_not_the_job_logics():
    # The boot's otafetch (5 s after the node is online) is sent by the agent
    # whether or not this code is loaded: the job logic never asks for it, nor
    # for one after a reconnect, nor keeps itself busy for it.
    r = Rig()
    assert r.ota.idle() == (None,)
    r.run(20000)
    online(r)
    r.run(3600000, 10000)
    online(r)  # a reconnect
    r.run(3600000, 10000)
    assert r.asks == [] and r.pubs == [] and r.ota.idle() == (None,)


def test_an_otafetch_is_asked_for_once_whatever_its_puback():
    # Waiting for the PUBACK and sending again without one is the caller's:
    # here a re-fetch is asked for once, when it is due, and never again.
    r = Rig()
    r.ack = False
    online(r)
    r.job()
    for _ in range(3):
        r.take_acts()
        r.ota.finished(False, "HTTP 503", r.now)
        r.step()
    t = r.now
    r.run(4000000, 1000)
    assert r.fetch_times() == [t + 300000]
    for pid in range(1, r.pid + 1):  # PUBACKs that are not a final status's change nothing
        r.ota.puback(pid, r.now)
    r.ota.puback(0, r.now)
    r.run(4000000, 10000)
    assert r.fetch_times() == [t + 300000] and r.ota.idle() == ("J1",)


def test_every_otaurl_taken_withdraws_the_otafetch():
    # A message on otaurl is what an otafetch asks for (a pushed job answers
    # it as well): the caller stops sending it, whatever the payload holds.
    for payload in (JOB, b'{"ota_job_id":"J1","url":"http://h"}', b"not json", b"", b'{"url":"https://h"}'):
        r = Rig()
        online(r)
        r.ota.message(payload, r.now)
        assert r.asks == [None], payload
    # A message ignored because a job runs is no answer: nothing withdrawn.
    r = Rig()
    online(r)
    r.job()
    assert r.asks == [None]
    r.job(b'{"ota_job_id":"J2","url":"https://other/fw.bin"}')
    assert r.asks == [None] and r.ota.job == "J1"
    # Nor one while a new image waits to be confirmed (before the first connect).
    r = Rig()
    to_reboot(r)
    b = Rig(store=r.store, fw="2.0")
    b.job()
    assert b.asks == [] and b.ota.state == VERIFYING


def test_periodic_fetch_every_period_hours_even_past_the_tick_wrap():
    r = Rig(period=168)
    online(r)
    t = r.now
    r.run(2 * 168 * 3600000 + 60000, 600000)
    times = r.fetch_times()
    assert len(times) == 2, times
    assert abs(times[0] - t - 168 * 3600000) <= 600000
    assert abs(times[1] - t - 2 * 168 * 3600000) <= 600000


def test_no_periodic_fetch_while_a_job_runs_nor_from_a_carried_ota():
    r = Rig(period=1)
    online(r)
    r.run(3000000, 10000)
    r.job()  # downloading when the hour is over
    r.run(1200000, 10000)
    assert r.fetch_times() == [] and r.ota.state == RUNNING
    r.ota.finished(False, "x", r.now)
    r.step()
    r.ota.finished(False, "x", r.now)
    r.step()
    r.ota.finished(False, "x", r.now)  # the job is over: the next hour asks again
    r.run(3600000, 10000)
    assert len(r.fetch_times()) == 2  # the re-fetch 5 min after the failure, the hour
    c = Rig(carry=(None,), period=1)  # a carried Ota was idle: it had no periodic fetch
    online(c)
    c.run(7200000, 10000)
    assert c.fetch_times() == [] and c.ota.idle() == (None,)


# -- a job, start to reboot ---------------------------------------------------------


def test_success_statuses_and_their_order():
    r = Rig()
    online(r)
    r.run(6000)
    r.job()
    r.download()
    r.ota.activated(r.now)
    r.flush()
    expect = [START, DOWNLOADING]
    expect += [("in-progress", "Downloaded %d%% Firmware Image" % p) for p in range(10, 100, 10)]
    expect += [COMPLETE, ("in-progress", "Rebooting into new firmware (after 1 HTTPS attempt)")]
    assert r.statuses() == expect
    for p in r.pubs:
        if p[1] == "otastatus":  # the SDK's key order, compact
            assert p[2].startswith('{"ota_job_id":"J1","status":"in-progress","additional_info":"'), p[2]
            assert p[2].endswith('","ts":%d}' % (T0 + p[0] // 1000)), p[2]
    assert r.store.data == {"job": "J1", "state": "rebooting-into-new", "old": "1.0", "tries": 1}
    assert r.take_acts() == [("download", "https://ota.example/fw.bin", 100000, None, 0), ("activate",)]
    r.run(9000)
    assert r.take_acts() == []
    r.run(1000)
    assert r.take_acts() == [("reboot",)]


def test_a_status_whose_publish_found_no_memory_goes_out_at_the_next_pump():
    # The link calls sent() once the packet exists: a publish that raised
    # MemoryError (no sent()) leaves the status in place. (The otafetch is
    # the agent's, posted through the link's queue, which keeps it the same way.)
    r = Rig()
    online(r)
    r.ota.message(JOB, r.now)
    r.acts += r.ota.tick(r.now, r.utc())
    assert r.ota.take(r.now, 100)[0] == "otastatus"  # its publish raises: no sent()
    r.flush()  # the next pump
    assert r.statuses() == [START]


def test_progress_is_merged_and_skipped_when_the_budget_is_low():
    r = Rig()
    online(r)
    r.job()
    r.ota.checked(r.now)
    r.ota.progress(25000, r.now)
    r.ota.progress(45000, r.now)  # 20 % and 40 % before the link takes anything
    r.flush()
    assert r.statuses()[-1] == ("in-progress", "Downloaded 40% Firmware Image")
    assert ("in-progress", "Downloaded 20% Firmware Image") not in r.statuses()
    r.spare = 1  # nearly no budget: progress waits, the rest goes out
    for n in (60000, 80000, 100000):
        r.ota.progress(n, r.now)
        r.flush()
    r.ota.finished(True, None, r.now)
    r.ota.activated(r.now)
    r.flush()
    s = r.statuses()
    assert s[-2:] == [COMPLETE, ("in-progress", "Rebooting into new firmware (after 1 HTTPS attempt)")]
    assert [x[1] for x in s if x[1].startswith("Downloaded")] == ["Downloaded 40% Firmware Image"]


def test_no_progress_without_a_file_size():
    r = Rig()
    online(r)
    r.job(b'{"ota_job_id":"J1","url":"https://h/f"}')
    assert r.take_acts() == [("download", "https://h/f", 0, None, 0)]
    r.ota.progress(50000, r.now)  # header check implied by data
    r.flush()
    assert r.statuses() == [START, DOWNLOADING]


def test_md5_is_passed_on_when_it_looks_like_one():
    r = Rig()
    online(r)
    r.job(b'{"ota_job_id":"J1","url":"https://h/f","file_md5":"0123456789abcdef0123456789ABCDEF"}')
    assert r.take_acts()[0][3] == "0123456789abcdef0123456789ABCDEF"
    r2 = Rig()
    online(r2)
    r2.job(b'{"ota_job_id":"J1","url":"https://h/f","file_md5":"../../etc"}')
    assert r2.take_acts()[0][3] is None


def test_three_failed_attempts_resume_then_refetch_after_5_min():
    r = Rig()
    online(r)
    r.run(6000)
    r.job()
    assert r.take_acts()[0][4] == 0
    r.ota.checked(r.now)
    r.ota.progress(10000, r.now)
    r.ota.finished(False, "Connection reset", r.now)
    r.step()
    assert r.take_acts() == [("download", "https://ota.example/fw.bin", 100000, None, 8192)]
    r.ota.progress(30000, r.now)  # data without a header check this time: implied
    r.ota.finished(False, "Read timed out", r.now)
    r.step()
    assert r.take_acts()[0][4] == 28672
    r.ota.finished(False, "", r.now)
    t = r.now
    r.step()
    assert r.take_acts() == []
    assert r.statuses() == [
        START, DOWNLOADING, ("failed", "OTA Attempt 1/3 failed: Connection reset"),
        ("in-progress", "Starting OTA Upgrade (HTTPS attempt 2/3)"), DOWNLOADING,
        ("failed", "OTA Attempt 2/3 failed: Read timed out"),
        ("in-progress", "Starting OTA Upgrade (HTTPS attempt 3/3)"),
        ("failed", "OTA Attempt 3/3 failed: unknown error")]
    assert r.ota.state == IDLE and r.store.data == {}
    r.run(299000)
    assert r.fetch_times() == []
    r.run(1000)
    assert r.fetch_times() == [t + 300000]


def test_a_whole_but_bad_image_is_downloaded_again_from_the_start():
    r = Rig()
    online(r)
    r.job()
    r.take_acts()
    r.ota.progress(100000, r.now)
    r.ota.finished(False, "Image validation failed", r.now)
    r.step()
    assert r.take_acts()[0][4] == 0
    r.download()
    r.ota.activated(r.now, "set_boot: ESP_ERR_OTA_VALIDATE_FAILED")
    r.step()
    assert r.take_acts()[-1] == ("download", "https://ota.example/fw.bin", 100000, None, 0)
    assert r.statuses()[-2:] == [("failed", "OTA Attempt 2/3 failed: set_boot: ESP_ERR_OTA_VALIDATE_FAILED"),
                                 ("in-progress", "Starting OTA Upgrade (HTTPS attempt 3/3)")]
    assert r.store.data == {}


def test_success_after_a_retry_counts_the_attempts():
    r = Rig()
    online(r)
    r.job()
    r.ota.finished(False, "DNS", r.now)
    r.step()
    r.download()
    r.ota.activated(r.now)
    r.flush()
    assert r.statuses()[-1] == ("in-progress", "Rebooting into new firmware (after 2 HTTPS attempts)")
    assert r.store.data["tries"] == 2


def test_a_state_that_cannot_be_saved_fails_the_attempt():
    class Full(MemStore):
        def save(self, data):
            return False

    r = Rig(store=Full())
    online(r)
    r.job()
    r.download()
    assert ("activate",) not in r.take_acts()
    assert ("failed", "OTA Attempt 1/3 failed: OTA state could not be saved to flash") in r.statuses()


def test_long_reasons_are_cut():
    r = Rig()
    online(r)
    r.job()
    r.ota.finished(False, "x" * 5000, r.now)
    r.flush()
    doc = r.status_docs()[-2]
    assert doc["additional_info"] == "OTA Attempt 1/3 failed: " + "x" * 120


# -- refusals and duplicates ----------------------------------------------------------


def test_image_refusals_are_rejected_without_retry_or_refetch():
    for reason in ("Same version received", "Project Name mismatch", "Chip mismatch: image for esp32s3, board is esp32"):
        r = Rig()
        online(r)
        r.run(6000)
        r.job()
        r.ota.checked(r.now, reason)
        r.run(3600000, 10000)
        assert r.statuses() == [START, ("rejected", reason)]
        assert r.take_acts() == [("download", "https://ota.example/fw.bin", 100000, None, 0)]
        assert r.fetch_times() == [] and r.ota.state == IDLE


def test_a_board_without_a_second_slot_rejects_with_the_fix():
    r = Rig(slots=False)
    online(r)
    r.job()
    assert r.statuses() == [("rejected", NO_SLOT)]
    assert "flash an -OTA build" in NO_SLOT
    assert r.take_acts() == []


def test_a_job_arriving_during_a_job_is_ignored():
    r = Rig()
    online(r)
    r.job()
    r.ota.progress(20000, r.now)
    r.flush()
    n = len(r.pubs)
    r.job(b'{"ota_job_id":"J2","url":"https://other/fw.bin"}')
    r.job(b'not json')
    assert r.take_acts() == [("download", "https://ota.example/fw.bin", 100000, None, 0)]
    assert len(r.pubs) == n and r.ota.job == "J1"
    r.ota.finished(True, None, r.now)
    r.job(b'{"ota_job_id":"J3","url":"https://other/fw.bin"}')  # still busy while activating
    assert r.ota.job == "J1" and all(d["ota_job_id"] == "J1" for d in r.status_docs())


def test_a_fetch_due_during_a_job_is_not_asked_for():
    r = Rig(utc=None)
    online(r)
    r.job(_timed('{"download_window":{"start":60,"end":120}}'))  # no time yet: a re-fetch in 30 s
    assert r.statuses() == [("delayed", "No time information available yet.")]
    r.run(20000)
    r.job()  # a job pushed before that re-fetch is due
    r.run(60000)
    assert r.fetch_times() == [] and r.ota.state == RUNNING
    assert r.ota.next_deadline(r.now) is None  # the re-fetch is gone, not postponed


# -- time windows -----------------------------------------------------------------------


def _timed(meta):
    return ('{"ota_job_id":"J1","url":"https://h/f","metadata":%s}' % meta).encode()


def window_case(meta, utc, tz=0):
    r = Rig(utc=utc - 1)  # utc at the job (the rig is at now = 1 s)
    r.ota.tz = tz
    online(r)
    r.run(6000)  # first fetch out of the way
    r.job(_timed(meta))
    return r


def assert_refetch(r, ms):
    """The next otafetch goes out exactly ms from now (to the second)."""
    t = r.now
    n = len(r.fetch_times())
    r.run(ms - 1000, 60000)
    assert len(r.fetch_times()) == n
    r.run(1000)
    assert r.fetch_times()[n:] == [t + ms], (r.fetch_times(), t + ms)


def test_validity_in_the_future_is_delayed_and_fetched_again_after_it_starts():
    r = window_case('{"validity":{"start":%d,"end":%d}}' % (T0 + 3600, T0 + 7200), T0 - 6)
    assert r.statuses() == [("delayed", "Not within valid window.")]
    assert r.take_acts() == [] and r.ota.state == IDLE
    t = r.now
    r.run(3700000, 1000)
    assert r.fetch_times() == [t + 3605000]


def test_validity_in_the_past_fails():
    r = window_case('{"validity":{"start":%d,"end":%d}}' % (T0 - 7200, T0 - 3600), T0)
    assert r.statuses() == [("failed", "OTA download window lapsed.")]
    r.run(3600000, 10000)
    assert r.fetch_times() == []


def test_inside_validity_and_window_starts():
    meta = '{"validity":{"start":%d,"end":%d},"download_window":{"start":0,"end":1439}}' % (T0 - 10, T0 + 10)
    r = window_case(meta, T0)
    assert r.statuses() == [START]


def test_no_time_yet_is_delayed_30_s():
    r = Rig(utc=None)
    online(r)
    r.run(6000)
    r.job(_timed('{"download_window":{"start":60,"end":120}}'))
    t = r.now
    assert r.statuses() == [("delayed", "No time information available yet.")]
    r.run(31000)
    assert r.fetch_times() == [t + 30000]
    # an empty window object counts as time information too, as in the SDK
    r2 = Rig(utc=1000)
    online(r2)
    r2.job(_timed('{"validity":{}}'))
    assert r2.statuses() == [("delayed", "No time information available yet.")]


def test_window_wrapping_past_midnight():
    meta = '{"download_window":{"start":1380,"end":120}}'  # 23:00 to 02:00
    for hhmm, inside in ((2330, True), (0, True), (100, True), (200, True), (201, False), (300, False), (2259, False)):
        utc = T0 + (hhmm // 100 * 60 + hhmm % 100) * 60
        r = window_case(meta, utc)
        if inside:
            assert r.statuses() == [START], hhmm
        else:
            assert r.statuses() == [("delayed", "Not within download window.")], hhmm
            cur = hhmm // 100 * 60 + hhmm % 100
            assert_refetch(r, ((1380 - cur) * 60 + 5) * 1000)


def test_window_is_in_local_time():
    meta = '{"download_window":{"start":120,"end":180}}'  # 02:00-03:00 local
    r = window_case(meta, T0 + 30 * 60, tz=2 * 3600)  # 00:30 UTC = 02:30 at UTC+2
    assert r.statuses() == [START]
    r = window_case(meta, T0 + 30 * 60)  # 00:30 at UTC: 90 min to wait
    assert r.statuses() == [("delayed", "Not within download window.")]
    assert_refetch(r, (90 * 60 + 5) * 1000)


def test_bad_windows_fail():
    for meta in ('{"download_window":{"start":60}}', '{"download_window":{"start":60,"end":"x"}}',
                 '{"download_window":{"start":2000,"end":60}}', '{"download_window":{"start":-5,"end":60}}'):
        r = window_case(meta, T0)
        assert r.statuses() == [("failed", "Invalid download window specified.")], meta
    # an end without a start, or a window that is not an object, is no constraint
    for meta in ('{"download_window":{"end":60}}', '{"download_window":[1,2]}', '{"other":1}', '[]'):
        r = window_case(meta, T0)
        assert r.statuses() == [START], meta


# -- bad payloads -------------------------------------------------------------------------


def test_bad_payloads_get_the_sdk_answers():
    cases = [
        (b'{"url":"https://h/f"}', None, "Aborted. OTA Updated ID not found in JSON"),
        (b'{"ota_job_id":7,"url":"https://h/f"}', None, "Aborted. OTA Updated ID not found in JSON"),
        (b'{"ota_job_id":"","url":"https://h/f"}', None, "Aborted. OTA Updated ID not found in JSON"),
        (('{"ota_job_id":"%s","url":"https://h/f"}' % ("x" * 64)).encode(), None, "Aborted. OTA Updated ID not found in JSON"),
        (b'{"ota_job_id":"a\\"b","url":"https://h/f"}', None, "Aborted. OTA Updated ID not found in JSON"),
        (b'[1,2]', None, "Aborted. OTA Updated ID not found in JSON"),
        (b'"J"', None, "Aborted. OTA Updated ID not found in JSON"),
        (b'{"ota_job_id":"J9"}', "J9", "Aborted. URL not found in JSON"),
        (b'{"ota_job_id":"J9","url":5}', "J9", "Aborted. URL not found in JSON"),
        (b'{"ota_job_id":"J9","url":"http://h/f"}', "J9", "Aborted. URL must start with https://"),
        (('{"ota_job_id":"J9","url":"https://%s"}' % ("a" * 505)).encode(), "J9", "Aborted. URL longer than 512 characters"),
    ]
    for payload, job, text in cases:
        r = Rig()
        online(r)
        r.job(payload)
        assert r.take_acts() == [], payload
        if job is None:  # no job id anywhere: nothing can be reported
            assert r.statuses() == [], payload
        else:
            assert [(d["ota_job_id"], d["status"], d["additional_info"]) for d in r.status_docs()] == [(job, "failed", text)]
        assert r.ota.state == IDLE


def test_a_payload_without_a_job_id_is_answered_on_the_last_job_once():
    r = Rig()
    online(r)
    r.job(b'{"ota_job_id":"J1","url":"http://h"}')
    for bad in (b'{"ota_job_id":"J1"', b'\xff\xfe{', b'{"a":' + b'[' * 40 + b']' * 40 + b'}', b'{' + b' ' * 3000 + b'}', b'{"url":"https://h"}'):
        r.job(bad)
    assert [(d["ota_job_id"], d["status"], d["additional_info"]) for d in r.status_docs()] == [
        ("J1", "failed", "Aborted. URL must start with https://"),
        ("J1", "failed", "Aborted. JSON Payload error")]


def test_wrong_field_types_are_ignored_like_the_sdk():
    r = Rig()
    online(r)
    r.job(b'{"ota_job_id":"J1","url":"https://h/f","file_size":"big","file_md5":5,"fw_version":[],"metadata":"x"}')
    assert r.take_acts() == [("download", "https://h/f", 0, None, 0)]
    r = Rig()
    online(r)
    r.job(b'{"ota_job_id":"J1","url":"https://h/f","file_size":-4}')
    assert r.take_acts() == [("download", "https://h/f", 0, None, 0)]
    r = Rig()
    online(r)
    r.job('{"ota_job_id":"J1","url":"https://h/f","file_size":true}')  # str payload too
    assert r.take_acts() == [("download", "https://h/f", 0, None, 0)]


class Lcg:
    def __init__(self, seed):
        self.s = seed

    def next(self, n):
        self.s = (self.s * 1103515245 + 12345) & 0x7FFFFFFF
        return (self.s >> 8) % n


def _fuzz(seed, n):
    # Mutations of good payloads; each must be answered (or ignored) with
    # a well-formed status, never an exception, never a touch of the store.
    rnd = Lcg(seed)
    seeds = [JOB, _timed('{"download_window":{"start":1,"end":2},"validity":{"start":1,"end":9}}'),
             b'{"ota_job_id":"J","url":"https://a","file_md5":"00000000000000000000000000000000"}']
    alphabet = b'{}[]":,0123456789-eE.tfnul\\ \x00\xff"ota_job_idurlhttps://'
    r = None
    for i in range(n):
        p = seeds[i % len(seeds)]
        for _ in range(1 + rnd.next(6)):
            k = rnd.next(4)
            at = rnd.next(len(p) + 1)
            if k == 0:  # delete a byte
                p = p[:at] + p[at + 1:]
            elif k == 1:  # insert a JSON-ish byte
                p = p[:at] + alphabet[rnd.next(len(alphabet)):][:1] + p[at:]
            elif k == 2:  # replace a byte with any byte
                p = p[:at] + bytes([rnd.next(256)]) + p[at + 1:]
            else:  # repeat a prefix
                p = p[:at] + p[:rnd.next(20)] + p[at:]
        if r is None or r.ota.state != IDLE:
            r = Rig()  # (reused while idle: the VM's heap is small)
            online(r)
        r.pubs = []
        r.job(p)
        for d in r.status_docs():
            assert d["status"] in ("in-progress", "failed", "delayed", "rejected"), d
            assert isinstance(d["ota_job_id"], str) and 0 < len(d["ota_job_id"]) <= 63
        for a in r.take_acts():
            assert a[0] == "download" and a[1].startswith("https://") and len(a[1]) <= 512
        assert r.store.data == {} and r.store.saves == 0


def test_fuzz_message_1():
    _fuzz(7, 130)


def test_fuzz_message_2():
    _fuzz(8, 130)


def test_fuzz_message_3():
    _fuzz(9, 130)


# -- across the reboot ----------------------------------------------------------------------


def test_the_new_image_confirms_itself_on_the_first_connect():
    r = Rig()
    to_reboot(r)
    b = Rig(store=r.store, fw="2.0")  # the new image boots
    assert b.ota.state == VERIFYING
    b.run(60000)
    assert b.take_acts() == [] and b.statuses() == []
    b.job(JOB)  # even a job from the cloud waits until the image is confirmed
    assert b.statuses() == []
    online(b)
    assert b.take_acts() == [("mark_valid",)]
    assert b.status_docs()[0]["ota_job_id"] == "J1"
    assert b.statuses() == [VERIFIED]
    assert b.store.data == {}  # cleared by the PUBACK
    assert b.ota.idle() == (None,)  # the boot's otafetch, 5 s later, is the caller's
    b.run(100000)
    assert b.take_acts() == [] and b.asks == []  # no rollback once confirmed


def test_the_new_image_rolls_back_when_the_broker_is_not_reached_in_90_s():
    r = Rig()
    to_reboot(r)
    b = Rig(store=r.store, fw="2.0")
    b.run(89000)
    assert b.take_acts() == []
    b.run(1000)
    assert b.take_acts() == [("rollback",)]
    assert b.ota.next_deadline(b.now) is None
    old = Rig(store=b.store, fw="1.0")  # the bootloader went back
    old.ack = False
    online(old)
    assert old.statuses() == [ROLLED_BACK] and old.status_docs()[0]["ota_job_id"] == "J1"
    assert old.store.data != {}  # no PUBACK yet: said again after another reboot
    again = Rig(store=old.store, fw="1.0")
    online(again)
    assert again.statuses() == [ROLLED_BACK]
    assert again.store.data == {}
    last = Rig(store=again.store, fw="1.0")
    online(last)
    last.run(10000)
    assert last.statuses() == [] and last.asks == [] and last.ota.idle() == (None,)


def test_power_cut_before_the_boot_slot_changes():
    r = Rig()
    online(r)
    r.job()
    r.download()
    assert r.store.data["state"] == "activating"
    b = Rig(store=r.store, fw="1.0")  # the same image boots again
    online(b)
    b.run(10000)
    assert b.statuses() == [] and b.store.data == {} and b.ota.state == IDLE
    # The boot's otafetch (the caller's) lets the cloud hand the job out again.
    assert b.ota.idle() == (None,)


def test_power_cut_after_the_slot_changed_but_before_the_second_save():
    r = Rig()
    online(r)
    r.job()
    r.download()  # "activating" saved; the driver switched the slot; power lost
    b = Rig(store=r.store, fw="2.0")
    assert b.ota.state == VERIFYING
    online(b)
    assert b.take_acts() == [("mark_valid",)] and b.statuses() == [VERIFIED]


def test_power_cut_before_the_reboot_action():
    r = Rig()
    online(r)
    r.job()
    r.download()
    r.ota.activated(r.now)
    assert r.store.data["state"] == "rebooting-into-new"
    b = Rig(store=r.store, fw="2.0")  # the power cut was the reboot
    online(b)
    assert b.statuses() == [VERIFIED]


def test_power_cut_between_saving_verified_and_marking_valid():
    r = Rig()
    to_reboot(r)
    b = Rig(store=r.store, fw="2.0")
    b.ack = False
    b.ota.online(b.now)  # "verified" saved; the mark_valid action never ran
    assert b.store.data["state"] == "verified" and b.store.data["old"] == "1.0"
    old = Rig(store=b.store, fw="1.0")  # an unconfirmed image is rolled back by any reset
    online(old)
    assert old.statuses() == [ROLLED_BACK]


def test_power_cut_after_marking_valid_before_the_puback():
    r = Rig()
    to_reboot(r)
    b = Rig(store=r.store, fw="2.0")
    b.ack = False
    online(b)
    assert b.take_acts() == [("mark_valid",)]
    c = Rig(store=b.store, fw="2.0")
    assert c.ota.state == IDLE  # confirmed: no 90 s window any more
    c.run(120000)
    # Confirmed again at once (harmless for an image; an app bundle left on
    # trial by a cut before its confirm would otherwise be reverted later).
    assert c.take_acts() == [("mark_valid",)]
    c.run(120000)
    assert c.take_acts() == []
    online(c)
    assert c.statuses() == [VERIFIED] and c.store.data == {}
    assert c.take_acts() == []


def test_the_verify_window_is_configurable():
    r = Rig()
    to_reboot(r)
    b = Rig(store=r.store, fw="2.0", verify=20)
    b.run(19000)
    assert b.take_acts() == []
    b.run(1000)
    assert b.take_acts() == [("rollback",)]


def test_a_stored_state_that_makes_no_sense_is_forgotten():
    for data in ({"job": 5, "state": "activating", "old": "1"}, {"job": "J", "state": "what", "old": "1"},
                 {"job": "J", "state": "verified"}, {"job": "x" * 80, "state": "verified", "old": "1"}):
        s = MemStore(data)
        r = Rig(store=s, fw="2.0")
        online(r)
        r.run(100000)
        assert r.statuses() == [] and r.take_acts() == [] and s.data == {}, data
    s = MemStore({"job": "J", "state": "verified", "old": "1.0", "tries": "many"})
    r = Rig(store=s, fw="2.0")
    online(r)
    assert r.statuses() == [VERIFIED]


def test_next_deadline():
    r = Rig()
    assert r.ota.next_deadline(r.now) is None
    online(r)
    assert r.ota.next_deadline(r.now) is None
    r.ota.message(JOB, r.now)
    assert r.ota.next_deadline(r.now) == r.now
    for _ in range(3):
        r.step()
        r.ota.finished(False, "x", r.now)
    assert r.ota.next_deadline(r.now) == r.now + 300000
    r.run(300000)
    assert r.ota.next_deadline(r.now) is None and r.fetch_times() == [r.now]


def test_with_a_real_session_as_the_link_will_wire_it():
    # What link.py does: otaurl messages and PUBACKs from the Session go to
    # the Ota; take() is published on the ingest topic, its pid to sent().
    import sys
    from rainmaker import mqtt, topics
    from rainmaker.session import Session, EV_MESSAGE, EV_PUBACK

    ses = Session("N1", 120)
    ses.connect(0)
    ses.receive(bytes([0x20, 2, 0, 0]), 0)
    asks = []
    ota = Ota("N1", "1.0", MemStore(), 0, asks.append)
    ota.online(0)
    assert ota.tick(5000, T0) == () and ota.take(5000, 100) is None and asks == []
    events, out = ses.receive(bytes(mqtt.publish(ota.topic, JOB, 1, 9)), 71000)
    assert out == mqtt.puback(9) and events[0][0] == EV_MESSAGE and events[0][1] == ota.topic
    ota.message(events[0][2], 71000)
    assert asks == [None]  # the caller's otafetch is answered
    assert ota.tick(71000, T0 + 71) == [("download", "https://ota.example/fw.bin", 100000, None, 0)]
    assert "rainmaker.otajob" not in sys.modules  # the checks do not stay in RAM
    suffix, payload = ota.take(71000, 100)
    pid, pkt = ses.publish(topics.pub("N1", suffix, True), payload, 1, 71000)
    assert b"$aws/rules/esp_node_otastatus/node/N1/otastatus" in pkt
    ota.sent(pid, 71000)
    events, _ = ses.receive(mqtt.puback(pid), 72000)
    assert events == [(EV_PUBACK, pid)]
    ota.puback(pid, 72000)


def test_the_running_slot_tells_the_images_apart_when_the_version_does_not():
    # An app whose fw_version string lives on the filesystem keeps it across
    # a firmware update: the driver then names the image by its app slot.
    r = Rig(running="ota_0")
    to_reboot(r)
    assert r.store.data["old"] == "ota_0"
    b = Rig(store=r.store, running="ota_1")  # same fw_version "1.0"
    assert b.ota.state == VERIFYING
    online(b)
    assert b.statuses() == [VERIFIED]
    r = Rig(running="ota_1")
    to_reboot(r)
    back = Rig(store=r.store, running="ota_1")  # rolled back into the slot it left
    online(back)
    assert back.statuses() == [ROLLED_BACK]


# -- idle: when the driver may drop the job logic (and its code) --------------------


def test_idle_from_the_start_without_a_stored_state():
    # Nothing to do before the first connect either: the boot's otafetch is
    # the caller's, so a driver may drop this code at once.
    r = Rig()
    assert r.ota.idle() == (None,)
    online(r)
    r.run(3600000, 10000)
    assert r.ota.idle() == (None,) and r.asks == []


def test_an_otafetch_asked_for_does_not_keep_it_busy():
    # Once asked for, the otafetch is the caller's, PUBACK or not: the driver
    # may drop this code while it is sent and sent again.
    r = Rig(utc=None)
    online(r)
    r.ack = False  # no PUBACK for anything
    r.job(_timed('{"download_window":{"start":60,"end":120}}'))  # no time yet: a re-fetch in 30 s
    assert r.ota.idle() is None  # the re-fetch is a timer
    r.run(30000)
    assert r.fetch_times() == [r.now] and r.ota.idle() == ("J1",)


def test_not_idle_while_a_job_runs_or_a_status_waits():
    r = Rig()
    online(r)
    r.run(5000)
    assert r.ota.idle() == (None,)
    r.ota.message(JOB, r.now)
    assert r.ota.idle() is None  # WAITING
    r.step()
    assert r.take_acts()[0][0] == "download" and r.ota.idle() is None  # RUNNING
    r.spare = 0
    r.ota.checked(r.now, "Chip mismatch")  # rejected: the job ends, its status waits for the link
    assert r.ota.state == IDLE and r.ota.idle() is None
    r.spare = 100
    r.flush()
    assert r.statuses()[-1] == ("rejected", "Chip mismatch") and r.ota.idle() == ("J1",)


def test_a_failed_job_stays_busy_until_its_refetch_is_asked_for():
    r = Rig()
    online(r)
    r.run(5000)
    r.job()
    for _ in range(3):
        r.take_acts()
        r.ota.finished(False, "HTTP 404", r.now)
        r.step()
    assert r.statuses()[-1][1].startswith("OTA Attempt 3/3 failed") and r.ota.state == IDLE
    r.run(300000 - 1000)
    assert r.ota.idle() is None  # the re-fetch 5 min later is a timer
    r.run(1000)
    assert len(r.fetch_times()) == 1 and r.ota.idle() == ("J1",)


def test_a_stored_state_keeps_it_busy_until_the_final_status_is_acknowledged():
    r = Rig()
    to_reboot(r)
    assert r.ota.idle() is None  # REBOOTING
    b = Rig(store=r.store, fw="2.0")
    assert b.ota.state == VERIFYING and b.ota.idle() is None
    b.ack = False
    online(b)
    assert b.statuses() == [VERIFIED] and b.ota.idle() is None  # the store is cleared on the PUBACK
    b.ota.puback(b.pid, b.now)
    assert b.store.data == {} and b.ota.idle() == (None,)  # the boot's otafetch is the caller's
    b.ack = True
    old = Rig(store=MemStore({"job": "J2", "state": "rebooting-into-new", "old": "1.0"}), fw="1.0")
    online(old)  # rolled back: "rejected" is sent and acknowledged
    old.run(5000)
    assert old.statuses() == [ROLLED_BACK] and old.ota.idle() == (None,)
    v = Rig(store=MemStore({"job": "J3", "state": "verified", "old": "1.0"}), fw="2.0")
    assert v.ota.idle() is None and v.take_acts() == []
    v.step()
    assert v.take_acts() == [("mark_valid",)]


def test_never_idle_with_a_periodic_fetch():
    r = Rig(period=1)
    assert r.ota.idle() is None
    online(r)
    r.run(3600000 + 5000, 10000)
    assert len(r.fetch_times()) == 1 and r.ota.idle() is None


def test_a_carried_ota_asks_for_no_otafetch_and_knows_the_last_job():
    r = Rig()
    online(r)
    r.run(5000)
    r.job(b'{"ota_job_id":"J1","url":"http://h"}')
    carry = r.ota.idle()
    assert carry == ("J1",)
    c = Rig(store=r.store, carry=carry)  # the driver dropped r and loaded it again for a message
    assert c.ota.idle() == carry  # nothing to do until then
    c.job(b'{"url":"https://h"}')  # no job id: answered on the last one, as before the drop
    assert [(d["ota_job_id"], d["status"]) for d in c.status_docs()] == [("J1", "failed")]
    online(c)  # later reconnects: still no otafetch
    c.run(60000)
    assert c.fetch_times() == [] and c.asks == [None]  # withdrawn by the message
    c.job()
    assert c.take_acts()[0][0] == "download"
