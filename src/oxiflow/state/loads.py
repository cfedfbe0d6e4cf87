"""The exactly-once load protocol of a run with incremental sources (docs/incremental.md).

1. *Settle* (run start): every load of this pipeline still ``pending`` (a crash left it) is asked of the
   pipeline's sinks (:meth:`Sink.load_committed`): committed everywhere -> roll forward (the load is
   committed and its staged cursors become the cursors); committed nowhere -> roll back (staged cursors
   dropped); some sinks yes, some no -> a clear error (the targets disagree; ``--full-refresh``).
2. *Begin*: a new load id; every sink tags its rows with it and writes its marker in the same transaction
   as the rows (SQL sinks: an ``_oxi_loads`` row; file sinks: ``.oxiflow-loads/<name>.<load_id>`` after
   the rename).
3. *Stage*: when an incremental source's stream ends, its new cursor is stored under key ``staged`` with
   the load id, before any sink can commit (sinks commit after their input's end).
4. *Commit* (run success): in one state-store transaction the load is committed and the staged cursors
   replace the cursors. A crash anywhere is settled by step 1 of the next run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from oxiflow.errors import OxiflowError
from oxiflow.incremental import IncrementalCursor, crash_point, incremental_of
from oxiflow.oxi import Sink

if TYPE_CHECKING:
    from oxiflow.oxi import StepContext
    from oxiflow.plan.build import Plan, PlannedStep
    from oxiflow.state.store import StateStore

log = logging.getLogger("oxiflow.loads")

STAGED = "staged"
CURSOR = "cursor"


class LoadConflict(OxiflowError):
    """A pending load committed in some sinks and not in others: no automatic repair is safe."""


class LoadProtocol:
    def __init__(self, store: StateStore, plan: Plan, run_id: str, make_ctx: Callable[[PlannedStep], StepContext]):
        self.store = store
        self.plan = plan
        self.pipeline = plan.name
        self.run_id = run_id
        self.make_ctx = make_ctx
        self.sources = {p.id: inc for p in plan.steps if (inc := incremental_of(p.config)) is not None}
        self.sinks = [p for p in plan.steps if p.spec.kind == "sink"]
        self.load_id: str | None = None
        self.settled: list[tuple[str, str]] = []  # (load id, committed | rolled_back), for the report

    # 1 + 2
    def start(self, *, full_refresh: bool = False) -> str:
        for load in self.store.pending_loads(self.pipeline):
            outcome = self.settle(load.load_id)
            if outcome is None:
                raise LoadConflict(self._conflict_text(load.load_id))
        if full_refresh:
            self.store.delete_cursors(self.pipeline)
        self.load_id = self.store.begin_load(
            self.pipeline, ",".join(s.id for s in self.sinks) or "-", run_id=self.run_id, target=self._targets()
        )
        crash_point("after_begin_load")
        return self.load_id

    def cursor_for(self, step_id: str) -> IncrementalCursor | None:
        inc = self.sources.get(step_id)
        if inc is None:
            return None
        stored = self.store.get_cursor(self.pipeline, step_id, CURSOR)
        value = stored.value if stored is not None and isinstance(stored.value, dict) else None
        return IncrementalCursor(inc, value, step=step_id)

    # 3
    def stage(self, step_id: str, candidate: dict[str, Any] | None) -> None:
        if candidate is not None and self.load_id is not None:
            self.store.set_cursor(self.pipeline, step_id, candidate, self.load_id, key=STAGED)
        crash_point("after_stage")

    # 4
    def finish(self, ok: bool) -> None:
        assert self.load_id is not None
        if ok:
            crash_point("before_state_commit")
            self._roll_forward(self.load_id)
            crash_point("after_state_commit")
            return
        if self.settle(self.load_id) is None:
            log.warning("load %s is left pending: %s", self.load_id, self._conflict_text(self.load_id))

    # settling
    def answers(self, load_id: str) -> dict[str, bool | None]:
        """Each sink's word on whether ``load_id`` committed in its target."""
        from oxiflow.oxis.files.common import FileSinkConfig, file_load_committed

        out: dict[str, bool | None] = {}
        for p in self.sinks:
            if p.config is None:  # a config waiting on ${steps...}: cannot be asked before the run
                out[p.id] = None
                continue
            sink = p.spec.factory(p.config)
            ctx = self.make_ctx(p)
            answer = sink.load_committed(load_id, ctx) if isinstance(sink, Sink) else None
            if answer is None and isinstance(p.config, FileSinkConfig):
                answer = file_load_committed(ctx.output_path(p.config.path), load_id)
            out[p.id] = answer
        return out

    def settle(self, load_id: str) -> str | None:
        """Roll ``load_id`` forward or back from the sinks' answers; None when they disagree. Sinks that
        cannot tell (None) follow the others; when none can tell, the load is rolled back."""
        answers = self.answers(load_id)
        known = {v for v in answers.values() if v is not None}
        if known == {True}:
            self._roll_forward(load_id)
            outcome = "committed"
        elif known <= {False}:
            with self.store.transaction() as tx:
                self.store.rollback_load(load_id, conn=tx)
                tx.execute(
                    "DELETE FROM cursors WHERE pipeline = ? AND key = ? AND load_id = ?",
                    (self.pipeline, STAGED, load_id),
                )
            outcome = "rolled_back"
        else:
            return None
        self.settled.append((load_id, outcome))
        log.info("settled load %s of %s: %s", load_id, self.pipeline, outcome)
        return outcome

    def _roll_forward(self, load_id: str) -> None:
        staged = [c for c in self.store.cursors(self.pipeline) if c.key == STAGED and c.load_id == load_id]
        with self.store.transaction() as tx:
            self.store.commit_load(load_id, conn=tx)
            for c in staged:
                self.store.set_cursor(self.pipeline, c.step, c.value, load_id, conn=tx, key=CURSOR)
            tx.execute(
                "DELETE FROM cursors WHERE pipeline = ? AND key = ? AND load_id = ?", (self.pipeline, STAGED, load_id)
            )

    def _conflict_text(self, load_id: str) -> str:
        answers = self.answers(load_id)
        yes = [k for k, v in answers.items() if v]
        no = [k for k, v in answers.items() if v is False]
        return (
            f"load {load_id} of pipeline {self.pipeline!r} committed in {', '.join(yes)} but not in "
            f"{', '.join(no)}: the targets disagree; rerun with --full-refresh (and reset those targets) "
            "to load everything again"
        )

    def _targets(self) -> str:
        out = []
        for p in self.sinks:
            cfg = p.raw_config or {}
            what = cfg.get("table") or cfg.get("path")
            out.append(f"{p.id}:{what}" if what else p.id)
        return ", ".join(out)
