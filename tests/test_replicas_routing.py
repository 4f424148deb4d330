"""Read routing against the local stack's real streaming replicas (committed data,
`transaction=True`). Which database served a read is read from the request's routing
state (`X-DB-Read-From` over HTTP), which records the alias a statement actually ran
on; test_replica_aliases_are_real_standbys proves those aliases are the standbys."""

import asyncio
import hashlib
from collections import Counter

import pytest
from asgiref.sync import sync_to_async
from django.db import connection, connections, transaction

from replicas.context import request_routing
from replicas.stats import routing_stats
from tenancy.models import Organization

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def test_replica_aliases_are_real_standbys(replicas_live):
    ports = {}
    for alias in ("default", "replica1", "replica2"):
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT pg_is_in_recovery(), inet_server_port(), current_database()")
            in_recovery, port, database = cursor.fetchone()
        assert in_recovery is (alias != "default")
        assert database == connections["default"].settings_dict["NAME"]
        ports[alias] = port
    assert len(set(ports.values())) == 3


def test_read_your_writes_500_times_with_a_paused_replica(replicas_live, tenant, settings):
    settings.API_RATE_LIMIT_PER_MINUTE = 0  # 1000 requests of one token within a minute
    replicas_live.wait_caught_up()
    client, url = tenant.manager, tenant.url("/expenses")
    served: Counter[str] = Counter()
    with replicas_live.replay_paused("replica1"):
        for n in range(500):
            created = client.post(url, tenant.entry_payload(amount=f"{n + 1}.00"), format="json")
            assert created.status_code == 201
            assert created["X-DB-Position"]
            listed = client.get(url, {"page_size": 3})
            assert listed.status_code == 200
            assert created.json()["id"] in [e["id"] for e in listed.json()["results"]], f"stale read #{n}"
            served[listed["X-DB-Read-From"]] += 1
    # replica1 never replayed those writes, so it never served this client; the other
    # replica did most of the time, the primary otherwise.
    assert "replica1" not in served
    assert set(served) <= {"replica2", "default"}
    assert served["replica2"] > 250, served

    replicas_live.wait_caught_up()
    served.clear()
    for _ in range(200):
        created = client.post(url, tenant.entry_payload(), format="json").json()
        listed = client.get(url, {"page_size": 3})
        assert created["id"] in [e["id"] for e in listed.json()["results"]]
        served[listed["X-DB-Read-From"]] += 1
    assert served["replica1"] + served["replica2"] > 150, served
    assert served["replica1"] > 40 and served["replica2"] > 40, served


def test_a_colleague_sees_a_write_at_once_and_other_orgs_keep_their_replicas(
    replicas_live, tenant, other_tenant
):
    """Positions are kept per client AND per org: a write raises the position every
    reader of that org must see (the edge's cache refill arrives with whichever member
    missed first), while readers of other orgs are not held back."""
    replicas_live.wait_caught_up()
    served: Counter[str] = Counter()
    with replicas_live.replay_paused("replica1"):
        for n in range(100):
            created = tenant.manager.post(
                tenant.url("/expenses"), tenant.entry_payload(amount=f"{n + 1}.00"), format="json"
            )
            listed = tenant.viewer.get(tenant.url("/expenses"), {"page_size": 3})
            assert created.json()["id"] in [e["id"] for e in listed.json()["results"]], f"stale read #{n}"
            served[listed["X-DB-Read-From"]] += 1
        elsewhere = Counter(
            other_tenant.viewer.get(other_tenant.url("/expenses"))["X-DB-Read-From"] for _ in range(60)
        )
    assert "replica1" not in served, served
    assert elsewhere["replica1"] > 0, elsewhere  # another org still reads the paused replica


def test_a_new_token_reads_its_own_writes(replicas_live, make_user, client_for):
    """The token issued by POST /v1/auth/token is looked up at once on the next request:
    token checks read the primary (the paused replicas do not have it); the request's
    other reads may still use a replica."""
    replicas_live.wait_caught_up()
    with replicas_live.replay_paused("replica1"), replicas_live.replay_paused("replica2"):
        for n in range(5):
            make_user(f"fresh{n}", password="pw-123456!")
            token = client_for(None).post(
                "/v1/auth/token", {"username": f"fresh{n}", "password": "pw-123456!"}, format="json"
            )
            assert token.status_code == 200
            client = client_for(None)
            client.credentials(HTTP_AUTHORIZATION=f"Token {token.json()['token']}")
            response = client.get("/v1/orgs")
            assert response.status_code == 200
            digest = hashlib.sha512(token.json()["token"].encode()).hexdigest()
            for replica in ("replica1", "replica2"):
                query = "SELECT count(*) FROM knox_authtoken WHERE digest = %s"
                assert replicas_live.sql(replica, query, (digest,))[0] == 0  # only the primary could answer


def test_balance_over_10000_routed_reads(replicas_live):
    org = Organization.objects.create(name="balance")
    replicas_live.wait_caught_up()
    served: Counter[str] = Counter()
    for _ in range(10_000):
        with request_routing() as state:
            assert Organization.objects.filter(pk=org.pk).exists()
            served[",".join(state.served)] += 1
    assert set(served) == {"replica1", "replica2"}, served
    for alias in ("replica1", "replica2"):
        assert 0.45 <= served[alias] / 10_000 <= 0.55, served
    assert routing_stats.snapshot()["replica_queries"] == dict(served)


def test_writes_select_for_update_and_atomic_use_the_primary(replicas_live):
    org = Organization.objects.create(name="before")
    replicas_live.wait_caught_up()

    with request_routing() as state:  # control: a plain read goes to a replica
        assert Organization.objects.filter(pk=org.pk).exists()
        assert state.served[0] in ("replica1", "replica2")

    with request_routing() as state:
        with transaction.atomic():
            assert Organization.objects.filter(pk=org.pk).exists()
            locked = Organization.objects.select_for_update().get(pk=org.pk)
            assert locked._state.db == "default"
        assert state.served == ["default"]
        assert routing_stats.snapshot()["fallbacks_to_primary"]["transaction"] >= 1

    with request_routing(), connection.cursor() as cursor:  # raw SQL (monitoring): the primary
        cursor.execute("SELECT pg_is_in_recovery()")
        assert cursor.fetchone() == (False,)

    with request_routing() as state:
        assert Organization.objects.select_for_update().db == "default"
        created = Organization.objects.create(name="written in this request")
        assert created._state.db == "default"
        # after the first write every read of the request goes to the primary, which
        # has the row although no replica may have replayed it yet
        assert Organization.objects.filter(pk=created.pk).exists()
        assert state.served == ["default"] and state.pinned == "after_write"


def test_with_every_replica_out_reads_go_to_the_primary(replicas_live, tenant):
    replicas_live.wait_caught_up()
    assert tenant.viewer.get(tenant.url("/expenses"))["X-DB-Read-From"] in ("replica1", "replica2")
    with replicas_live.replica_stopped("replica1"), replicas_live.replica_stopped("replica2"):
        # the first reads meet dead pooled connections and fail over; later ones are
        # routed straight to the primary once the breakers / checker took them out
        for _ in range(30):
            response = tenant.viewer.get(tenant.url("/expenses"))
            assert response.status_code == 200
            assert response["X-DB-Read-From"] == "default"
        reasons = routing_stats.snapshot()["fallbacks_to_primary"]
        assert reasons.get("no_replica_available", 0) > 0, reasons


def test_routing_state_is_per_task_under_concurrent_async_requests(replicas_live):
    """100 concurrent tasks, half writing: a write pins only its own task's scope."""
    org = Organization.objects.create(name="async")
    replicas_live.wait_caught_up()

    def read() -> None:
        try:
            Organization.objects.filter(pk=org.pk).exists()
        finally:
            connections.close_all()  # as at the end of a request: back to the pool

    def write() -> None:
        try:
            Organization.objects.filter(pk=org.pk).update(name="async")
        finally:
            connections.close_all()

    async def one(n: int) -> tuple[int, list[str], str | None]:
        with request_routing() as state:
            await asyncio.sleep(0.001 * (n % 7))
            if n % 2:
                await sync_to_async(write, thread_sensitive=False)()
            await asyncio.sleep(0.001 * (n % 5))
            await sync_to_async(read, thread_sensitive=False)()
            return n, list(state.served), state.pinned

    async def main() -> list:
        return await asyncio.gather(*(one(n) for n in range(100)))

    for n, served, pinned in asyncio.run(main()):
        if n % 2:
            assert served == ["default"] and pinned == "after_write"
        else:
            assert served[0] in ("replica1", "replica2") and pinned is None


def test_a_hot_standby_conflict_is_retried_once_on_the_primary(replicas_live, settings):
    """A real recovery conflict: replica1 may delay replay only 10 ms, then WAL from a
    VACUUM on the primary cancels the read (SQLSTATE 40001); it is re-run elsewhere."""
    import threading
    import time

    org = Organization.objects.create(name="conflict")
    with connections["default"].cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS conflict_probe (id int)")
        cursor.execute("INSERT INTO conflict_probe SELECT generate_series(1, 1000)")
    replicas_live.wait_caught_up()
    replicas_live.sql("replica1", "ALTER SYSTEM SET max_standby_streaming_delay = '10ms'")
    replicas_live.sql("replica1", "SELECT pg_reload_conf()")

    def cleanup_on_primary() -> None:
        time.sleep(0.5)
        replicas_live.sql("default", "DELETE FROM conflict_probe")
        replicas_live.sql("default", "VACUUM conflict_probe")

    try:
        time.sleep(0.3)
        with request_routing() as state:
            state.failed.add("replica2")  # make replica1 the one this request uses
            worker = threading.Thread(target=cleanup_on_primary)
            worker.start()
            rows = list(
                Organization.objects.raw(
                    "SELECT o.* FROM tenancy_organization o WHERE o.id = %s AND pg_sleep(3) IS NOT NULL",
                    [org.pk],
                )
            )
            worker.join()
        assert [o.pk for o in rows] == [org.pk]
        assert routing_stats.snapshot()["retries"] == {"conflict": 1}
        assert state.served == ["default"]
    finally:
        replicas_live.sql("replica1", "ALTER SYSTEM RESET max_standby_streaming_delay")
        replicas_live.sql("replica1", "SELECT pg_reload_conf()")
        with connections["default"].cursor() as cursor:
            cursor.execute("DROP TABLE IF EXISTS conflict_probe")


def test_with_redis_down_reads_fall_back_to_the_primary_or_the_header(replicas_live, tenant, settings):
    from tests.live_server import free_port

    replicas_live.wait_caught_up()
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    settings.REDIS_CLUSTER_NODES = []  # this one node, not the cluster
    try:
        created = tenant.manager.post(tenant.url("/expenses"), tenant.entry_payload(), format="json")
        assert created.status_code == 201  # a write does not need Redis
        position = created["X-DB-Position"]
        # no stored position can be read: the client may have written, so the primary
        listed = tenant.manager.get(tenant.url("/expenses"))
        assert listed.status_code == 200 and listed["X-DB-Read-From"] == "default"
        assert created.json()["id"] in [e["id"] for e in listed.json()["results"]]
        # a client that sends its position back can still use a replica that has it
        replicas_live.wait_caught_up()
        with_header = tenant.manager.get(tenant.url("/expenses"), HTTP_X_DB_POSITION=position)
        assert with_header.status_code == 200
        assert with_header["X-DB-Read-From"] in ("replica1", "replica2")
        assert created.json()["id"] in [e["id"] for e in with_header.json()["results"]]
        assert routing_stats.snapshot()["fallbacks_to_primary"]["position_unknown"] >= 1
    finally:
        from core.redis_clients import redis_breaker

        redis_breaker().record_success()  # the breaker tripped on the dead Redis


@pytest.mark.parametrize("header", ["garbage", "1/2/3", "0/ZZ", "x" * 5000, "main:", ",,,", "0/1 OR 1=1"])
def test_a_malformed_position_header_is_ignored(replicas_live, tenant, header):
    replicas_live.wait_caught_up()
    response = tenant.viewer.get(tenant.url("/expenses"), HTTP_X_DB_POSITION=header)
    assert response.status_code == 200
    assert response["X-DB-Read-From"] in ("replica1", "replica2")


def test_a_position_ahead_of_every_replica_sends_the_read_to_the_primary(replicas_live, tenant):
    replicas_live.wait_caught_up()
    response = tenant.viewer.get(tenant.url("/expenses"), HTTP_X_DB_POSITION="FFFFFFFF/FFFFFFFF")
    assert response.status_code == 200
    assert response["X-DB-Read-From"] == "default"


def test_an_admin_login_and_change_are_seen_at_once(replicas_live, make_user, client_for):
    """Browser clients have no Authorization header: their session cookie identifies them,
    and the cookie a login sets carries the login's position (else the next page would
    look the new session up on a replica and bounce back to the login form)."""
    from django.test import Client

    make_user("admin-user", is_staff=True, password="pw-123456!").__class__.objects.filter(
        username="admin-user"
    ).update(is_superuser=True)
    replicas_live.wait_caught_up()
    browser = Client(HTTP_HOST="127.0.0.1")
    with replicas_live.replay_paused("replica1"), replicas_live.replay_paused("replica2"):
        login = browser.post(
            "/admin/login/", {"username": "admin-user", "password": "pw-123456!", "next": "/admin/"}
        )
        assert login.status_code == 302 and login["Location"] == "/admin/"
        index = browser.get("/admin/")
        assert index.status_code == 200  # logged in: the session was found
        assert index["X-DB-Read-From"] == "default"  # no replica has it
        added = browser.post(
            "/admin/tenancy/organization/add/",
            {
                "name": "Added in admin",
                "memberships-TOTAL_FORMS": "0",
                "memberships-INITIAL_FORMS": "0",
                "_save": "Save",
            },
        )
        assert added.status_code == 302
        listing = browser.get("/admin/tenancy/organization/")
        assert b"Added in admin" in listing.content


def test_a_read_that_cannot_connect_is_retried_on_another_replica(replicas_live):
    """The checker has not noticed yet (its verdict is forced here, which is the only
    stand-in in this test): the request's first read meets a replica that refuses
    connections, and runs on the other replica before any row was returned."""
    import time

    from replicas.checker import checker
    from replicas.pools import discard_pool
    from replicas.replica_set import replica_set

    org = Organization.objects.create(name="connect failover")
    replicas_live.wait_caught_up()
    checker.stop()  # so that it cannot take replica1 out before the read does
    with replicas_live.replica_stopped("replica1"):
        discard_pool("replica1")  # no pooled connection left: the read must connect
        replicas = replica_set()
        replicas.record_check(
            "replica1",
            replay_lsn=2**62,
            lag_seconds=0.0,
            lag_bytes=0,
            data_as_of=time.monotonic(),
            error=None,
        )
        replicas.replicas["replica1"].in_rotation = True
        replicas.replicas["replica1"].breaker_open_until = 0.0
        with request_routing() as state:
            state.replicas["main"] = "replica1"  # this request's choice: the dead one
            started = time.monotonic()
            assert Organization.objects.filter(pk=org.pk).exists()
            elapsed = time.monotonic() - started
        assert state.served == ["replica2"], state.served
        assert routing_stats.snapshot()["retries"] == {"connection": 1}
        assert replicas.replicas["replica1"].status == "down"
        assert not replicas.is_usable("replica1")
        assert elapsed < 3  # bounded by the replica pool's short wait, not a hang


def test_a_stored_position_read_with_the_rate_limit_count_routes_the_read(replicas_live, tenant, monkeypatch):
    """The per-token rate limit's Redis round trip also reads the stored position
    (replicas/positions.py read-ahead): the read is routed by it with no load of its own.
    (The separate load is replaced by a failure to prove it is not called.)"""
    from replicas.middleware import org_reader_id
    from replicas.positions import client_id, position_store

    replicas_live.wait_caught_up()
    clients = [client_id(tenant.viewer._credentials["HTTP_AUTHORIZATION"]), org_reader_id(str(tenant.org.id))]
    assert position_store.remember("main", clients, 0xFFFFFFFF_FFFFFFFF)  # ahead of every replica

    def no_separate_load(cluster: str, clients: list[str]) -> int | None:
        raise AssertionError("the stored position was loaded in a round trip of its own")

    monkeypatch.setattr(position_store, "load", no_separate_load)
    response = tenant.viewer.get(tenant.url("/expenses"))
    assert response.status_code == 200
    assert response["X-DB-Read-From"] == "default"  # the stored position held it off the replicas


def test_a_keyed_write_reads_and_stores_its_position_once_and_it_covers_the_whole_transaction(
    replicas_live, tenant
):
    """A keyed create writes after its change record (the idempotency record, in the same
    transaction): the position the change log's handler records on commit covers every
    write of that transaction, so the response reuses it (one WAL position read, with
    the COMMIT in its round trip; one Redis write) and a replica at that position has the
    entry and the record."""
    from django.test.utils import CaptureQueriesContext

    from replicas.lsn import lsn_to_int
    from replicas.middleware import org_reader_id
    from replicas.positions import client_id, position_store

    replicas_live.wait_caught_up()
    with replicas_live.replay_paused("replica1"), CaptureQueriesContext(connections["default"]) as queries:
        created = tenant.manager.post(
            tenant.url("/expenses"), tenant.entry_payload(), format="json", HTTP_IDEMPOTENCY_KEY="covers-1"
        )
        assert created.status_code == 201
        position = lsn_to_int(created["X-DB-Position"])
        # replica1 (paused) is behind the position; a read of this client or any reader
        # of the org never goes there, and the list has the entry.
        listed = tenant.viewer.get(tenant.url("/expenses"), {"page_size": 3})
        assert created.json()["id"] in [e["id"] for e in listed.json()["results"]]
        assert listed["X-DB-Read-From"] != "replica1"
    statements = [q["sql"] for q in queries.captured_queries]
    assert sum("pg_current_wal_insert_lsn" in sql for sql in statements) == 0  # no statement of its own
    assert statements.count("COMMIT") == 1
    clients = [
        client_id(tenant.manager._credentials["HTTP_AUTHORIZATION"]),
        org_reader_id(str(tenant.org.id)),
    ]
    assert position_store.load("main", clients) == position
    replicas_live.wait_until(
        lambda: (
            int(replicas_live.sql("replica2", "SELECT pg_last_wal_replay_lsn() - '0/0'::pg_lsn")[0])
            >= position
        )
    )
    entry = (created.json()["id"],)
    assert replicas_live.sql("replica2", "SELECT count(*) FROM finance_expense WHERE id = %s", entry)[0] == 1
    record = "SELECT count(*) FROM idempotency_record WHERE org_id = %s"
    assert replicas_live.sql("replica2", record, (str(tenant.org.id),))[0] == 1


def test_a_transaction_notes_one_commit_and_a_rolled_back_savepoint_does_not_lose_it(replicas_live):
    """One note per committed transaction however many writes it routes; a note taken
    inside a savepoint that rolled back is gone with it, and the next write takes it again."""
    from replicas.context import RequestRouting

    class Refused(Exception):
        pass

    with request_routing(RequestRouting(client_ids=["someone"])) as state:
        with transaction.atomic():
            Organization.objects.create(name="first")
            Organization.objects.create(name="second")
        assert state.writes == 1
        with transaction.atomic():
            with pytest.raises(Refused), transaction.atomic():
                Organization.objects.create(name="rolled back")
                raise Refused
            Organization.objects.create(name="kept")
        assert state.writes == 2
        with transaction.atomic(), pytest.raises(Refused), transaction.atomic():
            Organization.objects.create(name="rolled back too")
            raise Refused
        assert state.writes == 2  # nothing committed a write: no note
