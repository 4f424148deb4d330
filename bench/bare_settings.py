"""Settings for the bare baseline of `make loadtest` (and any benchmark that needs it):
the same application without the features whose cost is being measured: no replica
routing, no metrics or request-id middleware, no edge headers or purges. Idempotency
costs nothing for requests that carry no Idempotency-Key, which the bare run omits.
Run with REPLICA_URLS="" so no replica alias exists either."""

from config.settings import *  # noqa: F403
from config.settings import MIDDLEWARE

_MEASURED_FEATURES = ("monitoring.", "django_prometheus.", "edgecache.", "replicas.")

MIDDLEWARE = [name for name in MIDDLEWARE if not name.startswith(_MEASURED_FEATURES)]
DATABASE_ROUTERS = []
USE_READ_REPLICAS = False
CDN_PROVIDER = "none"
