"""Benchmark server settings: the real ones, with the per-day totals bypassed (see
bench/totals_bypass). Only for `make bench-summary`'s write-cost baseline."""

from config.settings import *  # noqa: F403
from config.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "bench.totals_bypass.apps.TotalsBypassConfig"]
