# The ESP32's SPI flash as the OTA machinery sees it, written once for both board
# backends (CPython and MicroPython subset; no I/O but the flash folder's files):
#
#   * a partition table (LAYOUTS): MicroPython's ESP32_GENERIC-OTA layout (two 1.5 MiB
#     app slots ota_0/ota_1 and otadata) or the default ESP32_GENERIC one (a single
#     factory app), each with the "vfs" data partition MicroPython adds at boot;
#   * each partition is a file <label>.bin in the flash folder, created on the first
#     write and only as long as the highest byte written (past its end the partition
#     reads as erased, 0xFF), so a 1.5 MiB slot holding a 4 KiB image costs 4 KiB;
#   * NOR-flash semantics: a write can only clear bits (new = old AND data); only an
#     erase of a whole 4096-byte sector sets them back to 1;
#   * otadata in ESP-IDF's on-flash format (two sectors, each starting with
#     {ota_seq, seq_label[20], ota_state, crc32(ota_seq)}), so firmware reading the
#     partition sees what it would see on the chip. The OTA calls below rewrite it
#     as a whole file (temp + rename): a process kill (the sim's power cut) leaves the
#     old or the new contents, never half of one, as IDF's two alternating sectors do;
#   * the OTA calls the firmware makes (set_boot, next_update, boot_partition,
#     mark_valid) follow ESP-IDF's rules with rollback enabled, as MicroPython's esp32
#     port builds it; the bootloader that applies them at each reset is bootloader.py;
#   * an app image is bootable only if it verifies as ESP-IDF's loader checks it:
#     magic 0xE9, this chip's id, segments inside the partition, the XOR checksum,
#     and the appended SHA-256 when the header says there is one.
#
# partition_class() builds the esp32.Partition type (MicroPython's API and errors)
# over a Flash. Errors are ESP-IDF codes turned into OSError as the esp32 port does:
# OSError(-code, "ESP_ERR_NAME"), and OSError(ENOENT) for a partition that is absent.
#
# On the MicroPython backend this module is loaded into the firmware's own heap (on
# the chip esp32.Partition is C in flash), so it holds only what the firmware's calls
# need; the bootloader, image builder and host-side helpers are in bootloader.py.
import hashlib
import struct
import binascii

try:
    import os
except ImportError:  # pragma: no cover
    import uos as os

SECTOR = 4096
TYPE_APP = 0
TYPE_DATA = 1
ANY = 0xFF
FACTORY = 0x00
OTA_MIN = 0x10
OTA_MAX = 0x20
SUB_OTADATA = 0x00

# (label, type, subtype, offset, size)
LAYOUTS = {
    # partitions-4MiB-ota.csv, + "vfs" from the end of ota_1 to the end of 4 MiB
    "ota": (("nvs", 1, 0x02, 0x9000, 0x4000), ("otadata", 1, 0x00, 0xD000, 0x2000),
            ("phy_init", 1, 0x01, 0xF000, 0x1000), ("ota_0", 0, 0x10, 0x10000, 0x180000),
            ("ota_1", 0, 0x11, 0x190000, 0x180000), ("vfs", 1, 0x81, 0x310000, 0xF0000)),
    # partitions-4MiBplus.csv, + "vfs" from the end of factory to the end of 4 MiB
    "factory": (("nvs", 1, 0x02, 0x9000, 0x6000), ("phy_init", 1, 0x01, 0xF000, 0x1000),
                ("factory", 0, 0x00, 0x10000, 0x1F0000), ("vfs", 1, 0x81, 0x200000, 0x200000)),
}

# The chip id in an app image's header (esp_chip_id_t), per CONFIG_IDF_TARGET.
CHIP_IDS = {"esp32": 0, "esp32s2": 2, "esp32c3": 5, "esp32s3": 9, "esp32c2": 12, "esp32c6": 13,
            "esp32h2": 16, "esp32p4": 18, "esp32c5": 23}

IMAGE_MAGIC = 0xE9

# esp_ota_img_states_t
NEW, PENDING_VERIFY, VALID, INVALID, ABORTED = 0, 1, 2, 3, 4
UNDEFINED = 0xFFFFFFFF

# esp_err_t codes the calls below return (0 is ESP_OK)
ESP_FAIL = -1
ERR_INVALID_ARG = 0x102
ERR_INVALID_SIZE = 0x104
ERR_NOT_FOUND = 0x105
ERR_OTA_VALIDATE_FAILED = 0x1503
ERR_NAMES = {ESP_FAIL: "ESP_FAIL", ERR_INVALID_ARG: "ESP_ERR_INVALID_ARG", ERR_INVALID_SIZE: "ESP_ERR_INVALID_SIZE",
             ERR_NOT_FOUND: "ESP_ERR_NOT_FOUND", ERR_OTA_VALIDATE_FAILED: "ESP_ERR_OTA_VALIDATE_FAILED"}
ENOENT = 2
EINVAL = 22

_MAX_SEGMENTS = 16
_CHUNK = 512
_FFV = memoryview(b"\xff" * _CHUNK)
# What a write reads back to AND with: taken once, as a chip's driver allocates
# nothing per write (the firmware's heap is the board's on the MicroPython backend).
_OLD = memoryview(bytearray(_CHUNK))


def _fill(buf, got):
    # What lies past the end of a partition file reads erased.
    n = len(buf)
    while got < n:
        k = min(_CHUNK, n - got)
        buf[got:got + k] = _FFV[:k]
        got += k


def _default_error(code, msg=None):
    return OSError(code) if msg is None else OSError(code, msg)


def _crc(seq):
    # ESP-IDF's otadata CRC: ROM crc32_le(UINT32_MAX, &ota_seq, 4), which is zlib's
    # crc32 started from 0xFFFFFFFF.
    return binascii.crc32(struct.pack("<I", seq), 0xFFFFFFFF) & 0xFFFFFFFF


def _xor(data):
    # XOR of all bytes, folded through one big int (fast on both interpreters).
    n = len(data)
    if not n:
        return 0
    v = int.from_bytes(data, "little")
    while n > 1:
        half = (n + 1) // 2
        v = (v >> (8 * half)) ^ (v & ((1 << (8 * half)) - 1))
        n = half
    return v & 0xFF


def entry(seq, state):
    """One otadata sector's record (32 bytes) as ESP-IDF writes it."""
    return struct.pack("<I20sII", seq, b"\xff" * 20, state, _crc(seq))


class Flash:
    """The board's flash: partitions as files in `folder`, laid out as LAYOUTS[layout].

    running: the label of the app the bootloader started (set by boot(), or handed
    over to the interpreter after it). panic(text): what a fatal flash error does
    (ESP-IDF aborts, the chip resets); by default it raises RuntimeError.
    """

    def __init__(self, folder, layout="ota", chip="esp32", running=None, panic=None):
        if layout not in LAYOUTS:
            raise ValueError("unknown partition layout %r: one of %s" % (layout, ", ".join(sorted(LAYOUTS))))
        if chip not in CHIP_IDS:
            raise ValueError("unknown chip %r" % (chip,))
        self.folder = folder
        self.layout = layout
        self.chip = chip
        self.parts = LAYOUTS[layout]
        self.running = running
        self.panic = panic

    # -- the partition table --------------------------------------------------

    def find(self, ptype=TYPE_APP, subtype=ANY, label=None):
        return [p for p in self.parts if (ptype == ANY or p[1] == ptype) and (subtype == ANY or p[2] == subtype)
                and (label is None or p[0] == label)]

    def first(self, ptype, subtype=ANY, label=None):
        found = self.find(ptype, subtype, label)
        return found[0] if found else None

    def get(self, label):
        for p in self.parts:
            if p[0] == label:
                return p
        return None

    def ota_slots(self):
        """The OTA app partitions in slot order (ota_0, ota_1...)."""
        out = []
        for sub in range(OTA_MIN, OTA_MAX):
            p = self.first(TYPE_APP, sub)
            if p is not None:
                out.append(p)
        return out

    def path(self, p):
        return self.folder + "/" + p[0] + ".bin"

    # -- the flash chip: read, write (AND), erase ----------------------------------
    # In pieces of _CHUNK bytes through small buffers: on the MicroPython backend this
    # runs in the firmware's heap, where the chip's flash driver allocates nothing.

    def _bounds(self, p, offset, n):
        if offset < 0 or offset > p[4]:
            return ERR_INVALID_ARG
        if n < 0 or offset + n > p[4]:
            return ERR_INVALID_SIZE
        return 0

    def _open(self, p, create):
        try:
            return open(self.path(p), "r+b")
        except OSError:
            if not create:
                return None
            return open(self.path(p), "w+b")

    def read_into(self, p, offset, buf):
        """Fill buf from offset in partition p; 0 or an error code."""
        n = len(buf)
        err = self._bounds(p, offset, n)
        if err:
            return err
        f = self._open(p, False)
        got = 0
        if f is not None:
            try:
                f.seek(offset)
                got = f.readinto(buf) or 0
            finally:
                f.close()
        _fill(buf, got)
        return 0

    def read(self, p, offset, n):
        """(err, bytes): n bytes at offset in partition p."""
        buf = bytearray(n)
        err = self.read_into(p, offset, buf)
        return err, (None if err else bytes(buf))

    def write(self, p, offset, data):
        """Program bytes: each bit can only go from 1 to 0 (old AND new)."""
        mv = memoryview(data)
        n = len(mv)
        err = self._bounds(p, offset, n)
        if err or not n:
            return err
        if self._dangerous(p):
            return 0
        f = self._open(p, True)
        try:
            end = f.seek(0, 2)
            while end < offset:  # the hole up to offset reads erased: 0xFF, not 0x00
                k = min(_CHUNK, offset - end)
                f.write(_FFV[:k])
                end += k
            old = _OLD
            pos = 0
            while pos < n:
                k = min(_CHUNK, n - pos)
                at = offset + pos
                piece = mv[pos:pos + k]
                if at < end:  # programmed before, maybe: the bits already at 0 stay 0
                    f.seek(at)
                    _fill(old[:k], f.readinto(old[:k]) or 0)
                    if min(old[:k]) != 0xFF:
                        piece = (int.from_bytes(old[:k], "big") & int.from_bytes(piece, "big")).to_bytes(k, "big")
                f.seek(at)
                f.write(piece)
                pos += k
        finally:
            f.close()
        return 0

    def erase(self, p, offset, n):
        """Erase whole sectors back to 0xFF."""
        err = self._bounds(p, offset, n)
        if err:
            return err
        if n % SECTOR:
            return ERR_INVALID_SIZE
        if offset % SECTOR:
            return ERR_INVALID_ARG
        if self._dangerous(p):
            return 0
        f = self._open(p, False)
        if f is None:
            return 0  # never written: already erased
        try:
            stop = min(offset + n, f.seek(0, 2))
            pos = offset
            f.seek(pos)
            while pos < stop:
                k = min(_CHUNK, stop - pos)
                f.write(_FFV[:k])
                pos += k
        finally:
            f.close()
        return 0

    def _dangerous(self, p):
        # ESP-IDF (CONFIG_SPI_FLASH_DANGEROUS_WRITE_ABORTS, the default) aborts on a
        # write or erase of the app that is running: the chip panics and resets.
        if p[0] != self.running:
            return False
        text = "abort() was called: write or erase of the running app partition (%s)" % p[0]
        if self.panic is None:
            raise RuntimeError(text)
        self.panic(text)
        return True

    # -- otadata ---------------------------------------------------------------

    def otadata(self):
        """The two otadata records as [seq, state, crc_ok], or None without otadata."""
        p = self.first(TYPE_DATA, SUB_OTADATA)
        if p is None:
            return None
        out = []
        raw = bytearray(32)
        for i in (0, 1):
            self.read_into(p, i * SECTOR, raw)
            seq, _, state, crc = struct.unpack("<I20sII", raw)
            out.append([seq, state, crc == _crc(seq)])
        return out

    def _put(self, i, seq, state):
        """Rewrite otadata sector i (erase + write one record) atomically."""
        self._rewrite({i: entry(seq, state)})

    def _rewrite(self, sectors):
        """Write the otadata sectors in `sectors` ({index: record, or b"" for erased})
        and copy the others: into a new file, renamed over the old one, so a kill
        leaves the old or the new contents (the sim's power cut)."""
        p = self.first(TYPE_DATA, SUB_OTADATA)
        path = self.path(p)
        buf = memoryview(bytearray(_CHUNK))
        with open(path + ".tmp", "wb") as out:
            for s in range(p[4] // SECTOR):
                rec = sectors.get(s)
                if rec is not None:
                    out.write(rec)
                for at in range(s * SECTOR, (s + 1) * SECTOR, _CHUNK):
                    if rec is None:
                        self.read_into(p, at, buf)
                        out.write(buf)
                    else:
                        skip = min(max(len(rec) - (at - s * SECTOR), 0), _CHUNK)
                        out.write(_FFV[skip:])
        os.rename(path + ".tmp", path)

    @staticmethod
    def _invalid(e):
        # bootloader_common_ota_select_invalid
        return e[0] == 0xFFFFFFFF or e[1] == INVALID or e[1] == ABORTED

    def _active(self, ota):
        # bootloader_common_get_active_otadata: the valid record with the higher seq
        ok = [not self._invalid(e) and e[2] for e in ota]
        if ok[0] and ok[1]:
            return 0 if ota[0][0] >= ota[1][0] else 1
        if ok[0]:
            return 0
        if ok[1]:
            return 1
        return -1

    # -- the image loader --------------------------------------------------------

    def verify(self, p):
        """None if app partition p holds an image ESP-IDF would load on this chip,
        else why not."""
        if p is None:
            return "no such partition"
        f = self._open(p, False)
        if f is None:
            return "invalid magic byte 0xff (nothing flashed here?)"
        try:
            return self._verify(p[4], f)
        finally:
            f.close()

    def _verify(self, size, f):
        buf = memoryview(bytearray(_CHUNK))

        def rd(pos, n):
            f.seek(pos)
            _fill(buf[:n], f.readinto(buf[:n]) or 0)
            return buf[:n]

        head = bytes(rd(0, 24))
        if head[0] != IMAGE_MAGIC:
            return "invalid magic byte 0x%02x (nothing flashed here?)" % head[0]
        chip_id = head[12] | head[13] << 8
        if chip_id != CHIP_IDS[self.chip]:
            return "image is for chip id %d, this chip (%s) is %d" % (chip_id, self.chip, CHIP_IDS[self.chip])
        if head[1] > _MAX_SEGMENTS:
            return "%d segments, at most %d" % (head[1], _MAX_SEGMENTS)
        h = hashlib.sha256(head)
        pos = 24
        xor = 0xEF
        for i in range(head[1]):
            if pos + 8 > size:
                return "segment %d header past the end of the partition" % i
            sh = rd(pos, 8)
            n = struct.unpack("<II", sh)[1]
            h.update(sh)
            pos += 8
            if n > size - pos:
                return "segment %d (%d bytes) runs past the end of the partition" % (i, n)
            end = pos + n
            while pos < end:
                k = min(_CHUNK, end - pos)
                chunk = rd(pos, k)
                h.update(chunk)
                xor ^= _xor(chunk)
                pos += k
        padded = (pos + 1 + 15) // 16 * 16
        if padded > size:
            return "checksum past the end of the partition"
        tail = rd(pos, padded - pos)
        h.update(tail)
        if tail[-1] != xor:
            return "checksum 0x%02x, computed 0x%02x" % (tail[-1], xor)
        if head[23] == 1:
            if padded + 32 > size:
                return "SHA-256 past the end of the partition"
            if bytes(rd(padded, 32)) != h.digest():
                return "SHA-256 of the image does not match the one appended"
        return None

    # -- esp_ota_ops, as the app calls them ---------------------------------------------

    def running_partition(self):
        return self.get(self.running) if self.running else None

    def _default_app(self):
        slots = self.ota_slots()
        return self.first(TYPE_APP, FACTORY) or (slots[0] if slots else None)

    def boot_partition(self):
        """esp_ota_get_boot_partition: the app otadata selects (None without otadata)."""
        ota = self.otadata()
        if ota is None:
            return None
        slots = self.ota_slots()
        if (self._invalid(ota[0]) and self._invalid(ota[1])) or not slots:
            return self._default_app()
        a = self._active(ota)
        if a == -1:
            return self._default_app()
        return slots[(ota[a][0] - 1) % len(slots)]

    def next_update(self, start):
        """esp_ota_get_next_update_partition(start): the OTA slot after `start`, else
        the first one; None when there is no OTA slot."""
        default = None
        following = False
        for p in self.ota_slots():
            if default is None:
                default = p
            if p == start:
                following = True
            elif following:
                return p
        return default

    def set_boot(self, p):
        """esp_ota_set_boot_partition: 0 or an error code."""
        if p is None:
            return ERR_INVALID_ARG
        why = self.verify(p)
        if why is not None:
            return ERR_OTA_VALIDATE_FAILED
        if p[1] != TYPE_APP:
            return ERR_INVALID_ARG
        od = self.first(TYPE_DATA, SUB_OTADATA)
        if p[2] == FACTORY:
            if od is None:
                return ERR_NOT_FOUND
            self._rewrite({0: b"", 1: b""})  # erase otadata: the factory app boots
            return 0
        ota = self.otadata()
        if ota is None:
            return ERR_NOT_FOUND
        n = len(self.ota_slots())
        sub = p[2] & 0x0F
        if sub >= n:
            return ERR_INVALID_ARG
        a = self._active(ota)
        if a != -1:
            # The lowest seq >= the active one that selects this slot (IDF counts up to it).
            base = (sub + 1) % n
            i = max(0, -(-(ota[a][0] - base) // n))
            self._put(1 - a, (base + i * n) & 0xFFFFFFFF, NEW)
        else:
            self._put(0, sub + 1, NEW)
        return 0

    def mark_valid(self):
        """esp_ota_mark_app_valid_cancel_rollback: 0 or an error code. Like ESP-IDF it
        marks the *active* otadata record valid."""
        ota = self.otadata()
        if ota is None:
            return ERR_NOT_FOUND
        a = self._active(ota)
        if a == -1 or not self.ota_slots():
            return ESP_FAIL  # "Running firmware is factory"
        if ota[a][1] != VALID:
            self._put(a, ota[a][0], VALID)
        return 0


def partition_class(flash, error=None):
    """esp32.Partition over `flash`, with MicroPython's API and errors (ports/esp32/
    esp32_partition.c). error(code, msg=None) builds the OSError (the backend's)."""
    error = error or _default_error
    typeof = type  # find()'s argument is named type, as MicroPython's is

    def check(err):
        if err:
            raise error(-err, ERR_NAMES.get(err, "ESP_ERR_0x%x" % err))

    def wrap(cls, p, block_size):
        if p is None:
            raise error(ENOENT)
        obj = object.__new__(cls)
        obj._p = p
        obj._bs = block_size
        return obj

    def writable(buf):
        if isinstance(buf, (bytes, str)):
            raise TypeError("object with buffer protocol required")

    class Partition:
        BOOT = 0
        RUNNING = 1
        TYPE_APP = TYPE_APP
        TYPE_DATA = TYPE_DATA

        def __new__(cls, *args, **kw):
            if kw:
                raise TypeError("function doesn't take keyword arguments")
            if not args:
                raise TypeError("function missing 1 required positional arguments")
            if len(args) > 2:
                raise TypeError("function expected at most 2 arguments, got %d" % len(args))
            ident = args[0]
            if isinstance(ident, int):
                if ident == 0:
                    p = flash.boot_partition()
                elif ident == 1:
                    p = flash.running_partition()
                else:
                    raise ValueError()
            elif isinstance(ident, str):
                p = flash.first(TYPE_APP, ANY, ident) or flash.first(TYPE_DATA, ANY, ident)
            else:
                raise TypeError("can't convert %s to str" % type(ident).__name__)
            return wrap(cls, p, int(args[1]) if len(args) > 1 else SECTOR)

        def __init__(self, *args, **kw):
            pass

        @staticmethod
        def find(type=TYPE_APP, subtype=ANY, label=None, block_size=SECTOR):
            if label is not None and not isinstance(label, str):
                raise TypeError("can't convert %s to str" % typeof(label).__name__)
            return [wrap(Partition, p, block_size) for p in flash.find(type, subtype, label)]

        def __repr__(self):
            p = self._p
            return "<Partition type=%u, subtype=%u, address=%u, size=%u, label=%s, encrypted=0>" % (
                p[1], p[2], p[3], p[4], p[0])

        def info(self):
            p = self._p
            return (p[1], p[2], p[3], p[4], p[0], False)

        def readblocks(self, block_num, buf, offset=0):
            writable(buf)
            check(flash.read_into(self._p, block_num * self._bs + offset, buf))

        def writeblocks(self, block_num, buf, *offset):
            if len(offset) > 1:
                raise TypeError("function expected at most 4 arguments, got %d" % (3 + len(offset)))
            at = block_num * self._bs
            n = len(buf)
            if not offset:
                # A plain write erases first: whole sectors at the native size, else
                # the sectors it touches, keeping what lies outside the write.
                if self._bs >= SECTOR:
                    check(flash.erase(self._p, at, n))
                else:
                    self._erase_around(at, n)
            else:
                at += offset[0]
            check(flash.write(self._p, at, buf))

        def _erase_around(self, at, n):
            top = at + n
            addr = at // SECTOR * SECTOR
            while addr < top:
                err, keep = flash.read(self._p, addr, SECTOR)
                check(err)
                check(flash.erase(self._p, addr, SECTOR))
                lo = max(at - addr, 0)
                if lo:
                    check(flash.write(self._p, addr, keep[:lo]))
                if top < addr + SECTOR:
                    check(flash.write(self._p, top, keep[top - addr:]))
                addr += SECTOR

        def ioctl(self, cmd, arg):
            if cmd in (1, 2, 3):  # init, deinit, sync
                return 0
            if cmd == 4:  # block count
                return self._p[4] // self._bs
            if cmd == 5:  # block size
                return self._bs
            if cmd == 6:  # erase one block
                if self._bs != SECTOR:
                    return -EINVAL
                check(flash.erase(self._p, arg * SECTOR, SECTOR))
                return 0
            return None

        def set_boot(self):
            check(flash.set_boot(self._p))

        def get_next_update(self):
            return wrap(Partition, flash.next_update(self._p), SECTOR)

        @classmethod
        def mark_app_valid_cancel_rollback(cls):
            check(flash.mark_valid())

    return Partition
