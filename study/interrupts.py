"""Ctrl-C that lands between database calls, never inside one.

A KeyboardInterrupt raised while SQLAlchemy iterates a SQLite result can leave the statement
open: SQLAlchemy closes the cursor on `Exception` only, and Python 3.11+ no longer resets
statements on rollback. The connection goes back to the pool still holding its read lock, and
the clean-up writes that follow the interrupt (ending the MLflow runs, failing the Optuna
trial) wait out the busy timeout and fail with "database is locked".

So while a study runs, SIGINT only raises where no store is touched: in the training epochs
(`interruptibly`). Anywhere else it is held and raised at the next epoch, or when the study's
`deferred_interrupts` scope ends. A second Ctrl-C raises at once, wherever the code is.
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


class _Gate:
    def __init__(self) -> None:
        self.active = False  # a deferred_interrupts scope is installed
        self.open = False  # inside interruptibly(): SIGINT may raise here
        self.pending = False

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.open or self.pending:  # safe here, or the user pressed Ctrl-C twice
            self.pending = False
            raise KeyboardInterrupt
        self.pending = True
        logger.warning("Ctrl-C: stopping once the current database write is done "
                       "(press Ctrl-C again to stop at once)")

    def raise_pending(self) -> None:
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt


_gate = _Gate()


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold SIGINT outside `interruptibly` until the scope ends; then raise it, if it came.

    Signal handlers belong to the main thread: elsewhere (and when nested) this does nothing,
    and SIGINT keeps its usual meaning.
    """
    if _gate.active or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, _gate.handle)
    _gate.active, _gate.pending = True, False
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _gate.active = False
    _gate.raise_pending()  # after the scope's own clean-up; not over an exception in flight


def raise_pending_interrupt() -> None:
    """Raise the KeyboardInterrupt held since the last safe point, if there is one."""
    _gate.raise_pending()


def interruptibly(items: Iterable[T]) -> Iterator[T]:
    """ITEMS, with SIGINT free to raise while each one is computed (and not in between).

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
