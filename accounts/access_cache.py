"""A per-process cache of the org routes' access statement (token -> its row and user,
and the user's membership of the URL's org: tenancy.selectors.token_with_membership).

CONTRACT §1 "Revocation": within 1 s of a token's revocation or expiry, a membership's
removal or a role change, every REST call of that user reflects it. That holds here
without any message between processes, by age alone:

- an answer is served for at most ACCESS_CACHE_SECONDS (default 0.5, below 1; 0 turns
  the cache off) counted from before its statement was sent, so a change committed
  while the statement ran is covered too;
- a token is never served past its expiry (checked on every hit);
- only answers that let the caller in are kept (a valid token of a member): a new
  token or a new member is never refused from here;
- changes this process makes (`access_cache_drop`, called by the services that revoke
  tokens and change or remove memberships) drop every entry at once, and again after
  their commit; a statement in flight meanwhile caches nothing (the generation moved).

What is kept are the statement's rows (plain values): every hit builds its own model
instances, so no request shares a mutable object with another. Views whose answer is
itself remembered elsewhere (the edge's auth preflight, kept by Varnish) opt out.
"""

import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

MAX_ENTRIES = 10_000  # answers of the last ACCESS_CACHE_SECONDS; past this, stale ones go first

Key = tuple[str, uuid.UUID]  # (token digest, org id)
Rows = Sequence[tuple[Any, ...]]


@dataclass(frozen=True)
class Stamp:
    """Taken before the statement is sent: its answer's birth."""

    at: float  # time.monotonic()
    generation: int


@dataclass(frozen=True)
class _Entry:
    stamp: Stamp
    rows: Rows


def cache_seconds() -> float:
    seconds = float(settings.ACCESS_CACHE_SECONDS)
    if not 0 <= seconds < 1:
        raise ImproperlyConfigured("ACCESS_CACHE_SECONDS must be at least 0 and below 1 (CONTRACT §1: 1 s)")
    return seconds


class AccessCache:
    def __init__(self) -> None:
        self._entries: dict[Key, _Entry] = {}
        self._generation = 0
        self._lock = threading.Lock()

    def stamp(self) -> Stamp:
        return Stamp(at=time.monotonic(), generation=self._generation)

    def get(self, key: Key) -> Rows | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if not self._fresh(entry.stamp, time.monotonic(), cache_seconds()):
            self._entries.pop(key, None)
            return None
        return entry.rows

    def put(self, key: Key, stamp: Stamp, rows: Rows) -> None:
        seconds = cache_seconds()
        if seconds <= 0 or not self._fresh(stamp, time.monotonic(), seconds):
            return
        if len(self._entries) >= MAX_ENTRIES:
            self._sweep(seconds)
        self._entries[key] = _Entry(stamp=stamp, rows=rows)

    def drop_all(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries = {}

    def __len__(self) -> int:
        return len(self._entries)

    def _fresh(self, stamp: Stamp, now: float, seconds: float) -> bool:
        return stamp.generation == self._generation and now - stamp.at < seconds

    def _sweep(self, seconds: float) -> None:
        now = time.monotonic()
        kept = {key: e for key, e in list(self._entries.items()) if self._fresh(e.stamp, now, seconds)}
        self._entries = kept if len(kept) < MAX_ENTRIES else {}


access_cache = AccessCache()


def access_cache_drop(*, using: str | None = None) -> None:
    """Who may do what changed (a token revoked, a membership removed or its role
    changed) in the transaction open on `using` (Django's default alias if None): forget every answer now, and again once
    that commits (a request of this process may read the old state until then)."""
    access_cache.drop_all()
    transaction.on_commit(access_cache.drop_all, using=using)
