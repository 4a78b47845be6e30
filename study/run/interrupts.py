"""Ctrl-C (and `kill`) that lands between database calls, never inside one.

A KeyboardInterrupt raised while SQLAlchemy iterates a SQLite result can leave the statement
open: SQLAlchemy closes the cursor on `Exception` only, and Python 3.11+ no longer resets
statements on rollback. The connection goes back to the pool still holding its read lock, and
the clean-up writes that follow the interrupt (ending the MLflow runs, failing the Optuna
trial) wait out the busy timeout and fail with "database is locked".

So while a study runs, SIGINT only raises where no store is touched: in the training epochs
(`interruptibly`). Anywhere else it is held and raised at the next epoch, or when the study's
`deferred_interrupts` scope ends. A second signal raises at once, wherever the code is.

SIGTERM and SIGHUP (`kill`, a batch scheduler, `docker stop`, a closed terminal) get the same
treatment as `Terminated`, so that a study stopped from outside also ends its runs truthfully
instead of dying with them RUNNING.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """The study was stopped by SIGNUM from outside (not Ctrl-C)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _interrupt(signum: int) -> KeyboardInterrupt:
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)


class _Gate:
    def __init__(self) -> None:
        self.active = False  # a deferred_interrupts scope is installed
        self.open = False  # inside interruptibly(): a signal may raise here
        self.pending: int | None = None  # the signal held since the last safe point

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.open or self.pending is not None:  # safe here, or a second signal: insisted
            self.pending = None
            raise _interrupt(signum)
        self.pending = signum
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        logger.warning("%s: stopping once the current database write is done (send it again "
                       "to stop at once)", name)

    def raise_pending(self) -> None:
        if self.pending is not None:
            signum, self.pending = self.pending, None
            raise _interrupt(signum)


_gate = _Gate()


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP outside `interruptibly` until the scope ends; then raise.

    Signal handlers belong to the main thread: elsewhere (and when nested) this does nothing,
    and the signals keep their usual meaning. An ignored signal (`nohup`, a background job's
    SIGINT) stays ignored.
    """
    if _gate.active or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    for sig, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(sig, _gate.handle)
    _gate.active, _gate.pending = True, None
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        _gate.active = False
    _gate.raise_pending()  # after the scope's own clean-up; not over an exception in flight


def raise_pending_interrupt() -> None:
    """Raise the interrupt held since the last safe point, if there is one."""
    _gate.raise_pending()


def interruptibly(items: Iterable[T]) -> Iterator[T]:
    """ITEMS, with signals free to raise while each one is computed (and not in between).

    An interrupt held since the last item is raised before the next one is computed.
    """
    iterator = iter(items)
    while True:
        _gate.raise_pending()
        _gate.open = _gate.active
        try:
            item = next(iterator)
        except StopIteration:
            return
        finally:
            _gate.open = False
        yield item
