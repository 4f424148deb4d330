"""Settings for a live server that must know the replica aliases (REPLICA_URLS) even
where config/settings.py does not declare them yet: the metric tests need the per-replica
series to exist. Aliases already declared are left as they are."""

from config.settings import *  # noqa: F403
from config.settings import DATABASES, database_config, env

if set(DATABASES) == {"default"}:
    for number, url in enumerate(env.list("REPLICA_URLS", default=[]), start=1):
        DATABASES[f"replica{number}"] = database_config(url) | {"TEST": {"MIRROR": "default"}}
