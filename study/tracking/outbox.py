"""Where a tracker's operations go: the store while its server answers, then the spool.

When a tracking server stops answering mid-study, the outbox goes *offline* for the rest of
the process: the call that found out waited at most the bounded HTTP time once (store.py),
then it and every later operation is appended to the study's spool (study.tracking.spool)
and training goes on. `backfill` replays spools into the store once it answers again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from study.errors import TrackingError
from study.store.redaction import redact, redact_text
from study.tracking.ops import apply_op
from study.tracking.spool import Op, Spool, known_runs, pending, replay

logger = logging.getLogger(__name__)


class Outbox:
    """Sends operations to CLIENT, or to the spool once an outage is seen; thread-safe."""

    def __init__(self, client: Any, tracking_uri: str) -> None:
        self.client = client
        self.tracking_uri = tracking_uri
        self.outage = ""  # why the server stopped answering; "" while it answers
        self.spool: Spool | None = None  # the study's, once the tracker knows the study
        self._runs: dict[str, str] = {}  # spool key -> run id, from replays
        self._offline_lock = threading.Lock()

    def send(self, op: Op) -> str | None:
        """Apply OP to the store, or spool it when the server does not answer (from then on).

        Returns the run id a `create_run` made; None when it was spooled (its key stands in).
        """
        if not self.outage:
            try:
                return apply_op(self.client, op, self._runs, spool_dir=None)
            except Exception as exc:
                if not self._is_outage(exc):
                    raise
                self._go_offline(exc)
        assert self.spool is not None, "start_study first"
        if op["op"] == "artifact":  # the file is a temporary one: the spool keeps a copy
            op = {**op, "file": self.spool.keep_file(Path(op["file"]))}
        self.spool.append(op)
        return None

    def run_id(self, run_id: str) -> str:
        """The MLflow id of RUN_ID: itself, or the run a replay created for a spool key."""
        return self._runs.get(run_id, run_id)

    def remember_runs(self, runs: Mapping[str, str]) -> None:
        """Spool keys that a replay elsewhere turned into run ids."""
        self._runs.update(runs)

    def backfill(self) -> dict[str, str]:
        """Replay this study's spools (earlier processes') into the store: key -> run id.

        Runs only while the server answers; a failure is one TrackingError line, and the next
        backfill goes on where this one stopped.
        """
        assert self.spool is not None, "attach or start_study first"
        directory = self.spool.directory
        if pending(directory):
            try:
                result = replay(directory, lambda op, runs: apply_op(
                    self.client, op, runs, spool_dir=directory))
            except Exception as exc:
                raise TrackingError(
                    f"cannot back-fill the MLflow spool {directory} into "
                    f"{redact(self.tracking_uri)}: {redact_text(str(exc)).splitlines()[0]}; "
                    f"nothing is lost: run `mnist-study sync-mlflow` again once it answers"
                ) from exc
            logger.info("back-filled %d spooled MLflow operations (%d runs) from %s",
                        result.operations, len(result.runs_created), directory)
        self._runs.update(known_runs(directory))
        return dict(self._runs)

    def _is_outage(self, exc: BaseException) -> bool:
        """A server that did not answer, as opposed to one that answered with an error."""
        from mlflow.exceptions import MlflowException, RestException

        if not self.tracking_uri.startswith(("http://", "https://")):
            return False  # a local store that fails is a real error, not an outage
        if isinstance(exc, RestException):
            return False
        # MLflow wraps transport failures (refused, reset, timed out) in MlflowException;
        # requests' own exceptions are OSErrors.
        return isinstance(exc, (MlflowException, OSError))

    def _go_offline(self, exc: BaseException) -> None:
        with self._offline_lock:
            if self.outage:
                return
            self.outage = redact_text(str(exc)).splitlines()[0][:300]
        logger.warning("MLflow tracking server %s stopped answering; training goes on and its "
                       "logs are kept in %s for `mnist-study sync-mlflow`",
                       redact(self.tracking_uri),
                       self.spool.directory if self.spool is not None else None)
