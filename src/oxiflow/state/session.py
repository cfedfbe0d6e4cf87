"""What `oxiflow run` does around a run: open the store, take the pipeline's lock, record the run."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from oxiflow.state.lock import RunLock
from oxiflow.state.recorder import RunRecorder
from oxiflow.state.store import StateError, StateStore, open_store, resolve_url


class RunSession:
    """Open with :meth:`open`; ``recorder`` goes into the engine's observers; :meth:`close` after the run."""

    def __init__(self, store: StateStore, lock: RunLock, recorder: RunRecorder) -> None:
        self.store = store
        self.lock = lock
        self.recorder = recorder

    @classmethod
    def open(
        cls,
        plan: Any,
        run_id: str,
        *,
        state_url: str | None = None,
        wait: bool = False,
        timeout: float | None = None,
        on_wait: Callable[[str], None] | None = None,
    ) -> RunSession:
        """Raises StateError (store unusable) or PipelineLocked (another run holds the lock)."""
        url = resolve_url(state_url, plan.project, plan.base_dir)
        store = open_store(url)
        try:
            lock = RunLock(store, plan.name, run_id)
            lock.acquire(wait=wait, timeout=timeout, on_wait=on_wait)
            try:
                file = str(Path(plan.file).resolve()) if plan.file else None
                recorder = RunRecorder(store, run_id, plan.name, file)
                recorder.begin()
            except BaseException:
                lock.release()
                raise
        except BaseException:
            store.close()
            raise
        return cls(store, lock, recorder)

    def close(self, stop_code: int | None = None) -> None:
        """Release the lock and close the store. A run that never reached its end (stopped while starting
        or between checkpoint slices, or oxiflow itself failed) is marked cancelled or failed instead of
        staying 'running', with the exit code the process is about to give: ``stop_code`` when a signal
        stopped it (143 for SIGTERM), else 130 for Ctrl-C and 1 for a failure."""
        pending = sys.exc_info()[1]
        try:
            stopped = isinstance(pending, KeyboardInterrupt)
            status = "cancelled" if stopped else "failed"
            code = (stop_code or 130) if stopped else 1
            error = "stopped by SIGTERM" if stopped and code == 143 else "stopped before the run finished"
            self.store.mark_run(self.recorder.run_id, status, error, exit_code=code)
        except StateError:
            pass  # the store is what failed; `state repair` settles the row later
        finally:
            try:
                self.lock.release()
            finally:
                self.store.close()
