"""Push, pull and conflict handling over HTTP (httpx), as docs/sync.md describes.

    client = SyncClient(base_url, token, org_id, LocalStore.open("org.json"))
    expense_id = client.create("expense", property_id=..., amount="12.50", ...)
    client.sync()          # push what is queued, then pull until has_more is false

Failures are ordinary: a push whose response never arrives is simply pushed again
(mutation ids make that safe); a pull that fails keeps the old cookie.
"""

import uuid
from typing import Any

import httpx

from syncclient.store import LocalStore, key_of


class SyncError(Exception):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__(
            f"{response.request.method} {response.request.url}: {response.status_code} {response.text[:300]}"
        )
        self.response = response


class SyncClient:
    def __init__(
        self,
        base_url: str,
        token: str,
        org_id: str,
        store: LocalStore,
        *,
        http: httpx.Client | None = None,
        pull_limit: int = 500,
    ) -> None:
        self.org_url = f"{base_url.rstrip('/')}/v1/orgs/{org_id}"
        self.store = store
        self.pull_limit = pull_limit
        self.http = http or httpx.Client(timeout=30)
        self._waiting = False  # the last push left mutations waiting for a base version
        self.headers = {"Authorization": f"Token {token}"}

    # --- local changes: queued, visible at once in view() ------------------------------
    def create(self, entity: str, **fields: Any) -> str:
        entity_id = str(uuid.uuid4())  # the client names what it creates
        self.store.enqueue(f"{entity}.create", {"id": entity_id, **fields})
        return entity_id

    def update(self, entity: str, entity_id: str, **changes: Any) -> None:
        self._enqueue_change(f"{entity}.update", entity, entity_id, changes)

    def delete(self, entity: str, entity_id: str) -> None:
        self._enqueue_change(f"{entity}.delete", entity, entity_id, {})

    def _enqueue_change(self, name: str, entity: str, entity_id: str, changes: dict[str, Any]) -> None:
        """A change is made on the version the user sees: the pulled one, or, when this
        client still has a change of the entity queued, the version that one gets (filled
        in at push time, once the server has said it)."""
        after = self.store.last_pending_of(entity, entity_id)
        base_version = None if after is not None else self._pulled_version(entity, entity_id)
        self.store.enqueue(name, {"id": entity_id, "base_version": base_version, **changes}, after=after)

    def _pulled_version(self, entity: str, entity_id: str) -> int:
        value = self.store.base.get(key_of(entity, entity_id))
        return int(value["version"]) if value else 0

    def _resolved(self, mutation: dict[str, Any]) -> dict[str, Any] | None:
        """The mutation as sent, or None while its base_version is not known yet."""
        wire = {"id": mutation["id"], "name": mutation["name"], "args": dict(mutation["args"])}
        after = mutation.get("after")
        if after is None or wire["args"].get("base_version") is not None:
            return wire
        if str(after) in self.store.applied_versions:
            wire["args"]["base_version"] = self.store.applied_versions[str(after)]
        elif all(m["id"] != after for m in self.store.pending):  # confirmed by a pull: in base
            entity = mutation["name"].partition(".")[0]
            wire["args"]["base_version"] = self._pulled_version(entity, wire["args"]["id"])
        else:
            return None
        mutation["args"]["base_version"] = wire["args"]["base_version"]  # fixed from now on
        return wire

    # --- the protocol -------------------------------------------------------------------
    def push(self, *, batch_size: int = 100, idempotency_key: str | None = None) -> list[dict[str, Any]]:
        """Send the queue in batches; returns the results. Pending mutations stay queued
        until a pull confirms them; rejections are kept in store.rejections."""
        results: list[dict[str, Any]] = []
        self._waiting = False
        start = 0
        while start < len(self.store.pending):
            batch = []
            self._waiting = False
            for mutation in self.store.pending[start : start + batch_size]:
                wire = self._resolved(mutation)
                if wire is None:
                    self._waiting = True
                    break  # waits for the version of the change it builds on
                batch.append(wire)
            if not batch:
                return results
            headers = dict(self.headers)
            if idempotency_key is not None:
                headers["Idempotency-Key"] = f"{idempotency_key}-{batch[0]['id']}"
            response = self.http.post(
                f"{self.org_url}/sync/push",
                json={"client_id": self.store.client_id, "mutations": batch},
                headers=headers,
            )
            if response.status_code == 409 and "expected" in response.json():
                # The server expects an id we hold: resend from there. One we no longer
                # hold means this store lost mutations: only a new client id can go on.
                expected = response.json()["expected"]
                index = next((i for i, m in enumerate(self.store.pending) if m["id"] == expected), None)
                if index is None:
                    raise SyncError(response)
                start = index
                continue
            if response.status_code != 200:
                raise SyncError(response)
            body = response.json()
            results += body["results"]
            self._note_results(batch, body["results"])
            start += len(batch)  # a mutation that waited may be resolvable now
        return results

    def _note_results(self, batch: list[dict[str, Any]], results: list[dict[str, Any]]) -> None:
        sent = {m["id"]: m for m in batch}
        for result in results:
            if result["status"] == "applied":
                self.store.applied_versions[str(result["id"])] = result["version"]
            elif result["status"] == "rejected":
                self.store.rejections.append({"mutation": sent[result["id"]], "error": result["error"]})
        self.store.save()

    def pull(self) -> int:
        """Pull until has_more is false; returns the number of changes applied."""
        applied = 0
        while True:
            response = self.http.post(
                f"{self.org_url}/sync/pull",
                json={
                    "cookie": self.store.cookie,
                    "client_id": self.store.client_id,
                    "limit": self.pull_limit,
                },
                headers=self.headers,
            )
            if response.status_code != 200:
                raise SyncError(response)
            page = response.json()
            if page["reset"]:
                self.store.base = {}
            for change in page["changes"]:
                key = key_of(change["entity"], change["id"])
                if change["op"] == "put":
                    self.store.base[key] = change["value"]
                else:
                    self.store.base.pop(key, None)
            applied += len(page["changes"])
            # The page and last_mutation_id come from one snapshot: what it counts as
            # processed is in base now, so it leaves the queue.
            last = page["last_mutation_id"]
            self.store.pending = [m for m in self.store.pending if m["id"] > last]
            self.store.applied_versions = {
                k: v for k, v in self.store.applied_versions.items() if int(k) > last
            }
            self.store.cookie = page["cookie"]
            self.store.save()
            if not page["has_more"]:
                return applied

    def sync(self) -> None:
        """Push, pull, and push again what had to wait for a version the pull brought."""
        self.push()
        self.pull()
        for _ in range(3):
            if not self._waiting:
                return
            self.push()
            self.pull()

    # --- conflicts ----------------------------------------------------------------------
    def conflicts(self) -> list[dict[str, Any]]:
        return [r for r in self.store.rejections if r["error"].get("code") == "conflict"]

    def keep_mine(self, conflict: dict[str, Any]) -> None:
        """The user chose their change over the server's: queue it again on the current
        version (a new mutation; the server value it replaces was shown to the user)."""
        mutation, current = conflict["mutation"], conflict["error"]["current"]
        args = {**mutation["args"], "base_version": current["version"]}
        self.store.rejections.remove(conflict)
        self.store.enqueue(mutation["name"], args)

    def dismiss(self, rejection: dict[str, Any]) -> None:
        """The server's value stands (the default: it is already in base after a pull)."""
        self.store.rejections.remove(rejection)
        self.store.save()
