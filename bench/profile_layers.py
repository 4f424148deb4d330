"""Summarise py-spy collapsed stacks (`--format raw`, bench/origin.py BENCH_PROFILE) by layer.

    python bench/profile_layers.py reports/profile/create-cpu.txt [...]

For each file: the share of request-thread samples spent in each middleware (its own
work, not the layers inside it), in the view, and, inclusively, in the named steps of a
request (token lookup, membership, rate limit, idempotency, handlers after commit ...),
each with the part of it spent in the Postgres driver and in the Redis client. A `cpu`
profile counts CPU only; a `wall` profile (--idle) counts waiting too.
"""

import re
import sys
from collections import Counter
from pathlib import Path

REQUEST_FRAME = "ThreadWorker.handle_request"
VIEW_FRAME = "BaseHandler._get_response"
FINISHER_FRAME = "_Finisher._run"
_MIDDLEWARE = re.compile(
    r"^(\w*Middleware)\.(__call__|process_request|process_response|process_view|__acall__)"
)

# (label, frame prefix) for inclusive shares; a frame matches when it starts with the prefix.
STEPS = [
    ("DRF dispatch (view + DRF)", "APIView.dispatch"),
    ("  authentication: token (+ membership)", "TokenAuthentication.authenticate"),
    ("  rate limit (per token)", "TokenRateThrottle.allow_request"),
    ("  org + membership check", "OrgScopedApi.check_permissions"),
    ("  idempotency: begin (claim)", "IdempotentCall.begin"),
    ("  idempotency: complete (record)", "IdempotentCall.complete"),
    ("  idempotency: after transaction", "IdempotentCall.after_transaction"),
    ("  request body parse", "Request.data"),
    ("  input validation (serializer)", "Serializer.is_valid"),
    ("  entry_create service", "entry_create"),
    ("    change described (data, JSON)", "change_prepare"),
    ("    version + entry + total + outbox row (one statement)", "_entry_insert"),
    ("    version taken alone (update, delete, tenancy)", "org_version_take"),
    ("    change record (outbox row, not a create)", "change_record"),
    ("  transaction commit", "Atomic.__exit__"),
    ("    after-commit delivery (change log)", "deliver_changes"),
    ("      outbox rows to the finisher (queued)", "outbox_rows_finish"),
    ("    after-commit handlers", "run_handlers"),
    ("      edge purge", "purge_for_change"),
    ("      position record", "record_position_for_change"),
    ("      realtime publish", "publish_change"),
    ("  list query + page", "paginate_desc"),
    ("  entry output", "entry_output"),
    ("  summary read", "finance_summary"),
    ("  response render (JSON)", "JSONRenderer.render"),
    ("  finalize_response", "APIView.finalize_response"),
    ("replica routing: routing_for", "routing_for"),
    ("replica routing: finish (position)", "finish"),
    ("replica choice (router)", "ReplicaRouter.db_for_read"),
    ("primary connection check (pooled)", "check_within_deadline"),
    ("metrics (prometheus_client)", "prometheus_client/"),
    ("Django ORM: SQL compile", "SQLCompiler.as_sql"),
    ("Django ORM: model init from rows", "Model.from_db"),
]


def frames_of(line: str) -> tuple[list[str], int]:
    stack, _, count = line.rstrip().rpartition(" ")
    return stack.split(";"), int(count)


def io_kind(frames: list[str]) -> str | None:
    """'postgres' or 'redis' when the innermost Python frames are in that client."""
    for frame in reversed(frames[-6:]):
        if "psycopg" in frame:
            return "postgres"
        if "redis/" in frame:
            return "redis"
    return None


def middleware_layer(frames: list[str]) -> str:
    """The middleware whose own code the sample is in, 'view' past the middleware chain."""
    layer = "request setup (WSGI, handler)"
    for index, frame in enumerate(frames):
        if frame.startswith(VIEW_FRAME):
            return "view (URL resolve, DRF, the app)"
        name = frame.split(" ", 1)[0]
        if name.startswith("MiddlewareMixin.") and index + 1 < len(frames):
            inner = _MIDDLEWARE.match(frames[index + 1].split(" ", 1)[0])
            if inner:
                layer = inner.group(1)
            continue
        match = _MIDDLEWARE.match(name)
        if match:
            layer = match.group(1)
    return layer


def summarise(path: Path) -> str:
    request_samples: list[tuple[list[str], int]] = []
    other = finisher = 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        frames, count = frames_of(line)
        if any(frame.startswith(REQUEST_FRAME) for frame in frames):
            request_samples.append((frames, count))
        else:
            other += count
            if any(frame.startswith(FINISHER_FRAME) for frame in frames):
                finisher += count
    total = sum(count for _, count in request_samples)
    lines = [f"## {path.name}: {total} request-thread samples, {other} in other threads"]
    if total and finisher:
        lines.append(f"finisher thread (changelog/finishing.py): {finisher} samples, "
                     f"{100 * finisher / total:.1f}% of the request threads' (not included below)")  # fmt: skip
    if not total:
        return "\n".join(lines)
    layers: Counter[str] = Counter()
    io_by_layer: Counter[tuple[str, str]] = Counter()
    for frames, count in request_samples:
        layer = middleware_layer(frames)
        layers[layer] += count
        kind = io_kind(frames)
        if kind:
            io_by_layer[(layer, kind)] += count
    lines.append(f"{'layer (own work)':42} {'share':>6} {'in pg':>6} {'in redis':>8}")
    for layer, count in layers.most_common():
        lines.append(f"{layer:42} {100 * count / total:5.1f}% {100 * io_by_layer[(layer, 'postgres')] / total:5.1f}%"
                     f" {100 * io_by_layer[(layer, 'redis')] / total:7.1f}%")  # fmt: skip
    lines.append(f"\n{'step (inclusive)':42} {'share':>6} {'in pg':>6} {'in redis':>8}")
    for label, prefix in STEPS:
        matched = [(frames, count) for frames, count in request_samples
                   if any(prefix in frame.split(" (", 1)[0] or (prefix.endswith("/") and prefix in frame)
                          for frame in frames)]  # fmt: skip
        count = sum(c for _, c in matched)
        if not count:
            continue
        pg = sum(c for frames, c in matched if io_kind(frames) == "postgres")
        rd = sum(c for frames, c in matched if io_kind(frames) == "redis")
        lines.append(
            f"{label:42} {100 * count / total:5.1f}% {100 * pg / total:5.1f}% {100 * rd / total:7.1f}%"
        )
    pg = sum(c for frames, c in request_samples if io_kind(frames) == "postgres")
    rd = sum(c for frames, c in request_samples if io_kind(frames) == "redis")
    lines.append(f"{'all request work':42} {100.0:5.1f}% {100 * pg / total:5.1f}% {100 * rd / total:7.1f}%")
    return "\n".join(lines)


if __name__ == "__main__":
    for argument in sys.argv[1:]:
        print(summarise(Path(argument)), end="\n\n")
