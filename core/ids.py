"""Globally unique, time-ordered ids (UUIDv7, RFC 9562).

Ids are made by the application, not by a database sequence, so an org's rows can move
to another database (Citus, a new cluster) without collisions. The leading 48 bits are
the Unix time in milliseconds, so ids sort by creation time and keep B-tree inserts
local; the low 62 bits are random. Within one process a 12-bit counter keeps ids
strictly increasing even when several are made in the same millisecond.
"""

import os
import threading
import time
import uuid


class _Uuid7Generator:
    COUNTER_MAX = 0xFFF

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._counter = 0

    def _tick(self) -> tuple[int, int]:
        with self._lock:
            now_ms = time.time_ns() // 1_000_000
            if now_ms > self._last_ms:
                self._last_ms = now_ms
                # A random start (with headroom) so two processes rarely share a prefix.
                self._counter = int.from_bytes(os.urandom(2), "big") & 0x3FF
            else:
                self._counter += 1
                if self._counter > self.COUNTER_MAX:  # over ~3000 ids in one ms: borrow the next
                    self._last_ms += 1
                    self._counter = 0
            return self._last_ms, self._counter

    def __call__(self) -> uuid.UUID:
        ms, counter = self._tick()
        rand_b = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
        value = (ms & ((1 << 48) - 1)) << 80
        value |= 0x7 << 76  # version 7
        value |= counter << 64
        value |= 0b10 << 62  # RFC 9562 variant
        value |= rand_b
        return uuid.UUID(int=value)


_generate = _Uuid7Generator()


def uuid7() -> uuid.UUID:
    return _generate()
