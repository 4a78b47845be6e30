"""The background writer: tracker operations stored off the training loop, in order."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from study.errors import TrackingError
from study.store.redaction import redact_text
from study.tracking.spool import Op


class BackgroundWriter:
    """Runs tracker operations in order on one daemon thread, off the training loop.

    An operation that fails for a reason other than an outage (outages are spooled by RUN)
    is raised, as a TrackingError, by the next submit() or flush(): nothing is lost silently.
    flush() is the point where everything submitted has been stored or spooled.
    """

    def __init__(self, run: Callable[[Op], object]) -> None:
        self._jobs: queue.Queue[Op] = queue.Queue()
        self._run = run
        self._error: BaseException | None = None
        threading.Thread(target=self._work, name="mlflow-writer", daemon=True).start()

    def submit(self, op: Op) -> None:
        """Queue OP and return at once; raises an earlier operation's failure first."""
        self._raise_failure()
        self._jobs.put(op)

    def flush(self) -> None:
        """Wait until every operation submitted so far has run; raise the first that failed."""
        self._jobs.join()
        self._raise_failure()

    def _work(self) -> None:
        while True:
            op = self._jobs.get()
            try:
                self._run(op)
            except BaseException as exc:  # handed over to the caller's thread, not swallowed
                self._error = self._error or exc
            finally:
                self._jobs.task_done()

    def _raise_failure(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise TrackingError(f"an MLflow write failed: {redact_text(str(error))}") from error
