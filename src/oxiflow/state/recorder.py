"""An engine observer that writes a run and its per-step figures into the state store.

The CLI calls :meth:`RunRecorder.begin` before the run (so a store that cannot be written stops the
run before any data moves); the engine then calls ``on_run_start`` / ``on_batch`` / ``on_step_end`` /
``on_run_end``. The engine swallows observer exceptions (an observer must never break a run), so the
recorder keeps the first one in :attr:`error` for the CLI to report.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from oxiflow.state.lock import hostname
from oxiflow.state.store import StateStore, now_iso

FLUSH_SECONDS = 2.0  # live figures (for `worker show`) are written at most this often


def run_figures(result: Any) -> dict[str, Any]:
    """The run's totals from its steps: read = sources' rows out, written = sinks' rows out."""
    steps = result.steps
    return {
        "rows_read": sum(s.rows_out for s in steps if s.kind == "source"),
        "rows_written": sum(s.rows_out for s in steps if s.kind == "sink"),
        "rows_rejected": sum(s.rows_rejected for s in steps),
        "rows_filtered": sum(s.rows_filtered for s in steps),
    }


class RunRecorder:
    def __init__(self, store: StateStore, run_id: str, pipeline: str, pipeline_file: str | None = None) -> None:
        self.store = store
        self.run_id = run_id
        self.pipeline = pipeline
        self.pipeline_file = pipeline_file
        self.error: BaseException | None = None
        self._positions: dict[str, int] = {}
        self._last_flush = 0.0
        self._flush_lock = threading.Lock()

    def begin(self) -> None:
        """Insert the run as 'running'. Raises when the store cannot be written."""
        self.store.start_run(
            self.run_id, self.pipeline, pid=os.getpid(), host=hostname(), pipeline_file=self.pipeline_file
        )

    def _guard(self, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:
            if self.error is None:
                self.error = exc

    # engine events
    def on_run_start(self, engine: Any) -> None:
        metrics = [r.metrics for r in engine.runs.values()]
        self._positions = {m.step_id: i for i, m in enumerate(metrics)}
        self._guard(self._save, metrics)

    def on_batch(self, metrics: Any) -> None:
        now = time.monotonic()
        if now - self._last_flush < FLUSH_SECONDS or not self._flush_lock.acquire(blocking=False):
            return  # another step thread is flushing, or it is too soon
        try:
            self._last_flush = now
            self._guard(self._save, [metrics])
            self._guard(self._heartbeat)
        finally:
            self._flush_lock.release()

    def on_step_end(self, metrics: Any) -> None:
        self._guard(self._save, [metrics])

    def on_run_end(self, result: Any) -> None:
        self._guard(self._finish, result)

    # writes
    def _save(self, metrics: list[Any]) -> None:
        self.store.save_steps(
            self.run_id, [{**m.to_dict(), "position": self._positions.get(m.step_id, 0)} for m in metrics]
        )

    def _heartbeat(self) -> None:
        self.store._q(
            None, "UPDATE locks SET heartbeat_at = ? WHERE pipeline = ? AND run_id = ?",
            (now_iso(), self.pipeline, self.run_id),
        )  # fmt: skip

    def _finish(self, result: Any) -> None:
        with self.store.transaction() as tx:
            self.store.save_steps(
                self.run_id,
                [{**m.to_dict(), "position": self._positions.get(m.step_id, i)} for i, m in enumerate(result.steps)],
                conn=tx,
            )
            self.store.finish_run(
                self.run_id,
                {
                    "status": result.status,
                    "seconds": result.seconds,
                    "dlq_count": result.dlq_count,
                    "dlq_path": result.dlq_path,
                    "error": str(result.error) if result.error is not None else None,
                    "exit_code": result.exit_code,
                    **run_figures(result),
                },
                conn=tx,
            )
