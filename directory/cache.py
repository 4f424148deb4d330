"""The org directory, cached per process and invalidated through Redis.

A lookup reads the directory database's primary once per org and keeps the answer.
Whoever changes a placement (org creation, `org_move`) publishes the org id on
`directory:changed` after committing; every process has one listener thread
subscribed to it, which drops the org's entry.

How long an entry is trusted (the bound on routing with an old placement):
- while the listener is subscribed and has heard from Redis within
  `DIRECTORY_HEARTBEAT_SECONDS` (it pings every third of that), and the entry was
  read after the subscription began: `DIRECTORY_CACHE_SECONDS` (300 s; a missed
  message cannot happen while the subscription is alive);
- otherwise (Redis down, frozen, or the listener reconnecting): `DIRECTORY_STALE_SECONDS`
  (1 s). So with Redis gone, a process may route with a placement at most
  heartbeat + stale seconds old (3 s + 1 s by default) before it reads the directory
  again. A move does not rely on that alone: the old cluster refuses the org's writes
  once it has left (docs/clusters.md "Moves").

An org the directory does not know is not cached (the next request asks again).
"""

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass

import redis
from django.conf import settings

from core.redis_clients import redis_call, sync_pubsub_redis, sync_redis

logger = logging.getLogger("directory")

CHANNEL = "directory:changed"
ALL = "*"  # a message that drops every entry (tests, bulk changes)


@dataclass(frozen=True)
class Placement:
    org_id: uuid.UUID
    cluster: str
    state: str
    generation: int


class _Listener:
    """One daemon thread per process (started lazily, again after a fork)."""

    def __init__(self, cache: "DirectoryCache") -> None:
        self._cache = cache
        self._pid = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.subscribed_at: float | None = None  # monotonic; None while not subscribed
        self.heard_at = 0.0

    def ensure_running(self) -> None:
        if self._pid == os.getpid() and self._thread is not None and self._thread.is_alive():
            return
        with self._cache.lock:
            if self._pid == os.getpid() and self._thread is not None and self._thread.is_alive():
                return
            self._pid = os.getpid()
            self.subscribed_at = None
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="directory-listener", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        self._thread = None
        self.subscribed_at = None

    def healthy_since(self) -> float | None:
        """When the current, live subscription began; None when it cannot be trusted."""
        since = self.subscribed_at
        if since is None or time.monotonic() - self.heard_at > settings.DIRECTORY_HEARTBEAT_SECONDS:
            return None
        return since

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._listen()
            except (redis.RedisError, OSError) as exc:
                if self.subscribed_at is not None:
                    logger.warning(
                        "directory listener lost Redis (%s): short cache lifetimes", type(exc).__name__
                    )
                self.subscribed_at = None
                self._stop.wait(min(1.0, settings.DIRECTORY_HEARTBEAT_SECONDS / 3))

    def _listen(self) -> None:
        heartbeat = settings.DIRECTORY_HEARTBEAT_SECONDS
        pubsub = sync_pubsub_redis(timeout=heartbeat).pubsub()
        try:
            pubsub.subscribe(CHANNEL)
            last_ping = 0.0
            while not self._stop.is_set():
                now = time.monotonic()
                if now - last_ping >= heartbeat / 3:
                    pubsub.ping()
                    last_ping = now
                message = pubsub.get_message(timeout=heartbeat / 3)
                if message is None:
                    continue
                self.heard_at = time.monotonic()
                kind = message.get("type")
                if kind == "subscribe":
                    self.subscribed_at = self.heard_at
                elif kind == "message":
                    self._cache.forget(message["data"])
        finally:
            self.subscribed_at = None
            pubsub.close()


class DirectoryCache:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._entries: dict[uuid.UUID, tuple[Placement, float]] = {}  # org -> (placement, read at)
        self._forgotten_at: dict[uuid.UUID, float] = {}  # org -> last invalidation (monotonic)
        self._cleared_at = 0.0
        self.listener = _Listener(self)

    def get(self, org_id: uuid.UUID) -> Placement | None:
        """A placement still fresh enough to route by, or None (read the directory)."""
        self.listener.ensure_running()
        found = self._entries.get(org_id)
        if found is None:
            return None
        placement, read_at = found
        age = time.monotonic() - read_at
        since = self.listener.healthy_since()
        lifetime = (
            settings.DIRECTORY_CACHE_SECONDS
            if since is not None and read_at >= since
            else settings.DIRECTORY_STALE_SECONDS
        )
        return placement if age < lifetime else None

    def put(self, placement: Placement, *, read_at: float) -> None:
        """`read_at`: monotonic time taken *before* the directory was read, so an
        invalidation that raced the read leaves an entry that is already older."""
        with self.lock:
            if read_at <= max(self._cleared_at, self._forgotten_at.get(placement.org_id, 0.0)):
                return  # changed while we read: the next lookup reads again
            self._entries[placement.org_id] = (placement, read_at)

    def forget(self, org_id: str) -> None:
        if org_id == ALL:
            self.clear()
            return
        try:
            org = uuid.UUID(org_id)
        except ValueError:
            logger.warning("directory: ignored invalidation %r", org_id)
            return
        with self.lock:
            self._entries.pop(org, None)
            self._forgotten_at[org] = time.monotonic()

    def clear(self) -> None:
        with self.lock:
            self._entries.clear()
            self._forgotten_at.clear()
            self._cleared_at = time.monotonic()


directory_cache = DirectoryCache()


def directory_changed_publish(org_id: uuid.UUID | str) -> bool:
    """Tell every process to forget the org's placement (after the change committed).
    False when Redis did not take it: processes then notice within the stale bound."""
    directory_cache.forget(str(org_id))
    try:
        redis_call(lambda: sync_redis().publish(CHANNEL, str(org_id)))
    except redis.RedisError as exc:
        logger.warning("directory: could not publish the change of %s (%s)", org_id, type(exc).__name__)
        return False
    return True
