"""Read-only lookups in BoltDB (bbolt) files: enough for podman's libpod state.

Podman 4 keeps a root container's name, image and user labels only in
``/var/lib/containers/storage/libpod/bolt_state.db``. The one PyPI reader of
the format is unmaintained, so this is a small reader of our own: it takes
the file's lock shared and never waits for it (a busy database is a miss, to
be tried again), and any page that is not what it should be is a ValueError.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
from pathlib import Path
from typing import Any


def get(path: Path, *keys: bytes) -> bytes | None:
    """The value at ``keys`` (bucket names, then a key) in BoltDB file ``path``.

    None when a bucket or the key is missing, or while a writer holds the file
    (bbolt locks it exclusively for a read-write open; this takes it shared,
    without waiting). ValueError when the file is not a consistent BoltDB.
    """
    with open(path, "rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        if os.fstat(f.fileno()).st_size < 32:
            raise ValueError(f"{path}: too short for a BoltDB file")
        with mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as buf:
            try:
                return Bolt(buf).get(*keys)
            except struct.error as e:
                raise ValueError(f"{path}: truncated ({e})") from None
            except ValueError as e:
                raise ValueError(f"{path}: {e}") from None


class Bolt:
    """Read-only lookups in a BoltDB (bbolt) file, enough for libpod's state.

    bbolt is a copy-on-write B+tree in fixed-size pages. Pages 0 and 1 are
    meta pages; the valid one (magic, version 2, FNV-1a checksum) with the
    higher transaction id holds the root bucket's page. A page starts with
    ``id u64, flags u16, count u16, overflow u32``, then ``count`` elements:
    branch ``pos u32, ksize u32, child u64``; leaf ``flags u32, pos u32,
    ksize u32, vsize u32`` (``pos`` from the element to its key, the value
    right after). A leaf element with flag 1 is a bucket: its value is
    ``root u64, sequence u64``, and ``root == 0`` means the bucket's leaf page
    follows inline. Any page that does not say what it should is a ValueError.
    """

    MAGIC = 0xED0CDAED
    BRANCH, LEAF, META = 0x01, 0x02, 0x04
    BUCKET = 0x01

    def __init__(self, buf: Any) -> None:
        self.buf = buf
        self.page_size, self.root = self._meta()

    def get(self, *keys: bytes) -> bytes | None:
        buf, off = self.buf, self._page(self.root)
        for i, key in enumerate(keys):
            hit = self._search(buf, off, key)
            if hit is None:
                return None
            bucket, value = hit
            if i == len(keys) - 1:
                return None if bucket else value
            if not bucket:
                return None
            if len(value) < 16:
                self._bad("short bucket header")
            (root,) = struct.unpack_from("<Q", value)
            buf, off = (value, 16) if root == 0 else (self.buf, self._page(root))
        return None

    def _meta(self) -> tuple[int, int]:
        best: tuple[int, int, int] | None = None    # txid, page size, root
        first = self._read_meta(0)
        offsets = [first[1]] if first else [mmap.PAGESIZE]
        for meta in (first, *(self._read_meta(o) for o in offsets)):
            if meta is not None and (best is None or meta[0] > best[0]):
                best = meta
        if best is None:
            self._bad("no valid meta page (not a BoltDB file, or damaged)")
        return best[1], best[2]

    def _read_meta(self, off: int) -> tuple[int, int, int] | None:
        if off + 80 > len(self.buf):
            return None
        flags = struct.unpack_from("<H", self.buf, off + 8)[0]
        magic, version, psize, _f, root, _seq, _free, _hwm, txid, check = struct.unpack_from(
            "<IIIIQQQQQQ", self.buf, off + 16)
        if flags & self.META == 0 or magic != self.MAGIC or version != 2 or psize < 512 or psize & (psize - 1):
            return None
        if check != fnv64a(bytes(self.buf[off + 16:off + 72])):
            return None
        return txid, psize, root

    def _page(self, pgid: int) -> int:
        off = pgid * self.page_size
        if pgid < 2 or off + 16 > len(self.buf):
            self._bad(f"page {pgid} is outside the file")
        if struct.unpack_from("<Q", self.buf, off)[0] != pgid:
            self._bad(f"page {pgid} does not say it is")
        return off

    def _search(self, buf: Any, off: int, key: bytes) -> tuple[bool, bytes] | None:
        for _ in range(32):                        # a B+tree this deep is a loop
            flags, count = struct.unpack_from("<HH", buf, off + 8)
            if off + 16 + 16 * count > len(buf):
                self._bad("page elements past its end")
            if flags & self.BRANCH and buf is self.buf:
                child = None
                for i in range(count):
                    e = off + 16 + 16 * i
                    pos, ksize, pgid = struct.unpack_from("<IIQ", buf, e)
                    if i > 0 and self._slice(buf, e + pos, ksize) > key:
                        break
                    child = pgid
                if child is None:
                    return None
                off = self._page(child)
            elif flags & self.LEAF:
                for i in range(count):
                    e = off + 16 + 16 * i
                    eflags, pos, ksize, vsize = struct.unpack_from("<IIII", buf, e)
                    if self._slice(buf, e + pos, ksize) == key:
                        return bool(eflags & self.BUCKET), self._slice(buf, e + pos + ksize, vsize)
                return None
            else:
                self._bad(f"page flags {flags:#x} where a branch or leaf belongs")
        return self._bad("B+tree deeper than 32 levels")

    def _slice(self, buf: Any, start: int, size: int) -> bytes:
        if start + size > len(buf):
            self._bad("element past the end of its page")
        return bytes(buf[start:start + size])

    @staticmethod
    def _bad(why: str) -> Any:
        raise ValueError(why)


def fnv64a(data: bytes) -> int:
    """FNV-1a, 64 bits: bbolt's meta page checksum."""
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h
