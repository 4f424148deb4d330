"""`make loadtest`: the whole proof in one command.

1. Seeds LOADTEST_ORGS organizations (100 000 by default; re-runs only top up) and
   writes their credentials.
2. Starts the full stack: Postgres primary + replicas, a second database cluster
   (LOADTEST_CLUSTERS=2, cluster c2), Redis (a 3-master Redis Cluster with
   LOADTEST_REDIS_MODE=cluster, the default; one node with `single`), Varnish, and the
   servers (bin/serve: gunicorn for REST, uvicorn for websockets, the outbox and push
   workers). The topology reaches every process through the environment, which wins
   over .env: the stack's .env is left as it was.
3. Runs Locust headless through the edge for LOADTEST_DURATION seconds: REST users,
   websocket users, offline-capable phones and Web Push devices, while a fault drill
   kills a Redis Cluster master (or restarts the one Redis), restarts Varnish and the
   primary, stops and starts a replica, moves one hot org to c2 (`manage.py org_move`)
   and SIGKILLs a gunicorn worker.
4. Audits the database against what clients were told (every acknowledged write once,
   on the moved org's new cluster and nowhere else), the phones' stores, the sockets'
   events (none lost, none out of version order), the pushes (one per device per large
   expense), the outbox and the read model.
5. Judges each SLO of the plan on the run's own client-side data.
6. Measures the bare create-and-list path against the full path with the same Locust
   users, and prints the ratios.
7. Writes reports/loadtest-<timestamp>/report.md and summary.csv (plus Locust's CSVs).
"""

import csv
import datetime
import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
logging.getLogger("httpx").setLevel(logging.WARNING)  # the audit's sync clients: a line per request
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

T = TypeVar("T")
DURATION = int(os.environ.get("LOADTEST_DURATION", "120"))
USERS = int(os.environ.get("LOADTEST_USERS", "40"))
SPAWN_RATE = int(os.environ.get("LOADTEST_SPAWN_RATE", "10"))
WS_USERS = int(os.environ.get("LOADTEST_WS_USERS", "10"))
MOBILE_USERS = int(os.environ.get("LOADTEST_MOBILE_USERS", "10"))
HOT_ORGS = int(os.environ.get("LOADTEST_HOT_ORGS", "20"))  # the orgs that take REST writes
LARGE_EXPENSE = "1000.00"  # EUR: the alert threshold of the hot orgs' managers
ORGS = int(os.environ.get("LOADTEST_ORGS", "100000"))
BASELINE_SECONDS = int(os.environ.get("LOADTEST_BASELINE_SECONDS", "30"))
BASELINE_USERS = int(os.environ.get("LOADTEST_BASELINE_USERS", "20"))
FAULTS = os.environ.get("LOADTEST_FAULTS", "1") == "1"
CLUSTERS = int(os.environ.get("LOADTEST_CLUSTERS", "2"))  # 2: the drill moves a hot org to c2
MOVE_TO = "c2"
REDIS_MODE = os.environ.get("LOADTEST_REDIS_MODE", "cluster")  # cluster: a master killed; single: restarted
if REDIS_MODE not in ("cluster", "single"):
    raise SystemExit(f"LOADTEST_REDIS_MODE must be cluster or single, not {REDIS_MODE!r}")
PORT = os.environ.get("PORT", "8000")  # the public origin: the edge (REST, admin, websockets)
REST_PORT = os.environ.get("REST_PORT", "8002")  # gunicorn behind it: the bare-path baseline
METRICS_TOKEN = os.environ.get("METRICS_TOKEN") or "loadtest-metrics-token"
EDGE = f"http://127.0.0.1:{PORT}"
ORIGIN = f"http://127.0.0.1:{REST_PORT}"


def say(message: str) -> None:
    print(f"[loadtest {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, check=True, **kwargs)


def get_json(url: str, token: str | None = METRICS_TOKEN) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 (a loopback URL built here)
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return json.loads(response.read())


class Servers:
    """bin/serve in the background, with the given environment; its output (gunicorn's
    error log, the app's warnings, the workers') goes to `log`."""

    def __init__(self, log: Path, **env: str) -> None:
        self.env = os.environ | {"METRICS_TOKEN": METRICS_TOKEN, "ACCESS_LOG": "", **env}
        self.log = log
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "Servers":
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(["bin/serve"], cwd=ROOT, env=self.env, start_new_session=True,
                                            stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                get_json(f"{ORIGIN}/v1/system/health", token=None)
                return self
            except OSError:
                time.sleep(0.5)
        raise SystemExit(f"the servers did not come up in 60 s: see {self.log}")

    def __exit__(self, *exc: object) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)


def configure_topology() -> None:
    """The second database cluster and the Redis topology, for every process this run
    starts (manage.py, the servers, Locust) and for its own audits: set in the
    environment, which wins over .env, so the stack's .env (one cluster, as the test
    suite wants it) is left as it was."""
    if CLUSTERS >= 2:
        run(["bin/stack", "cluster-up", "2"], stdout=subprocess.DEVNULL)
        lines = subprocess.run(["bin/stack", "env"], cwd=ROOT, env=os.environ | {"CLUSTER_COUNT": "2"},
                               capture_output=True, text=True, check=True).stdout.splitlines()  # fmt: skip
        os.environ["CLUSTER_COUNT"] = "2"
        os.environ.update(dict(line.split("=", 1) for line in lines if line.startswith("CLUSTER2_")))
    if REDIS_MODE == "cluster":
        run(["bin/stack", "redis-cluster-up"], stdout=subprocess.DEVNULL)
        nodes = subprocess.run(["bin/stack", "redis-cluster-nodes"], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout.strip()  # fmt: skip
        os.environ["REDIS_CLUSTER_NODES"] = nodes
    else:
        os.environ["REDIS_CLUSTER_NODES"] = ""


# The youngest child of the gunicorn master: a worker, busy (the load never stops).
KILL_A_GUNICORN_WORKER = (
    "master=$(pgrep -of 'gunicorn -c config/gunicorn.py') && worker=$(pgrep -nP \"$master\") "
    '&& kill -KILL "$worker"'
)


@dataclass
class DrillStep:
    at: float  # fraction of the run
    name: str
    command: list[str]
    began: float = 0.0  # seconds into the run
    took: float = 0.0
    exit: int | None = None
    output: str = ""


@dataclass
class Drill:
    """The fault drill, one step after the other. The steps that drop every socket (the
    Redis step, the edge restart) come first, so the sockets opened after them stay
    connected through the primary restart, the replica's outage, the org move and the
    worker kill: the socket audit then covers those."""

    move_org: str | None
    steps: list[DrillStep] = field(default_factory=list)

    def __post_init__(self) -> None:
        if REDIS_MODE == "cluster":
            from realtime.keys import org_stream_key

            key = org_stream_key(self.move_org) if self.move_org else ""
            redis = DrillStep(0.10, "SIGKILL the Redis Cluster master holding the hot org's events (a replica takes over)",
                              ["bin/stack", "redis-cluster-failover", key])  # fmt: skip
        else:
            redis = DrillStep(0.10, "restart Redis", ["bin/stack", "redis-restart"])
        self.steps = [
            redis,
            DrillStep(0.20, "restart Varnish", ["bin/stack", "varnish-restart"]),
            DrillStep(0.30, "restart the primary (pg_ctl restart -m fast)", ["bin/stack", "pg-restart"]),
            DrillStep(0.40, "stop replica 1", ["bin/stack", "pg-replica-stop", "1"]),
            DrillStep(0.50, "start replica 1", ["bin/stack", "pg-replica-start", "1"]),
        ]
        if self.move_org:
            self.steps.append(DrillStep(0.60, f"move hot org {self.move_org} to cluster {MOVE_TO} (manage.py org_move)",
                                        [sys.executable, "manage.py", "org_move", self.move_org, "--to", MOVE_TO]))  # fmt: skip
        self.steps.append(
            DrillStep(0.80, "SIGKILL a gunicorn worker mid-request", ["bash", "-c", KILL_A_GUNICORN_WORKER])
        )

    def run_in_background(self, started: float, duration: int) -> threading.Thread:
        def drill() -> None:
            for step in self.steps:
                time.sleep(max(0.0, started + step.at * duration - time.time()))
                say(f"fault drill: {step.name}")
                began = time.time()
                result = subprocess.run(step.command, cwd=ROOT, capture_output=True, text=True, check=False)
                step.began, step.took, step.exit = began - started, time.time() - began, result.returncode
                step.output = (result.stdout + result.stderr).strip()
                if result.returncode:
                    say(f"fault drill step failed: {step.output[-300:]}")

        thread = threading.Thread(target=drill, daemon=True)
        thread.start()
        return thread

    def window_of(self, seconds_into_run: float, slack: float = 10.0) -> str:
        """The step whose run (plus `slack` seconds of recovery) holds this moment."""
        for step in self.steps:
            if step.exit is not None and step.began <= seconds_into_run <= step.began + step.took + slack:
                return step.name
        return ""


def locust(
    out: Path, *, host: str, users: int, seconds: int, classes: list[str], env: dict[str, str],
    cpu: "CpuSampler | None" = None,
) -> Path:  # fmt: skip
    prefix = out / "locust"
    command = [sys.executable, "-m", "locust", "-f", "loadtest/locustfile.py", "--headless", "--users", str(users),
               "--spawn-rate", str(SPAWN_RATE), "--run-time", f"{seconds}s", "--host", host, "--csv", str(prefix),
               "--stop-timeout", "10", "--only-summary", *classes]  # fmt: skip
    busy_before, wall_before = machine_busy_seconds(), time.monotonic()
    process = subprocess.Popen(command, cwd=ROOT, env=os.environ | env)
    if cpu is not None:
        cpu.start(load_generator=process.pid)
    _, _, usage = os.wait4(process.pid, 0)  # this child's own CPU, not the drill's commands'
    process.returncode = 0
    if cpu is not None:
        cpu.stop()
    used = usage.ru_utime + usage.ru_stime
    busy, wall = machine_busy_seconds() - busy_before, time.monotonic() - wall_before
    LOAD_GENERATOR_CPU[str(prefix)] = {
        "locust_cpu_seconds": round(used, 1),
        "machine_busy_cpu_seconds": round(busy, 1),
        "locust_share_of_busy_cpu": f"{used / busy:.0%}" if busy else "n/a",
        "locust_share_of_the_machine": f"{used / (wall * (os.cpu_count() or 1)):.0%}",
    }
    return Path(f"{prefix}_stats.csv")


# The load generator shares the machine's cores: what it used, next to all CPU in use.
LOAD_GENERATOR_CPU: dict[str, dict[str, Any]] = {}


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (not idle or waiting), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


class CpuSampler:
    """Where the CPU went during the main run: every process's CPU time (/proc/PID/stat),
    sampled every 2 s and summed per part of the system by process tree (the load
    generator, the servers, each database server, Redis, Varnish, this script and its
    drill commands); the rest of the machine's busy time is other users' (the machine
    is shared). A process that exits loses at most its last 2 s."""

    INTERVAL = 2.0

    def __init__(self, servers_pid: int) -> None:
        self.servers_pid = servers_pid
        self.load_generator = 0
        self.seconds: dict[str, float] = defaultdict(float)
        self.last: dict[int, float] = {}
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.busy_before = self.wall_before = 0.0
        self.busy = self.wall = 0.0
        self.loadavg: list[float] = []

    def _roots(self) -> dict[int, str]:
        """Pid -> part, for the root process of each part (pid files are read each time:
        the drill restarts servers)."""
        roots = {self.load_generator: "load generator (Locust)", self.servers_pid: "servers (gunicorn, uvicorn, workers)",
                 os.getpid(): "this script and its drill commands"}  # fmt: skip
        state = dict(
            line.split("=", 1)
            for line in (ROOT / ".stack" / "stack.state").read_text().splitlines()
            if "=" in line
        )
        pid_files: list[tuple[str, Path]] = []
        pg_root = Path(state.get("PG_ROOT", ""))
        if state.get("PG_ROOT"):
            pid_files += [("Postgres main cluster", p) for p in pg_root.glob("*/postmaster.pid")
                          if not p.parent.name.startswith("cluster")]  # fmt: skip
            pid_files += [("Postgres cluster c2", p) for p in pg_root.glob("cluster2/*/postmaster.pid")]
        pid_files += [("Redis", p) for p in (ROOT / ".stack").glob("redis*/**/redis.pid")]
        pid_files += [("Varnish", ROOT / ".stack" / "varnish.pid")]
        for part, path in pid_files:
            try:
                roots[int(path.read_text().split()[0])] = part
            except (OSError, ValueError, IndexError):
                continue
        return roots

    def _sample(self) -> None:
        ticks = os.sysconf("SC_CLK_TCK")
        parent, cpu = {}, {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            parent[int(entry.name)] = int(fields[1])
            cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / ticks
        roots = self._roots()
        for pid, seconds in cpu.items():
            part, walk = None, pid
            for _ in range(30):
                if walk in roots:
                    part = roots[walk]
                    break
                walk = parent.get(walk, 0)
                if walk <= 1:
                    break
            if part is None:
                continue
            before = self.last.get(pid)
            self.last[pid] = seconds
            if before is not None:
                self.seconds[part] += seconds - before
        self.loadavg.append(os.getloadavg()[0])

    def start(self, *, load_generator: int) -> None:
        self.load_generator = load_generator
        self.busy_before, self.wall_before = machine_busy_seconds(), time.monotonic()
        self._sample()
        self.seconds.clear()

        def loop() -> None:
            while not self.stopping.wait(self.INTERVAL):
                self._sample()

        self.thread = threading.Thread(target=loop, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join()
        self.busy = machine_busy_seconds() - self.busy_before
        self.wall = time.monotonic() - self.wall_before

    def report(self) -> list[str]:
        capacity = self.wall * (os.cpu_count() or 1)
        lines = [f"{self.wall:.0f} s x {os.cpu_count()} cores = {capacity:.0f} CPU s; the machine was busy "
                 f"{self.busy:.0f} CPU s ({self.busy / capacity:.0%}); 1-minute load average during the run: "
                 f"min {min(self.loadavg, default=0):.1f}, max {max(self.loadavg, default=0):.1f}.", "",
                 "| part | CPU s | share of the machine's busy time |", "|---|---:|---:|"]  # fmt: skip
        ours = 0.0
        for part, seconds in sorted(self.seconds.items(), key=lambda kv: -kv[1]):
            ours += seconds
            lines.append(
                f"| {part} | {seconds:.1f} | {seconds / self.busy:.0%} |"
                if self.busy
                else f"| {part} | {seconds:.1f} | n/a |"
            )
        rest = max(0.0, self.busy - ours)
        lines.append(
            f"| everything else on the machine (other users) | {rest:.1f} | {rest / self.busy:.0%} |"
            if self.busy
            else ""
        )
        return lines


def edge_hit_rate() -> str:
    """Varnish's own counters (since its last start: the drill restarts it)."""
    result = subprocess.run(["bin/stack", "varnishstat", "-1", "-f", "MAIN.cache_hit", "-f", "MAIN.cache_miss"],
                            cwd=ROOT, capture_output=True, text=True, check=False)  # fmt: skip
    counts = {line.split()[0]: int(line.split()[1]) for line in result.stdout.splitlines() if line.strip()}
    hits, misses = counts.get("MAIN.cache_hit", 0), counts.get("MAIN.cache_miss", 0)
    return f"{hits / (hits + misses):.1%} ({hits} hits, {misses} misses)" if hits + misses else "n/a"


def read_stats(path: Path) -> dict[str, dict[str, str]]:
    with open(path) as f:
        return {f"{row['Type']} {row['Name']}": row for row in csv.DictReader(f)}


def read_journal(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def check_database(
    journal: list[dict[str, Any]], run_started: float, move: "MoveAudit | None"
) -> dict[str, Any]:
    """Compare what clients were told with what the database holds, org by org on the
    org's cluster (the moved org's rows are looked for on its new cluster)."""
    import django

    django.setup()
    from django.db import connection

    from directory.cache import directory_cache
    from finance.models import Expense, Revenue
    from replicas.context import use_org_cluster

    directory_cache.clear()  # the placement as it is now, not as this process last read it
    models = {"expenses": Expense, "revenues": Revenue}
    created = [r for r in journal if r["op"] == "create"]
    deleted = {(r["kind"], r["id"]) for r in journal if r["op"] == "delete"}
    last_amount: dict[tuple[str, str], str] = {}
    for record in journal:
        if record["op"] in ("create", "update"):
            last_amount[(record["kind"], record["id"])] = record["amount"]

    missing, wrong_amount, resurrected = [], [], []
    since = datetime.datetime.fromtimestamp(run_started, tz=datetime.UTC)
    # ids the phones named for what they created (sync rows are not REST acknowledgements)
    acknowledged_ids = {r["id"] for r in created} | {r["id"] for r in journal if r["op"] == "sync_create"}
    unacknowledged = 0
    for org in sorted({r["org_id"] for r in created}):
        with use_org_cluster(org):
            for kind, model in models.items():
                ids = [r["id"] for r in created if r["kind"] == kind and r["org_id"] == org]
                stored = model.objects.filter(org_id=org, id__in=ids).values_list("id", "amount")
                rows = {str(k): f"{v:.2f}" for k, v in stored}
                for entry_id in ids:
                    if (kind, entry_id) in deleted:
                        if entry_id in rows:
                            resurrected.append(entry_id)
                    elif entry_id not in rows:
                        missing.append(entry_id)
                    elif rows[entry_id] != last_amount[(kind, entry_id)]:
                        wrong_amount.append(entry_id)
                # Rows created during the run beyond those acknowledged: a retried create
                # that wrote twice would show up here.
                unacknowledged += (
                    model.objects.filter(org_id=org, created_at__gte=since)
                    .exclude(id__in=acknowledged_ids)
                    .count()
                )
    duplicate_keys = len(created) - len({r["key"] for r in created})
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('idempotency_record') IS NOT NULL")
        has_records = cursor.fetchone()[0]
    result = {
        "acknowledged_creates": len(created),
        "missing_rows": len(missing),
        "wrong_amounts": len(wrong_amount),
        "deleted_but_present": len(resurrected),
        "rows_not_acknowledged": unacknowledged,
        "duplicate_keys_in_journal": duplicate_keys,
        "idempotency_table_present": has_records,
    }
    if move is not None:
        result |= move.check_rows(journal, models)
    return result


class MoveAudit:
    """The hot org the drill moves: where it is after the run, and its rows on each
    cluster (every acknowledged write once on the new one, nothing left on the old)."""

    def __init__(self, org_id: str, drill: "Drill") -> None:
        self.org_id = org_id
        self.drill = drill

    def step(self) -> "DrillStep | None":
        return next((s for s in self.drill.steps if "org_move" in s.command), None)

    def flipped_at(self, run_started: float) -> float | None:
        """Wall-clock time the move ended (its step's end), None if it did not succeed."""
        step = self.step()
        if step is None or step.exit != 0:
            return None
        return run_started + step.began + step.took

    def check_rows(self, journal: list[dict[str, Any]], models: dict[str, Any]) -> dict[str, Any]:
        from django.conf import settings

        from directory.selectors import placement_get

        placement = placement_get(org_id=self.org_id, fresh=True)
        mine = [
            r for r in journal if r["org_id"] == self.org_id and r["op"] in ("create", "update", "delete")
        ]
        deleted = {r["id"] for r in mine if r["op"] == "delete"}
        live = {r["id"] for r in mine if r["op"] == "create"} - deleted
        clusters = settings.DATABASE_CLUSTERS
        on: dict[str, set[str]] = {}
        for name, cluster in clusters.items():
            on[name] = set()
            for model in models.values():
                on[name] |= {str(i) for i in model.objects.using(cluster["primary"]).filter(org_id=self.org_id)
                             .values_list("id", flat=True)}  # fmt: skip
        new = placement.cluster if placement else "?"
        step = self.step()
        return {
            "moved_org": self.org_id,
            "moved_org_cluster_now": f"{new} ({placement.state if placement else 'unknown'})",
            "moved_org_move": (step.output.splitlines() or [""])[-1] if step else "not run",
            "moved_org_acknowledged_writes": len(mine),
            "moved_org_acknowledged_live_creates_missing_on_new_cluster": len(live - on.get(new, set())),
            "moved_org_rows_left_on_other_clusters": {n: len(ids) for n, ids in on.items() if n != new},
        }


def check_websockets(journal: list[dict[str, Any]], move_org: str | None, flipped_at: float | None,
                     grace: float = 2.0) -> dict[str, Any]:  # fmt: skip
    """Each socket that stayed up must have received every create of its org made while
    it was up, each event once, in version order (the moved org's versions continue
    from the old cluster's, so its sockets are held to the same)."""
    creates_by_org: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in journal:
        if record["op"] == "create":
            creates_by_org[record["org_id"]].append(record)
    sockets = [r for r in journal if r["op"] == "ws"]
    stayed = [s for s in sockets if not s["dropped"]]
    lost = lost_moved = expected_total = expected_moved = out_of_order = doubled = 0
    across_move = 0
    for socket in stayed:
        received = {e["id"] for e in socket["events"] if (e.get("type") or "").endswith(".created")}
        expected = {c["id"] for c in creates_by_org[socket["org_id"]]
                    if socket["connected_at"] + grace <= c["t"] <= socket["left_at"] - grace}  # fmt: skip
        expected_total += len(expected)
        lost += len(expected - received)
        versions = [e["version"] for e in socket["events"] if e.get("version") is not None]
        out_of_order += sum(1 for a, b in itertools.pairwise(versions) if b < a)
        seen = [(e.get("version"), e.get("type"), e.get("id")) for e in socket["events"]]
        doubled += len(seen) - len(set(seen))
        if (
            socket["org_id"] == move_org
            and flipped_at
            and socket["connected_at"] < flipped_at < socket["left_at"]
        ):
            across_move += 1
            expected_moved += len(expected)
            lost_moved += len(expected - received)
    # commit (the event's ts) to arrival, for live events (a replay after a reconnect
    # carries old commits and is left out: it measures the outage, not the path)
    delays = sorted(
        e["at"] - datetime.datetime.fromisoformat(e["ts"]).timestamp()
        for s in sockets for e in s["events"]
        if e.get("ts") and e.get("at") and e["at"] - s["connected_at"] > grace
    )  # fmt: skip
    return {
        "commit_to_socket_p50_ms": round(1000 * delays[len(delays) // 2]) if delays else None,
        "commit_to_socket_p95_ms": round(1000 * delays[int(0.95 * (len(delays) - 1))]) if delays else None,
        "sockets": len(sockets),
        "stayed_connected": len(stayed),
        "events_expected": expected_total,
        "events_lost": lost,
        "events_out_of_version_order": out_of_order,
        "events_received_twice": doubled,
        "events_received": sum(len(s["events"]) for s in sockets),
        "moved_org_sockets_connected_across_the_move": across_move,
        "moved_org_events_expected_on_those": expected_moved,
        "moved_org_events_lost_on_those": lost_moved,
    }


class PushDevices:
    """Each hot org's manager has the large-expense alert on (EUR >= 1000) and two Web
    Push subscriptions, made as a browser makes them, on one local push service that
    records what arrives (tests/push_servers.py: answers 201 like the real ones)."""

    ENDPOINT_PATH = "/loadtest-push/"

    def __init__(self, credentials: Path) -> None:
        import django

        django.setup()
        from django.db import DatabaseError, transaction

        from push.models import Device, NotificationPreference
        from replicas.context import use_org_cluster
        from tests.push_servers import Http1PushServer
        from tests.push_support import Browser

        self.server = Http1PushServer().__enter__()  # a daemon thread: it ends with the run
        Device.objects.filter(address__contains=self.ENDPOINT_PATH).delete()  # an earlier run's
        with open(credentials) as f:
            rows = list(csv.DictReader(f))
        hot = self.hot = list(dict.fromkeys(r["org_id"] for r in rows))[:HOT_ORGS]
        managers = {r["org_id"]: r for r in rows if r["org_id"] in hot and r["username"].endswith("-u1")}
        self.browsers: dict[str, Any] = {}  # path -> Browser
        self.skipped: dict[str, str] = {}  # hot orgs without devices, and why
        self.devices_by_org: dict[str, list[str]] = defaultdict(list)
        from accounts.models import User

        for org_id, row in managers.items():
            user = User.objects.get(username=row["username"])
            try:
                with (
                    use_org_cluster(org_id) as cluster,
                    transaction.atomic(using=cluster.primary),
                ):  # moved earlier?
                    NotificationPreference.objects.update_or_create(
                        org_id=uuid.UUID(org_id), user=user,
                        defaults={"large_expense_enabled": True, "large_expense_thresholds": {"EUR": LARGE_EXPENSE}},
                    )  # fmt: skip
            except DatabaseError as error:  # push tables that cannot hold this org where it is
                self.skipped[org_id] = str(error).splitlines()[0]
                continue
            for n in range(2):
                path = f"{self.ENDPOINT_PATH}{org_id}/{n}"
                browser = Browser(self.server.url + path)
                keys = browser.subscription["keys"]
                Device.objects.create(user=user, kind="webpush", address=browser.endpoint, p256dh=keys["p256dh"],
                                      auth=keys["auth"])  # fmt: skip
                self.browsers[path] = browser
                self.devices_by_org[org_id].append(path)

    def movable_hot_org(self) -> str | None:
        """The first hot org still on the directory cluster (a rerun on the same data
        finds the earlier runs' moved orgs on c2): the drill moves it under load."""
        from directory.selectors import placement_get

        for org_id in self.hot:
            placement = placement_get(org_id=org_id, fresh=True)
            if placement is not None and placement.cluster != MOVE_TO:
                return org_id
        return None

    @staticmethod
    def deliveries(**filters: Any) -> list[tuple[str, str, datetime.datetime]]:
        """(event key, status, committed at) of the matching deliveries on every cluster's
        primary: where an org's deliveries live follows its placement or not, depending
        on the push tables' cluster design, so all are read."""
        from push.models import Delivery
        from replicas.topology import topology

        return [
            row
            for cluster in topology().clusters.values()
            for row in Delivery.objects.using(cluster.primary).filter(**filters)
            .values_list("event_key", "status", "committed_at")
        ]  # fmt: skip

    def check(self, journal: list[dict[str, Any]], run_started: float, move_org: str | None = None,
              flipped_at: float | None = None) -> dict[str, Any]:  # fmt: skip
        """Every acknowledged large expense reached each of its org's devices exactly once.
        (An earlier, aborted run may have left changes in the outbox: their alerts reach
        these devices too, rightly, and are counted apart.)"""
        from decimal import Decimal

        deadline = time.monotonic() + 60
        while self.deliveries(status__in=("pending", "sending")) and time.monotonic() < deadline:
            time.sleep(1)
        large = {r["id"]: r["org_id"] for r in journal if r["op"] == "create" and r["kind"] == "expenses"
                 and r["org_id"] in self.devices_by_org and Decimal(r["amount"]) >= Decimal(LARGE_EXPENSE)}  # fmt: skip
        alerts = self.deliveries(notification_type="expense.large")
        before = datetime.datetime.fromtimestamp(run_started, tz=datetime.UTC)
        earlier = {key.partition(":")[2] for key, _, at in alerts if at < before}
        received: dict[tuple[str, str], int] = defaultdict(int)
        arrived_at: dict[str, float] = {}
        pokes = 0
        for request in list(self.server.requests):
            payload = self.browsers[request.path].decrypt(request.body)
            if "expense_id" not in payload:
                pokes += 1
                continue
            if payload["expense_id"] in earlier:
                continue
            received[(request.path, payload["expense_id"])] += 1
            arrived_at.setdefault(payload["expense_id"], request.received_at)
        expected = {(path, expense) for expense, org in large.items() for path in self.devices_by_org[org]}
        created_at = {r["id"]: r["t"] for r in journal if r["op"] == "create"}
        committed = {key.partition(":")[2]: at.timestamp() for key, _, at in alerts}
        delays = sorted(arrived_at[e] - committed[e] for e in arrived_at if e in committed)
        outcomes: dict[str, int] = defaultdict(int)
        for _, status, _ in alerts:
            outcomes[status] += 1
        moved = {pair for pair in expected if large[pair[1]] == move_org}
        after_flip = {pair for pair in moved if flipped_at and created_at[pair[1]] > flipped_at}
        moved_figures = (
            {
                "moved_org_alerts_expected": len(moved),
                "moved_org_alerts_expected_for_expenses_after_the_move": len(after_flip),
                "moved_org_alerts_missing": sum(1 for pair in moved if received[pair] == 0),
                "moved_org_alerts_missing_after_the_move": sum(
                    1 for pair in after_flip if received[pair] == 0
                ),
                "moved_org_alerts_doubled": sum(1 for pair in moved if received[pair] > 1),
            }
            if move_org
            else {}
        )
        return moved_figures | {
            "devices": sum(len(paths) for paths in self.devices_by_org.values()),
            "hot_orgs_without_devices": self.skipped,
            "large_expenses_acknowledged": len(large),
            "alerts_expected": len(expected),
            "alerts_missing": sum(1 for pair in expected if received[pair] == 0),
            "alerts_doubled": sum(1 for pair in expected if received[pair] > 1),
            "alerts_unexpected": sum(1 for pair in received if pair not in expected),
            "alerts_for_changes_of_earlier_runs": len(earlier),
            "alert_deliveries_by_status": dict(outcomes),
            "sync_pokes_received": pokes,
            "commit_to_push_p50_ms": round(1000 * delays[len(delays) // 2]) if delays else None,
            "commit_to_push_p95_ms": round(1000 * delays[int(0.95 * (len(delays) - 1))]) if delays else None,
        }


def _as_a_phone_retries(call: Callable[[], T], retried: list[str]) -> T:
    """One of the audit's sync requests, retried on a transport error as a phone does in
    the run (locustfile: the same error, backoff, again), so a connection closed under
    it (a keep-alive connection the edge dropped) is not taken for lost data; a server
    that is gone still fails the audit after the last try. Safe: a push is mutation ids
    the server applies once, a pull only reads."""
    import httpx

    for attempt in range(4):
        try:
            return call()
        except httpx.TransportError as failed:
            if attempt == 3:
                raise
            retried.append(f"{type(failed).__name__}: {failed}")
            time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


def check_sync_clients(journal: list[dict[str, Any]], move_org: str | None = None) -> dict[str, Any]:
    """Every phone's store, reopened from disk, finishes its queue (all phones first),
    then pulls: it must equal a fresh full pull of its org and the org's rows (on the
    org's cluster now: a phone of the moved org crossed the move), and the server must
    have processed each of its mutation ids exactly once, in order."""
    import django

    django.setup()
    from directory.cache import directory_cache
    from finance.models import Expense, Revenue
    from replicas.context import use_org_cluster
    from sync.models import SyncClient as SyncClientRow
    from syncclient import LocalStore, SyncClient

    directory_cache.clear()
    phones = [r for r in journal if r["op"] == "sync_client"]
    clients = [(r, SyncClient(ORIGIN, r["token"], r["org_id"], LocalStore.open(r["store"]))) for r in phones]
    unfinished = 0
    retried: list[str] = []
    for _, client in clients:  # every queue reaches the server before anyone's last pull
        _as_a_phone_retries(client.push, retried)
        unfinished += bool(client.outgoing())
    diverged, lost_or_doubled, queued_left = [], 0, 0
    for record, client in clients:
        _as_a_phone_retries(client.pull, retried)
        queued_left += len(client.store.pending)
        fresh = SyncClient(ORIGIN, record["token"], record["org_id"], LocalStore())
        _as_a_phone_retries(fresh.pull, retried)
        entries = {k: v for k, v in fresh.store.base.items() if not k.startswith("property:")}
        with use_org_cluster(record["org_id"]):
            rows = sum(m.objects.filter(org_id=record["org_id"]).count() for m in (Expense, Revenue))
            server = SyncClientRow.objects.filter(
                org_id=record["org_id"], client_id=record["client_id"]
            ).first()
        if client.store.base != fresh.store.base or len(entries) != rows:
            diverged.append(record["client_id"])
        processed = server.last_mutation_id if server else 0
        if processed != client.store.next_mutation_id - 1:
            lost_or_doubled += 1
    moved = [r["client_id"] for r in phones if r["org_id"] == move_org]
    return {
        "phones": len(phones),
        "phones_of_the_moved_org": len(moved),
        "phones_of_the_moved_org_diverged": len(set(moved) & set(diverged)),
        "mutations_queued": sum(c.store.next_mutation_id - 1 for _, c in clients),
        "stores_diverged_from_server": len(diverged),
        "phones_whose_mutation_ids_the_server_did_not_all_process": lost_or_doubled,
        "mutations_still_queued_after_final_sync": queued_left,
        "queues_blocked": unfinished,
        "audit_requests_retried_after_a_transport_error": retried,
    }


def sync_applied(journal: list[dict[str, Any]]) -> int:
    """Mutations the server has applied for the run's phones (each phone is new, so its
    last processed mutation id is its count), read on each org's cluster."""
    import django

    django.setup()
    from directory.cache import directory_cache
    from replicas.context import use_org_cluster
    from sync.models import SyncClient as SyncClientRow

    directory_cache.clear()
    total = 0
    for record in (r for r in journal if r["op"] == "sync_client"):
        with use_org_cluster(record["org_id"]):
            row = SyncClientRow.objects.filter(org_id=record["org_id"], client_id=record["client_id"]).first()
        total += row.last_mutation_id if row else 0
    return total


def check_after_effects() -> dict[str, Any]:
    """The outbox drains (every after-write effect ran) and the read model matches."""
    import django

    django.setup()
    from changelog.selectors import outbox_status

    deadline = time.monotonic() + 60
    status = outbox_status()
    while status.pending and time.monotonic() < deadline:
        time.sleep(1)
        status = outbox_status()
    verify = subprocess.run([sys.executable, "manage.py", "finance_totals", "verify"], cwd=ROOT,
                            capture_output=True, text=True, check=False)  # fmt: skip
    return {
        "outbox_pending_after_60s": status.pending,
        "outbox_dead_letters": status.dead,
        "finance_totals_verify_exit": verify.returncode,
        "finance_totals_verify_output": verify.stdout.strip().splitlines()[-1:] or [""],
    }


def percentile(values: list[float], q: float) -> float | None:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))] if ordered else None


def loop_lag_line(attempts: dict[str, Any]) -> str:
    """How late the load generator's gevent loop woke from a 10 ms sleep (main run):
    a response that arrives meanwhile is timed late by as much."""
    lags = attempts.get("loop_lag_ms", [])
    if not lags:
        return ""
    p50, p95, p99 = (percentile(lags, q) for q in (0.5, 0.95, 0.99))
    return (f"Locust's event-loop lag (a 10 ms sleep woke late by; {len(lags)} samples): p50 {p50:.1f} ms, "
            f"p95 {p95:.1f} ms, p99 {p99:.1f} ms, max {max(lags):.1f} ms")  # fmt: skip


def judge_slos(
    attempts: dict[str, Any], ws_check: dict[str, Any], drill: "Drill", run_started: float
) -> dict[str, Any]:
    """The plan's five SLOs (CONTRACT: API p95 < 300 ms, realtime delivery p95 < 1 s,
    edge hit rate > 85 %, 5xx rate < 0.1 %, availability > 99.95 %), judged on what the
    clients saw in this run: every API attempt Locust made (retries included, as the
    server's SLI counts them; websocket frames left out), the sockets' commit-to-arrival
    times, and the X-Cache header of every GET through the edge. Also judged outside the
    drill's fault windows (each step plus 10 s), since one drill packs a month's faults
    into minutes."""
    api = attempts.get("api", [])
    calm = [a for a in api if not drill.window_of(a[0] - run_started)]
    edge = attempts.get("edge", {})

    def latency(rows: list[list[Any]]) -> tuple[float | None, float | None]:
        if not rows:
            return None, None
        return percentile([r[1] for r in rows], 0.95), sum(1 for r in rows if r[1] <= 300) / len(rows)

    def failed(rows: list[list[Any]]) -> float | None:
        return sum(1 for r in rows if r[2] >= 500) / len(rows) if rows else None

    hits, misses = edge.get("HIT", 0), edge.get("MISS", 0)
    hit_rate = hits / (hits + misses) if hits + misses else None
    p95, share = latency(api)
    calm_p95, calm_share = latency(calm)
    error, calm_error = failed(api), failed(calm)
    delivery = ws_check.get("commit_to_socket_p95_ms")

    def verdict(met: bool | None) -> str:
        return "n/a" if met is None else ("met" if met else "NOT met")

    def ms(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.0f} ms"

    def pct(value: float | None, digits: int = 3) -> str:
        return "n/a" if value is None else f"{value:.{digits}%}"

    rows = [
        ("API p95 < 300 ms", f"{ms(p95)} ({pct(share, 2)} at or under 300 ms)", verdict(None if share is None else share >= 0.95),
         f"{ms(calm_p95)}", verdict(None if calm_share is None else calm_share >= 0.95)),
        ("realtime delivery p95 < 1 s", ms(delivery), verdict(None if delivery is None else delivery < 1000), "", ""),
        ("edge cache hit rate > 85 %", f"{pct(hit_rate, 1)} ({hits} hits, {misses} misses, {edge.get('PASS', 0)} passes)",
         verdict(None if hit_rate is None else hit_rate > 0.85), "", ""),
        ("API 5xx rate < 0.1 %", pct(error), verdict(None if error is None else error < 0.001),
         pct(calm_error), verdict(None if calm_error is None else calm_error < 0.001)),
        ("availability > 99.95 %", pct(None if error is None else 1 - error),
         verdict(None if error is None else 1 - error > 0.9995),
         pct(None if calm_error is None else 1 - calm_error), verdict(None if calm_error is None else 1 - calm_error > 0.9995)),
    ]  # fmt: skip
    span = (api[-1][0] - api[0][0]) if len(api) > 1 else 0.0
    return {
        "rows": rows,
        "api_attempts_per_second": round(len(api) / span, 1) if span else None,
        "api_attempts": len(api),
        "api_attempts_outside_fault_windows": len(calm),
        "refused_connections": sum(1 for a in api if a[2] == 0),
    }


def error_answers(attempts: dict[str, Any], drill: "Drill", run_started: float) -> tuple[list[str], int]:
    """Every 5xx answer and refused connection any attempt got (retried or not), grouped
    by status, Retry-After, endpoint and the drill step it fell in. Allowed: 503 with
    Retry-After (the primary restart, the org move's fence), and refused or reset
    connections while the edge or a worker restarts. Returns the lines and the count of
    answers outside that."""
    groups: dict[tuple[int, bool, str, str], int] = defaultdict(int)
    for t, status, name, retry_after in attempts.get("errors", []):
        groups[(status, bool(retry_after), name, drill.window_of(t - run_started) or "-")] += 1
    lines = ["| status | Retry-After | endpoint | during | attempts |", "|---:|---|---|---|---:|"]
    unexpected = 0
    for (status, retry_after, name, window), count in sorted(
        groups.items(), key=lambda kv: (kv[0][3], kv[0][0])
    ):
        lines.append(
            f"| {status or 'refused'} | {'yes' if retry_after else 'no'} | {name} | {window} | {count} |"
        )
        if not (status == 503 and retry_after) and not (status == 0 and window != "-"):
            unexpected += count
    return lines, unexpected


def replica_share(stats: dict[str, Any]) -> str:
    """Share of GET reads that replicas served (reads inside write requests are pinned
    to the primary by design and left out). One gunicorn process's view, over every
    cluster (aliases `replicaN` and `cN_replicaN` are replicas, the rest primaries)."""
    reads = stats.get("reads", {})
    on_replicas = sum(count for alias, count in reads.items() if "replica" in alias)
    pinned = stats.get("fallbacks_to_primary", {}).get("write_request", 0)
    on_primary = sum(count for alias, count in reads.items() if "replica" not in alias) - pinned
    total = on_replicas + on_primary
    share = on_replicas / total if total else 0.0
    return (f"{share:.1%} of {total} reads outside write requests ({on_replicas} on replicas, {on_primary} "
            f"on the primary: {json.dumps({k: v for k, v in stats.get('fallbacks_to_primary', {}).items() if k != 'write_request'})}); "
            f"scope: {stats.get('scope', 'process')}.")  # fmt: skip


def ratio_row(name: str, full: dict[str, str], bare: dict[str, str]) -> str:
    full_rps, bare_rps = float(full["Requests/s"]), float(bare["Requests/s"])
    return (f"| {name} | {bare_rps:.0f} | {full_rps:.0f} | {full_rps / bare_rps if bare_rps else 0:.2f} | "
            f"{bare['95%']} | {full['95%']} |")  # fmt: skip


def refuse_orgs_out_of_reach() -> None:
    """With one cluster, orgs an earlier run moved to c2 would answer 503 all run long."""
    from directory.models import OrgPlacement

    away = OrgPlacement.objects.exclude(cluster="main").count() if CLUSTERS < 2 else 0
    if away:
        raise SystemExit(f"{away} orgs were moved to c2 by an earlier run: keep LOADTEST_CLUSTERS=2 "
                         "(the servers must reach them), or start from fresh data (bin/stack destroy)")  # fmt: skip


def prepare(credentials: Path) -> None:
    say(f"starting the local stack ({CLUSTERS} database cluster(s), Redis: {REDIS_MODE})")
    run(["bin/stack", "up"], stdout=subprocess.DEVNULL)
    configure_topology()
    run([sys.executable, "manage.py", "migrate_clusters"], stdout=subprocess.DEVNULL)
    say(f"seeding {ORGS} orgs (5 properties, 5 users each; only what is missing)")
    run([sys.executable, "manage.py", "seed_orgs", "--orgs", str(ORGS), "--properties-per-org", "5",
         "--users-per-org", "5", "--entries-per-property", "2", "--credentials-out", str(credentials)])  # fmt: skip


def main() -> None:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = ROOT / "reports" / f"loadtest-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    credentials = ROOT / "reports" / "credentials.csv"
    load_before = os.getloadavg()

    prepare(credentials)

    push_devices = PushDevices(credentials)
    refuse_orgs_out_of_reach()
    move_org = push_devices.movable_hot_org() if FAULTS and CLUSTERS >= 2 else None
    journal_path, attempts_path = out / "journal.jsonl", out / "attempts.json"
    locust_env = {"LOADTEST_CREDENTIALS": str(credentials), "LOADTEST_JOURNAL": str(journal_path),
                  "LOADTEST_WS_USERS": str(WS_USERS), "LOADTEST_WS_URL": f"ws://127.0.0.1:{PORT}",
                  "LOADTEST_MOBILE_USERS": str(MOBILE_USERS), "LOADTEST_SYNC_STORES": str(out / "sync-stores"),
                  "LOADTEST_MOVE_ORG": move_org or "", "LOADTEST_ATTEMPTS": str(attempts_path)}  # fmt: skip
    with Servers(out / "servers.log") as servers:
        say(
            f"full path: {USERS} API users, {WS_USERS} on websockets, {MOBILE_USERS} offline-capable phones, "
            f"for {DURATION}s through {EDGE}"
            + (f"; the drill moves org {move_org} to {MOVE_TO}" if move_org else "")
        )
        drill = Drill(move_org)
        cpu = CpuSampler(servers.process.pid if servers.process else 0)
        started = time.time()
        if FAULTS:
            drill.run_in_background(started, DURATION)
        full_stats = locust(out, host=EDGE, users=USERS + WS_USERS + MOBILE_USERS, seconds=DURATION,
                            classes=["ApiUser", "RealtimeUser", "MobileSyncUser"], env=locust_env, cpu=cpu)  # fmt: skip
        ran_for = time.time() - started
        journal = read_journal(journal_path)
        from django.db import connections

        connections.close_all()  # this process's connection died with the primary's restart
        applied = sync_applied(journal)
        attempts = json.loads(attempts_path.read_text()) if attempts_path.exists() else {}
        aggregated = get_json(f"{ORIGIN}/v1/system/metrics/aggregated")
        hit_rate = edge_hit_rate()
        replica_stats = get_json(f"{ORIGIN}/v1/system/database/replicas/stats")
        say("full path, create+list only (for the baseline ratio)")
        full_cl = locust(out / "full-create-list", host=EDGE, users=BASELINE_USERS, seconds=BASELINE_SECONDS,
                         classes=["CreateListUser"], env=locust_env | {"LOADTEST_ATTEMPTS": ""})  # fmt: skip

        journal = read_journal(journal_path)
        say("audit: the phones finish their queues and pull; the outbox drains; totals verify")
        connections.close_all()
        move = MoveAudit(move_org, drill) if move_org else None
        flipped_at = move.flipped_at(started) if move else None
        sync_check = check_sync_clients(journal, move_org)
        sync_check = {
            "mutations_applied_during_the_run": applied,
            "mutations_per_second": round(applied / ran_for, 1) if ran_for else 0,
        } | sync_check
        push_check = push_devices.check(journal, started, move_org, flipped_at)
        after_effects = check_after_effects()
    db_check = check_database(journal, started, move)
    ws_check = check_websockets(journal, move_org, flipped_at)
    slos = judge_slos(attempts, ws_check, drill, started)
    errors, unexpected = error_answers(attempts, drill, started)

    say("bare path: no idempotency key, no replicas, no metrics, no cache, straight to gunicorn")
    bare_env = {"DJANGO_SETTINGS_MODULE": "bench.bare_settings", "REPLICA_URLS": "", "CDN_PROVIDER": "none"}
    with Servers(out / "servers-bare.log", **bare_env):
        bare_cl = locust(out / "bare-create-list", host=ORIGIN, users=BASELINE_USERS, seconds=BASELINE_SECONDS,
                         classes=["CreateListUser"], env=locust_env | {"LOADTEST_BARE": "1", "LOADTEST_ATTEMPTS": ""})  # fmt: skip

    write_report(out, full_stats=full_stats, full_cl=full_cl, bare_cl=bare_cl, aggregated=aggregated,
                 replica_stats=replica_stats, db_check=db_check | after_effects, ws_check=ws_check,
                 sync_check=sync_check, push_check=push_check, drill=drill, hit_rate=hit_rate, slos=slos,
                 errors=errors, unexpected_errors=unexpected, cpu=cpu,
                 load=(load_before, os.getloadavg()), loop_lag=loop_lag_line(attempts))  # fmt: skip


def write_report(out: Path, *, full_stats: Path, full_cl: Path, bare_cl: Path, aggregated: dict, replica_stats: dict,
                 db_check: dict, ws_check: dict, sync_check: dict, push_check: dict, drill: Drill,
                 hit_rate: str, slos: dict, errors: list[str], unexpected_errors: int, cpu: CpuSampler,
                 load: tuple[tuple[float, ...], tuple[float, ...]], loop_lag: str = "") -> None:  # fmt: skip
    stats = read_stats(full_stats)
    command = " ".join(f"{k}={os.environ[k]}" for k in sorted(os.environ) if k.startswith("LOADTEST_"))
    lines = [f"# Load test {out.name}", "",
             f"Command: `{command} make loadtest`", "",
             f"{USERS} API users + {WS_USERS} websocket users + {MOBILE_USERS} phones, {DURATION}s, spawn rate {SPAWN_RATE}/s, "
             f"{ORGS} orgs seeded, {CLUSTERS} database cluster(s), Redis {REDIS_MODE}; machine: {os.cpu_count()} cores; "
             f"load average (1/5/15 min) {'/'.join(f'{v:.1f}' for v in load[0])} before, "
             f"{'/'.join(f'{v:.1f}' for v in load[1])} after.", "",
             "## Endpoints (through the edge)", "",
             "| endpoint | requests | failures | req/s | p50 ms | p95 ms | p99 ms |", "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    total_requests = total_failures = 0
    for name, row in sorted(stats.items()):
        if row["Name"] == "Aggregated":
            continue
        total_requests += int(row["Request Count"])
        total_failures += int(row["Failure Count"])
        lines.append(f"| {name} | {row['Request Count']} | {row['Failure Count']} | {float(row['Requests/s']):.1f} | "
                     f"{row['50%']} | {row['95%']} | {row['99%']} |")  # fmt: skip
    error_rate = total_failures / total_requests if total_requests else 0
    lines += [
        "",
        f"Error rate (including the fault drill): {error_rate:.4%} of {total_requests} requests.",
        "",
    ]
    lines += ["## SLOs of the plan, judged on this run's own data", "",
              f"At this run's load, {slos['api_attempts_per_second']} API attempts/s through the edge. "
              f"From the clients' side: {slos['api_attempts']} API attempts (retries included), "
              f"{slos['api_attempts_outside_fault_windows']} of them outside the drill's fault windows (each step + 10 s); "
              f"{slos['refused_connections']} refused or reset connections (not 5xx: counted under errors below).", "",
              "| SLO | whole run | verdict | outside fault windows | verdict |", "|---|---|---|---|---|",
              *(f"| {' | '.join(row)} |" for row in slos["rows"]), ""]  # fmt: skip
    lines += ["## Error answers (every attempt, retried or not)", "",
              f"Answers other than 503 with Retry-After, or a refused connection during a drill step: {unexpected_errors}.", "",
              *errors, ""]  # fmt: skip
    lines += [
        "## Fault drill",
        "",
        "| started at (s) | took (s) | step | exit | last line |",
        "|---:|---:|---|---:|---|",
    ]
    lines += [f"| {st.began:.0f} | {st.took:.1f} | {st.name} | {st.exit} | {(st.output.splitlines() or [''])[-1][:200]} |"
              for st in drill.steps] if FAULTS else ["", "Off (LOADTEST_FAULTS=0)."]  # fmt: skip
    lines += ["", "## Database check", "", *(f"- {k}: {v}" for k, v in db_check.items())]
    lines += ["", "## Websockets", "", *(f"- {k}: {v}" for k, v in ws_check.items())]
    sync_rows = [f"| {name} | {row['Request Count']} | {row['Failure Count']} | {row['50%']} | {row['95%']} | {row['99%']} |"
                 for name, row in sorted(stats.items()) if "/sync/" in name]  # fmt: skip
    lines += ["", "## Offline phones (sync)", "", "| request | count | failures | p50 ms | p95 ms | p99 ms |",
              "|---|---:|---:|---:|---:|---:|", *sync_rows, "", *(f"- {k}: {v}" for k, v in sync_check.items())]  # fmt: skip
    lines += ["", "## Push notifications (Web Push, local push service)", "",
              *(f"- {k}: {v}" for k, v in push_check.items())]  # fmt: skip
    lines += ["", "## Reads served by replicas", "", replica_share(replica_stats)]
    lines += ["", "## Edge hit rate (Varnish, since the drill restarted it)", "", hit_rate]
    lines += ["", "## The load generator's CPU (it shares the cores with everything it measures)", "",
              *(f"- {Path(run).parent.name}/{Path(run).name}: {figures}" for run, figures in LOAD_GENERATOR_CPU.items())]  # fmt: skip
    lines += [f"- {loop_lag}"] if loop_lag else []
    lines += ["", "## Where the CPU went during the main run", "", *cpu.report()]
    lines += ["", "## Service view (GET /v1/system/metrics/aggregated)", "", "```json",
              json.dumps(aggregated, indent=2)[:6000], "```", "",
              "## Replica routing (GET /v1/system/database/replicas/stats)", "", "```json",
              json.dumps(replica_stats, indent=2)[:3000], "```", ""]  # fmt: skip
    full, bare = read_stats(full_cl), read_stats(bare_cl)
    lines += ["## Baseline: bare create and list vs the full path", "",
              "| path | bare req/s | full req/s | full / bare | bare p95 ms | full p95 ms |",
              "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for key in sorted(set(full) & set(bare)):
        lines.append(ratio_row(key, full[key], bare[key]))
    (out / "report.md").write_text("\n".join(lines) + "\n")
    with open(out / "summary.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["metric", "value"])
        writer.writerow(["error_rate", f"{error_rate:.6f}"])
        writer.writerow(["unexpected_error_answers", unexpected_errors])
        for source in (db_check, ws_check, sync_check, push_check):
            for key, value in source.items():
                writer.writerow([key, value])
    say(f"report: {out / 'report.md'}")
    print((out / "report.md").read_text())


if __name__ == "__main__":
    main()
