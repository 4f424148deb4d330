"""Edge cache hit rate from Varnish's own counters (varnishstat), for monitoring.

    cache_hit_ratio() -> float | None    # hits / (hits + misses), None if unknown

Reads the shared memory of the Varnish named by CDN_VARNISH_NAME (its `-n` folder,
written to .env by bin/stack), so it works on the host that runs Varnish. The counters
count every cache lookup, the auth preflight's included (a preflight served from cache
is also an origin request saved); docs/edge-cache.md explains the difference.
"""

import json
import shutil
import subprocess

from django.conf import settings

COUNTERS = ("MAIN.cache_hit", "MAIN.cache_miss", "MAIN.cache_hitmiss", "MAIN.n_obj_purged")


def varnish_counters() -> dict[str, int] | None:
    """The counters above, or None when Varnish cannot be read."""
    binary = shutil.which("varnishstat")
    if binary is None or settings.CDN_PROVIDER != "varnish":
        return None
    command = [binary, "-j", *(arg for name in COUNTERS for arg in ("-f", name))]
    if settings.CDN_VARNISH_NAME:
        command += ["-n", settings.CDN_VARNISH_NAME]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=2, check=True)  # noqa: S603
        data = json.loads(result.stdout)
    except (subprocess.SubprocessError, OSError, ValueError):
        return None
    counters = data.get("counters", data)  # varnishstat -j nests them since 6.5
    return {name: int(counters[name]["value"]) for name in COUNTERS if name in counters}


def cache_hit_ratio() -> float | None:
    counters = varnish_counters()
    if not counters:
        return None
    hits = counters.get("MAIN.cache_hit", 0)
    lookups = hits + counters.get("MAIN.cache_miss", 0)
    return hits / lookups if lookups else None
