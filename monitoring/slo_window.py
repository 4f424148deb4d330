"""Timestamped readings of the cumulative counters, for sliding-window figures.

The counters only ever grow (from 0 when the server starts), so the figures for the
last W seconds are `now - R`, where R is the newest reading at least W seconds old.
A sampler in each server process appends a reading every few seconds (one process
per interval: the others find it fresh and skip); the readings
live next to the multiprocess metric files (one JSON file under an flock, shared by
all processes) or, with a single process and no multiprocess directory, in memory.
Until the server has run W seconds the window is "since start", and reports say so.
"""

import fcntl
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from monitoring.exposition import multiprocess_dir
from monitoring.metric_reading import Reading

READINGS_FILE = "slo-readings.json"


class ReadingStore(Protocol):
    def append_taken(
        self, now: float, take: Callable[[float], Reading], *, min_spacing: float, keep_seconds: float
    ) -> bool: ...

    def baseline(self, now: float, window: float) -> Reading: ...


def _baseline(readings: list[Reading], now: float, window: float) -> Reading:
    older = [r for r in readings if r.ts <= now - window]
    return older[-1] if older else readings[0]


def _trimmed(readings: list[Reading], now: float, keep_seconds: float) -> list[Reading]:
    """Drop readings no window needs, keeping the newest one older than the window."""
    cutoff = now - keep_seconds
    old = [r for r in readings if r.ts < cutoff]
    return old[-1:] + [r for r in readings if r.ts >= cutoff]


def first_reading(ts: float) -> Reading:
    """Where a server's counting starts: its own counters at zero, other processes'
    cumulative figures (edge, websocket servers) as they are now."""
    from monitoring.metric_reading import add_external_figures

    return add_external_figures(Reading(ts=ts))


class MemoryReadingStore:
    def __init__(self, started_at: float | None = None) -> None:
        """`started_at`: begin from a zero reading at that time (tests); by default the
        first reading is taken when first needed."""
        self._lock = threading.Lock()
        self._readings: list[Reading] = [] if started_at is None else [Reading(ts=started_at)]

    def _ensure_started(self) -> None:
        if not self._readings:
            self._readings = [first_reading(time.time())]

    def append_taken(
        self, now: float, take: Callable[[float], Reading], *, min_spacing: float, keep_seconds: float
    ) -> bool:
        with self._lock:
            self._ensure_started()
            if now - self._readings[-1].ts < min_spacing:
                return False
            self._readings = _trimmed([*self._readings, take(now)], now, keep_seconds)
            return True

    def baseline(self, now: float, window: float) -> Reading:
        with self._lock:
            self._ensure_started()
            return _baseline(self._readings, now, window)


class FileReadingStore:
    """One JSON file shared by all server processes; writes are atomic renames."""

    def __init__(self, directory: str) -> None:
        self.path = Path(directory) / READINGS_FILE
        self._lock_path = Path(directory) / (READINGS_FILE + ".lock")

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self._lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def reset(self, started_at: float | None = None) -> None:
        """At server start (gunicorn's master, before Django is set up): forget old
        readings; the first worker to need one takes the first reading. With
        `started_at`, begin from a zero reading at that time instead (tests)."""
        with self._locked():
            self._write([] if started_at is None else [Reading(ts=started_at)])

    def _read(self) -> list[Reading]:
        try:
            data = json.loads(self.path.read_text())
            readings = [Reading.from_dict(item) for item in data]
        except (FileNotFoundError, ValueError, TypeError):
            readings = []
        # No reading yet (just reset, or a server started without the gunicorn hook):
        # start counting now.
        return readings or [first_reading(time.time())]

    def _write(self, readings: list[Reading]) -> None:
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps([r.as_dict() for r in readings]))
        tmp.replace(self.path)

    def append_taken(
        self, now: float, take: Callable[[float], Reading], *, min_spacing: float, keep_seconds: float
    ) -> bool:
        """Take a reading and append it, unless one younger than `min_spacing` is there.
        It is taken under the file's lock: a process that waited for the lock finds the
        fresh reading and skips, so one process per interval pays for the collection
        (it read every process's metric files, 20-90 ms of a request worker's CPU)."""
        with self._locked():
            readings = self._read()
            if now - readings[-1].ts >= min_spacing:
                self._write(_trimmed([*readings, take(now)], now, keep_seconds))
                return True
            if not self.path.exists() or len(readings) == 1:
                self._write(readings)
            return False

    def baseline(self, now: float, window: float) -> Reading:
        with self._locked():
            readings = self._read()
            if not self.path.exists() or len(readings) == 1:
                self._write(readings)  # keep the first reading for the next caller
        return _baseline(readings, now, window)


_memory_store = MemoryReadingStore()


def reading_store() -> ReadingStore:
    directory = multiprocess_dir()
    return FileReadingStore(directory) if directory else _memory_store
