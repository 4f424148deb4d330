"""A replay fires no side effects. Services fire them with transaction.on_commit (the
project rule); here a wrapper around the real service registers one such callback,
so the test sees exactly what a realtime push or cache purge would see. Committed
data (`transaction=True`): on_commit only runs on a real commit."""

import pytest
from django.db import transaction

from finance.api import views
from finance.models import Expense

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def fired(monkeypatch) -> list[str]:
    events: list[str] = []
    real_create = views.entry_create

    def create_and_notify_on_commit(**kwargs):
        entry = real_create(**kwargs)
        transaction.on_commit(lambda: events.append(str(entry.id)))
        return entry

    monkeypatch.setattr(views, "entry_create", create_and_notify_on_commit)
    return events


def _post(tenant):
    return tenant.manager.post(
        tenant.url("/expenses"), tenant.entry_payload(), format="json", HTTP_IDEMPOTENCY_KEY="side-effects"
    )


def test_a_replay_fires_no_side_effect_from_the_cache_or_from_postgres(tenant, fired):
    from idempotency.identity import IdempotencyScope
    from idempotency.redis_fast_path import fast_path

    first = _post(tenant)
    assert first.status_code == 201
    assert fired == [first.json()["id"]]

    cached_replay = _post(tenant)
    assert cached_replay.headers["Idempotent-Replayed"] == "true"

    scope = IdempotencyScope.of(org_id=tenant.org.id, user_id=tenant.users["manager"].id, key="side-effects")
    fast_path()._client.delete(scope.redis_key())  # Redis lost it: Postgres answers
    postgres_replay = _post(tenant)
    assert postgres_replay.headers["Idempotent-Replayed"] == "true"
    assert postgres_replay.content == first.content

    assert fired == [first.json()["id"]]  # still the first request's one event
    assert Expense.objects.count() == 1
