"""Incremental loading: the ``incremental:`` block of database and file sources, and its cursor.

A source with ``incremental`` reads only what is new since the last committed run. The engine
gives the step an :class:`IncrementalCursor` (``ctx.cursor``) built from the value stored in the
state store; the source may push :meth:`IncrementalCursor.sql_bounds` into its query (a superset
of the rows wanted), and the engine filters the stream exactly with Arrow compute
(:meth:`IncrementalCursor.filter`, vectorised, never per row in Python), which also tracks the new
cursor. File sources in ``mode: files`` pick only new files (:meth:`IncrementalCursor.select_files`).

The stored value (``cursors.value``, JSON) is, in ``rows`` mode,
``{"last": V, "type": "<arrow type>", "seen": [[cursor, "<cursor>\\x1f<key>..."], ...]}``: ``seen``
holds the (cursor, primary key) pairs loaded inside the re-read window ``[last - lag, last]``, so
a re-read row is dropped while a late or equal-cursor row with another key is loaded. In
``files`` mode it is ``{"last": <mtime ns | name>, "seen": [paths at last]}``. See docs/incremental.md.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import model_validator

from oxiflow.errors import ConfigError
from oxiflow.oxi import OxiConfig, Source

if TYPE_CHECKING:
    import pyarrow as pa

    from oxiflow.data import OxiData
    from oxiflow.oxi import StepContext

CRASH_ENV = "OXIFLOW_TEST_CRASH_AT"
_SEP = "\x1f"


class IncrementalConfig(OxiConfig):
    cursor: str
    """The column whose growth marks new rows (`updated_at`, `id`); in `mode: files`, `mtime`
    (the files' modification time) or `name` (their path, in sort order)."""
    initial: int | float | str | None = None
    """The first run's lower bound (inclusive), in the cursor column's type (`2024-01-01`, `1000`);
    unset: the first run reads everything."""
    end: int | float | str | None = None
    """Upper bound, exclusive (for backfills): rows with cursor >= end are left for later; the cursor
    never moves past it."""
    lag: float | str | None = None
    """Re-read this much before the last value, to catch late rows: a number (in the cursor's unit; seconds
    for dates and timestamps) or a duration (`PT10M`, `P1D`, `10m`, `2h`, `1d`). Needs `primary_key`,
    which keeps re-read rows from loading twice."""
    primary_key: list[str] | str | None = None
    """Column(s) identifying a row: a row whose (cursor, key) was already loaded is dropped, so rows
    with a cursor equal to the last value that arrive later are still loaded, once."""
    mode: Literal["rows", "files"] = "rows"
    """`rows`: filter rows by the cursor column; `files` (file sources only): read only files new since the
    last run, by `cursor: mtime` or `cursor: name`."""
    checkpoint_every: float | str | None = None
    """Load in slices, each committed with its cursor before the next is read, so a run that fails
    part-way keeps what it committed and `oxiflow run --resume` goes on from there. `rows` mode: the
    width of a slice of the cursor (a number in its unit, or a duration such as `1d`, `6h` for dates
    and timestamps); `files` mode: a number of files. Unset: one load per run."""

    @model_validator(mode="after")
    def _check(self) -> IncrementalConfig:
        if self.mode == "files":
            if self.cursor not in ("mtime", "name"):
                raise ValueError("`mode: files` takes `cursor: mtime` or `cursor: name`")
            if self.lag is not None or self.primary_key or self.end is not None:
                raise ValueError("`mode: files` takes no `lag`, `primary_key` or `end`")
            if self.checkpoint_every is not None and (
                not isinstance(self.checkpoint_every, int | float)
                or self.checkpoint_every != int(self.checkpoint_every)
                or self.checkpoint_every < 1
            ):
                raise ValueError("`checkpoint_every` in `mode: files` is a number of files (1 or more)")
        elif self.lag is not None and not self.primary_key:
            raise ValueError("`lag` re-reads rows already loaded: give `primary_key` so they are not loaded twice")
        if self.lag is not None:
            parse_lag(self.lag)
        if (
            self.mode == "rows"
            and self.checkpoint_every is not None
            and parse_lag(self.checkpoint_every, "checkpoint_every") <= 0
        ):
            raise ValueError("`checkpoint_every` must be more than 0")
        return self

    @property
    def keys(self) -> list[str]:
        pk = self.primary_key
        return [] if not pk else [pk] if isinstance(pk, str) else list(pk)


_NUM = r"(\d+(?:\.\d+)?)"
_ISO = re.compile(rf"^P(?:{_NUM}W)?(?:{_NUM}D)?(?:T(?:{_NUM}H)?(?:{_NUM}M)?(?:{_NUM}S)?)?$")
_SHORT = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_lag(lag: float | str, what: str = "lag") -> float:
    """A lag as a number (seconds for temporal cursors): ``PT10M``, ``P1D``, ``10m``, ``2h``, ``30``."""
    if isinstance(lag, int | float):
        if lag < 0:
            raise ValueError(f"`{what}` must not be negative")
        return float(lag)
    text = lag.strip()
    if m := _SHORT.match(text):
        return float(m.group(1)) * _UNITS[m.group(2)]
    if (m := _ISO.match(text.upper())) and text.upper() not in ("P", "PT"):
        w, d, h, mi, s = (float(x) if x else 0.0 for x in m.groups())
        return w * 604800 + d * 86400 + h * 3600 + mi * 60 + s
    try:
        return parse_lag(float(text), what)
    except ValueError:
        raise ValueError(f"`{what}` {lag!r} is not a number or a duration (PT10M, P1D, 10m, 2h, 1d)") from None


def crash_point(name: str) -> None:
    """Test hook: ``OXIFLOW_TEST_CRASH_AT=name`` kills this process (SIGKILL) here, as a crash would."""
    if os.environ.get(CRASH_ENV) == name:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


# -- values -----------------------------------------------------------------------------------------
def to_json(value: Any) -> Any:
    """A cursor value (Python, from Arrow) as JSON."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    return value


def to_scalar(value: Any, typ: pa.DataType, what: str) -> pa.Scalar:
    """A JSON value (stored or configured) as an Arrow scalar of the cursor column's type."""
    import pyarrow as pa
    import pyarrow.types as t

    try:
        if isinstance(value, str) and t.is_timestamp(typ):
            parsed = dt.datetime.fromisoformat(value)
            if typ.tz and parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=dt.UTC)
            elif not typ.tz and parsed.tzinfo is not None:
                parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
            return pa.scalar(parsed, typ)
        if isinstance(value, str) and t.is_date(typ):
            return pa.scalar(dt.date.fromisoformat(value[:10]), typ)
        if isinstance(value, int | float) and (t.is_timestamp(typ) or t.is_date(typ)):
            raise ValueError("give a date or timestamp in ISO format")
        return pa.scalar(value).cast(typ)
    except (ValueError, TypeError, pa.ArrowException) as exc:
        raise ConfigError(
            f"incremental `{what}` {value!r} does not fit the cursor column's type {typ}: {exc}",
            hint="give it in the column's type (ISO 8601 for dates and timestamps)",
        ) from None


def _minus(value: pa.Scalar, lag: float) -> pa.Scalar:
    import pyarrow as pa
    import pyarrow.types as t

    v = value.as_py()
    if t.is_timestamp(value.type) or t.is_date(value.type):
        return pa.scalar(v - dt.timedelta(seconds=lag), value.type)
    if t.is_integer(value.type):
        return pa.scalar(v - int(lag), value.type)
    if t.is_floating(value.type) or t.is_decimal(value.type):
        return pa.scalar(v - type(v)(lag), value.type)
    raise ConfigError(f"`lag` needs a numeric, date or timestamp cursor (this one is {value.type})")


# -- the cursor of one step in one run --------------------------------------------------------------
@dataclass(frozen=True)
class CursorSlice:
    """One checkpoint slice of a run (engine/checkpoints.py): in `rows` mode the rows below ``end``
    (exclusive; None: no bound beyond the config's own `end`), in `files` mode at most ``max_files``
    new files."""

    end: int | float | str | None = None
    max_files: int | None = None


@dataclass
class IncrementalCursor:
    """What a source step needs of its cursor in this run; :attr:`candidate` is its new value once the
    stream has ended (None: nothing to store)."""

    config: IncrementalConfig
    stored: dict[str, Any] | None
    step: str = ""
    candidate: dict[str, Any] | None = None
    files_selected: bool = False  # set by select_files: the source applied files mode
    max_files: int | None = None  # files mode, one checkpoint slice: take at most this many new files
    filtered: int = 0
    _seen_rows: list[Any] = field(default_factory=list)

    def restrict(self, cut: CursorSlice) -> None:
        """Narrow this run to one checkpoint slice."""
        if cut.end is not None:
            self.config = self.config.model_copy(update={"end": cut.end})
        self.max_files = cut.max_files

    # rows mode: the bounds a source may push into its query (a superset of what filter() keeps)
    def sql_bounds(self) -> tuple[Any, str, Any] | None:
        """``(lower, op, end)`` as JSON values for a pushed-down WHERE (``op`` ``>=`` or ``>``), or None
        when there is nothing to push. The lag is applied here for numbers; for temporal values the
        lower bound is given as text and lagged (``lower_text``) by the source's dialect helper."""
        if self.config.mode != "rows":
            return None
        lower: Any = None
        op = ">="
        if self.stored is not None and self.stored.get("last") is not None:
            last = self.stored["last"]
            lag = parse_lag(self.config.lag) if self.config.lag is not None else 0.0
            temporal = str(self.stored.get("type", "")).startswith(("timestamp", "date"))
            if isinstance(last, str) and temporal and lag:
                lower = to_json(_parse_temporal(last) - dt.timedelta(seconds=lag))
            elif isinstance(last, str):
                lower = last
            elif isinstance(last, int | float):
                lower = last - (int(lag) if isinstance(last, int) else lag)
            if not self.config.lag and not self.config.keys:
                op = ">"
        elif self.config.initial is not None:
            lower = self.config.initial
        if lower is None and self.config.end is None:
            return None
        return lower, op, self.config.end

    def where_sql(self, column: str, literal: Any, *, text_dates: bool = False) -> str | None:
        """A WHERE clause over the quoted ``column`` (``literal`` renders a JSON value in the dialect).
        ``text_dates`` (SQLite): temporal bounds compare on their date part only, since such columns
        are text in any ISO spelling (a superset; the engine's filter is exact)."""
        bounds = self.sql_bounds()
        if bounds is None:
            return None
        lower, op, end = bounds
        parts = []
        if lower is not None:
            if text_dates and _looks_temporal(lower):
                lower, op = str(lower)[:10], ">="
            parts.append(f"{column} {op} {literal(lower)}")
        if end is not None:
            if text_dates and _looks_temporal(end):
                # the day after the end's date, exclusive: still a superset
                end = (dt.date.fromisoformat(str(end)[:10]) + dt.timedelta(days=1)).isoformat()
                parts.append(f"{column} < {literal(end)}")
            else:
                parts.append(f"{column} < {literal(end)}")
        return " AND ".join(parts)

    # rows mode: the exact filter, and the new cursor
    def filter(self, data: OxiData, ctx: StepContext) -> OxiData:
        """The rows of ``data`` to load; the new cursor is :attr:`candidate` once the stream is exhausted."""
        import pyarrow as pa
        import pyarrow.compute as pc

        cfg = self.config
        names = data.schema.names
        for col in [cfg.cursor, *cfg.keys]:
            if col not in names:
                import difflib

                match = difflib.get_close_matches(col, names, n=1)
                raise ConfigError(
                    f"incremental column {col!r} is not in the source's columns",
                    step=ctx.step_id,
                    hint=f"did you mean {match[0]!r}?" if match else f"its columns: {', '.join(names)}",
                )
        typ = data.schema.field(cfg.cursor).type
        lag = parse_lag(cfg.lag) if cfg.lag is not None else 0.0
        stored = self.stored or {}
        last = to_scalar(stored["last"], typ, "stored cursor") if stored.get("last") is not None else None
        if last is not None:
            lower = _minus(last, lag) if lag else last
            strict = not lag and not cfg.keys
        elif cfg.initial is not None:
            lower, strict = to_scalar(cfg.initial, typ, "initial"), False
        else:
            lower, strict = None, False
        end = to_scalar(cfg.end, typ, "end") if cfg.end is not None else None
        seen_pairs = [pair for _, pair in stored.get("seen", [])]
        seen = pa.array(seen_pairs, pa.string()) if seen_pairs else None
        state: dict[str, Any] = {"max": last, "pairs": [], "cursors": []}

        def pairs(batch: pa.RecordBatch) -> pa.Array:
            cols = [batch.column(c).cast(pa.string()) for c in [cfg.cursor, *cfg.keys]]
            return pc.binary_join_element_wise(*cols, _SEP, null_handling="replace", null_replacement="\x00")

        def batches() -> Iterator[pa.RecordBatch]:
            for batch in data:
                c = batch.column(cfg.cursor)
                mask = pc.is_valid(c)  # rows without a cursor value are never loaded incrementally
                if lower is not None:
                    mask = pc.and_(mask, (pc.greater if strict else pc.greater_equal)(c, lower))
                if end is not None:
                    mask = pc.and_(mask, pc.less(c, end))
                if seen is not None and last is not None:
                    dup = pc.and_(pc.less_equal(c, last), pc.is_in(pairs(batch), value_set=seen))
                    mask = pc.and_(mask, pc.invert(dup))
                out = batch.filter(pc.fill_null(mask, False))
                dropped = batch.num_rows - out.num_rows
                self.filtered += dropped
                if out.num_rows:
                    self._track(out, state, pairs, lag)
                    yield out
            self._finish(state, typ, lag)

        return data.with_batches(batches(), data.schema)

    def _track(self, out: pa.RecordBatch, state: dict[str, Any], pairs: Any, lag: float) -> None:
        """Keep the running max and the (cursor, key) pairs inside the window below it."""
        import pyarrow.compute as pc

        c = out.column(self.config.cursor)
        top = pc.max(c)
        if state["max"] is None or pc.greater(top, state["max"]).as_py():
            state["max"] = top
        if not self.config.keys:
            return
        floor = _minus(state["max"], lag) if lag else state["max"]
        keep = pc.greater_equal(c, floor)
        state["pairs"].append(pc.filter(pairs(out), keep))
        state["cursors"].append(pc.filter(c, keep))
        if len(state["pairs"]) > 64:  # prune now and then, so memory stays bounded by the window
            self._prune(state, floor)

    @staticmethod
    def _prune(state: dict[str, Any], floor: pa.Scalar) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        cursors = pa.concat_arrays([a for a in state["cursors"]]) if state["cursors"] else None
        if cursors is None:
            return
        pairs = pa.concat_arrays(state["pairs"])
        keep = pc.greater_equal(cursors, floor)
        state["cursors"], state["pairs"] = [pc.filter(cursors, keep)], [pc.filter(pairs, keep)]

    def _finish(self, state: dict[str, Any], typ: pa.DataType, lag: float) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        top = state["max"]
        if top is None:
            self.candidate = self.stored  # nothing new, nothing stored before: keep what there is
            return
        floor = _minus(top, lag) if lag else top
        seen: dict[str, Any] = {}
        stored = self.stored or {}
        old = stored.get("seen", [])
        if old and self.config.keys:
            old_cursors = pa.array([to_scalar(c, typ, "stored cursor").as_py() for c, _ in old], typ)
            keep = pc.greater_equal(old_cursors, floor).to_pylist()
            seen.update({pair: c for (c, pair), k in zip(old, keep, strict=True) if k})
        if state["cursors"]:
            self._prune(state, floor)
            for c, pair in zip(state["cursors"][0].to_pylist(), state["pairs"][0].to_pylist(), strict=True):
                seen[pair] = to_json(c)
        self.candidate = {
            "last": to_json(top.as_py()),
            "type": str(typ),
            "seen": [[c, pair] for pair, c in sorted(seen.items())],
        }

    # files mode
    def select_files(self, files: list[Path], ctx: StepContext) -> list[Path]:
        """The files new since the last run (all of them on the first); records the candidate. With none
        new, returns one file for the schema and sets ``ctx.limit_rows = 0`` (no rows)."""
        self.files_selected = True
        by_name = self.config.cursor == "name"
        stored = self.stored or {}
        last = stored.get("last")
        seen = set(stored.get("seen", []))
        initial = self.config.initial

        def key(p: Path) -> Any:
            if by_name:
                try:
                    return p.resolve().relative_to(ctx.base_dir.resolve()).as_posix()
                except ValueError:
                    return p.resolve().as_posix()
            return p.stat().st_mtime_ns

        if initial is not None and not by_name:
            initial = int(_parse_temporal(str(initial)).replace(tzinfo=dt.UTC).timestamp() * 1e9)
        keyed = [(key(p), p) for p in files]
        picked = []
        for k, p in keyed:
            name = key(p) if by_name else str(p.resolve())
            if last is not None and (k < last or (k == last and name in seen)):
                continue
            if last is None and initial is not None and k < initial:
                continue
            picked.append((k, p))
        if not picked:
            self.candidate = self.stored
            ctx.limit_rows = 0  # the schema of the files seen, and no rows
            return files[:1]
        if self.max_files is not None:
            # a checkpoint slice: the oldest new files first, so the cursor moves over exactly them
            picked.sort(key=lambda kp: (kp[0], str(kp[1])))
            del picked[self.max_files :]
        top = max(k for k, _ in picked)
        at_top = {key(p) if by_name else str(p.resolve()) for k, p in picked if k == top}
        if top == last:
            at_top |= seen
        self.candidate = {"last": top, "seen": sorted(at_top)}
        ctx.metadata["files_new"] = len(picked)
        return [p for _, p in picked]


def _parse_temporal(text: str) -> dt.datetime:
    if len(text) == 10:
        return dt.datetime.combine(dt.date.fromisoformat(text), dt.time())
    return dt.datetime.fromisoformat(text)


def _looks_temporal(value: Any) -> bool:
    return isinstance(value, str) and re.match(r"^\d{4}-\d{2}-\d{2}", value) is not None


# sinks that add to their target: a checkpoint slice must not wipe what the slices before it committed
ACCUMULATING = ("append", "merge", "scd2", "delete_insert")


def checkpoint_problems(steps: list[Any]) -> list[tuple[Any, str, str]]:
    """``(step, problem, hint)`` for a pipeline that sets ``checkpoint_every`` but cannot load in slices
    (engine/checkpoints.py): more than one such source, a rows-mode source that cannot tell the range of
    its cursor, or a sink that rewrites its whole output. Found here, `oxiflow validate` reports them with
    their line before anything runs (the slicer would only find out at run time)."""
    sliced = [p for p in steps if (inc := incremental_of(p.config)) is not None and inc.checkpoint_every is not None]
    if not sliced:
        return []
    out = [
        (p, "only one source of a pipeline can set `incremental.checkpoint_every`", f"keep it on {sliced[0].id!r}")
        for p in sliced[1:]
    ]
    for p in sliced:
        inc = incremental_of(p.config)
        if inc is not None and inc.mode == "rows" and not answers_cursor_range(p.spec.factory):
            out.append(
                (
                    p,
                    f"{p.spec.name} cannot tell the range of its cursor, which `checkpoint_every` cuts into slices "
                    "(rows mode)",
                    "use a database source (read_postgres, read_mysql, read_sqlite, read_duckdb), or "
                    "`mode: files` with `checkpoint_every: <number of files>`, or drop checkpoint_every",
                )
            )
    for p in steps:
        disposition = getattr(p.config, "write_disposition", None)
        if p.spec.kind == "sink" and p.config is not None and disposition not in ACCUMULATING:
            what = f"write_disposition {disposition}" if disposition else "it rewrites its whole output on each run"
            out.append(
                (
                    p,
                    f"sink {p.id!r} cannot take a checkpointed load ({what}): it would keep only the last slice",
                    "give it write_disposition append, merge, scd2 or delete_insert, or drop checkpoint_every",
                )
            )
    return out


def answers_cursor_range(factory: Any) -> bool:
    """Whether a source's class overrides :meth:`Source.cursor_range` (the base answers None: "cannot
    tell"). A factory that is not a class cannot be checked before it runs: it is given the benefit."""
    if not isinstance(factory, type) or not issubclass(factory, Source):
        return True
    return factory.cursor_range is not Source.cursor_range


def incremental_of(config: Any) -> IncrementalConfig | None:
    """A step config's ``incremental`` block, if it has one."""
    inc = getattr(config, "incremental", None)
    return inc if isinstance(inc, IncrementalConfig) else None
