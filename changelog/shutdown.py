"""A stop flag for long-running commands, set by SIGTERM or SIGINT."""

import signal
import threading

_stop = threading.Event()


def install_stop_handlers() -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: _stop.set())


def stop_requested() -> bool:
    return _stop.is_set()
