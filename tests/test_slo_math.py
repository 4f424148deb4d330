"""Our own arithmetic behind the SLO figures: histogram quantiles and the sliding
window's choice of baseline. Pure logic, so plain inputs (no server needed)."""

import json
import math
import threading
import time

import pytest

from monitoring.histogram_math import bucket_delta, bucket_quantile, ratio_at_or_below
from monitoring.metric_reading import Reading
from monitoring.slo_window import FileReadingStore, MemoryReadingStore, ReadingStore

BUCKETS = {"0.1": 50.0, "0.3": 90.0, "1.0": 100.0, "+Inf": 100.0}


def test_quantiles_interpolate_within_the_bucket_like_promql():
    assert bucket_quantile(0.5, BUCKETS) == pytest.approx(0.1)
    assert bucket_quantile(0.7, BUCKETS) == pytest.approx(0.2)  # halfway through (0.1, 0.3]
    assert bucket_quantile(0.95, BUCKETS) == pytest.approx(0.65)  # halfway through (0.3, 1.0]
    assert bucket_quantile(0.25, BUCKETS) == pytest.approx(0.05)  # first bucket starts at 0


def test_a_quantile_in_the_inf_bucket_is_the_highest_finite_bound():
    assert bucket_quantile(0.99, {"0.3": 10.0, "1.0": 20.0, "+Inf": 100.0}) == 1.0


def test_no_observations_means_unknown_not_zero():
    assert bucket_quantile(0.95, {"0.3": 0.0, "+Inf": 0.0}) is None
    assert bucket_quantile(0.95, {}) is None
    assert ratio_at_or_below(0.3, {"0.3": 0.0, "+Inf": 0.0}) is None


def test_ratio_at_a_bucket_boundary_is_exact():
    assert ratio_at_or_below(0.3, BUCKETS) == 0.9
    with pytest.raises(ValueError):
        ratio_at_or_below(0.25, BUCKETS)


def test_bucket_delta_subtracts_the_baseline():
    assert bucket_delta({"0.3": 9.0, "+Inf": 12.0}, {"0.3": 4.0, "+Inf": 5.0}) == {"0.3": 5.0, "+Inf": 7.0}
    assert bucket_delta({"0.3": 9.0, "+Inf": 12.0}, {}) == {"0.3": 9.0, "+Inf": 12.0}


@pytest.mark.parametrize("store_kind", ["memory", "file"])
def test_the_baseline_is_the_newest_reading_at_least_a_window_old(store_kind, tmp_path):
    store: ReadingStore
    if store_kind == "memory":
        store = MemoryReadingStore(started_at=1000.0)
    else:
        store = FileReadingStore(str(tmp_path))
        store.reset(started_at=1000.0)
    for ts in (1005.0, 1010.0, 1015.0, 1020.0):
        store.append_taken(ts, lambda now: Reading(ts=now, api_requests=now - 1000), min_spacing=4.0,
                           keep_seconds=12.0)  # fmt: skip
    store.append_taken(1021.0, lambda now: Reading(ts=now, api_requests=99), min_spacing=4.0,
                       keep_seconds=12.0)  # fmt: skip  # too soon: skipped

    assert store.baseline(1022.0, 10.0).ts == 1010.0  # newest with ts <= 1012
    assert store.baseline(1022.0, 5.0).ts == 1015.0
    # Younger than the window: the oldest reading kept ("since start" while it lasts).
    young = MemoryReadingStore(started_at=1000.0)
    assert young.baseline(1003.0, 300.0).ts == 1000.0


def test_old_readings_are_trimmed_but_the_baseline_is_kept(tmp_path):
    store = FileReadingStore(str(tmp_path))
    store.reset(started_at=0.0)
    for ts in range(5, 200, 5):
        store.append_taken(float(ts), lambda now: Reading(ts=now), min_spacing=4.0, keep_seconds=20.0)
    kept = [r["ts"] for r in json.loads(store.path.read_text())]
    assert kept == [170.0, 175.0, 180.0, 185.0, 190.0, 195.0]
    assert store.baseline(195.0, 20.0).ts == 175.0


def test_a_missing_or_corrupt_readings_file_restarts_the_window(tmp_path):
    store = FileReadingStore(str(tmp_path))
    store.path.write_text("{not json")
    baseline = store.baseline(5000.0, 300.0)
    assert baseline.api_requests == 0 and not math.isnan(baseline.ts)


def test_one_process_per_interval_takes_the_reading(tmp_path):
    """Every server process's sampler wakes each interval; the reading (a collection of
    every process's metric files) is taken by the first, under the file's lock: the
    others, which waited for the lock, find it fresh and skip without collecting."""
    FileReadingStore(str(tmp_path)).reset(started_at=1000.0)
    taken: list[float] = []
    started = threading.Barrier(4)

    def take(now: float) -> Reading:
        taken.append(now)
        time.sleep(0.2)  # a slow collection: the others queue on the lock meanwhile
        return Reading(ts=now, api_requests=1.0)

    def sampler(offset: float) -> None:
        store = FileReadingStore(str(tmp_path))  # its own lock file handle, as a process has
        started.wait()
        store.append_taken(1005.0 + offset, take, min_spacing=4.0, keep_seconds=60.0)

    threads = [threading.Thread(target=sampler, args=(i * 0.01,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(taken) == 1
    assert [r["ts"] for r in json.loads(FileReadingStore(str(tmp_path)).path.read_text())] == [
        1000.0,
        taken[0],
    ]
    # The next interval: taken again.
    assert FileReadingStore(str(tmp_path)).append_taken(1010.0, take, min_spacing=4.0, keep_seconds=60.0)
    assert len(taken) == 2
