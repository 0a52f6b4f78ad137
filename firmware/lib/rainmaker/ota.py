# Firmware updates pushed by the RainMaker cloud on MQTT topics
# (docs/protocol.md#ota-jobs), without I/O.
#
# The cloud hands out an OTA job on node/<id>/otaurl, either by itself or in
# answer to an otafetch request; the node reports its progress on otastatus
# with the cloud's five statuses. Everything here is decided from events and
# the time passed in: `now` in ms ticks (wrapping, see session.diff) and
# `utc` in Unix seconds (None or < 2019 while the clock is not set). The
# driver moves the bytes and does what the actions say:
#
#   events in    online, message, checked, progress, finished, activated,
#                puback, tick
#   publishes    take() -> ("otastatus", payload); sent(pid)
#   otafetch     fetch(now): one is wanted; fetch(None): an otaurl came
#   actions      tick() -> [("download", url, size, md5, offset), ("activate",),
#                           ("reboot",), ("mark_valid",), ("rollback",)]
#
# The otafetch itself (the boot's, 5 s after the node is online, and every
# one asked for here) is sent by the agent, which is resident: it waits for
# the PUBACK and sends again without one, with or without this code loaded.
# Here is only when one is wanted: after a failed job, when a delayed job's
# wait is over, and every `period` hours.
#
# MicroPython cannot ask the bootloader whether the running image still
# waits to be confirmed, so that is read from a small JSON file (store) kept
# across the reboot: {"job", "state", "old", "tries"}. "old" names the image
# that did the download (`running`: best the label of the running app slot,
# else the firmware version): running any other image means the new one
# booted; running "old" again means it was rolled back.
import json
from micropython import const
from .session import diff
from .node import unload
from . import log, topics

_RETRY_DELAY = const(300000)  # ms before fetching again after 3 failed attempts
_TRIES = const(3)  # download attempts per job
_REBOOT_DELAY = const(10000)  # ms between "Rebooting into new firmware" and the reboot
_VERIFY_WAIT = const(90)  # s the new image has to reach the broker (SDK default; "ota_verify")
_MAX_WAIT = const(604800)  # s: a re-fetch further away is made after this (ticks wrap)
_SEG = const(86400000)  # ms: longest single wait on the tick clock (it wraps at 2^30)
_MAX_TEXT = const(120)  # chars of a reason passed in by the driver
_BLOCK = const(4096)  # flash sector: a resumed download restarts at a sector
_QUEUE = const(16)  # statuses waiting for the link
_KEEP = const(3)  # publish tokens a progress report never spends

# job states
IDLE = const(0)
WAITING = const(1)  # a job arrived: its time window is checked at the next tick
RUNNING = const(2)  # an attempt is downloading
ACTIVATING = const(3)  # image complete and stored: the driver switches the boot slot
REBOOTING = const(4)  # the reboot is due
VERIFYING = const(5)  # first boot of the new image: waiting for the broker

# queue entry kinds
_PLAIN = const(0)
_PROGRESS = const(1)  # merged with the next report; skipped when the budget is low
_FINAL = const(2)  # after a reboot: the store is cleared on its PUBACK

NO_SLOT = "No OTA partition on this board: flash an -OTA build"
_EMPTY = ()


class Ota:
    def __init__(self, node_id, fw_version, store, now, fetch, slots=True, period=0, every=10, running=None,
                 verify=_VERIFY_WAIT, carry=None):
        """fetch: fetch(now) when an otafetch is wanted, fetch(None) when an
        otaurl came (the answer it asks for: none is wanted any more). The
        caller sends it (the boot's too) and sends it again until its PUBACK.
        running: names the running image, e.g. its app slot ("ota_0"); by
        default fw_version, which must then change with every image.
        slots: False on a firmware without a second app partition.
        period: hours between periodic otafetch requests (0: none), counted
        from the first Ota of the boot.
        every: percent step of the progress reports (0: none).
        verify: s a new image (or app) has to reach the broker before it is
        rolled back.
        carry: what idle() returned when the driver dropped the previous Ota
        of this boot (it was idle): this one goes on from there.
        """
        self.fetch = fetch
        self.running = running or fw_version
        self.store = store
        self.slots = slots
        self.every = every
        self.verify = verify * 1000  # ms
        self.tz = 0  # s east of UTC: the job's download window is in local time
        self.topic = topics.sub(node_id, "otaurl")
        self.state = IDLE
        self.job = None
        self.attempt = 0
        self._job = None  # (url, size, md5, metadata) of a WAITING or RUNNING job
        self._written = 0
        self._pct = 0
        self._checked = False
        self._last = None  # last job id received: a report without one uses it, once
        self._q = []  # [job, status, info, kind]
        self._acts = []
        self._taken = None  # kind of what take() gave last, for sent()
        self._final_pid = 0
        self._fetch = None  # [tick, ms left]: the otafetch wanted next
        self._period = period * 3600000
        self._auto = None  # [tick, ms left]: the next periodic otafetch
        self._at = None  # reboot or rollback tick
        self._utc = None
        self._utc_at = 0
        self._old = None  # after a reboot: the image that downloaded the running one
        if carry:
            self._last = carry[0]
        elif period:  # (a carried Ota was idle: it had none)
            self._auto = _due(now, self._period)
        self._boot(now)

    # -- after a reboot ---------------------------------------------------------

    def _boot(self, now):
        d = self.store.load()
        if not d:
            return
        job = d.get("job")
        st = d.get("state")
        old = d.get("old")
        if (not isinstance(job, str) or not 0 < len(job) <= 63 or not isinstance(old, str)
                or st not in ("activating", "rebooting-into-new", "verified")):
            log.warn("ota", "stored OTA state not understood; forgotten")
            self.store.save({})
            return
        self.job = job
        self._old = old
        n = d.get("tries")
        self.attempt = n if type(n) is int and 0 < n <= _TRIES else 1
        if old != self.running:  # the new image is running
            if st == "verified":
                # Confirmed again: a power cut right after "verified" was
                # saved can come before the confirm. A firmware image is then
                # rolled back by the bootloader (not this branch), but an app
                # bundle stays on trial across resets, and boot.py would revert
                # it a few boots later, after "success" was reported.
                self._acts.append(("mark_valid",))
                self._put(job, "success", "OTA Upgrade finished and verified successfully", _FINAL)
            else:
                self.state = VERIFYING
                self._at = now + self.verify
                log.info("ota", "new firmware %s: waiting up to %d s for the broker" % (self.running, self.verify // 1000))
        elif st == "activating":
            # Power was lost before the boot slot was switched: nothing ran.
            # The cloud still has the job in progress and hands it out again.
            self.store.save({})
            self.job = None
        else:
            log.warn("ota", "firmware %s was rolled back to %s" % (job, old))
            self._put(job, "rejected", "Firmware rolled back", _FINAL)

    # -- events ---------------------------------------------------------------

    def online(self, now):
        """The link is up and subscribed (every connect)."""
        if self.state == VERIFYING:
            # Saved before the driver marks the image valid: a reset in
            # between rolls the unconfirmed image back, and "verified" with
            # the old image running then reads as a rollback, which it is.
            self.store.save({"job": self.job, "state": "verified", "old": self._old, "tries": self.attempt})
            self._acts.append(("mark_valid",))
            self._put(self.job, "success", "OTA Upgrade finished and verified successfully", _FINAL)
            self.state = IDLE
            self._at = None
            # The boot's otafetch, which the caller sends 5 s after this
            # connect, asks for the next job.

    def message(self, payload, now):
        """An otaurl payload (bytes). Never raises."""
        if isinstance(payload, str):
            payload = payload.encode()
        if self.state != IDLE:
            log.warn("ota", "OTA job ignored: job %s is still in progress" % self.job)
            return
        self.fetch(None)  # the answer an otafetch asks for (or a job pushed before it)
        from . import otajob  # the checks are needed only when a job arrives

        job, err, j = otajob.parse(payload)
        unload("otajob")
        if job is None:
            return self._abort(err)
        self._last = job
        if j is None:
            return self._put(job, "failed", err)
        log.info("ota", "job %s: %s (%d bytes)" % (job, j[0], j[1]))
        self.job = job
        self._job = j
        self.attempt = 0
        self._written = 0
        self.state = WAITING

    def checked(self, now, reason=None):
        """The image header was checked: None if it may be installed, else why not."""
        if self.state != RUNNING:
            return
        if reason:
            self._put(self.job, "rejected", _text(reason))
            self._end()
        elif not self._checked:
            self._checked = True
            self._put(self.job, "in-progress", "Downloading Firmware Image")

    def progress(self, written, now):
        """written: bytes of the image on flash so far (from its start)."""
        if self.state != RUNNING:
            return
        self._written = written
        if not self._checked:
            self.checked(now)
        size = self._job[1] if self._job else 0
        if size and self.every:
            pct = written * 100 // size
            step = pct - pct % self.every
            if 0 < step < 100 and step > self._pct:
                self._pct = step
                self._put(self.job, "in-progress", "Downloaded %d%% Firmware Image" % step, _PROGRESS)

    def finished(self, ok, reason, now):
        """The attempt ended: ok when the whole image is on flash and checks out."""
        if self.state != RUNNING:
            return
        if not ok:
            return self._fail(reason, now)
        if not self._checked:
            self.checked(now)
        self._put(self.job, "in-progress", "Firmware Image download complete")
        # Written before the boot slot changes: the image that boots next
        # must find its job, or it would never be confirmed.
        if not self.store.save({"job": self.job, "state": "activating", "old": self.running, "tries": self.attempt}):
            return self._fail("OTA state could not be saved to flash", now)
        self.state = ACTIVATING
        self._acts.append(("activate",))

    def activated(self, now, error=None):
        """The driver switched the boot slot (error: why it could not)."""
        if self.state != ACTIVATING:
            return
        if error:
            self.store.save({})
            self.state = RUNNING
            self._written = 0  # the image is whole but unusable: start again
            return self._fail(error, now)
        self.store.save({"job": self.job, "state": "rebooting-into-new", "old": self.running, "tries": self.attempt})
        n = self.attempt
        self._put(self.job, "in-progress", "Rebooting into new firmware (after %d HTTPS attempt%s)" % (n, "" if n == 1 else "s"))
        self.state = REBOOTING
        self._at = now + _REBOOT_DELAY

    def puback(self, pid, now):
        if pid and pid == self._final_pid:
            self._final_pid = 0
            self.store.save({})
            if self.state == IDLE:
                self.job = None

    def tick(self, now, utc):
        """Timers. Returns the actions to take now (a list, often empty)."""
        if utc is not None:
            self._utc = utc
            self._utc_at = now
        if self.state == WAITING:
            self._start(now, utc)
        if self._fetch and _ripe(self._fetch, now):
            self._fetch = None
            self._ask(now)
        if self._auto and _ripe(self._auto, now):
            self._auto = _due(now, self._period)
            self._ask(now)
        if self._at is not None and diff(now, self._at) >= 0:
            self._at = None
            if self.state == REBOOTING:
                self._acts.append(("reboot",))
            elif self.state == VERIFYING:
                log.error("ota", "new firmware did not reach the broker within %d s: rolling back" % (self.verify // 1000))
                self._acts.append(("rollback",))
        if not self._acts:
            return _EMPTY
        a = self._acts
        self._acts = []
        return a

    def next_deadline(self, now):
        """Tick by which tick() has something to do, or None."""
        if self._acts or self.state == WAITING:
            return now
        t = None
        for c in (self._fetch[0] if self._fetch else None, self._auto[0] if self._auto else None, self._at):
            if c is not None and (t is None or diff(c, t) < 0):
                t = c
        return t

    def resume_offset(self):
        """Where the next attempt starts: the last whole sector written."""
        return self._written - self._written % _BLOCK

    # -- publishing -------------------------------------------------------------

    def take(self, now, spare):
        """Next (suffix, payload) to publish, or None. spare: publish tokens left.

        Statuses other than progress go out whatever the budget: they are few
        per job and the cloud's view of the job depends on them.
        """
        q = self._q
        if q and (q[0][3] != _PROGRESS or spare > _KEEP):
            e = q[0]  # popped by sent(): a publish that finds no memory loses nothing
            self._taken = e[3]
            ts = 0
            if self._utc is not None:
                ts = self._utc + diff(now, self._utc_at) // 1000
            return "otastatus", '{"ota_job_id":%s,"status":"%s","additional_info":%s,"ts":%d}' % (
                json.dumps(e[0]), e[1], json.dumps(e[2]), ts)
        return None

    def sent(self, pid, now):
        """pid of the publish take() returned last (0: it could not be sent)."""
        kind = self._taken
        self._taken = None
        if kind is not None:
            self._q.pop(0)
            if kind == _FINAL:
                self._final_pid = pid

    def pending(self):
        return len(self._q)

    def idle(self):
        """None while there is work: a job, a stored state to finish, a status
        to send, a timer (a re-fetch, the periodic fetch, a reboot or a
        rollback). Otherwise a tuple for carry=: the driver may drop this Ota
        (and its code) until the next otaurl, as nothing happens here until
        then, on reconnects either. (An otafetch asked for is the caller's:
        it is sent and sent again without this code.)"""
        if (self.state != IDLE or self._q or self._acts or self._fetch or self._auto or self._at is not None
                or self._final_pid):
            return None
        return (self._last,)

    # -- inside ---------------------------------------------------------------

    def _put(self, job, status, info, kind=_PLAIN):
        q = self._q
        # A progress report not yet sent is stale once anything follows it.
        if q and q[-1][3] == _PROGRESS:
            q.pop()
        if len(q) >= _QUEUE:
            log.warn("ota", "status %s dropped: %d waiting for the broker" % (q[0][2], len(q)))
            q.pop(0)
        q.append((job, status, info, kind))
        log.info("ota", "%s %s: %s" % (job, status, info))

    def _abort(self, info):
        # As the SDK: a payload without a usable job id is answered on the last
        # job id received, once; with none, only logged.
        job = self._last
        self._last = None
        if job:
            self._put(job, "failed", info)
        else:
            log.warn("ota", "otaurl ignored: %s" % info)

    def _start(self, now, utc):
        j = self._job
        assert j is not None
        if j[3] is not None:
            from . import otajob

            r = otajob.window(j[3], utc, self.tz)
            unload("otajob")
            if r:
                self._put(self.job, r[0], r[1])
                self._end()
                if r[2] is not None:
                    self._fetch_in(now, min(r[2], _MAX_WAIT) * 1000)
                return
        if not self.slots:
            self._put(self.job, "rejected", NO_SLOT)
            return self._end()
        self.state = RUNNING
        self._attempt()

    def _attempt(self):
        self.attempt += 1
        self._pct = 0
        self._checked = False
        self._put(self.job, "in-progress", "Starting OTA Upgrade (HTTPS attempt %d/%d)" % (self.attempt, _TRIES))
        j = self._job
        assert j is not None
        self._acts.append(("download", j[0], j[1], j[2], self.resume_offset()))

    def _fail(self, reason, now):
        j = self._job
        if j and j[1] and self._written >= j[1]:
            self._written = 0  # all of it arrived and it is wrong: resuming would keep it
        self._put(self.job, "failed", "OTA Attempt %d/%d failed: %s" % (self.attempt, _TRIES, _text(reason)))
        if self.attempt < _TRIES:
            return self._attempt()
        self._end()
        self._fetch_in(now, _RETRY_DELAY)

    def _end(self):
        self.state = IDLE
        self._job = None

    def _fetch_in(self, now, ms):
        f = self._fetch
        if f is None or ms < max(0, diff(f[0], now)) + f[1]:
            self._fetch = _due(now, ms)

    def _ask(self, now):
        # An otafetch is wanted now; not while a job runs (its answer would be
        # ignored).
        if self.state == IDLE:
            self.fetch(now)


def _text(reason):
    s = str(reason) if reason else "unknown error"
    return s if len(s) <= _MAX_TEXT else s[:_MAX_TEXT]


def _due(now, ms):
    # A wait longer than _SEG runs in segments: ticks wrap every 12.4 days.
    seg = min(ms, _SEG)
    return [now + seg, ms - seg]


def _ripe(t, now):
    if diff(now, t[0]) < 0:
        return False
    if t[1] > 0:
        seg = min(t[1], _SEG)
        t[0] = now + seg
        t[1] -= seg
        return False
    return True

