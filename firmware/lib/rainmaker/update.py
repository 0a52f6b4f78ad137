# The driver of OTA jobs: carries out what the job logic (ota.py) decides,
# with the download (fetch.py), the flash slot or the staged app bundle, and
# boot.py's switch, confirm and revert. Loaded by the agent at start when a job
# or an app's trial is to be finished, else for a job (an otaurl: the agent
# sends every otafetch itself, the job logic only asks for one), and dropped
# with the rest of the OTA code (close()) while it has nothing to do: the
# agent then keeps only a small otaurl handler, which loads it again.
import asyncio
import sys
import time
from micropython import const
from . import log
from .agent import utc
from .link import ONLINE
from .ota import Ota, NO_SLOT
from .store import Store

_TIME_VALID = const(1546300800)  # 2019-01-01 in Unix seconds
_WIFI_WAIT = const(120000)  # ms a failed attempt waits for Wi-Fi before the next one

OTA_STATE = "ota.json"
_CA = "certs/ca.der"  # the broker's CA (config.CA)
# Loaded only for OTA work: unloaded by close(). (boot: the module boot.py
# becomes when an update confirms or reverts an app.)
_CODE = ("update", "ota", "otajob", "fetch", "http", "bundle", "bundlemf", "image", "stage")


def _slot_label():
    try:
        import esp32

        return esp32.Partition(esp32.Partition.RUNNING).info()[4]  # pyright: ignore[reportArgumentType]
    except Exception:  # no partition API (a port without it)
        return "-"


class Updater:
    def __init__(self, agent, carry=None):
        """carry: what idle() returned when the agent dropped the previous one."""
        from .stage import app_version, forget
        from .node import unload

        self.agent = agent
        node = agent.node
        self.app = app_version()
        forget()  # the file list of a bundle download a power cut ended (none runs before this)
        unload("stage")  # loaded again only when a bundle arrives
        # What runs: the app slot and the app files. The job logic compares it
        # with what ran the download to tell a new image (or app) from a rollback.
        running = "%s:%s" % (_slot_label(), self.app)
        self.ota = Ota(node.node_id, node.fw_version, Store(OTA_STATE), time.ticks_ms(), agent.fetch, running=running,
                       verify=agent.cfg["ota_verify"], carry=carry)
        link = agent.link
        self.hook = self._online  # one bound method: close() removes this very object
        link.hooks.append(self.hook)
        link.sources.append(self.ota)
        link.on("otaurl", self.ota.message)
        self.task = None
        self.acts = []  # actions taken from the job logic, not yet carried out
        self.sink = None
        self.kind = None  # "image" or "bundle": what the current job's file turned out to be
        if link.state == ONLINE:
            # Loaded while connected (by an otaurl, the code having found no
            # memory at start): this connect counts, or a new image that came
            # online would be rolled back when its time to verify ran out.
            self._online(time.ticks_ms())

    def idle(self):
        """None while there is OTA work, else carry= for the next Updater."""
        if self.task is not None or self.acts or self.sink is not None:
            return None
        return self.ota.idle()

    def close(self, handler):
        """Unhook from the link, hand otaurl to handler and unload the OTA
        code. Nothing of it may stay referenced, or its bytecode stays too."""
        from .node import unload

        link = self.agent.link
        link.on("otaurl", handler)
        link.hooks.remove(self.hook)
        link.sources.remove(self.ota)
        for name in _CODE:
            unload(name)
        sys.modules.pop("boot", None)

    def utc(self):
        # The agent's clock (resident with it: this module is loaded only by
        # the agent), or None while it is not set.
        t = utc()
        return t if t >= _TIME_VALID else None

    def _online(self, now):
        # The new image (or app) is confirmed before its "success" leaves:
        # the link sends that status right after this hook.
        self.ota.online(now)
        for act in self.ota.tick(now, self.utc()):
            if act[0] == "mark_valid":
                self._mark_valid()
            else:
                self.acts.append(act)

    async def tick(self, now):
        utc = self.utc()
        z = sys.modules.get("rainmaker.tz")  # the Time service's zone, if the node has one
        if z is not None and utc is not None:
            self.ota.tz = z.current.offset(utc)  # download windows are in local time
        acts = self.acts
        acts.extend(self.ota.tick(now, utc))
        while acts:
            act = acts.pop(0)
            a = act[0]
            if a == "download":
                self.task = asyncio.create_task(self._download(act[1], act[2], act[3], act[4]))
            elif a == "activate":
                self._activate(now)
            elif a == "mark_valid":
                self._mark_valid()
            elif a == "reboot":
                await self.agent.reboot("OTA: rebooting into the new %s" % ("app" if self.kind == "bundle" else "firmware"))
            elif a == "rollback":
                try:
                    from .stage import settle

                    settle(False, "the new app did not reach the broker within %d s" % self.agent.cfg["ota_verify"])
                except Exception:
                    pass  # the restart still comes: boot.py reverts an app that never confirms (3 boots)
                await self.agent.reboot("OTA: rolling back")

    def _mark_valid(self):
        try:
            import esp32

            esp32.Partition.mark_app_valid_cancel_rollback()
        except Exception:
            pass  # not an OTA build, or nothing was pending
        from .stage import settle
        from .node import unload

        if settle(True):
            log.info("ota", "new app confirmed")
        unload("stage")

    def _activate(self, now):
        sink = self.sink
        self.sink = None
        try:
            if sink is None:
                raise ValueError("nothing downloaded")
            sink.activate()
        except Exception as e:
            self.ota.activated(time.ticks_ms(), str(e) or type(e).__name__)
            return
        self.ota.activated(time.ticks_ms())

    async def _network(self):
        wlan = self.agent.wlan
        waited = 0
        while wlan is not None and not wlan.isconnected() and waited < _WIFI_WAIT:
            await asyncio.sleep_ms(500)
            waited += 500

    def _context(self):
        # The server is checked against the CA in rainmaker.json's "ota_ca"
        # (default: the broker's CA, as the RainMaker cloud's file store and
        # broker share Amazon's root). With the broker's CA the MQTT link's
        # context serves: it checks the same, and a second one would need
        # 1.7 KB in one piece while the heap is at its most fragmented. (It
        # also holds the node's certificate, which a server sees only if it
        # asks for one; file servers do not.) Another CA: a context per
        # download, dropped after.
        ca = self.agent.cfg.get("ota_ca", _CA)
        if ca == _CA and self.agent.ctx is not None:
            return self.agent.ctx
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=ca)
        return ctx

    def _sink(self, first, start):
        from . import fetch
        from .bundle import kind, BundleError

        if start:
            k = "image"  # a resumed download: only images resume, from a sector on flash
        else:
            try:
                k = kind(first)
            except BundleError as e:
                raise fetch.Refused(str(e))
            if k is None:
                raise fetch.Failed("the file is too short to be an update")
        self.kind = k
        if k == "bundle":
            return fetch.Bundle(self.app)
        slot = fetch.next_slot()
        if slot is None:
            raise fetch.Refused(NO_SLOT)
        label, head = fetch.running()
        chip = self.agent.node.platform

        def check(h):
            from . import image

            try:
                run = image.info(head) if head else None
            except image.ImageError:
                run = None
            try:
                if run is None:  # the running image cannot be read: check the chip only
                    d = image.info(h)
                    image.check(h, chip, None, d["project"])
                else:
                    image.check(h, chip, run["version"], run["project"])
            except image.ImageError as e:
                raise fetch.Refused(str(e))

        return fetch.Image(slot, check)

    async def _download(self, url, size, md5, offset):
        ota = self.ota
        try:
            from . import fetch
        except MemoryError:  # no room for the download's code: this attempt fails, the job goes on
            self.task = None
            ota.finished(False, "out of memory", time.ticks_ms())
            return
        if not offset:
            self.kind = None
        elif self.kind == "bundle":
            offset = 0  # a bundle is small and starts over
        sink = None
        try:
            def progress(s):
                ota.progress(s.written(), time.ticks_ms())

            sink = await fetch.download(url, offset, self._sink, self._context(), progress,
                                        self.agent.cfg["ota_timeout"] * 1000)
            if size and sink.written() != size:
                raise fetch.Failed("size mismatch: %d bytes arrived, the job says %d" % (sink.written(), size))
            sink.end(md5)
            self.sink = sink
            ota.finished(True, None, time.ticks_ms())
            sink = None
        except fetch.Refused as e:
            ota.checked(time.ticks_ms(), str(e))
        except asyncio.CancelledError:
            raise
        except MemoryError:
            import gc

            gc.collect()
            ota.finished(False, "out of memory", time.ticks_ms())
        except Exception as e:  # Failed, OSError (network, TLS), flash errors
            why = str(e) or type(e).__name__
            if isinstance(e, OSError):
                try:
                    from . import diag

                    why = diag.why(e)
                except MemoryError:
                    pass  # no room for the explanations: the bare error, and the job goes on
            # Without Wi-Fi the next attempt would fail at once and use up the
            # job's 3 attempts in a second: it waits (bounded) for the network.
            await self._network()
            ota.finished(False, why, time.ticks_ms())
        finally:
            if sink is not None and hasattr(sink, "abort"):
                try:
                    sink.abort()
                except Exception:
                    pass
            self.task = None
