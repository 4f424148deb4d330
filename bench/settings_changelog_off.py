"""Benchmark server settings: the real ones, with the change log bypassed (see
bench/changelog_bypass). Only for `make bench-changelog`'s baseline."""

from config.settings import *  # noqa: F403
from config.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "bench.changelog_bypass.apps.ChangelogBypassConfig"]
