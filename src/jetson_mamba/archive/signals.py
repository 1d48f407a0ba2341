"""Termination signals during an install: raised as Stopped while the work may be undone; deferred while
the rollback area is claimed or a killed run is recovered; ignored while a rollback, the commit or the
release of the area runs (the run is ending then). A signal in any of those would orphan the area."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Dict, Iterator, List, Tuple

ROLLBACK_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))


class Stopped(BaseException):
    """A termination signal arrived during the install (raised by our handler, like KeyboardInterrupt)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")


@contextlib.contextmanager
def raising() -> Iterator[None]:
    """SIGTERM / SIGHUP raise Stopped in the main thread (as SIGINT raises KeyboardInterrupt)."""
    def stop(signum: int, _frame: Any) -> None:
        raise Stopped(signum)

    with _handlers(stop):
        yield


@contextlib.contextmanager
def held() -> Iterator[None]:
    """SIGINT / SIGTERM / SIGHUP ignored: a rollback or a cleanup runs to its end."""
    with _handlers(signal.SIG_IGN, (signal.SIGINT,)):
        yield


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """SIGTERM / SIGHUP wait for the end of the block, then reach the handler outside it."""
    arrived: List[int] = []
    with _handlers(lambda signum, _frame: arrived.append(signum)):
        yield
    if arrived:
        signal.raise_signal(arrived[0])


@contextlib.contextmanager
def _handlers(handler: Any, extra: Tuple[int, ...] = ()) -> Iterator[None]:
    previous: Dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread only
        for signum in ROLLBACK_SIGNALS + extra:
            previous[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
