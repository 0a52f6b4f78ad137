# One OTA download attempt (docs/ota.md): an HTTPS GET, resumed with a Range
# request, whose body is a firmware image (written into the other app slot
# as it arrives) or an app bundle (staged as files).
#
# The decisions are the sans-IO modules' (http, image, bundle, ota); this
# file moves the bytes. Memory is fixed: one read buffer, and the image's
# 288-byte head (no sector is buffered: see Image).
# Every wait is bounded: a server that stops sending for _IDLE ms ends the
# attempt, and the job logic (ota.py) decides about the next one.
import asyncio
import errno
import hashlib
import time
from micropython import const
from . import http, log

_BLOCK = const(4096)
# Bytes per read. Flash writes and erases set the pace on a board, not the
# number of reads, and a larger block may find no room when the heap is
# fragmented (at the node's smallest heap a 4 KB one did not).
_READ = const(1024)
_CONNECT = const(20000)  # ms for TCP + TLS + the response head
_REDIRECTS = const(5)
_BURST = const(32)  # reads taken straight from TLS between two passes of the event loop
_HEAD = const(288)  # bytes of an image needed to check it (image.HEAD)
_ALIGN = const(16)  # an encrypted flash is written in whole 16-byte blocks
_PIECE = const(256)  # bytes read back per call when a resume re-hashes the kept sectors
_PER = const(16)  # _PIECE reads per sector


class Refused(Exception):
    """The update itself is refused (wrong chip, same version...): no retry."""


class Failed(Exception):
    """This attempt failed (network, server, a corrupt download): it may be retried."""


def _hex(d):
    return "".join("%02x" % b for b in d)


def running():
    """(label of the running app slot or None, its image head or None)."""
    try:
        import esp32

        p = esp32.Partition(esp32.Partition.RUNNING)  # pyright: ignore[reportArgumentType]
        head = bytearray(_HEAD)
        p.readblocks(0, head)  # reads len(head) bytes: no sector buffer for 288
        return p.info()[4], head
    except Exception:  # a port or a board without partitions
        return None, None


def next_slot():
    """The app slot an image update goes to, or None (no OTA partition table)."""
    try:
        import esp32

        return esp32.Partition(esp32.Partition.RUNNING).get_next_update()  # pyright: ignore[reportArgumentType]
    except Exception:
        return None


class Image:
    """A firmware image, written to the next app slot as it arrives.

    No sector is buffered in RAM: each flash sector is erased when the image
    reaches it and the bytes go straight to their place (writeblocks with an
    offset, which does not erase). Only the image head (288 bytes) is held,
    until it is checked, so a refused image leaves the slot untouched; after
    that the same buffer carries the last bytes of a read that do not fill a
    16-byte block, the unit an encrypted flash is written in."""

    def __init__(self, slot, check):
        self.slot = slot
        self.check = check  # fn(head) -> None, raises Refused
        self.buf = bytearray(_HEAD)
        self.n = 0  # bytes held in buf
        self.at = 0  # bytes on flash
        self.size = 0  # bytes of the image received
        self.md5 = hashlib.md5()
        self.checked = False

    def resume(self, offset):
        """Continue after the first `offset` bytes (a sector multiple) already on flash."""
        self.at = self.size = offset
        self.n = 0
        self.md5 = hashlib.md5()
        b = memoryview(self.buf)[:_PIECE]
        for i in range(offset // _PIECE):  # the hash of what is kept, read back from flash
            self.slot.readblocks(i // _PER, b, i % _PER * _PIECE)
            self.md5.update(b)
        self.checked = offset > 0

    def write(self, mv):
        self.size += len(mv)
        self.md5.update(mv)
        b = self.buf
        if not self.checked:
            k = min(len(mv), _HEAD - self.n)
            b[self.n:self.n + k] = mv[:k]
            self.n += k
            if self.n < _HEAD:
                return
            self.check(b)
            self.checked = True
            self.n = 0
            self._put(b)  # 288 bytes: whole 16-byte blocks
            mv = mv[k:]
        if self.n:  # complete the block carried from the last write
            k = min(len(mv), _ALIGN - self.n)
            b[self.n:self.n + k] = mv[:k]
            self.n += k
            if self.n < _ALIGN:
                return
            self.n = 0
            self._put(memoryview(b)[:_ALIGN])
            mv = mv[k:]
        n = len(mv)
        k = n - n % _ALIGN
        if k:
            self._put(mv[:k] if k < n else mv)
        if k < n:
            b[:n - k] = mv[k:]
            self.n = n - k

    def _put(self, mv):
        # Write mv at self.at, erasing each sector as the image enters it.
        s = self.slot
        at = self.at
        n = len(mv)
        i = 0
        while i < n:
            o = at % _BLOCK
            if not o:
                s.ioctl(6, at // _BLOCK)  # erase: a write can only clear bits
            k = min(n - i, _BLOCK - o)
            s.writeblocks(at // _BLOCK, mv[i:i + k] if k < n else mv, o)
            at += k
            i += k
        self.at = at

    def written(self):
        return self.size

    def end(self, md5):
        if not self.checked:
            raise Failed("image too short to be an app image (%d bytes)" % self.n)
        if self.n:  # the image's last bytes, padded to a block with erased flash's 0xFF
            b = self.buf
            for i in range(self.n, _ALIGN):
                b[i] = 0xFF
            self.n = 0
            self._put(memoryview(b)[:_ALIGN])
        if md5:
            got = _hex(self.md5.digest())
            if got != md5.lower():
                raise Failed("MD5 mismatch: the file has %s, the job says %s" % (got, md5))

    def activate(self):
        try:
            self.slot.set_boot()  # the bootloader code checks the whole image's checksum and SHA-256 here
        except OSError as e:
            raise Failed("the new image does not validate (set_boot: %s)" % e)


class Bundle:
    """An app bundle: files verified and staged; boot.py switches them in."""

    def __init__(self, version):
        from .bundle import Reader
        from .stage import Stage

        self.version = version  # of the app in place
        self.stage = Stage()
        # The manifest's entries go to a file on flash: ~80 bytes of heap a
        # file as bundle.Files, more than a node at its smallest heap has.
        self.reader = Reader(files=self.stage.entries())
        self.nbytes = 0
        self.md5 = hashlib.md5()
        self.checked = False

    def resume(self, offset):
        if offset:
            raise Failed("internal: a bundle restarts from its first byte")

    def write(self, mv):
        from .bundle import MANIFEST, FILE, DATA, DONE

        self.nbytes += len(mv)
        self.md5.update(mv)
        st = self.stage
        for ev, v in self.reader.feed(mv):
            if ev == DATA:
                st.write(v)
            elif ev == FILE:
                st.open(v)
            elif ev == DONE:
                st.close()
            elif ev == MANIFEST:
                from .node import unload

                unload("bundlemf")  # the manifest's decoder: its code is not needed again
                assert isinstance(v, dict)
                if v["version"] == self.version:
                    raise Refused("Same version received")
                st.begin(v)
                self.checked = True

    def written(self):
        return self.nbytes

    def end(self, md5):
        from .bundle import END

        ended = False
        for ev, _ in self.reader.feed(b""):
            ended = ended or ev == END
        if not ended and not self.reader.done():
            raise Failed("bundle truncated")
        if md5:
            got = _hex(self.md5.digest())
            if got != md5.lower():
                raise Failed("MD5 mismatch: the file has %s, the job says %s" % (got, md5))

    def activate(self, job=None):
        # The plan only: boot.py switches the files in when the board restarts
        # into the update, as it finishes a switch a power cut interrupted.
        # Importing boot here compiled it from source in this heap, and then
        # read the whole plan into it: at the smallest heap a bundle
        # downloads in, neither fit. (The running app keeps its files until
        # the reboot, too.)
        self.stage.commit(job)

    def abort(self):
        # Refused, failed or dropped: the staged files and the file list go
        # (download() calls this, and the caller again when end() fails).
        self.stage.abort()


async def _open(host, port, ctx, until):
    from . import dial

    held = []
    try:
        s = await dial.tcp(host, port, lambda: time.ticks_diff(time.ticks_ms(), until) >= 0, held.append)
        t = ctx.wrap_socket(s, server_hostname=host, do_handshake_on_connect=False)
        t.setblocking(False)
        return t
    except OSError as e:
        for s in held:
            s.close()
        code = e.args[0] if e.args else None
        if code == errno.ECONNREFUSED:
            raise Failed("nothing accepts connections at %s:%d" % (host, port))
        if code == errno.ETIMEDOUT:
            raise Failed("no connection to %s:%d within %d s" % (host, port, _CONNECT // 1000))
        raise
    except BaseException:
        for s in held:
            s.close()
        raise


async def download(url, start, sink_for, ctx, progress, idle=30000):
    """One attempt. sink_for(first_bytes, start) -> a sink (Image or Bundle) or
    raises Refused; progress(sink) is called after every read; idle: ms the
    server may send nothing. Returns the sink with the whole body written
    (its end() not yet called); a sink the attempt fails with is aborted
    (if it has abort()): a bundle's staged files and file list go."""
    buf = bytearray(_READ)
    mv = memoryview(buf)
    for hop in range(_REDIRECTS + 1):
        try:
            host, port, path = http.url(url)
        except ValueError as e:
            raise Failed(str(e))
        until = time.ticks_add(time.ticks_ms(), _CONNECT)
        s = await _open(host, port, ctx, until)
        sink = None
        whole = False
        try:
            w = asyncio.StreamWriter(s)
            w.write(http.request(host, path, start, port))
            await asyncio.wait_for_ms(w.drain(), _CONNECT)
            resp = http.Response()
            first = bytearray()
            location = None
            burst = 0
            while True:
                # What TLS already holds is taken without a trip through the
                # event loop: each wait there polls every socket of the board
                # (the MQTT one too), which costs more than the read itself.
                # Every _BURST reads it waits there anyway, so MQTT, the keeper
                # and the watchdog get their turn.
                n = s.readinto(buf) if burst < _BURST else None  # non-blocking: None when nothing waits
                if n is None:
                    burst = 0
                    try:
                        n = await asyncio.wait_for_ms(w.readinto(buf), idle)  # pyright: ignore[reportAttributeAccessIssue]
                    except asyncio.TimeoutError:
                        raise Failed("the server sent nothing for %d s" % (idle // 1000))
                else:
                    burst += 1
                data = mv[:n] if n else b""
                for ev, v in resp.feed(data):
                    if ev == http.HEAD:
                        assert v is resp
                        location = _head(resp, start)
                        if resp.status == 200:
                            start = 0  # the server ignored the Range: from the start
                    elif ev == http.BODY and location is None:
                        if sink is None:
                            # The sink is chosen by the body's first 4 bytes. They
                            # are copied only when a read brings fewer than that.
                            if first or len(v) < 4:  # pyright: ignore[reportArgumentType]
                                k = 4 - len(first)
                                first.extend(v[:k])  # pyright: ignore[reportOptionalSubscript, reportIndexIssue]
                                v = v[k:]  # pyright: ignore[reportOptionalSubscript, reportIndexIssue]
                                if len(first) < 4 and not resp.done():
                                    continue
                                sink = sink_for(first, start)
                                sink.resume(start)
                                sink.write(memoryview(first))
                            else:
                                sink = sink_for(v, start)
                                sink.resume(start)
                        if len(v):  # pyright: ignore[reportArgumentType]
                            sink.write(v)  # (an empty write would tell a bundle it has ended)
                        progress(sink)
                if resp.done():
                    break
                if not n:
                    raise Failed("the server closed the connection early")
            if location is not None:
                url = location if location.startswith("https://") else "https://%s:%d%s" % (host, port, location)
                log.info("ota", "redirected to %s" % url)
                continue
            if sink is None:
                raise Failed("the file is too short to be an update (%d bytes)" % len(first) if first
                             else "the server sent an empty file")
            whole = True
            return sink
        except http.HTTPError as e:
            raise Failed("bad HTTP response: %s" % e)
        finally:
            s.close()
            if not whole and sink is not None and hasattr(sink, "abort"):
                try:
                    sink.abort()
                except Exception:
                    pass  # the failure that ended the attempt is the one to report
    raise Failed("more than %d redirects" % _REDIRECTS)


def _head(r, start):
    # The response's verdict: a redirect's target, None to read the body, or a failure.
    if r.status in (301, 302, 303, 307, 308):
        if not r.location:
            raise Failed("redirect %d without a Location" % r.status)
        return r.location
    if r.status == 206:
        if not r.range or r.range[0] != start:
            raise Failed("the server resumed at the wrong place (%s for byte %d)" % (r.range, start))
        return None
    if r.status == 200:
        return None
    if r.status == 404:
        raise Failed("HTTP 404: no file at that URL (expired link?)")
    raise Failed("HTTP %d from the server" % r.status)
