"""The local engine: every step in its own thread, joined by bounded queues.

A producer blocks when its consumer's queue is full (backpressure), so memory stays bounded by
``queue_size`` batches per edge. Arrow compute, DuckDB and file I/O release the GIL, so decode,
transform and write overlap on several cores.

Failure handling, per step:
- ``timeout_seconds`` is per attempt: when it runs out the engine interrupts the step (DuckDB
  ``interrupt()``, closing its sockets/files through ``ctx.on_interrupt``) and, if it does not
  stop within a grace period, abandons its thread and fails the run.
- ``retry_attempts`` retries retryable errors with exponential backoff and jitter, as long as
  the attempt has neither consumed input nor emitted output: a stream half passed downstream
  cannot be replayed without duplicating rows (a rerun or ``--resume`` handles that case).
- ``continue_on_error``: after the final failure the step's input is passed on unchanged. The
  input a transform consumes is copied to a spill file as it goes (``_Replay``), so when the step
  failed before passing anything on, all of its input goes on; when it had already passed rows on,
  the rest of its input goes on and the rows consumed but not passed on count as rejected.
"""

from __future__ import annotations

import collections
import logging
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oxiflow.config.substitute import resolve_step_references, step_references
from oxiflow.contracts import dlq_masking
from oxiflow.contracts import gate as schema_gate
from oxiflow.data import OxiData
from oxiflow.engine.dlq import DeadLetterQueue
from oxiflow.engine.metrics import RunResult, StepMetrics
from oxiflow.errors import ConfigError, OxiflowError, RunCancelled, StepError, StepTimeout, is_retryable
from oxiflow.incremental import CursorSlice, IncrementalCursor, crash_point, incremental_of
from oxiflow.oxi import PushedQuery, Sink, Source, StepContext, Transform
from oxiflow.plan.build import Plan, PlannedStep, validate_step_config
from oxiflow.plan.pushdown import Pushdown, PushdownInput, StreamInstead
from oxiflow.state.loads import LoadProtocol

if TYPE_CHECKING:  # Arrow is imported where batches flow: a pushed-down run never needs it
    import pyarrow as pa

log = logging.getLogger("oxiflow.engine")

_POLL = 0.05  # seconds between checks of cancel flags while blocked on a queue
_GRACE = 3.0  # seconds an interrupted step gets to stop before its thread is abandoned


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


class _Channel:
    """A bounded queue from one producer to one consumer, which the consumer may close early."""

    def __init__(self, size: int, cancel: threading.Event) -> None:
        self.queue: queue.Queue[tuple[Any, ...]] = queue.Queue(size)
        self.cancel = cancel
        self.closed = False
        # put and close take turns, so every item put is either read or counted by close()
        self.lock = threading.Lock()

    def put(self, item: tuple[Any, ...]) -> bool:
        """Queue ``item``; False when the consumer has closed the channel (it wants no more)."""
        while True:
            with self.lock:
                if self.closed:
                    return False
                try:
                    self.queue.put(item, timeout=_POLL)
                    return True
                except queue.Full:
                    pass
            if self.cancel.is_set():
                raise RunCancelled("run cancelled") from None

    def get(self) -> tuple[Any, ...]:
        while True:
            try:
                return self.queue.get(timeout=_POLL)
            except queue.Empty:
                if self.cancel.is_set():
                    raise RunCancelled("run cancelled") from None

    def close(self) -> list[tuple[Any, ...]]:
        """Refuse further items; return those still queued."""
        left = []
        with self.lock:
            self.closed = True
            while True:
                try:
                    left.append(self.queue.get_nowait())
                except queue.Empty:
                    return left


class _SpillChannel(_Channel):
    """A channel whose producer never waits: past ``size`` batches in memory, batches go to disk.

    Used into a step whose inputs share an ancestor (a diamond: ``a -> sort -> join`` and
    ``a -> join``). The join may read its sorted input first, which needs all of ``a``; with a
    bounded queue from ``a`` to the join, ``a`` would block and nothing would move again.
    """

    def __init__(self, size: int, cancel: threading.Event, spill_dir: Path) -> None:
        super().__init__(size, cancel)
        self.size = size
        self.spill_dir = spill_dir
        self.items: collections.deque[tuple[Any, ...]] = collections.deque()
        self.in_memory = 0
        self.cond = threading.Condition()
        self.spilled_files = 0

    def put(self, item: tuple[Any, ...]) -> bool:
        with self.cond:
            if self.closed:
                return False
            if item[0] == "batch" and self.in_memory >= self.size:
                item = ("spilled", self._spill(item[1]), item[1].num_rows, item[1].nbytes)
            elif item[0] == "batch":
                self.in_memory += 1
            self.items.append(item)
            self.cond.notify()
            return True

    def _spill(self, batch: pa.RecordBatch) -> Path:
        import pyarrow.ipc as ipc

        self.spilled_files += 1
        path = self.spill_dir / f"{id(self)}-{self.spilled_files}.arrow"
        with ipc.new_stream(str(path), batch.schema) as writer:
            writer.write_batch(batch)
        return path

    def get(self) -> tuple[Any, ...]:
        with self.cond:
            while not self.items:
                self.cond.wait(_POLL)
                if not self.items and self.cancel.is_set():
                    raise RunCancelled("run cancelled") from None
            item = self.items.popleft()
            if item[0] == "batch":
                self.in_memory -= 1
        if item[0] != "spilled":
            return item
        import pyarrow.ipc as ipc

        path = item[1]
        with ipc.open_stream(str(path)) as reader:
            batch = reader.read_next_batch()
        path.unlink(missing_ok=True)
        return ("batch", batch)

    def close(self) -> list[tuple[Any, ...]]:
        with self.cond:
            self.closed = True
            left = list(self.items)
            self.items.clear()
        out = []
        for item in left:
            if item[0] == "spilled":
                item[1].unlink(missing_ok=True)
                out.append(("batch", _Counted(item[2], item[3])))
            else:
                out.append(item)
        return out


@dataclass
class _Counted:
    """What close() reports of a spilled batch it drops: its size, without reading it back."""

    num_rows: int
    nbytes: int


class UpstreamFailed(RunCancelled):
    """The step feeding this one failed; this one stops without an error of its own."""


class _Inlet:
    """The consumer end of a channel: yields the stream once its schema has arrived."""

    def __init__(self, channel: _Channel, source_id: str, metrics: StepMetrics, on_consume: Callable[[], None]) -> None:
        self.channel = channel
        self.source_id = source_id
        self.metrics = metrics
        self.on_consume = on_consume
        self.schema: pa.Schema | None = None
        self.kind = "arrow"
        self.metadata: dict[str, Any] = {}
        self.finished = False
        self.replay: _Replay | None = None  # continue_on_error: a copy of what was consumed

    def open(self) -> None:
        if self.schema is not None:
            return
        msg = self.channel.get()
        if msg[0] == "error":
            raise UpstreamFailed(f"input {self.source_id!r} failed")
        _, self.schema, self.kind, self.metadata = msg

    def batches(self) -> Iterator[pa.RecordBatch]:
        while not self.finished:
            msg = self.channel.get()
            tag = msg[0]
            if tag == "batch":
                batch = msg[1]
                self.on_consume()
                self.metrics.rows_in += batch.num_rows
                self.metrics.bytes_in += batch.nbytes
                if self.replay is not None:
                    self.replay.add(batch)
                yield batch
            elif tag == "end":
                self.finished = True
            else:
                self.finished = True
                raise UpstreamFailed(f"input {self.source_id!r} failed")

    def data(self) -> OxiData:
        self.open()
        assert self.schema is not None
        return OxiData(self.schema, self.batches(), self.metadata, self.kind)  # type: ignore[arg-type]

    def drain(self) -> None:
        for _ in self.batches():
            pass

    def close(self) -> None:
        """Stop reading: the producer stops at its next batch; what it had queued counts as read."""
        if self.finished:
            return
        self.finished = True
        for msg in self.channel.close():
            if msg[0] == "batch":
                self.metrics.rows_in += msg[1].num_rows
                self.metrics.bytes_in += msg[1].nbytes


class _Replay:
    """The batches a ``continue_on_error`` transform consumed, in an Arrow IPC file (bounded memory),
    to pass them on if the step fails before passing anything on itself."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.writer: Any = None

    def add(self, batch: pa.RecordBatch) -> None:
        import pyarrow.ipc as ipc

        if self.writer is None:
            self.writer = ipc.new_stream(str(self.path), batch.schema)
        self.writer.write_batch(batch)

    def batches(self) -> Iterator[pa.RecordBatch]:
        import pyarrow.ipc as ipc

        if self.writer is None:
            return
        self.writer.close()
        self.writer = None
        with ipc.open_stream(str(self.path)) as reader:
            yield from reader

    def drop(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        self.path.unlink(missing_ok=True)


class _Outlet:
    """The producer end: fans each batch out to every consumer's channel."""

    def __init__(self) -> None:
        self.channels: list[_Channel] = []
        self.opened = False
        self.schema: pa.Schema | None = None

    def open(self, schema: pa.Schema, kind: str, metadata: dict[str, Any]) -> None:
        if self.opened:
            return
        self.opened = True
        self.schema = schema
        for ch in self.channels:
            ch.put(("schema", schema, kind, metadata))

    def emit(self, batch: pa.RecordBatch) -> bool:
        """Send ``batch`` to every consumer still reading; False when none is (all closed early)."""
        delivered = [ch.put(("batch", batch)) for ch in self.channels]
        return any(delivered) or not self.channels

    def close(self) -> None:
        for ch in self.channels:
            ch.put(("end",))

    def fail(self) -> None:
        for ch in self.channels:
            try:
                ch.queue.put_nowait(("error",))
            except queue.Full:
                pass  # the consumer sees the run's cancel flag instead


@dataclass
class _StepRun:
    planned: PlannedStep
    metrics: StepMetrics
    outlet: _Outlet = field(default_factory=_Outlet)
    inlets: list[_Inlet] = field(default_factory=list)
    thread: threading.Thread | None = None
    ctx: StepContext | None = None
    deadline: float | None = None
    timed_out: bool = False
    interrupted_at: float | None = None
    consumed: bool = False
    emitted: bool = False
    opened: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    started: float = 0.0


@dataclass
class RunOptions:
    variables: dict[str, str] = field(default_factory=dict)
    explain: bool = False  # probe schemas only: sources read nothing, sinks are skipped
    run_id: str | None = None
    observers: list[Any] = field(default_factory=list)
    # the state store (oxiflow.state.store.StateStore), or None (--no-state): pipelines with
    # incremental sources need it for their cursors and the load protocol (docs/incremental.md)
    state: Any = None
    full_refresh: bool = False  # forget this pipeline's cursors before running
    # one checkpoint slice of an incremental source, by step id (engine/checkpoints.py)
    slices: dict[str, CursorSlice] = field(default_factory=dict)


class LocalEngine:
    def __init__(self, plan: Plan, options: RunOptions | None = None) -> None:
        self.plan = plan
        self.options = options or RunOptions()
        self.run_id = self.options.run_id or new_run_id()
        self.cancel = threading.Event()
        self.failure: BaseException | None = None
        self.metadata: dict[str, dict[str, Any]] = {}
        self.schemas: dict[str, pa.Schema] = {}  # output schema of every step that produced one
        settings = plan.model.settings
        self.settings = settings
        dlq_dir = Path(settings.dlq_dir)
        if not dlq_dir.is_absolute():
            dlq_dir = (plan.project.root if plan.project else plan.base_dir) / dlq_dir
        # with a state store, dead letters also go to its `dlq` table (state/dlq.py, `oxiflow dlq`)
        store = None if self.options.explain else self.options.state
        self.dlq = DeadLetterQueue(dlq_dir / f"{plan.name}-{self.run_id}.jsonl", self.run_id, plan.name, store)
        self.dlq.masking = dlq_masking.for_plan(plan)  # PII of the run's contracts, masked in every DLQ record
        self.runs: dict[str, _StepRun] = {}
        self._lock = threading.Lock()
        # explain probes every step's schema, so it streams; a run pushes chains down (which ones:
        # plan/pushdown.py)
        self.pushdowns: dict[str, Pushdown] = {} if self.options.explain else dict(plan.pushdowns)
        self.loads: LoadProtocol | None = None
        self.folded = {m.id: sink for sink, pd in self.pushdowns.items() for m in pd.members}
        self.spill_dir: Path | None = None  # batches of diamond edges past their queue (see _SpillChannel)
        self._wire()
        self.rows_needed = self._rows_needed()

    # -- wiring -----------------------------------------------------------------------------------
    def _producer_of(self, step_id: str) -> str:
        """Sinks pass their input on: a step reading a sink reads what the sink read."""
        step = self.plan.step(step_id)
        while step.spec.kind == "sink" and step.inputs:
            step = self.plan.step(step.inputs[0])
        return step.id

    def _diamonds(self) -> set[str]:
        """Steps with two inputs that share an ancestor (or the same producer twice)."""
        lineage: dict[str, set[str]] = {}
        for p in self.plan.steps:  # topological order: inputs come first
            producers = [self._producer_of(ref) for ref in p.inputs]
            lineage[p.id] = {p.id}.union(*(lineage[x] for x in producers))
        found = set()
        for p in self.plan.steps:
            seen: set[str] = set()
            for producer in (self._producer_of(ref) for ref in p.inputs):
                if lineage[producer] & seen:
                    found.add(p.id)
                seen |= lineage[producer]
        return found

    def _spill_dir(self) -> Path:
        if self.spill_dir is None:
            import tempfile

            self.spill_dir = Path(tempfile.mkdtemp(prefix=f"oxiflow-spill-{self.run_id}-"))
        return self.spill_dir

    def _rows_needed(self) -> dict[str, int]:
        """Producers whose only consumer wants at most n rows (a limit): they may stop at n."""
        out: dict[str, int] = {}
        for p in self.plan.steps:
            if len(p.inputs) != 1 or p.deferred or p.spec.kind != "transform":
                continue
            needed = getattr(p.spec.factory(p.config), "input_rows_needed", lambda: None)()
            producer = self.runs[self._producer_of(p.inputs[0])]
            if needed is not None and len(producer.outlet.channels) == 1:
                out[producer.planned.id] = needed
        return out

    def _wire(self) -> None:
        diamonds = self._diamonds()
        for p in self.plan.steps:
            m = StepMetrics(p.id, p.spec.name, p.spec.kind, reshapes=p.spec.reshapes)
            if p.fused_from is not None:
                m.fused = [p.fused_from.id]
            self.runs[p.id] = _StepRun(p, m)
        for p in self.plan.steps:
            run = self.runs[p.id]
            if p.id in self.pushdowns or p.id in self.folded:
                run.metrics.pushdown = True
                continue  # the chain runs in the sink's thread: no queues inside it
            self._connect(run, spill=p.id in diamonds)
            if p.model.continue_on_error and p.spec.kind == "transform" and run.inlets:
                run.inlets[0].replay = _Replay(self._spill_dir() / f"replay-{p.index}.arrows")

    def _connect(self, run: _StepRun, *, spill: bool = False) -> None:
        """An inlet for each of the step's inputs, fed by a new channel of its producer's outlet."""
        for ref in run.planned.inputs:
            producer = self.runs[self._producer_of(ref)]
            ch = (
                _SpillChannel(self.settings.queue_size, self.cancel, self._spill_dir())
                if spill
                else _Channel(self.settings.queue_size, self.cancel)
            )
            producer.outlet.channels.append(ch)

            def consumed(run: _StepRun = run) -> None:
                run.consumed = True

            run.inlets.append(_Inlet(ch, ref, run.metrics, consumed))

    # -- running ----------------------------------------------------------------------------------
    def run(self) -> RunResult:
        t0 = time.perf_counter()
        self._notify("on_run_start", self)
        try:
            self._start_loads()
        except OxiflowError as exc:
            self.failure = exc
        for run in self.runs.values():
            if run.planned.id in self.folded or self.failure is not None:
                continue
            run.thread = threading.Thread(
                target=self._step_thread, args=(run,), name=f"oxi-{run.planned.id}", daemon=True
            )
        status = "ok"
        try:
            self._start_threads()  # inside the try: see there
            self._supervise()
            self._reap()
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (cli/main.py raises it with its reason)
            stop = RunCancelled(str(exc) or "interrupted (Ctrl-C)")
            with self._lock:
                # the stop wins over an error already recorded: Python runs the handler on the main
                # thread only, so a step can first fail from what the signal caused (the process
                # upstream in the pipe died and cut its output short). The step keeps its error.
                if self.failure is not None and not isinstance(self.failure, RunCancelled):
                    log.debug("run stopped after a step failed: %s", self.failure)
                    self.failure = stop
            self._cancel_all(stop)
            self._join_all()
        finally:
            self.dlq.close()
            if self.spill_dir is not None:
                import shutil

                shutil.rmtree(self.spill_dir, ignore_errors=True)
        self._finish_loads()
        if self.failure is not None:
            status = "cancelled" if isinstance(self.failure, RunCancelled) else "failed"
        result = RunResult(
            run_id=self.run_id,
            pipeline=self.plan.name,
            status=status,
            steps=[r.metrics for r in self.runs.values()],
            seconds=time.perf_counter() - t0,
            error=self.failure,
            dlq_path=str(self.dlq.path) if self.dlq.count else None,
            dlq_count=self.dlq.count,
            metadata=self.metadata,
        )
        self._notify("on_run_end", result)
        return result

    # -- the exactly-once load protocol (state/loads.py) ----------------------------------------
    def _start_loads(self) -> None:
        if self.options.explain or not any(incremental_of(p.config) for p in self.plan.steps):
            return
        if self.options.state is None:
            raise ConfigError(
                "this pipeline has incremental sources, which keep their cursors in the state store",
                hint="run it without --no-state",
            )
        self.loads = LoadProtocol(self.options.state, self.plan, self.run_id, lambda p: self._make_ctx(self.runs[p.id]))
        self.loads.start(full_refresh=self.options.full_refresh)

    def _finish_loads(self) -> None:
        if self.loads is None or self.loads.load_id is None:
            return
        try:
            self.loads.finish(self.failure is None)
        except OxiflowError as exc:
            log.error("could not settle load %s: %s", self.loads.load_id, exc)
            if self.failure is None:
                self.failure = exc

    def _incremental(self, data: OxiData, ctx: StepContext, cursor: IncrementalCursor) -> OxiData:
        """The source's stream through its cursor: filtered exactly (rows mode), the new cursor staged at
        its end, before any sink can commit."""
        if cursor.config.mode == "files" and not cursor.files_selected:
            raise ConfigError(
                f"{ctx.oxi_name} does not support `incremental.mode: files`", step=ctx.step_id, hint="use mode: rows"
            )
        out = cursor.filter(data, ctx) if cursor.config.mode == "rows" else data
        loads = self.loads

        def batches() -> Iterator[pa.RecordBatch]:
            rows = 0
            for batch in out:
                rows += batch.num_rows
                yield batch
            ctx.rows_filtered += cursor.filtered
            if ctx.rows_read is None:  # keep rows in = out + rejected + filtered
                ctx.rows_read = rows + cursor.filtered + ctx.rows_rejected
            if loads is not None:
                loads.stage(ctx.step_id, cursor.candidate)

        return out.with_batches(batches(), out.schema)

    def _start_threads(self) -> None:
        """Start the step threads. A Ctrl-C or SIGTERM (cli/main.py) landing between two starts must stop and
        join the threads already going like any other stop: escaping run() instead, it left them in DuckDB's
        native code while the interpreter finalized, and the process aborted ("terminate called after
        throwing an instance of '' / FATAL: exception not rethrown", exit 134 instead of 143; a checkpointed
        run starts threads for every slice). Threads the stop kept from starting are dropped."""
        pending = [r for r in self.runs.values() if r.thread is not None]
        for i, r in enumerate(pending):
            try:
                assert r.thread is not None
                r.thread.start()
            except KeyboardInterrupt:
                for never in pending[i + 1 :]:
                    never.thread = None
                raise

    def _supervise(self) -> None:
        while True:
            # `done`, not Thread.is_alive(): a KeyboardInterrupt landing inside Thread.join() can mark a
            # running thread as stopped (CPython gh-90882), and then nothing would wait for it
            alive = [r for r in self.runs.values() if r.thread is not None and not r.done.is_set()]
            if not alive:
                return
            now = time.monotonic()
            for r in alive:
                if r.deadline is not None and not r.timed_out and now > r.deadline:
                    r.timed_out = True
                    r.interrupted_at = now
                    log.warning("step %s timed out; interrupting it", r.planned.id)
                    if r.ctx is not None:
                        r.ctx.interrupt()
                if r.interrupted_at is not None and now - r.interrupted_at > _GRACE and not r.done.is_set():
                    # Blocked in something that cannot be interrupted: abandon the thread.
                    r.metrics.status = "failed"
                    r.metrics.error = f"timed out after {r.planned.model.timeout_seconds}s and did not stop"
                    r.done.set()
                    r.thread = None
                    self._fail(r, StepTimeout(r.metrics.error, step=r.planned.id))
            self._check_memory()
            alive[0].done.wait(_POLL)

    def _check_memory(self) -> None:
        limit = self.settings.memory_limit_mb
        if limit is None or self.failure is not None:
            return
        rss = current_rss_mb()
        if rss is not None and rss > limit * 1.5 + 200:
            # DuckDB honours memory_limit itself; this catches Python-side growth beyond the budget.
            self._cancel_all(OxiflowError(f"memory limit exceeded: {rss:.0f} MB RSS > {limit} MB budget"))

    def _reap(self) -> None:
        # Every step has set `done`, but its thread may still be unwinding (closing a DuckDB
        # connection, freeing Arrow buffers). Returning now could let the interpreter finalize
        # under it, which crashes natively; a join here is short and, with all work done, safe.
        for r in self.runs.values():
            if r.thread is not None:
                r.thread.join(timeout=_GRACE)

    def _join_all(self) -> None:
        deadline = time.monotonic() + _GRACE
        for r in self.runs.values():
            if r.thread is not None:
                r.done.wait(max(0.0, deadline - time.monotonic()))
        # as in _reap: a stopped step may still be unwinding (closing DuckDB, its stdin reader);
        # only a step that did not stop within the grace period is left behind
        for r in self.runs.values():
            if r.thread is not None and r.done.is_set():
                r.thread.join(max(0.0, deadline - time.monotonic()))

    def _cancel_all(self, reason: BaseException) -> None:
        with self._lock:
            if self.failure is None:
                self.failure = reason
        self.cancel.set()
        for r in self.runs.values():
            if r.ctx is not None:
                r.ctx.interrupt()

    def _fail(self, run: _StepRun, exc: BaseException) -> None:
        run.outlet.fail()
        self._cancel_all(exc)

    def _notify(self, event: str, *args: Any) -> None:
        for obs in self.options.observers:
            fn = getattr(obs, event, None)
            if fn is not None:
                try:
                    fn(*args)
                except Exception:  # an observer must never break a run
                    log.debug("observer %r failed on %s", obs, event, exc_info=True)

    # -- one step -------------------------------------------------------------------------------
    def _make_ctx(self, run: _StepRun) -> StepContext:
        p = run.planned
        settings = self.settings
        mem = p.model.max_memory_mb or settings.memory_limit_mb
        if p.id in self.pushdowns:  # one statement does the work of the chain: the smallest budget
            mem = min((s.model.max_memory_mb for s in self._chain(p.id) if s.model.max_memory_mb), default=mem)
        root = settings.output_root
        return StepContext(
            step_id=p.id,
            oxi_name=p.spec.name,
            run_id=self.run_id,
            base_dir=self.plan.base_dir,
            output_root=(self.plan.base_dir / root) if root else None,
            batch_size=settings.batch_size,
            memory_limit_mb=mem,
            limit_rows=0 if self.options.explain else self.rows_needed.get(p.id),
            input_ids=list(p.inputs),
            dlq=self.dlq,
            cursor=self._cursor_for(p),
            load_id=self.loads.load_id if self.loads is not None else None,
            pipeline=self.plan.name,
        )

    def _cursor_for(self, p: PlannedStep) -> IncrementalCursor | None:
        if self.loads is None or p.spec.kind != "source":
            return None
        cursor = self.loads.cursor_for(p.id)
        cut = self.options.slices.get(p.id)
        if cursor is not None and cut is not None:
            cursor.restrict(cut)
        return cursor

    def step_context(self, step_id: str) -> StepContext:
        """A context for ``step_id`` outside a run (probing a source before the run starts)."""
        return self._make_ctx(self.runs[step_id])

    def _config_for(self, p: PlannedStep) -> Any:
        if not p.deferred:
            return p.config
        ancestors = self._ancestors(p.id)
        for ref_id, _ in step_references(p.raw_config):
            target = self.runs.get(self.plan.fused.get(ref_id, ref_id))
            if target is None:
                continue
            event = target.opened if target.planned.id in ancestors else target.done
            while not event.wait(_POLL):
                if self.cancel.is_set():
                    raise RunCancelled("run cancelled")
        try:
            raw = resolve_step_references(p.raw_config, self.metadata)
        except KeyError as exc:
            raise StepError(str(exc.args[0]), step=p.id) from None
        from pydantic import ValidationError

        from oxiflow.config.load import pydantic_issues

        try:
            return validate_step_config(p.spec, raw)
        except ValidationError as exc:
            raise ConfigError(pydantic_issues(exc, self.plan.positions, ("pipeline", p.index, "config"))) from None

    def _chain(self, step_id: str) -> list[PlannedStep]:
        """The steps a step's thread runs: itself, and a pushed-down chain's other steps."""
        pd = self.pushdowns.get(step_id)
        return [self.plan.step(step_id)] + (pd.members if pd is not None else [])

    def _ancestors(self, step_id: str) -> set[str]:
        out: set[str] = set()
        todo = [step_id]
        while todo:
            for ref in self.plan.step(todo.pop()).inputs:
                if ref not in out:
                    out.add(ref)
                    todo.append(ref)
        return out

    def _step_thread(self, run: _StepRun) -> None:
        p = run.planned
        m = run.metrics
        run.started = time.perf_counter()
        m.status = "running"
        self._notify("on_step_start", m)
        attempt = 0
        try:
            if self.options.explain and p.spec.kind == "sink":
                m.status = "skipped"
                try:
                    for inlet in run.inlets:
                        inlet.open()
                        inlet.drain()
                except RunCancelled:  # the step feeding it failed; that step reports the error
                    m.status = "cancelled"
                return
            while True:
                attempt += 1
                m.attempts = attempt
                ctx = self._make_ctx(run)
                run.ctx = ctx
                timeout = min(
                    (s.model.timeout_seconds for s in self._chain(p.id) if s.model.timeout_seconds), default=None
                )
                run.timed_out = False
                run.interrupted_at = None
                run.deadline = time.monotonic() + timeout if timeout else None
                try:
                    if self.cancel.is_set():
                        raise RunCancelled("run cancelled")
                    self._attempt(run, ctx)
                    m.status = "ok"
                    if run.inlets and run.inlets[0].replay is not None:
                        run.inlets[0].replay.drop()
                    return
                except BaseException as raw_exc:
                    exc = raw_exc
                    if run.timed_out:
                        exc = StepTimeout(f"timed out after {timeout}s", step=p.id)
                    if isinstance(exc, RunCancelled) and self.cancel.is_set() and not run.timed_out:
                        m.status = "cancelled"
                        run.outlet.fail()
                        return
                    retryable = isinstance(exc, StepTimeout) or is_retryable(exc)
                    if (
                        attempt <= p.model.retry_attempts
                        and retryable
                        and not run.emitted
                        and not run.consumed
                        and not self.cancel.is_set()
                    ):
                        delay = p.model.retry_delay_seconds * (2 ** (attempt - 1)) * (0.5 + random.random())
                        log.warning("step %s failed (%s); retry %d in %.2fs", p.id, exc, attempt, delay)
                        self._notify("on_step_retry", m, exc)
                        if self.cancel.wait(delay):
                            m.status = "cancelled"
                            run.outlet.fail()
                            return
                        continue
                    error = _as_step_error(exc, p)
                    if self._failed_upstream_in_chain(p.id, error):
                        m.status = "cancelled"  # as when streamed: the failed step reports the error
                        self._fail(run, error)
                        return
                    m.error = str(error)
                    if p.model.continue_on_error and not isinstance(exc, ConfigError):
                        log.warning("step %s failed, continuing with its input: %s", p.id, error)
                        self._continue_after_failure(run, ctx)
                        m.status = "continued"
                        return
                    m.status = "failed"
                    self._fail(run, error)
                    return
        finally:
            if run.ctx is not None:
                m.rows_rejected = run.ctx.rows_rejected + m.rows_rejected
                m.rows_filtered = run.ctx.rows_filtered
                m.bytes_out = max(m.bytes_out, run.ctx.bytes_written)
                if p.spec.kind == "source":
                    m.rows_in = run.ctx.rows_read if run.ctx.rows_read is not None else m.rows_out + m.rows_rejected
                    m.bytes_in = run.ctx.bytes_read
                elif p.spec.kind == "sink" and m.status == "ok":
                    m.rows_out = m.rows_in - m.rows_rejected - m.rows_filtered
                    # every sink can be referenced as ${steps.ID.metadata.rows}, even one that forgot it
                    run.ctx.metadata.setdefault("rows", m.rows_out)
                with self._lock:
                    self.metadata.setdefault(p.id, {}).update(run.ctx.metadata)
            m.seconds = time.perf_counter() - run.started
            run.opened.set()
            run.done.set()
            self._notify("on_step_end", m)
            if p.id in self.pushdowns:
                self._settle_members(self.pushdowns[p.id], m.status)

    def _attempt(self, run: _StepRun, ctx: StepContext) -> None:
        p = run.planned
        config = self._config_for(p)
        oxi = p.spec.factory(config)
        inputs = []
        for inlet in run.inlets:
            inlet.open()
            inputs.append(inlet.data())
        data: OxiData | None
        if p.fused_from is not None:
            reader_config = self._config_for(p.fused_from)
            data = oxi.scan_file(reader_config, ctx)  # type: ignore[attr-defined]
            with self._lock:
                self.metadata.setdefault(p.fused_from.id, {}).update(data.metadata)
        elif isinstance(oxi, Source):
            data = oxi.read(ctx)
            if ctx.cursor is not None:
                data = self._incremental(data, ctx, ctx.cursor)
        elif isinstance(oxi, Transform):
            data = oxi.transform(inputs, ctx)
        elif isinstance(oxi, Sink) and p.id in self.pushdowns and self._attempt_pushdown(run, ctx, oxi, p.id):
            data = None
        elif isinstance(oxi, Sink):
            if len(inputs) < len(run.inlets):  # wired just now: the chain declined its pushdown (_unfold)
                inputs = [inlet.data() for inlet in run.inlets]
            # the schema registry's gate (contracts/gate.py): may stop here, before anything is written
            gate = schema_gate.check(p, config, inputs[0], ctx, self.options.state)
            gate.write(oxi, ctx)  # oxi.write(gate.data), re-raising the gate's own errors as they are
            gate.commit()
            if ctx.load_id is not None:
                crash_point("after_sink_commit")
            data = None
        else:
            raise StepError(f"{type(oxi).__name__} is neither a Source, Transform nor Sink", step=p.id)
        if data is None:
            self._drain_inputs(run)
            return
        with self._lock:
            # what read()/transform() reported so far must be visible to steps that wait on `opened`
            self.metadata.setdefault(p.id, {}).update(ctx.metadata)
            self.metadata[p.id].update(data.metadata)
        self.schemas[p.id] = data.schema
        run.outlet.open(data.schema, data.kind, data.metadata)
        run.opened.set()
        m = run.metrics
        batches = iter(data)
        for batch in batches:
            if ctx.cancel.is_set():
                raise RunCancelled("step cancelled", step=p.id)
            run.emitted = True
            if not run.outlet.emit(batch):
                # every consumer has what it needs (a limit, a head): stop reading instead of
                # producing rows nobody reads; the batch in hand was read but is not passed on
                if p.spec.kind != "source":
                    ctx.rows_filtered += batch.num_rows
                close = getattr(batches, "close", None)
                if close is not None:
                    close()  # a generator's finally releases its reader (DuckDB connection, file)
                break
            m.rows_out += batch.num_rows
            m.bytes_out += batch.nbytes
            self._notify("on_batch", m)
        self._drain_inputs(run)
        run.outlet.close()

    # -- a pushed-down chain ------------------------------------------------------------------------
    def _failed_upstream_in_chain(self, sink_id: str, error: BaseException) -> bool:
        """Whether ``error``, raised in ``sink_id``'s thread, is a step's of the chain pushed down into it."""
        pd = self.pushdowns.get(sink_id)
        step = error.context.get("step") if isinstance(error, OxiflowError) else None
        return pd is not None and step != sink_id and any(s.id == step for s in pd.members)

    def _attempt_pushdown(self, run: _StepRun, ctx: StepContext, sink: Sink, sink_id: str) -> bool:
        """Run source -> [transform] -> sink as one statement in the sink's DuckDB connection;
        every step of the chain still reports its own rows, metadata and errors. False when the
        transform declined before anything was written (StreamInstead): the chain streams instead."""
        pd = self.pushdowns[sink_id]
        members = [self.runs[s.id] for s in pd.members]
        for r in members:
            r.started = time.perf_counter()
            r.metrics = StepMetrics(r.planned.id, r.planned.spec.name, r.planned.spec.kind, r.planned.spec.reshapes)
            r.metrics.status, r.metrics.attempts, r.metrics.pushdown = "running", run.metrics.attempts, True
            r.ctx = self._make_ctx(r)
            ctx.on_interrupt(r.ctx.interrupt)  # a timeout of the chain stops a member's own queries too
            self._notify("on_step_start", r.metrics)
        source_run = members[0]
        assert source_run.ctx is not None
        owner = source_run
        scan = None
        try:
            source = pd.source.spec.factory(pd.source.config)
            assert isinstance(source, Source)
            scan = source.scan_sql(source_run.ctx)
            self._publish(source_run)
            # without a transform the scan is the query itself: a TEMP VIEW of it would be bound (a CSV or
            # JSON file sniffed) once more when it is created, ~40 ms at 5M rows
            query = PushedQuery(scan.sql)
            count: int | None = None
            if pd.transform is not None:
                owner = members[1]
                assert owner.ctx is not None
                transform = pd.transform.spec.factory(pd.transform.config)
                assert isinstance(transform, Transform)
                check = getattr(transform, "pushdown_check", None)
                if check is not None:  # it measures its input first and may raise StreamInstead
                    narrow, stats = getattr(source, "narrow_scans", False), getattr(source, "metadata_stats", False)
                    count = check(PushdownInput(pd.source.id, scan.sql, scan.count_sql, narrow, stats), owner.ctx)
                sql, extra = transform.pushdown_sql(pd.source.id, owner.ctx)
                # (a check may have counted the rows already; else the sink counts them on its connection)
                counting = scan.count_sql if count is None else None
                query = PushedQuery(sql, [(pd.source.id, scan.sql), *extra], counting)
                self._publish(owner)
            owner = run
            rows = sink.write_query(query, ctx)
            if count is None:
                count = query.source_rows
        except StreamInstead as exc:  # nothing is written yet
            self._unfold(run, pd, str(exc))
            return False
        except BaseException as exc:
            owner, error = _pushdown_error(exc, pd, scan, owner, members, run)
            if owner is not run and not isinstance(error, RunCancelled):
                owner.metrics.status, owner.metrics.error = "failed", str(error)
            raise error from None
        n = rows if count is None else count
        source_run.metrics.rows_out = n
        source_run.metrics.rows_in = source_run.ctx.rows_read if source_run.ctx.rows_read is not None else n
        source_run.metrics.bytes_in = source_run.ctx.bytes_read
        if pd.transform is not None:
            t = members[1].metrics
            t.rows_in, t.rows_out = n, rows
            if not t.reshapes:
                t.rows_filtered = n - rows
        run.metrics.rows_in = rows
        for r in members:
            r.metrics.status = "ok"
        return True

    def _unfold(self, run: _StepRun, pd: Pushdown, reason: str) -> None:
        """Stream a chain whose transform declined its pushdown: wire its queues and start the folded
        steps' threads, as if it had never been folded; the sink streams on in its own thread."""
        log.info("%s stream: %s", " -> ".join(s.id for s in [*pd.members, pd.sink]), reason)
        with self._lock:
            del self.pushdowns[pd.sink.id]
            for s in pd.members:
                self.folded.pop(s.id, None)
            if pd.transform is not None:
                self.metadata.setdefault(pd.transform.id, {})["pushdown_declined"] = reason
        run.metrics.pushdown = False
        for s in pd.members:  # fresh figures: the streaming threads count from zero
            self.runs[s.id].metrics = StepMetrics(s.id, s.spec.name, s.spec.kind, reshapes=s.spec.reshapes)
            self.runs[s.id].ctx = None
        for s in [*pd.members[1:], pd.sink]:
            self._connect(self.runs[s.id])
        # the sink's own budget and timeout from now on, not the chain's
        own = pd.sink.model.timeout_seconds
        run.deadline = time.monotonic() + own if own else None
        if run.ctx is not None:
            run.ctx.memory_limit_mb = pd.sink.model.max_memory_mb or self.settings.memory_limit_mb
        for s in pd.members:
            r = self.runs[s.id]
            r.thread = threading.Thread(target=self._step_thread, args=(r,), name=f"oxi-{s.id}", daemon=True)
            r.thread.start()

    def _publish(self, run: _StepRun) -> None:
        """What a folded step reported becomes visible to ${steps.ID.metadata...} references."""
        assert run.ctx is not None
        with self._lock:
            self.metadata.setdefault(run.planned.id, {}).update(run.ctx.metadata)
        run.opened.set()

    def _settle_members(self, pd: Pushdown, sink_status: str) -> None:
        for member in pd.members:
            r = self.runs[member.id]
            if r.metrics.status in ("running", "pending"):
                r.metrics.status = "cancelled" if sink_status != "ok" else sink_status
            r.metrics.seconds = time.perf_counter() - r.started if r.started else 0.0
            self._publish(r) if r.ctx is not None else r.opened.set()
            r.done.set()
            self._notify("on_step_end", r.metrics)

    @staticmethod
    def _drain_inputs(run: _StepRun) -> None:
        # A step that stopped reading early (limit, head) closes its inputs, so their producers
        # stop too; the rows they had already queued count as read and filtered, so every step's
        # rows in = out + rejected + filtered, and each edge's rows match on both ends.
        for inlet in run.inlets:
            before = run.metrics.rows_in
            inlet.close()
            if run.ctx is not None:
                run.ctx.rows_filtered += run.metrics.rows_in - before

    def _continue_after_failure(self, run: _StepRun, ctx: StepContext) -> None:
        """Pass the input on: all of it when the step passed nothing on yet (its consumed part from the
        replay copy), else the rest, the rows consumed but not passed on counting as rejected."""
        m = run.metrics
        if run.planned.spec.kind == "sink" or not run.inlets:
            for inlet in run.inlets:
                inlet.drain()
            m.rows_rejected += max(0, m.rows_in - m.rows_out - ctx.rows_rejected - ctx.rows_filtered)
            if not run.outlet.opened:
                import pyarrow as pa

                run.outlet.open(pa.schema([]), "arrow", {})
            run.outlet.close()
            return
        inlet = run.inlets[0]
        inlet.open()
        assert inlet.schema is not None
        if run.outlet.opened and run.outlet.schema != inlet.schema:
            raise StepError(
                "cannot continue after the failure: the step already emitted rows of another schema",
                step=run.planned.id,
            )
        replay, inlet.replay = inlet.replay, None
        run.outlet.open(inlet.schema, inlet.kind, inlet.metadata)
        if replay is not None and not run.emitted:
            # nothing was passed on yet: pass on everything, what it consumed first (none is rejected)
            ctx.rows_rejected = ctx.rows_filtered = 0
            for batch in replay.batches():
                run.outlet.emit(batch)
                m.rows_out += batch.num_rows
            replay.drop()
        else:
            if replay is not None:
                replay.drop()
            m.rows_rejected += max(0, m.rows_in - m.rows_out - ctx.rows_rejected - ctx.rows_filtered)
        for batch in inlet.batches():
            run.outlet.emit(batch)
            m.rows_out += batch.num_rows
        for extra in run.inlets[1:]:
            extra.drain()
        run.outlet.close()


def _pushdown_error(
    exc: BaseException, pd: Pushdown, scan: Any, owner: _StepRun, members: list[_StepRun], sink: _StepRun
) -> tuple[_StepRun, BaseException]:
    """Which step of a pushed-down chain failed, and the error that step would have raised.

    DuckDB reports one error for the whole statement: SQL errors belong to the transform, reader
    errors to the source, the rest to the sink. A reader error is one that names a line or a source
    file, one of DuckDB's untyped errors (its readers raise them for corrupt data: "Out of buffer", a
    Thrift error, a corrupt Parquet page; the sink's errors are typed), or, unless it is about the
    target, one that the source's scan raises on its own too (a footer it cannot read, an Int96
    timestamp out of range): see _scan_fails_alone.
    """
    import duckdb

    from oxiflow.errors import DataError

    if isinstance(exc, duckdb.InterruptException):
        return sink, RunCancelled("query interrupted", step=sink.planned.id)
    if not isinstance(exc, duckdb.Error) or owner is not sink:
        return owner, _as_step_error(exc, owner.planned)
    if pd.transform is not None and isinstance(exc, duckdb.BinderException | duckdb.ParserException):
        from oxiflow.oxis.transforms.sql import duck_error

        transform = members[1]
        assert transform.ctx is not None
        return transform, duck_error(exc, transform.ctx, "query")
    translated = scan.translate(exc) if scan is not None and scan.translate is not None else exc
    elapsed = time.perf_counter() - members[0].started
    # errors about the target (a constraint, a value its column cannot take, a missing table): the
    # sink's, whatever the scan alone would do, so they are not worth a second read of the source
    target_errors = (duckdb.ConstraintException, duckdb.ConversionException, duckdb.CatalogException)
    if scan is not None and (
        (isinstance(translated, DataError) and translated.context.get("line") is not None)
        or any(f in str(exc) for f in scan.files)
        or type(exc) is duckdb.Error
        or (not isinstance(exc, target_errors) and _scan_fails_alone(scan.sql, 1.0 + 1.5 * elapsed))
    ):
        return members[0], _as_step_error(translated, members[0].planned)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return sink, StepError(f"{sink.planned.spec.name} failed: {text}", step=sink.planned.id)


def _scan_fails_alone(sql: str, budget: float) -> bool:
    """Whether the scan ``sql`` fails on a connection of its own: bound first (a Parquet file's footer, a
    CSV file's sample), then read to its end within ``budget`` seconds, every column hashed so that none
    is skipped (an Int96 value out of range fails only when read). Only asked after a pushed-down
    statement failed, with a budget about the time that statement took; out of time counts as no."""
    import duckdb

    from oxiflow.engine.duck import connect

    con = connect(None, stream="read")  # the scan's memory cap, as the streamed reader has it
    timer = threading.Timer(budget, con.interrupt)
    timer.daemon = True
    try:
        con.execute(f"DESCRIBE SELECT * FROM ({sql})").fetchall()
        timer.start()
        con.execute(f"SELECT bit_xor(hash(scan)) FROM ({sql}) AS scan").fetchall()
    except duckdb.InterruptException:
        return False
    except duckdb.Error:
        return True
    finally:
        timer.cancel()
        con.close()
    return False


def _as_step_error(exc: BaseException, p: PlannedStep) -> BaseException:
    if isinstance(exc, OxiflowError):
        exc.context.setdefault("step", p.id)
        return exc
    text = f"{type(exc).__name__}: {exc}"
    err = StepError(text, step=p.id, retryable=is_retryable(exc))
    err.__cause__ = exc
    return err


def current_rss_mb() -> float | None:
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        import os

        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


def run_plan(plan: Plan, options: RunOptions | None = None) -> RunResult:
    return LocalEngine(plan, options).run()
