"""What the token + membership checks cost on the primary vs position-aware on a replica.

    make bench-access   # BENCH_ITERATIONS=2000 BENCH_ROUNDS=3

Every API request of an org runs two lookups before its own work: the token (knox
digest) and the caller's membership. The service routes both to the primary
(`replicas.context.primary_reads`), so a revocation holds at once whatever a replica
has replayed. The alternative, position-aware routing, sends them to a replica that
has replayed the client's last write position (one Redis read per request, then the
replica). This measures both, side by side in one run, in one process against the
local stack (dev database, real replicas, real Redis), with a bare baseline of the
same two round trips as `SELECT 1` on the primary. It measures the position-aware
path at its cheapest: a correct one would also need a per-user "last access change"
marker (another Redis read), since a removed member's own position never covers the
owner's removal.
"""

import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django

django.setup()

from django.db import connections
from django.test import RequestFactory

from accounts.models import User
from accounts.selectors import token_find
from accounts.tokens import token_issue
from replicas.context import primary_reads, request_routing
from replicas.middleware import routing_for
from tenancy.models import Membership
from tenancy.roles import Role
from tenancy.selectors import membership_get
from tenancy.services import organization_create

ITERATIONS = int(os.environ.get("BENCH_ITERATIONS", "2000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


def fixture() -> tuple[str, Any]:
    user, _ = User.objects.get_or_create(username="bench-access")
    membership = Membership.objects.filter(user=user).select_related("org").first()
    if membership is None:
        membership = organization_create(name="Bench access", owner=user)
    assert membership.role == Role.OWNER
    _, token = token_issue(user=user)
    return token, membership.org_id


def one_check(token: str, org_id: Any, request: Any, *, on_primary: bool) -> str:
    with request_routing(routing_for(request)) as state:
        if on_primary:
            with primary_reads():
                found = token_find(token=token)
                assert found is not None
                membership_get(org_id=org_id, user=found.user)
        else:
            found = token_find(token=token)
            assert found is not None
            membership_get(org_id=org_id, user=found.user)
        return state.served[0] if state.served else "default"


def bare(_token: str, _org_id: Any, _request: Any, **_options: Any) -> str:
    for _ in range(2):
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
    return "default"


def measure(check: Any, token: str, org_id: Any, request: Any, **kwargs: Any) -> tuple[list[float], dict]:
    times: list[float] = []
    served: dict[str, int] = {}
    for _ in range(ITERATIONS):
        start = time.perf_counter()
        alias = check(token, org_id, request, **kwargs)
        times.append(time.perf_counter() - start)
        served[alias] = served.get(alias, 0) + 1
    return times, served


def main() -> None:
    token, org_id = fixture()
    request = RequestFactory().get(f"/v1/orgs/{org_id}/expenses", HTTP_AUTHORIZATION=f"Token {token}")
    for _ in range(300):  # warm pools and the replica checker
        one_check(token, org_id, request, on_primary=False)
        time.sleep(0.001)
    results: dict[str, list[float]] = {"bare": [], "primary": [], "replica": []}
    served: dict[str, dict] = {"bare": {}, "primary": {}, "replica": {}}
    for _ in range(ROUNDS):
        for name, check, kwargs in (
            ("bare", bare, {}),
            ("primary", one_check, {"on_primary": True}),
            ("replica", one_check, {"on_primary": False}),
        ):
            times, where = measure(check, token, org_id, request, **kwargs)
            results[name] += times
            for alias, count in where.items():
                served[name][alias] = served[name].get(alias, 0) + count
    base = statistics.median(results["bare"])
    print(f"access checks (token + membership), {ROUNDS} rounds x {ITERATIONS} iterations, one thread")
    print(f"{'mode':<10}{'p50 ms':>9}{'p95 ms':>9}{'mean ms':>9}{'x bare p50':>12}  served by")
    for name, times in results.items():
        p50, mean = statistics.median(times), statistics.fmean(times)
        p95 = statistics.quantiles(times, n=20)[18]
        print(
            f"{name:<10}{p50 * 1000:>9.3f}{p95 * 1000:>9.3f}{mean * 1000:>9.3f}{p50 / base:>12.2f}  {served[name]}"
        )


if __name__ == "__main__":
    main()
