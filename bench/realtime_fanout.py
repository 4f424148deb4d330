"""Realtime fan-out benchmark (make bench-realtime): 1000 sockets on one org.

Starts the service as production does (`bin/serve`: gunicorn for REST, uvicorn for
websockets, 2 workers each), opens SOCKETS sockets on one org (100 members, 10 sockets
each: the per-user cap), then:

- our path: WRITES expenses through the REST API; for each, the time from the write's
  HTTP response to the event's arrival at each socket;
- baseline, same run: the same number of events published straight to Redis by the
  publisher (no HTTP, no database), timed from publish to arrival: the fan-out alone.

Prints p50/p95/p99, arrivals (must be all) and the ratio of our path to the baseline.
Arrival can precede the response (the event leaves at commit, before the response is
written): such latencies count as 0.
"""

import argparse
import asyncio
import os
import resource
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# One token drives the whole load here: keep the per-token rate limit (and its Redis
# counter, a real cost) without ever reaching it.
os.environ.setdefault("API_RATE_LIMIT_PER_MINUTE", "1000000000")
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django

django.setup()

import httpx
from websockets.asyncio.client import connect

from accounts.models import User
from accounts.tokens import token_issue
from core.redis_clients import sync_redis
from realtime import keys
from realtime.publishing import event_publish
from realtime.stats import latency_buckets, latency_summary
from tenancy.models import Membership, Organization, Property

USERS = 100
METRICS_TOKEN = secrets.token_hex(16)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def raise_file_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(needed, soft), hard), hard))
    print(f"open files limit: {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}")


def make_org() -> tuple[Organization, Property, list[str], str]:
    run = int(time.time())
    org = Organization.objects.create(name=f"bench-realtime-{run}")
    prop = Property.objects.create(org=org, name="Main", currency="EUR", timezone="UTC")
    users = User.objects.bulk_create(User(username=f"bench-rt-{run}-{n}") for n in range(USERS + 1))
    Membership.objects.bulk_create(
        Membership(org=org, user=user, role="manager" if n == 0 else "viewer") for n, user in enumerate(users)
    )
    tokens = [token_issue(user=u)[1] for u in users]
    return org, prop, tokens[1:], tokens[0]


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "mean": statistics.fmean(ordered) * 1000}


class Listener:
    """All sockets' arrivals: (marker, arrival time) per socket, parsed after the run."""

    def __init__(self) -> None:
        self.arrivals: list[list[tuple[str, float]]] = []

    async def open(self, url: str, count: int, tokens: list[str]) -> list:
        semaphore = asyncio.Semaphore(50)

        async def one(n: int):
            async with semaphore:
                socket_ = await connect(url, additional_headers={"Authorization": f"Token {tokens[n % len(tokens)]}"},
                                        open_timeout=30, max_size=None)  # fmt: skip
                assert '"ready"' in await socket_.recv()
                return socket_

        sockets = await asyncio.gather(*(one(n) for n in range(count)))
        self.arrivals = [[] for _ in sockets]
        for index, socket_ in enumerate(sockets):
            asyncio.get_running_loop().create_task(self._read(socket_, self.arrivals[index]))
        return sockets

    @staticmethod
    async def _read(socket_, arrivals: list[tuple[str, float]]) -> None:
        async for frame in socket_:
            now = time.perf_counter()
            marker = frame.split('"category":"', 1)[1].split('"', 1)[0] if '"category":"' in frame else frame
            arrivals.append((marker, now))

    def latencies(self, sent_at: dict[str, float]) -> tuple[list[float], int]:
        values = [
            max(0.0, arrived - sent_at[marker])
            for per_socket in self.arrivals
            for marker, arrived in per_socket
            if marker in sent_at
        ]
        return values, len(values)


async def wait_for_all(listener: Listener, markers: set[str], expected: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(1 for s in listener.arrivals for m, _ in s if m in markers) >= expected:
            return
        await asyncio.sleep(0.1)


async def run(args: argparse.Namespace) -> int:  # noqa: PLR0915 (one scenario, read top to bottom)
    org, prop, viewer_tokens, writer_token = await asyncio.to_thread(make_org)
    rest_port, ws_port = free_port(), free_port()
    env = os.environ | {
        "REST_PORT": str(rest_port), "REALTIME_PORT": str(ws_port), "ACCESS_LOG": "",
        "WEB_CONCURRENCY": "2", "WEB_MAX_REQUESTS": "0", "REALTIME_WORKERS": "2", "PYTHON": sys.executable,
        "METRICS_TOKEN": METRICS_TOKEN,
    }  # fmt: skip
    server = subprocess.Popen([str(ROOT / "bin" / "serve")], cwd=ROOT, env=env, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{rest_port}"
        async with httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Token {writer_token}"}
        ) as http:
            for _ in range(200):
                try:
                    await http.get("/v1/system/health")
                    await httpx.AsyncClient().get(f"http://127.0.0.1:{ws_port}/v1/system/health")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            buckets_before = latency_buckets(sync_redis().hgetall(keys.STATS_KEY))
            listener = Listener()
            url = f"ws://127.0.0.1:{ws_port}/v2/realtime/orgs/{org.id}/"
            started = time.perf_counter()
            sockets = await listener.open(url, args.sockets, viewer_tokens)
            print(f"{len(sockets)} sockets open in {time.perf_counter() - started:.1f} s")

            # Our path: REST write (gunicorn) -> commit -> Redis -> uvicorn -> sockets.
            sent_at: dict[str, float] = {}
            write_seconds = []
            for n in range(args.writes):
                marker = f"w{n}"
                payload = {"property_id": str(prop.id), "amount": "10.00", "currency": "EUR",
                           "category": marker, "occurred_on": "2026-11-01"}  # fmt: skip
                began = time.perf_counter()
                response = await http.post(f"/v1/orgs/{org.id}/expenses", json=payload)
                sent_at[marker] = time.perf_counter()
                write_seconds.append(sent_at[marker] - began)
                assert response.status_code == 201, response.text
                await asyncio.sleep(args.pause)
            await wait_for_all(listener, set(sent_at), args.writes * len(sockets))
            ours, ours_count = listener.latencies(sent_at)

            # Baseline: the same fan-out, published straight to Redis (no HTTP, no DB).
            base_sent: dict[str, float] = {}
            for n in range(args.writes):
                marker = f"b{n}"
                await asyncio.to_thread(
                    event_publish, org_id=str(org.id), event_type="expense.created", data={"category": marker}
                )
                base_sent[marker] = time.perf_counter()
                await asyncio.sleep(args.pause)
            await wait_for_all(listener, set(base_sent), args.writes * len(sockets))
            baseline, baseline_count = listener.latencies(base_sent)

            metrics = await http.get(
                f"http://127.0.0.1:{ws_port}/v2/realtime/metrics",
                headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
            )
            await asyncio.sleep(1.5)  # the servers add their figures to Redis about once a second
            buckets_after = latency_buckets(sync_redis().hgetall(keys.STATS_KEY))
            for socket_ in sockets:
                await socket_.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=20)

    expected = args.writes * args.sockets
    ours_p, base_p = percentiles(ours), percentiles(baseline)
    print(
        f"\nsockets={args.sockets} writes={args.writes} pause={args.pause}s (2 gunicorn + 2 uvicorn workers)"
    )
    print(f"REST write response time: p50 {statistics.median(write_seconds) * 1000:.1f} ms")
    print(f"{'path':<34}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'mean ms':>9}   arrived")
    print(f"{'REST response -> socket (ours)':<34}" + "".join(f"{ours_p[k]:>9.1f}" for k in ("p50", "p95", "p99", "mean"))
          + f"   {ours_count}/{expected}")  # fmt: skip
    print(f"{'Redis publish -> socket (baseline)':<34}" + "".join(f"{base_p[k]:>9.1f}" for k in ("p50", "p95", "p99", "mean"))
          + f"   {baseline_count}/{expected}")  # fmt: skip
    ratio = ours_p["p95"] / base_p["p95"] if base_p["p95"] else float("inf")
    print(f"ratio p95 ours/baseline: {ratio:.2f}")
    assert metrics.status_code == 200, metrics.text
    this_run = [after - before for after, before in zip(buckets_after, buckets_before, strict=True)]
    print(f"server-side commit -> send, this run (bucket upper bounds, ms): {latency_summary(this_run)}")
    print(f"GET /v2/realtime/metrics: connections={metrics.json()['connections']} (while all were open)")
    ok = ours_count == expected and baseline_count == expected
    print("RESULT:", "all events arrived" if ok else "EVENTS MISSING")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--writes", type=int, default=50)
    parser.add_argument("--pause", type=float, default=0.2, help="seconds between writes")
    args = parser.parse_args()
    raise_file_limit(args.sockets * 2 + 256)
    try:
        import uvloop

        return uvloop.run(run(args))
    except ImportError:
        return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
