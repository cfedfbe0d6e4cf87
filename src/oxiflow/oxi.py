"""The plugin API: what a source, transform or sink implements.

A plugin is a typed config model (``OxiConfig`` subclass, pydantic, ``extra="forbid"``) plus a
runtime class built from it, registered once with :func:`oxi`. Built-ins and third-party
plugins use the same decorator and the same entry-point group (``oxiflow.oxis``).

The engine gives every running step a :class:`StepContext`: its identity, a cancel event,
counters for rejected and filtered rows, the dead-letter queue and the paths to resolve against.
"""

from __future__ import annotations

import functools
import itertools
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

from oxiflow.errors import PathEscapeError, RunCancelled

if TYPE_CHECKING:
    import pyarrow as pa

    from oxiflow.data import OxiData
    from oxiflow.engine.dlq import DeadLetterQueue

OxiKind = Literal["source", "transform", "sink"]


class OxiConfig(BaseModel):
    """Base of every oxi config model: unknown keys are errors, field docs feed the docs.

    A field is documented by a docstring under it; :func:`field_docs` reads them when docs are
    wanted (pydantic's ``use_attribute_docstrings`` would parse every module's source at import,
    which costs every run's start-up).
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


@functools.cache
def field_docs(model: type[BaseModel]) -> dict[str, str]:
    """Field name -> the docstring written under the field (base classes first, then overrides)."""
    import ast
    import inspect
    import textwrap

    docs: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or cls is BaseModel:
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
        except (OSError, TypeError, SyntaxError):  # no source (built on the fly, frozen): no docs
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, doc in itertools.pairwise(body):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(doc, ast.Expr)
                and isinstance(doc.value, ast.Constant)
                and isinstance(doc.value.value, str)
            ):
                docs[node.target.id] = inspect.cleandoc(doc.value.value)
    return {name: (info.description or docs.get(name, "")) for name, info in model.model_fields.items()}


@dataclass(frozen=True)
class OxiSpec:
    """One registration: everything the registry, docs, ``plugins describe`` and ``validate`` need."""

    name: str
    kind: OxiKind
    config: type[OxiConfig]
    factory: Callable[[Any], Oxi]
    summary: str
    example: str = ""
    status: str = "stable"
    since: str = "0.1.0"
    min_inputs: int = 1
    max_inputs: int | None = 1
    # Steps that may change the number of rows without rejecting or filtering them (aggregations,
    # explode, json_select). Conservation (in = out + rejected + filtered) is checked on the others.
    reshapes: bool = False


OxiT = TypeVar("OxiT", bound="type[Oxi]")


def oxi(
    name: str,
    *,
    kind: OxiKind,
    config: type[OxiConfig],
    summary: str,
    example: str = "",
    status: str = "stable",
    since: str = "0.1.0",
    min_inputs: int | None = None,
    max_inputs: int | Literal["default"] | None = "default",
    reshapes: bool = False,
) -> Callable[[OxiT], OxiT]:
    """Class decorator that attaches an :class:`OxiSpec` to a plugin class."""

    def wrap(cls: OxiT) -> OxiT:
        lo = min_inputs if min_inputs is not None else (0 if kind == "source" else 1)
        hi: int | None = (0 if kind == "source" else 1) if max_inputs == "default" else max_inputs
        cls.spec = OxiSpec(
            name=name,
            kind=kind,
            config=config,
            factory=cls,
            summary=summary,
            example=example,
            status=status,
            since=since,
            min_inputs=lo,
            max_inputs=hi,
            reshapes=reshapes,
        )
        return cls

    return wrap


@dataclass
class StepContext:
    """What a running step can see and report. One per step attempt."""

    step_id: str
    oxi_name: str
    run_id: str
    base_dir: Path = field(default_factory=Path.cwd)
    output_root: Path | None = None
    batch_size: int = 122_880
    memory_limit_mb: int | None = None
    # the step need not yield more rows than this: 0 while `explain` probes schemas, n when its
    # only consumer is a `limit n` (a scan can then stop after n rows instead of a queue's worth)
    limit_rows: int | None = None
    input_ids: list[str] = field(default_factory=list)  # the step's `inputs:`, in order (sql names tables by them)
    cancel: threading.Event = field(default_factory=threading.Event)
    metadata: dict[str, Any] = field(default_factory=dict)
    dlq: DeadLetterQueue | None = None
    rows_rejected: int = 0
    rows_filtered: int = 0
    rows_read: int | None = None  # sources that know how many raw records they read
    bytes_read: int = 0
    bytes_written: int = 0
    # incremental loading (docs/incremental.md): the source's cursor for this run (an
    # oxiflow.incremental.IncrementalCursor), and the id of the load sinks tag their rows with
    cursor: Any = None
    load_id: str | None = None
    pipeline: str = ""
    _interrupters: list[Callable[[], None]] = field(default_factory=list)

    # -- accounting -----------------------------------------------------------------------------
    def reject(self, count: int = 1) -> None:
        self.rows_rejected += count

    def filtered(self, count: int) -> None:
        self.rows_filtered += count

    # -- paths ----------------------------------------------------------------------------------
    def input_path(self, path: str | Path) -> Path:
        """Resolve a path to read, relative to the pipeline file's folder."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    def output_path(self, path: str | Path) -> Path:
        """Resolve a path to write. It must stay inside ``settings.output_root`` when one is
        configured; otherwise a relative path must stay inside the base folder (no ``../``
        escapes), while an absolute path is the author's explicit choice."""
        p = self.input_path(path)
        if self.output_root is not None:
            check_inside(self.output_root, p)
        # lexical, not resolved: a symlinked data folder inside the project stays allowed
        elif not Path(path).is_absolute() and os.path.normpath(path).split(os.sep)[0] == os.pardir:
            raise PathEscapeError(
                f"output path {str(path)!r} leaves the pipeline's base folder {str(self.base_dir)!r}",
                step=self.step_id,
                hint="write below the base folder, give an absolute path, or set settings.output_root",
            )
        return p

    # -- cancellation ---------------------------------------------------------------------------
    def check_cancelled(self) -> None:
        if self.cancel.is_set():
            raise RunCancelled("step cancelled", step=self.step_id)

    def on_interrupt(self, fn: Callable[[], None]) -> None:
        """Register a callback the engine calls (from another thread) to unblock this step:
        ``duckdb_connection.interrupt``, ``sock.close`` ..."""
        self._interrupters.append(fn)

    def interrupt(self) -> None:
        self.cancel.set()
        for fn in list(self._interrupters):
            try:
                fn()
            except Exception:  # interrupting is best effort; the step is being abandoned anyway
                pass


def check_inside(root: Path, path: Path) -> Path:
    """Raise unless ``path`` (after resolving ``..`` and symlinks) is inside ``root``."""
    root_r = root.resolve()
    path_r = path.resolve()
    if path_r != root_r and root_r not in path_r.parents:
        raise PathEscapeError(
            f"path {str(path)!r} is outside the output root {str(root)!r}",
            hint="write below the root, or change settings.output_root",
        )
    return path_r


@dataclass
class ScanSQL:
    """A source's rows as one DuckDB query, so a sink, profile or diff can run it in place.

    ``sql`` is a SELECT any DuckDB connection can run (table functions over files); ``count_sql``
    counts the rows the scan yields without scanning them (Parquet footers), when that is cheap;
    ``translate`` turns a DuckDB error of the scan into the error the streaming path would raise.
    """

    sql: str
    files: list[str] = field(default_factory=list)
    count_sql: str | None = None
    translate: Callable[[BaseException], BaseException] | None = None


@dataclass
class PushedQuery:
    """A pushed-down chain as its sink gets it: write the rows of ``sql`` once ``views`` (name, SELECT)
    exist on the connection that runs it.

    ``count_sql`` counts the chain's source rows (Parquet footers, table metadata) for the run's
    accounting. It runs on that same connection: a DuckDB instance of its own would cost ~12 ms of
    every run. :meth:`prepare` leaves the count in ``source_rows``.
    """

    sql: str
    views: list[tuple[str, str]] = field(default_factory=list)
    count_sql: str | None = None
    source_rows: int | None = None

    def prepare(self, con: Any) -> None:
        """Create the views on ``con`` (a DuckDB connection) and count the source rows there."""
        from oxiflow.engine.duck import ident

        for name, select in self.views:
            con.execute(f"CREATE TEMP VIEW {ident(name)} AS {select}")
        if self.count_sql is not None:
            self.source_rows = int(con.execute(self.count_sql).fetchall()[0][0])


class Oxi:
    """Base of every plugin runtime. ``self.config`` is the validated config model."""

    spec: ClassVar[OxiSpec]

    def __init__(self, config: Any) -> None:
        self.config = config


class Source(Oxi):
    def read(self, ctx: StepContext) -> OxiData:
        """Return the stream. Heavy work belongs in the iterator, not here."""
        raise NotImplementedError

    # True when scan_sql always gives a ``count_sql``: a transform after it can then be pushed
    # down too, since its rows in are known without streaming them
    pushdown_counts: ClassVar[bool] = False

    def pushdown_ready(self) -> bool:
        """Whether :meth:`scan_sql` can stand in for :meth:`read` with this config (decided from
        the config alone, at plan time: e.g. not with ``on_error: dlq``)."""
        return False

    def scan_sql(self, ctx: StepContext) -> ScanSQL:
        """The rows :meth:`read` would yield, as a DuckDB query (only when ``pushdown_ready``)."""
        raise NotImplementedError

    def cursor_range(self, column: str, ctx: StepContext) -> tuple[Any, Any] | None:
        """``(min, max)`` of ``column`` over everything the source could read (ignoring any
        incremental bound), for cutting a run into checkpoint slices; None when the source cannot
        tell. Database sources answer with one aggregate query."""
        return None


class Transform(Oxi):
    def transform(self, inputs: list[OxiData], ctx: StepContext) -> OxiData:
        raise NotImplementedError

    def input_rows_needed(self) -> int | None:
        """At most this many input rows can matter (``limit``); None: all of them."""
        return None

    def pushdown_ready(self) -> bool:
        """Whether :meth:`pushdown_sql` can stand in for :meth:`transform` with this config."""
        return False

    def pushdown_sql(self, input_view: str, ctx: StepContext) -> tuple[str, list[tuple[str, str]]]:
        """This step as a DuckDB query over its one input, a view named ``input_view``; with any
        further views the query needs (name, SELECT), e.g. aliases of the input."""
        raise NotImplementedError


class BatchTransform(Transform):
    """A transform that maps each batch independently (filter, select, cast ...)."""

    def output_schema(self, schema: pa.Schema, ctx: StepContext) -> pa.Schema:
        """The output schema for an input schema (by default: transform an empty batch)."""
        import pyarrow as pa

        return self.transform_batch(pa.RecordBatch.from_pylist([], schema=schema), ctx).schema

    def transform_batch(self, batch: pa.RecordBatch, ctx: StepContext) -> pa.RecordBatch:
        raise NotImplementedError

    def transform(self, inputs: list[OxiData], ctx: StepContext) -> OxiData:
        data = inputs[0]
        schema = self.output_schema(data.schema, ctx)

        def batches() -> Iterator[pa.RecordBatch]:
            for batch in data:
                out = self.transform_batch(batch, ctx)
                if out.schema != schema:
                    out = out.cast(schema) if out.schema.names == schema.names else out
                yield out

        return data.with_batches(batches(), schema)


class Sink(Oxi):
    def write(self, data: OxiData, ctx: StepContext) -> None:
        """Consume the whole stream and commit atomically; report what was written in
        ``ctx.metadata`` (``path``, ``rows`` ...). On an exception nothing may be left behind."""
        raise NotImplementedError

    def pushdown_ready(self) -> bool:
        """Whether :meth:`write_query` can stand in for :meth:`write` with this config."""
        return False

    def load_committed(self, load_id: str, ctx: StepContext) -> bool | None:
        """Exactly-once recovery (docs/incremental.md): whether the load ``load_id`` (``ctx.load_id``
        of an earlier run) committed in this sink's target: True, False, or None when the sink cannot
        tell. A sink that answers writes a marker for ``ctx.load_id`` in the same transaction as its rows."""
        return None

    def write_query(self, query: PushedQuery, ctx: StepContext) -> int:
        """Write the rows of ``query.sql``, run inside DuckDB with no Arrow hop, on a connection that
        ``query.prepare`` readied first; return the row count. Same guarantees as :meth:`write`;
        DuckDB errors are left to the engine to attribute."""
        raise NotImplementedError
