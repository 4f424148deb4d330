"""Settings of the test process (pyproject.toml): the project's own, read after the
suite's database layout is pinned (tests/pinned_env.py: one cluster, whatever `.env`
says)."""

import os

from tests.pinned_env import pin

pin()
# Processes the tests start (servers, workers, manage.py) run the project's settings,
# with the pinned environment they inherit.
os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"

from config.settings import *  # noqa: E402, F403
