"""A model-based test of sync (CONTRACT §10), a seeded randomised driver over the real
stack (gunicorn, Postgres, Redis): several offline clients queue changes, push
duplicates, reordered and concurrent batches, crash between push and response, and pull
while REST writers change the same entries. At the end every client holds exactly the
server's state, every queued mutation was processed once and none twice.

The seeds are fixed, so a failure replays; each run is a few dozen HTTP calls."""

import random
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from changelog.models import OrgChangeCounter, Tombstone
from syncclient import LocalStore, SyncClient
from tests.realtime_client import token_of
from tests.sync_support import server_state

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

SEEDS = [7, 1234, 90210]
STEPS = 24


class Device:
    """One install: a store on disk and a client; `crash()` forgets everything in memory."""

    def __init__(self, base_url: str, token: str, org_id: str, path: Path) -> None:
        self.base_url, self.token, self.org_id, self.path = base_url, token, org_id, path
        self.online = True
        self.crash()

    def crash(self) -> None:
        self.client = SyncClient(
            self.base_url, self.token, self.org_id, LocalStore.open(self.path), pull_limit=7
        )

    def wire_batch(self) -> list[dict[str, Any]]:
        batch = []
        for mutation in self.client.store.pending:
            wire = self.client._resolved(mutation)
            if wire is None:
                break
            batch.append(wire)
        return batch


class Model:
    def __init__(self, seed: int, live: str, tenant: Any, tmp_path: Path) -> None:
        self.rng = random.Random(seed)
        self.live, self.tenant = live, tenant
        org_id = str(tenant.org.id)
        self.devices = [
            Device(live, token_of(tenant.users[role]), org_id, tmp_path / f"{seed}-{n}.json")
            for n, role in enumerate(["manager", "manager", "owner"])
        ]
        self.rest = httpx.Client(
            base_url=live, headers={"Authorization": f"Token {token_of(tenant.users['owner'])}"}, timeout=30
        )
        self.applied: Counter[tuple[str, int]] = Counter()  # (client, mutation id) -> "applied" answers
        self.rejected: set[tuple[str, int]] = set()
        self.created: set[str] = set()  # entry ids of applied creates
        self.rest_writes = 0
        self.actions: Counter[str] = Counter()
        self.lock = threading.Lock()

    # --- bookkeeping ----------------------------------------------------------------------
    def record(self, device: Device, batch: list[dict[str, Any]], response: httpx.Response) -> None:
        if response.status_code == 409:
            assert "expected" in response.json(), response.text
            return
        assert response.status_code == 200, response.text
        sent = {m["id"]: m for m in batch}
        with self.lock:
            for result in response.json()["results"]:
                key = (device.client.store.client_id, result["id"])
                if result["status"] == "applied":
                    self.applied[key] += 1
                    if sent[result["id"]]["name"].endswith(".create"):
                        self.created.add(sent[result["id"]]["args"]["id"])
                elif result["status"] == "rejected":
                    self.rejected.add(key)
                    assert result["error"]["code"] in {"conflict", "not_found"}, result  # valid args only

    def post_push(self, device: Device, batch: list[dict[str, Any]], **headers: str) -> httpx.Response:
        return httpx.post(
            f"{self.live}/v1/orgs/{device.org_id}/sync/push",
            json={"client_id": device.client.store.client_id, "mutations": batch},
            headers={"Authorization": f"Token {device.token}", **headers},
            timeout=30,
        )

    # --- actions --------------------------------------------------------------------------
    def local_changes(self, device: Device) -> None:
        for _ in range(self.rng.randint(1, 3)):
            view = [key for key in sorted(device.client.store.view()) if not key.startswith("property:")]
            choice = self.rng.random()
            if not view or choice < 0.45:
                kind = self.rng.choice(["expense", "revenue"])
                device.client.create(
                    kind,
                    **self.tenant.entry_payload(
                        amount=f"{self.rng.randint(1, 900)}.{self.rng.randint(0, 99):02d}"
                    ),
                )
            elif choice < 0.85:
                kind, entry_id = self.rng.choice(view).split(":")
                device.client.update(kind, entry_id, category=f"c{self.rng.randint(0, 99)}")
            else:
                kind, entry_id = self.rng.choice(view).split(":")
                device.client.delete(kind, entry_id)

    def push(self, device: Device) -> None:
        batch = device.wire_batch()
        if batch:
            response = self.post_push(device, batch)
            self.record(device, batch, response)
            if response.status_code == 200:
                device.client._note_results(batch, response.json()["results"])

    def push_concurrent_duplicates(self, device: Device) -> None:
        batch = device.wire_batch()
        if not batch:
            return
        with ThreadPoolExecutor(3) as pool:
            responses = list(pool.map(lambda _: self.post_push(device, batch), range(3)))
        for response in responses:
            self.record(device, batch, response)
        device.client._note_results(batch, [r for resp in responses for r in resp.json()["results"]])

    def push_reordered(self, device: Device) -> None:
        batch = device.wire_batch()
        if len(batch) < 2:
            return self.push(device)
        half = len(batch) // 2
        response = self.post_push(device, batch[half:])  # the later half first: a gap...
        if response.status_code == 409:
            assert response.json()["expected"] in {m["id"] for m in batch[:half]}
        else:  # ...unless the first half was processed already (not yet pulled back)
            self.record(device, batch[half:], response)
            device.client._note_results(batch[half:], response.json()["results"])
        return self.push(device)

    def crash_between_push_and_response(self, device: Device) -> None:
        batch = device.wire_batch()
        if not batch:
            return
        key = f"crash-{uuid.uuid4()}"
        self.post_push(device, batch, **{"Idempotency-Key": key})  # the answer is lost
        device.crash()
        # Restarted, the client sends the very request it had saved, with its key: the
        # server answers what it did the first time, and writes nothing again.
        replay = self.post_push(device, batch, **{"Idempotency-Key": key})
        assert replay.headers.get("Idempotent-Replayed") == "true"
        self.record(device, batch, replay)
        device.client._note_results(batch, replay.json()["results"])
        self.push(device)  # and a plain retry: every id is already_applied now

    def pull_during_rest_writes(self, device: Device) -> None:
        writer = threading.Thread(target=self.rest_writes_burst)
        writer.start()
        try:
            device.client.pull()
        finally:
            writer.join()

    def rest_writes_burst(self) -> None:
        for _ in range(self.rng.randint(1, 2)):
            self.rest_write()

    def rest_write(self) -> None:
        key = {"Idempotency-Key": str(uuid.uuid4())}
        listing = self.rest.get(self.tenant.url("/expenses")).json()["results"]
        if not listing or self.rng.random() < 0.4:
            response = self.rest.post(
                self.tenant.url("/expenses"), json=self.tenant.entry_payload(), headers=key
            )
            assert response.status_code == 201, response.text
        elif self.rng.random() < 0.75:
            target = self.rng.choice(listing)
            response = self.rest.patch(
                self.tenant.url(f"/expenses/{target['id']}"), json={"amount": "77.70"}, headers=key
            )
            assert response.status_code in (200, 404), response.text
        else:
            target = self.rng.choice(listing)
            response = self.rest.delete(self.tenant.url(f"/expenses/{target['id']}"), headers=key)
            assert response.status_code in (204, 404), response.text
        if response.status_code < 300:
            with self.lock:
                self.rest_writes += 1

    def step(self) -> None:
        device = self.rng.choice(self.devices)
        action = self.rng.choices(
            ["change", "push", "dupes", "reorder", "crash", "pull", "rest", "offline"],
            weights=[5, 3, 1, 1, 1, 3, 2, 1],
        )[0]
        self.actions[action] += 1
        if action == "change":
            self.local_changes(device)
        elif action == "offline":
            device.online = not device.online
        elif action == "rest":
            self.rest_write()
        elif not device.online:
            self.local_changes(device)  # offline: the user keeps working
        else:
            {
                "push": self.push,
                "dupes": self.push_concurrent_duplicates,
                "reorder": self.push_reordered,
                "crash": self.crash_between_push_and_response,
                "pull": self.pull_during_rest_writes,
            }[action](device)

    def converge(self) -> None:
        for device in self.devices:
            device.online = True
        for _ in range(6):
            for device in self.devices:
                batch = device.wire_batch()
                if batch:
                    response = self.post_push(device, batch)
                    self.record(device, batch, response)
                    device.client._note_results(batch, response.json()["results"])
                device.client.pull()
            if not any(d.client.store.pending for d in self.devices):
                break
        for device in self.devices:
            device.client.pull()


@pytest.mark.parametrize("seed", SEEDS)
def test_offline_clients_converge_to_the_server_state_with_every_mutation_applied_once(
    seed, live_wsgi, tenant, tmp_path
):
    model = Model(seed, live_wsgi, tenant, tmp_path)
    for _ in range(STEPS):
        model.step()
    model.converge()
    assert len(model.applied) >= 10 and model.rest_writes >= 1, (model.actions, len(model.applied))

    state = {
        f"{entity}:{entity_id}": value for (entity, entity_id), value in server_state(tenant.org.id).items()
    }
    for device in model.devices:
        store = device.client.store
        assert store.pending == [], "every queued mutation was processed"
        assert store.base == state, "the client holds exactly the server's state"
        assert device.client.store.view() == state
        processed = [k for k in (*model.applied, *model.rejected) if k[0] == store.client_id]
        assert sorted(mid for _, mid in processed) == list(range(1, store.next_mutation_id))  # none lost
    assert max(model.applied.values(), default=0) == 1, "no mutation applied twice"
    assert not set(model.applied) & model.rejected
    # Every version the org took is one REST write or one applied mutation: nothing twice.
    counter = OrgChangeCounter.objects.get(org_id=tenant.org.id).version
    assert counter == model.rest_writes + len(model.applied)  # fixture orgs start at 0
    deleted = set(
        map(str, Tombstone.objects.filter(org_id=tenant.org.id).values_list("entity_id", flat=True))
    )
    assert all(
        any(key.endswith(entry_id) for key in state) or entry_id in deleted for entry_id in model.created
    )
    assert sum(1 for v in state.values() if "amount" in v and Decimal(v["amount"]) <= 0) == 0
