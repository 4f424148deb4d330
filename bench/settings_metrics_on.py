"""Benchmark variant: the project exactly as configured (all metrics middleware)."""

from config.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
