"""The reference offline client of the sync protocol (CONTRACT §10, docs/sync.md).

Plain Python with httpx, no Django: what a mobile or web client does, in a form the
tests and the benchmark drive. `LocalStore` keeps the synced state, the cookie and the
queue of pending mutations (on disk, so a crash loses nothing queued); `SyncClient`
queues local changes, pushes them, pulls the server's changes and records conflicts.
"""

from syncclient.client import SyncClient, SyncError
from syncclient.store import LocalStore

__all__ = ["LocalStore", "SyncClient", "SyncError"]
