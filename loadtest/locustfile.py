"""Load test: hotel staff reading and booking, and front desks watching live updates.

Users come from the credentials CSV written by `manage.py seed_orgs`
(LOADTEST_CREDENTIALS). The mix, per API user: ~80 % reads (lists, details, summary),
~15 % creates with an Idempotency-Key whose retries reuse the key, ~5 % updates and
deletes. Writes go to a small set of "hot" orgs (LOADTEST_HOT_ORGS) so the websocket
users, which watch those orgs, can check that they received every committed change.

Every write that got a 2xx is appended to LOADTEST_JOURNAL (one JSON line each), which
`loadtest/run.py` checks against the database after the run. Websocket users write what
they received to the same journal when they stop.

Locust has no websocket user in core; `RealtimeUser` is a small one on websocket-client
(synchronous, so gevent's monkey-patched sockets make it cooperative).

`MobileSyncUser` is an offline-capable phone on the reference sync client (syncclient/):
it books expenses and revenues into its local queue, goes offline for random spells,
comes back, pushes in batches, pulls, and now and then loses a push's response and
pushes again. Its store is saved under LOADTEST_SYNC_STORES, where `loadtest/run.py`
reopens it after the run for the convergence audit.
"""

import contextlib
import csv
import itertools
import json
import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import gevent  # type: ignore[import-untyped]  # no stubs; Locust runs on it
import httpx
import websocket
from locust import FastHttpUser, User, between, events, task

from syncclient import LocalStore, SyncClient, SyncError

CREDENTIALS = os.environ.get("LOADTEST_CREDENTIALS", "reports/credentials.csv")
JOURNAL = os.environ.get("LOADTEST_JOURNAL", "reports/journal.jsonl")
HOT_ORGS = int(os.environ.get("LOADTEST_HOT_ORGS", "20"))
WS_URL = os.environ.get("LOADTEST_WS_URL", "")  # e.g. ws://127.0.0.1:8000; empty: derive from host
BARE = os.environ.get("LOADTEST_BARE", "") == "1"  # baseline: no Idempotency-Key, writes only
MAX_RETRIES = 7  # writes (same Idempotency-Key each time), reads and syncs, as a client


def backoff(attempt: int) -> float:
    """Seconds before retry `attempt` (0-based): 0.25, 0.5, 1, 2, 4, 4: a restart of the
    edge or the primary (several seconds) is ridden out, as a client library would."""
    return min(4.0, 0.25 * 2**attempt)


logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per sync request otherwise
_journal_lock = threading.Lock()


def journal(record: dict[str, Any]) -> None:
    with _journal_lock, open(JOURNAL, "a") as out:
        out.write(json.dumps(record) + "\n")


def _load_credentials() -> list[dict[str, str]]:
    with open(CREDENTIALS) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit(f"no credentials in {CREDENTIALS}: run manage.py seed_orgs --credentials-out first")
    return rows


# The hot org the fault drill moves to another cluster: it gets a share of the writers,
# of the sockets and of the phones, so the audits cover all three across the move.
MOVE_ORG = os.environ.get("LOADTEST_MOVE_ORG", "")
ATTEMPTS = os.environ.get("LOADTEST_ATTEMPTS", "")

SYNC_STORES = os.environ.get("LOADTEST_SYNC_STORES", "reports/sync-stores")
MOBILE_ORGS = int(os.environ.get("LOADTEST_MOBILE_ORGS", "10"))
OFFLINE_SECONDS = (float(os.environ.get("LOADTEST_OFFLINE_MIN", "2")),
                   float(os.environ.get("LOADTEST_OFFLINE_MAX", "60")))  # fmt: skip

_credentials: list[dict[str, str]] = []
_writers_by_org: dict[str, list[dict[str, str]]] = {}
_mobile_writers_by_org: dict[str, list[dict[str, str]]] = {}


@events.init.add_listener
def _load(environment: Any, **kwargs: Any) -> None:
    _credentials.extend(_load_credentials())
    for row in _credentials:
        # owners (u0) and managers (u1) may write; the first HOT_ORGS orgs take the writes.
        if row["username"].endswith(("-u0", "-u1")):
            _writers_by_org.setdefault(row["org_id"], []).append(row)
    # Phones get orgs of their own (after the hot ones): their audit compares each
    # phone's store with its org's final state, which no REST writer changes.
    for org in list(_writers_by_org)[HOT_ORGS : HOT_ORGS + MOBILE_ORGS]:
        _mobile_writers_by_org[org] = _writers_by_org[org]
    for org in list(_writers_by_org)[HOT_ORGS:]:
        del _writers_by_org[org]
    if MOVE_ORG:
        _mobile_writers_by_org[MOVE_ORG] = _writers_by_org[MOVE_ORG]


def _org_for(user_class: str, orgs: list[str]) -> str:
    """The moved org for every 4th user of a class (so each class has some there when
    there are few users), else one of `orgs` at random."""
    if MOVE_ORG and next(_assigned_by_class.setdefault(user_class, itertools.count())) % 4 == 0:
        return MOVE_ORG
    return random.choice(orgs)


_assigned_by_class: dict[str, Iterator[int]] = {}


# Every API attempt (retries included, as the server's SLI counts them), for the SLOs
# judged in loadtest/run.py: (time, ms, status); 5xx answers and refused connections
# also by endpoint with their Retry-After; and the edge's X-Cache verdict of each GET.
_attempts: list[tuple[float, int, int]] = []
_errors: list[tuple[float, int, str, str]] = []
_edge: dict[str, int] = {}


@events.request.add_listener
def _record_attempt(
    request_type: str, name: str, response_time: float, response: Any = None, **kwargs: Any
) -> None:
    if not ATTEMPTS or request_type not in ("GET", "POST", "PATCH", "DELETE"):
        return
    status = int(getattr(response, "status_code", 0) or 0)
    headers = getattr(response, "headers", None) or {}
    now = time.time()
    _attempts.append((round(now, 3), round(response_time), status))
    if status == 0 or status >= 500:
        _errors.append(
            (round(now, 3), status, name.removesuffix(" [retried]"), headers.get("Retry-After") or "")
        )
    if request_type == "GET" and status == 200:
        verdict = headers.get("X-Cache") or "none"
        _edge[verdict] = _edge.get(verdict, 0) + 1


# The load generator's own scheduling delay: it shares the cores with what it measures,
# and a response that arrives while its gevent loop is busy (or while the process waits
# for a core) is timed late by as much. A greenlet that sleeps 10 ms over and over notes
# how late it wakes: that lag rides on every response time Locust reports.
_loop_lag_ms: list[float] = []
LAG_PROBE_SECONDS = 0.01


def _watch_loop_lag() -> None:
    while True:
        asked = time.perf_counter()
        gevent.sleep(LAG_PROBE_SECONDS)
        _loop_lag_ms.append(round((time.perf_counter() - asked - LAG_PROBE_SECONDS) * 1000, 2))


@events.test_start.add_listener
def _start_lag_watch(environment: Any, **kwargs: Any) -> None:
    if ATTEMPTS:
        gevent.spawn(_watch_loop_lag)


@events.quitting.add_listener
def _write_attempts(environment: Any, **kwargs: Any) -> None:
    if ATTEMPTS:
        with open(ATTEMPTS, "w") as out:
            json.dump({"api": _attempts, "errors": _errors, "edge": _edge, "loop_lag_ms": _loop_lag_ms}, out)


class ApiClient(FastHttpUser):
    """What every API user does; the task mixes are in the subclasses."""

    abstract = True
    wait_time = between(0.05, 0.3)

    def on_start(self) -> None:
        self.reader = random.choice(_credentials)
        self.writer = random.choice(_writers_by_org[_org_for(type(self).__name__, list(_writers_by_org))])
        self.my_entries: list[tuple[str, str]] = []  # (kind, id) this user created

    def _headers(self, row: dict[str, str], key: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Token {row['token']}", "Content-Type": "application/json"}
        if key and not BARE:
            headers["Idempotency-Key"] = key
        return headers

    # --- reads ------------------------------------------------------------------------
    def _read(self, path: str, name: str, row: dict[str, str]) -> None:
        """GET, retried like any HTTP client with retries: on a refused or reset
        connection (status 0, e.g. while the edge restarts) or a 503 (its Retry-After
        honoured, e.g. while the primary restarts) up to MAX_RETRIES times."""
        for attempt in range(MAX_RETRIES):
            with self.client.get(
                path, headers=self._headers(row), name=name, catch_response=True
            ) as response:
                if response.status_code in (0, 503) and attempt + 1 < MAX_RETRIES:
                    response.success()  # only the final outcome counts
                    time.sleep(float((response.headers or {}).get("Retry-After") or backoff(attempt)))
                    continue
                if response.status_code != 200:
                    response.failure(f"{response.status_code}")
                return

    def list_expenses(self) -> None:
        org = self.reader["org_id"]
        self._read(f"/v1/orgs/{org}/expenses?page_size=20", "/v1/orgs/{org}/expenses [list]", self.reader)

    def list_revenues(self) -> None:
        org = self.reader["org_id"]
        self._read(f"/v1/orgs/{org}/revenues?page_size=20", "/v1/orgs/{org}/revenues [list]", self.reader)

    def summary(self) -> None:
        org = self.reader["org_id"]
        self._read(f"/v1/orgs/{org}/finance/summary", "/v1/orgs/{org}/finance/summary", self.reader)

    def detail(self) -> None:
        if not self.my_entries:
            return self.list_expenses()
        kind, entry_id = random.choice(self.my_entries)
        org = self.writer["org_id"]
        self._read(
            f"/v1/orgs/{org}/{kind}/{entry_id}", f"/v1/orgs/{{org}}/{kind}/{{id}} [detail]", self.writer
        )

    # --- writes -------------------------------------------------------------------------
    def _send(self, method: str, path: str, name: str, body: dict[str, Any] | None) -> Any:
        """Send a write, retrying with the SAME Idempotency-Key on 409/5xx/connection errors."""
        key = str(uuid.uuid4())
        for attempt in range(MAX_RETRIES):
            with self.client.request(method, path, headers=self._headers(self.writer, key),
                                     data=json.dumps(body) if body is not None else None, name=name,
                                     catch_response=True) as response:  # fmt: skip
                status = response.status_code
                if status in (200, 201, 204):
                    response.success()
                    return key, response
                if (status in {0, 409} or status >= 500) and attempt + 1 < MAX_RETRIES:
                    response.success()  # a retry follows; only the final outcome counts
                    time.sleep(float((response.headers or {}).get("Retry-After") or backoff(attempt)))
                    continue
                response.failure(f"{status}")
                return key, None
        return key, None

    def create(self) -> None:
        kind = random.choice(("expenses", "revenues"))
        org = self.writer["org_id"]
        body = {
            "property_id": random.choice(self.writer["property_ids"].split()),
            # one expense in twenty is large (>= 1000 EUR): its org's manager is alerted
            "amount": f"{random.randint(100_000, 500_000) / 100:.2f}"
            if random.random() < 0.05
            else f"{random.randint(100, 99_999) / 100:.2f}",
            "currency": "EUR",
            "category": random.choice(("laundry", "food", "energy", "rooms")),
            "occurred_on": time.strftime("%Y-%m-%d"),
        }
        key, response = self._send(
            "POST", f"/v1/orgs/{org}/{kind}", f"/v1/orgs/{{org}}/{kind} [create]", body
        )
        if response is not None:
            entry = response.json()
            self.my_entries.append((kind, entry["id"]))
            journal({"op": "create", "kind": kind, "org_id": org, "id": entry["id"], "key": key,
                     "amount": entry["amount"], "t": time.time()})  # fmt: skip

    def update(self) -> None:
        if not self.my_entries:
            return
        kind, entry_id = random.choice(self.my_entries)
        org = self.writer["org_id"]
        amount = f"{random.randint(100, 99_999) / 100:.2f}"
        key, response = self._send("PATCH", f"/v1/orgs/{org}/{kind}/{entry_id}",
                                   f"/v1/orgs/{{org}}/{kind}/{{id}} [update]", {"amount": amount})  # fmt: skip
        if response is not None:
            journal({"op": "update", "kind": kind, "org_id": org, "id": entry_id, "key": key, "amount": amount,
                     "t": time.time()})  # fmt: skip

    def delete(self) -> None:
        if not self.my_entries:
            return
        kind, entry_id = self.my_entries.pop(random.randrange(len(self.my_entries)))
        org = self.writer["org_id"]
        key, response = self._send("DELETE", f"/v1/orgs/{org}/{kind}/{entry_id}",
                                   f"/v1/orgs/{{org}}/{kind}/{{id}} [delete]", None)  # fmt: skip
        if response is not None:
            journal(
                {"op": "delete", "kind": kind, "org_id": org, "id": entry_id, "key": key, "t": time.time()}
            )


class ApiUser(ApiClient):
    """The realistic mix: 80 % reads, 15 % creates, 5 % updates and deletes."""

    # {task: weight}, which locust's metaclass turns into its list (the annotation knows only that)
    tasks = {  # type: ignore[assignment]
        ApiClient.list_expenses: 30,
        ApiClient.list_revenues: 15,
        ApiClient.summary: 25,
        ApiClient.detail: 10,
        ApiClient.create: 15,
        ApiClient.update: 3,
        ApiClient.delete: 2,
    }


class CreateListUser(ApiClient):
    """The baseline mix: create and list, nothing else, no think time.

    Run against the full path (edge, keys, replicas, metrics) and the bare path
    (LOADTEST_BARE=1 against gunicorn with those features off) to get the ratio.
    """

    wait_time = between(0, 0)
    tasks = {ApiClient.create: 1, ApiClient.list_expenses: 1}  # type: ignore[assignment]  # as ApiUser's


class RealtimeUser(User):
    """A front desk screen: one socket on a hot org, counting the events it receives.

    Like a real client it reconnects after a drop with `?last_event_id=` of the last
    event it saw, so the server replays what it missed. Each connection is journaled
    as a segment; a segment that ended by a drop is reported but not held to the
    "nothing lost" check (events published while Redis was down are lost by design).
    """

    fixed_count = int(os.environ.get("LOADTEST_WS_USERS", "10"))
    wait_time = between(1, 2)

    def on_start(self) -> None:
        self.org = _org_for("RealtimeUser", list(_writers_by_org))
        self.token = _writers_by_org[self.org][0]["token"]
        assert self.host is not None  # locust refuses to start users without one
        self.base = WS_URL or self.host.replace("http://", "ws://").replace("https://", "wss://")
        self.last_event_id: str | None = None
        self.stopping = False
        self.socket: websocket.WebSocket | None = None
        self.reader = threading.Thread(target=self._run, daemon=True)
        self.reader.start()

    def _url(self) -> str:
        url = f"{self.base}/v2/realtime/orgs/{self.org}/?token={self.token}"
        return url + (f"&last_event_id={self.last_event_id}" if self.last_event_id else "")

    def _connect(self) -> websocket.WebSocket | None:
        started = time.perf_counter()
        try:
            socket = websocket.create_connection(self._url(), timeout=10)
        except Exception:  # the edge restarting: _run tries again a second later, as an app would
            events.request.fire(request_type="WS", name="connect [retried]", response_length=0, exception=None,
                                response_time=(time.perf_counter() - started) * 1000)  # fmt: skip
            return None
        events.request.fire(request_type="WS", name="connect", response_time=(time.perf_counter() - started) * 1000,
                            response_length=0, exception=None)  # fmt: skip
        socket.settimeout(None)
        return socket

    def _run(self) -> None:
        while not self.stopping:
            self.socket = self._connect()
            if self.socket is None:
                time.sleep(1)
                continue
            connected_at = time.time()
            events: list[dict[str, Any]] = []
            dropped = self._read(self.socket, events)
            journal({"op": "ws", "org_id": self.org, "connected_at": connected_at, "left_at": time.time(),
                     "dropped": dropped and not self.stopping, "events": events})  # fmt: skip
            if not self.stopping:
                time.sleep(0.5)

    def _read(self, socket: websocket.WebSocket, received: list[dict[str, Any]]) -> bool:
        """Read until the socket closes; True when it closed on its own (a drop)."""
        while True:
            try:
                message = socket.recv()
            except Exception:
                return True
            if not message:
                return True
            event = json.loads(message)
            if event.get("event_id"):
                self.last_event_id = event["event_id"]
            if "data" in event:
                received.append({"type": event.get("type"), "id": event["data"].get("id"),
                                 "event_id": event.get("event_id"), "version": event.get("version"),
                                 "ts": event.get("ts"), "at": time.time()})  # fmt: skip
                events.request.fire(request_type="WS", name="event", response_time=0,
                                    response_length=len(message), exception=None)  # fmt: skip

    @task
    def idle(self) -> None:
        """The socket is read by a thread; the task loop only keeps the user alive."""

    def on_stop(self) -> None:
        self.stopping = True
        if self.socket is not None:
            with contextlib.suppress(Exception):  # the socket may already be gone
                self.socket.close()
        self.reader.join(timeout=5)


class _ReportingHttp(httpx.Client):
    """The sync client's HTTP, each request reported to Locust's statistics. As for the
    REST users, only final outcomes count as failures: an attempt the phone will retry
    (a refused connection, a 5xx) is reported under "[retried]"; MobileSyncUser._sync
    reports a failure when it gives up."""

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        started = time.perf_counter()
        name = f"/v1/orgs/{{org}}/sync/{request.url.path.rstrip('/').rsplit('/', 1)[-1]}"

        def report(suffix: str, length: int, error: str | None = None, response: Any = None) -> None:
            events.request.fire(request_type="POST", name=name + suffix, response_length=length, exception=error,
                                response_time=(time.perf_counter() - started) * 1000, response=response)  # fmt: skip

        try:
            response = super().send(request, **kwargs)
        except httpx.TransportError:
            report(" [retried]", 0)
            raise
        if response.status_code >= 500:
            report(" [retried]", len(response.content), response=response)
        else:  # a 409 is the protocol asking to resend from an id, not an error
            failed = (
                None
                if response.status_code < 400 or response.status_code == 409
                else f"{response.status_code}"
            )
            report("", len(response.content), failed, response)
        return response


class _PhoneStore(LocalStore):
    """The reference client's store, saved on a thread of gevent's pool: the phone still
    waits for its own save (written and fsynced before it goes on, as on a device), but
    the save's JSON dump and fsync no longer freeze Locust's one event loop, which timed
    every other simulated user's responses late by as much (the phones' saves were most
    of the loop's stalls over 15 ms at 20 users; docs/benchmarks.md)."""

    org_id = ""

    def save(self) -> None:
        gevent.get_hub().threadpool.apply(LocalStore.save, (self,))

    def enqueue(self, name: str, args: dict[str, Any], *, after: int | None = None) -> dict[str, Any]:
        """The audit's record of a create, written before the save yields to the event
        loop: a phone stopped during its save (the run's end) still pushes what it saved,
        and its row must not count as a write nobody was told of."""
        if name.endswith(".create"):
            journal({"op": "sync_create", "org_id": self.org_id, "id": args["id"]})
        return super().enqueue(name, args, after=after)


class MobileSyncUser(User):
    """A phone at a front desk or in a manager's pocket, often out of coverage."""

    fixed_count = int(os.environ.get("LOADTEST_MOBILE_USERS", "10"))
    wait_time = between(1, 4)

    def on_start(self) -> None:
        if not _mobile_writers_by_org:
            raise SystemExit("no orgs left for phones: seed more orgs or lower LOADTEST_HOT_ORGS")
        self.org = _org_for("MobileSyncUser", [org for org in _mobile_writers_by_org if org != MOVE_ORG])
        self.row = random.choice(_mobile_writers_by_org[self.org])
        os.makedirs(SYNC_STORES, exist_ok=True)
        path = os.path.join(SYNC_STORES, f"{uuid.uuid4()}.json")
        assert self.host is not None  # locust refuses to start users without one
        store = _PhoneStore.open(path)
        store.org_id = self.org
        self.sync_client = SyncClient(self.host, self.row["token"], self.org, store,
                                      http=_ReportingHttp(timeout=30))  # fmt: skip
        journal({"op": "sync_client", "org_id": self.org, "token": self.row["token"], "store": path,
                 "client_id": self.sync_client.store.client_id})  # fmt: skip
        self.offline_until = 0.0
        self.created: set[str] = set()
        self._sync()

    def _sync(self) -> bool:
        """Push and pull, riding out a restart (503 with Retry-After, a refused
        connection) like the app would: the queue stays until a pull confirms it."""
        error: Exception | None = None
        for attempt in range(MAX_RETRIES):
            try:
                self.sync_client.sync()
                return True
            except SyncError as failed:
                if failed.response.status_code < 500:
                    return False  # reported as it happened: a client error is not retried
                error = failed
                time.sleep(float(failed.response.headers.get("Retry-After") or backoff(attempt)))
            except httpx.TransportError as failed:
                error = failed
                time.sleep(backoff(attempt))
        events.request.fire(request_type="SYNC", name="sync [gave up]", response_time=0, response_length=0,
                            exception=error)  # fmt: skip
        return False

    def _book(self) -> None:
        """One change in the local queue: mostly new entries, some edits and deletions."""
        entries = [key for key in self.sync_client.store.view() if not key.startswith("property:")]
        if self.org == MOVE_ORG:
            # REST users write to this org too, and the database audit holds every
            # acknowledged REST write to its last amount: phones here edit their own.
            entries = [key for key in entries if key.partition(":")[2] in self.created]
        roll = random.random()
        if entries and roll < 0.12:
            kind, entry_id = random.choice(entries).split(":", 1)
            self.sync_client.update(kind, entry_id, amount=f"{random.randint(100, 99_999) / 100:.2f}")
        elif entries and roll < 0.16:
            kind, entry_id = random.choice(entries).split(":", 1)
            self.sync_client.delete(kind, entry_id)
        else:
            entity_id = self.sync_client.create(
                random.choice(("expense", "revenue")),
                property_id=random.choice(self.row["property_ids"].split()),
                amount=f"{random.randint(100, 99_999) / 100:.2f}",
                currency="EUR",
                category=random.choice(("laundry", "food", "energy", "rooms")),
                occurred_on=time.strftime("%Y-%m-%d"),
            )
            self.created.add(entity_id)  # journaled by the store (_PhoneStore.enqueue)

    @task
    def work(self) -> None:
        for _ in range(random.randint(1, 3)):
            self._book()
        now = time.time()
        if now < self.offline_until:
            return  # out of coverage: the queue grows
        if random.random() < 0.15:
            self.offline_until = now + random.uniform(*OFFLINE_SECONDS)
            return
        if random.random() < 0.1:
            # The push arrives but its response is lost (the lift doors close): the
            # app does not know, and pushes the same mutations again below.
            with contextlib.suppress(httpx.HTTPError):
                self.sync_client.http.post(
                    f"{self.sync_client.org_url}/sync/push",
                    json={
                        "client_id": self.sync_client.store.client_id,
                        "mutations": self.sync_client.outgoing(),
                    },
                    headers=self.sync_client.headers,
                )
        self._sync()
        for conflict in list(self.sync_client.store.rejections):
            self.sync_client.dismiss(conflict)  # the server's value stands (docs/sync.md)

    def on_stop(self) -> None:
        self.offline_until = 0.0
        self._sync()
