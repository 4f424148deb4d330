"""Settings for benchmark servers: the real settings plus bare baseline routes."""

from config.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
