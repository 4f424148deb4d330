"""The client's local state: what the server last said, and what is still to send.

- `base`: the org's entities as of `cookie`, exactly as pulls delivered them;
- `pending`: queued mutations, in id order, kept until a pull reports them processed
  (`last_mutation_id`), because only then does `base` hold their effect;
- `view()`: `base` with the pending mutations applied on top: what the user sees.

`save()` writes the whole store atomically (temporary file, then rename) when a path
is given, so a client killed at any point restarts from its last saved state.
"""

import json
import os
import tempfile
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Self

Key = str  # "<entity>:<id>"


def key_of(entity: str, entity_id: str) -> Key:
    return f"{entity}:{entity_id}"


@dataclass
class LocalStore:
    client_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    cookie: str | None = None
    base: dict[Key, dict[str, Any]] = field(default_factory=dict)
    pending: list[dict[str, Any]] = field(default_factory=list)
    next_mutation_id: int = 1
    rejections: list[dict[str, Any]] = field(default_factory=list)  # for the user to review
    # versions the server gave this client's applied mutations (by mutation id), until a
    # pull confirms them: a later change of the same entity is made on that version
    applied_versions: dict[str, int] = field(default_factory=dict)
    path: str | None = None

    @classmethod
    def open(cls, path: str | Path) -> Self:
        """The store saved at `path`, or a new one (a new client id) if there is none."""
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            return cls(path=str(path))
        return cls(**data, path=str(path))

    def save(self) -> None:
        if self.path is None:
            return
        data = asdict(self)
        del data["path"]
        directory = os.path.dirname(os.path.abspath(self.path))
        with tempfile.NamedTemporaryFile("w", dir=directory, delete=False) as handle:
            json.dump(data, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, self.path)

    def enqueue(self, name: str, args: dict[str, Any], *, after: int | None = None) -> dict[str, Any]:
        """Queue a mutation. `after`: the pending mutation of the same entity this one
        builds on (its base_version is known once that one is applied)."""
        mutation: dict[str, Any] = {"id": self.next_mutation_id, "name": name, "args": args}
        if after is not None:
            mutation["after"] = after
        self.next_mutation_id += 1
        self.pending.append(mutation)
        self.save()
        return mutation

    def last_pending_of(self, entity: str, entity_id: str) -> int | None:
        ids = [
            m["id"]
            for m in self.pending
            if m["name"].startswith(f"{entity}.") and m["args"]["id"] == entity_id
        ]
        return ids[-1] if ids else None

    def view(self) -> dict[Key, dict[str, Any]]:
        state = {key: dict(value) for key, value in self.base.items()}
        for mutation in self.pending:
            entity, _, action = mutation["name"].partition(".")
            args = dict(mutation["args"])
            key = key_of(entity, args["id"])
            if action == "delete":
                state.pop(key, None)
            elif action == "create":
                state[key] = args
            elif key in state:
                args.pop("base_version", None)
                state[key].update(args)
        return state
