"""Our keyed create's CPU against bare DRF's create, each in its own process, driven in
turns. Run with `make bench-inprocess-ratio` (BENCH_ROUNDS, BENCH_BLOCK).

Two worker processes (ours: the project's settings, the full middleware list, a fresh
Idempotency-Key per create; bare: bench/bare_drf, a ModelSerializer and a generic view
over the same table shape, no auth) each run a block of creates through a WSGI handler
when told, and answer with their CPU per create (time.process_time: the request path's
Python, its drivers and syscalls, and the process's own background threads; not
Postgres's, Redis's or Varnish's). Only one works at a time and the order alternates,
so both meet the same machine in each round: the median of the per-round ratios holds
where this 2-core machine's speed drifts by a quarter from one second to the next.
The ratio is what our create would reach against bare's if the app's own CPU were all
that limited it (bench-origin measures the whole server, database included).
"""

import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "30"))
BLOCK = int(os.environ.get("BENCH_BLOCK", "100"))


def _ours() -> tuple[Callable[[], bool], dict[str, str]]:
    sys.path.insert(0, str(ROOT))
    # bench.origin_trips sets Django up with the project's settings (the rate limit never reached).
    from bench.idempotency import expense_body, make_tenant
    from bench.origin_trips import WSGIHandler
    from bench.wsgi_calls import wsgi_call, wsgi_environ

    org, prop, token = make_tenant()
    body = expense_body(prop.id).encode()
    handler = WSGIHandler()

    def create() -> bool:
        environ = wsgi_environ("POST", f"/v1/orgs/{org.id}/expenses", token, body, key=f"k-{uuid.uuid4()}")
        return wsgi_call(handler, environ)

    return create, {"org": str(org.id), "body": body.decode()}


def _bare(org: str, body: str) -> Callable[[], bool]:
    sys.path.insert(0, str(ROOT))
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.bare_drf.settings"
    import django

    django.setup()
    from django.core.handlers.wsgi import WSGIHandler

    from bench.wsgi_calls import wsgi_call, wsgi_environ

    handler = WSGIHandler()
    payload = body.encode()

    def create() -> bool:
        return wsgi_call(handler, wsgi_environ("POST", f"/bare/orgs/{org}/expenses", body=payload))

    return create


def worker(kind: str) -> None:
    """Create when told: a line with a count in, a line with CPU ms per create out."""
    if kind == "ours":
        create, ids = _ours()
        print(json.dumps(ids), flush=True)
    else:
        ids = json.loads(sys.stdin.readline())
        create = _bare(ids["org"], ids["body"])
        print("{}", flush=True)
    for line in sys.stdin:
        count = int(line)
        started = time.process_time()
        for _ in range(count):
            assert create(), f"{kind}: a create failed"
        print(f"{1000 * (time.process_time() - started) / count:.4f}", flush=True)


def main() -> None:
    subprocess.run([sys.executable, "manage.py", "migrate", "bench_bare_drf", "-v0"], cwd=ROOT, check=True,
                   env=os.environ | {"DJANGO_SETTINGS_MODULE": "bench.bare_drf.settings"})  # fmt: skip
    spawn = [sys.executable, __file__, "worker"]
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "text": True, "cwd": ROOT}
    workers = {
        "ours": subprocess.Popen([*spawn, "ours"], **pipes),  # type: ignore[call-overload]
        "bare": subprocess.Popen([*spawn, "bare"], **pipes),  # type: ignore[call-overload]
    }

    def ask(kind: str, line: str) -> str:
        process = workers[kind]
        process.stdin.write(line + "\n")
        process.stdin.flush()
        answer = process.stdout.readline()
        if not answer:
            sys.exit(f"the {kind} worker exited (its error is above)")
        return answer.strip()

    ids = workers["ours"].stdout.readline()
    ask("bare", ids.strip())
    for kind in workers:  # warm: connections, prepared statements, caches
        ask(kind, "50")
    runs: dict[str, list[float]] = {"ours": [], "bare": []}
    try:
        for round_number in range(ROUNDS):
            for kind in ("ours", "bare") if round_number % 2 == 0 else ("bare", "ours"):
                runs[kind].append(float(ask(kind, str(BLOCK))))
            print(f"round {round_number + 1:2}/{ROUNDS}: ours {runs['ours'][-1]:.2f} ms, "
                  f"bare {runs['bare'][-1]:.2f} ms", flush=True)  # fmt: skip
    finally:
        for process in workers.values():
            process.stdin.close()
            process.wait(30)
    ratios = sorted(b / o for o, b in zip(runs["ours"], runs["bare"], strict=True))
    quartiles = statistics.quantiles(ratios, n=4)
    print(f"\nCPU per create in its own process, {ROUNDS} alternating rounds of {BLOCK}")
    print(f"  ours (keyed create)  median {statistics.median(runs['ours']):.3f} ms")
    print(f"  bare DRF create      median {statistics.median(runs['bare']):.3f} ms")
    print(f"  bare / ours per round: median {statistics.median(ratios):.2f}x "
          f"(quartiles {quartiles[0]:.2f}-{quartiles[2]:.2f}): our create's throughput against bare's "
          "if the app's CPU alone limited it")  # fmt: skip


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        worker(sys.argv[2])
    else:
        main()
