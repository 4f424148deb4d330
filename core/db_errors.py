"""Which database errors mean "the server is unreachable" rather than "this statement
is wrong": the ones a retry on another (or a fresh) connection may fix, and the ones
the API answers with 503 instead of 500."""

import psycopg
from psycopg_pool import PoolTimeout

# admin shutdown, crash shutdown, cannot connect now (starting up or shutting down)
_SERVER_GONE = frozenset({"57P01", "57P02", "57P03"})


class DatabaseUnavailable(psycopg.OperationalError):
    """Raised without trying the server while its breaker is open (see replicas.primary)."""


def is_connection_failure(exc: BaseException) -> bool:
    """True for a connect error, a pool timeout, a server that went away mid-statement
    or a connection cut by the hung-server watchdog (Django wraps them: look at the cause)."""
    cause = exc.__cause__ or exc
    if isinstance(cause, PoolTimeout | DatabaseUnavailable):
        return True
    sqlstate = getattr(cause, "sqlstate", None)
    return isinstance(cause, psycopg.OperationalError | psycopg.InterfaceError) and (
        sqlstate is None or sqlstate.startswith("08") or sqlstate in _SERVER_GONE
    )
