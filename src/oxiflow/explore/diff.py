"""Compare two datasets by key: rows only in A, only in B, and changed (with the changed columns).

Both sides are loaded into one temporary on-disk DuckDB database (a view over the reader's scan
when the reader offers one, else the Arrow stream copied into a table), so memory stays bounded
by DuckDB's limit and the comparison is SQL: a FULL OUTER JOIN on the key, ``IS DISTINCT FROM``
per compared column. The rows that differ are kept in that database, to count, sample and write.

Rules (also in docs/diff.md):
- Columns are matched by name. Columns on one side only are reported, not compared.
- A column (or key) whose types differ is compared after casting both sides to the type DuckDB
  unifies them to (INTEGER+BIGINT -> BIGINT, DATE+TIMESTAMP -> TIMESTAMP, any+VARCHAR ->
  VARCHAR); a nested type against a different kind is compared as text.
- NULL equals NULL (values and keys). ``tolerance`` makes float/decimal values within it equal.
- A key value that occurs more than once on either side is an error: rows must match one to one.
"""

from __future__ import annotations

import difflib
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oxiflow.engine.duck import connect, ident, literal
from oxiflow.errors import DataError, OxiflowError

if TYPE_CHECKING:
    import duckdb

    from oxiflow.oxi import StepContext

OUTPUTS = ("only_a", "only_b", "changed")
# DuckDB's own default is 80% of RAM; a diff of two 5M-row Parquet files peaks at ~730 MB RSS
# unbounded and runs as fast under this cap; bigger inputs spill to disk past it
DEFAULT_MEMORY_MB = 1024
# marks which side a joined row came from (keys may be NULL, so they cannot tell)
_PRESENT = "__oxiflow_diff_present"
_FLOATS = re.compile(r"^(FLOAT|DOUBLE|REAL|DECIMAL\(\d+,\s*\d+\))$")


class DiffError(DataError):
    """The diff cannot be computed as asked (unknown key or column, duplicate keys, unreadable input)."""

    exit_code = 2


@dataclass
class DiffOptions:
    key: list[str]
    columns: list[str] | None = None
    """Compare only these non-key columns (default: every column)."""
    ignore: list[str] = field(default_factory=list)
    """Leave these columns out of the comparison."""
    tolerance: float | None = None
    """Float/decimal values at most this far apart (absolute) are equal."""
    examples: int = 5
    """Example keys per category in the summary."""
    memory_limit_mb: int | None = DEFAULT_MEMORY_MB
    format_a: str | None = None
    format_b: str | None = None


@dataclass
class SideInfo:
    spec: str
    reader: str
    rows: int
    columns: dict[str, str]  # name -> DuckDB type
    pushdown: bool  # read through the reader's DuckDB scan (else its Arrow stream was copied)


@dataclass
class DiffResult:
    a: SideInfo
    b: SideInfo
    key: list[str]
    compared: list[str]
    columns_only_in_a: list[str]
    columns_only_in_b: list[str]
    casts: dict[str, str]  # column -> the type both sides were compared as
    counts: dict[str, int]  # only_a, only_b, changed, unchanged
    changed_by_column: dict[str, int]
    examples: dict[str, list[dict[str, Any]]]
    outputs: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def equal(self) -> bool:
        """No row only on one side, none changed, and no compared-for column on one side only."""
        differs = self.counts["only_a"] or self.counts["only_b"] or self.counts["changed"]
        return not differs and not self.columns_only_in_a and not self.columns_only_in_b

    def to_dict(self) -> dict[str, Any]:
        return {
            "equal": self.equal,
            "a": _side_dict(self.a),
            "b": _side_dict(self.b),
            "key": self.key,
            "compared_columns": self.compared,
            "columns_only_in_a": self.columns_only_in_a,
            "columns_only_in_b": self.columns_only_in_b,
            "compared_as": self.casts,
            "only_in_a": {"count": self.counts["only_a"], "examples": self.examples["only_a"]},
            "only_in_b": {"count": self.counts["only_b"], "examples": self.examples["only_b"]},
            "changed": {
                "count": self.counts["changed"],
                "by_column": self.changed_by_column,
                "examples": self.examples["changed"],
            },
            "unchanged": self.counts["unchanged"],
            "outputs": self.outputs,
            "seconds": round(self.seconds, 3),
        }


def _side_dict(side: SideInfo) -> dict[str, Any]:
    return {
        "input": side.spec,
        "reader": side.reader,
        "read_via": "duckdb scan" if side.pushdown else "arrow stream",
        "rows": side.rows,
        "columns": len(side.columns),
    }


def diff(a: str, b: str, options: DiffOptions, output_dir: Path | None = None) -> DiffResult:
    """Compare inputs ``a`` and ``b`` (paths or ``db.duckdb::table``); write the differing rows as
    Parquet into ``output_dir`` when given."""
    import time

    from oxiflow.engine.local import new_run_id
    from oxiflow.oxi import StepContext

    started = time.perf_counter()
    if not options.key:
        raise DiffError("no key column given", hint="name the column(s) that identify a row: --key id")
    ctx = StepContext(step_id="diff", oxi_name="diff", run_id=new_run_id(), memory_limit_mb=options.memory_limit_mb)
    with tempfile.TemporaryDirectory(prefix="oxiflow-diff-") as tmp:
        con = connect(ctx, str(Path(tmp) / "diff.duckdb"))
        try:
            differ = _Differ(con, options, ctx)
            side_a = differ.load("a", a, options.format_a)
            side_b = differ.load("b", b, options.format_b)
            result = differ.compare(side_a, side_b)
            if output_dir is not None:
                result.outputs = differ.write(output_dir, result)
        finally:
            con.close()
    result.seconds = time.perf_counter() - started
    return result


class _Differ:
    def __init__(self, con: duckdb.DuckDBPyConnection, options: DiffOptions, ctx: StepContext) -> None:
        self.con = con
        self.opts = options
        self.ctx = ctx
        # per side: the files its scan reads and how to turn a DuckDB error about them into ours
        self.translators: list[tuple[list[str], Callable[[BaseException], BaseException]]] = []
        self.key_exprs: list[tuple[str, str]] = []  # per key column: (A-side, B-side) expressions

    # -- loading ----------------------------------------------------------------------------------
    def load(self, name: str, spec: str, fmt: str | None) -> SideInfo:
        """Make table/view ``side_<name>`` hold the rows of input ``spec``."""

        from oxiflow.pipe.inputs import open_input, spool_stream

        opened = open_input(spec, fmt)  # a streamed reader keeps its own (small) scan budget
        scan = opened.scan()
        target = ident(f"side_{name}")
        if scan is not None:
            # DuckDB reads the files itself, in place: nothing is copied
            if scan.translate is not None:
                self.translators.append((scan.files, scan.translate))
            self._sql(f"CREATE VIEW {target} AS {scan.sql}")
        else:
            import duckdb

            try:
                spool_stream(self.con, opened.data(), target)
            except duckdb.Error as exc:
                raise self._translate(exc) from None
        columns = {row[0]: row[1] for row in self._sql(f"DESCRIBE {target}").fetchall()}
        return SideInfo(spec, opened.oxi_name, 0, columns, scan is not None)

    # -- comparing --------------------------------------------------------------------------------
    def compare(self, a: SideInfo, b: SideInfo) -> DiffResult:
        keys = self._check_names(a, b)
        considered = self._considered(a, b, keys)
        compared = [c for c in considered if c in a.columns and c in b.columns]
        casts: dict[str, str] = {}
        for col in keys + compared:
            if a.columns[col] != b.columns[col]:
                casts[col] = self._common_type(a.columns[col], b.columns[col])
        a.rows = self._check_unique("A", a, keys)
        b.rows = self._check_unique("B", b, keys)

        def pair(col: str) -> tuple[str, str]:
            ea, eb = f"a.{ident(col)}", f"b.{ident(col)}"
            if col in casts:
                ea, eb = f"CAST({ea} AS {casts[col]})", f"CAST({eb} AS {casts[col]})"
            return ea, eb

        self.key_exprs = [pair(k) for k in keys]
        join = " AND ".join(f"{ea} IS NOT DISTINCT FROM {eb}" for ea, eb in self.key_exprs)
        flags = []
        for col in compared:
            ea, eb = pair(col)
            differs = self._differs(ea, eb, casts.get(col) or a.columns[col])
            flags.append(f"CASE WHEN {differs} THEN [{literal(col)}] ELSE []::VARCHAR[] END")
        # flatten of one-or-no-element lists: no lambda (their syntax changed between DuckDB versions)
        changed_list = f"flatten([{', '.join(flags)}])" if flags else "[]::VARCHAR[]"
        key_cols = ", ".join(f"coalesce({ea}, {eb}) AS k_{i}" for i, (ea, eb) in enumerate(self.key_exprs))
        a_cols = ", ".join(f"a.{ident(c)} AS a_{i}" for i, c in enumerate(a.columns))
        b_cols = ", ".join(f"b.{ident(c)} AS b_{i}" for i, c in enumerate(b.columns))
        # Only the differing rows are stored: for near-equal inputs the table stays small
        self._sql(
            f"""CREATE TABLE d AS SELECT * FROM (
              SELECT CASE WHEN b.{_PRESENT} IS NULL THEN 'only_a' WHEN a.{_PRESENT} IS NULL THEN 'only_b'
                          ELSE 'changed' END AS status,
                     {key_cols}, {changed_list} AS changed_columns, {a_cols}, {b_cols}
              FROM (SELECT *, true AS {_PRESENT} FROM side_a) AS a
              FULL OUTER JOIN (SELECT *, true AS {_PRESENT} FROM side_b) AS b ON {join}
            ) WHERE status <> 'changed' OR len(changed_columns) > 0"""
        )
        counts = {s: 0 for s in OUTPUTS}
        for status, n in self._sql("SELECT status, count(*) FROM d GROUP BY status").fetchall():
            counts[status] = int(n)
        counts["unchanged"] = a.rows - counts["only_a"] - counts["changed"]
        by_column: dict[str, int] = {}
        if compared and counts["changed"]:
            per = ", ".join(f"count(*) FILTER (WHERE list_contains(changed_columns, {literal(c)}))" for c in compared)
            row = self._sql(f"SELECT {per} FROM d WHERE status = 'changed'").fetchone() or ()
            by_column = {c: int(n) for c, n in zip(compared, row, strict=True) if n}
        return DiffResult(
            a=a,
            b=b,
            key=keys,
            compared=compared,
            columns_only_in_a=[c for c in considered if c not in b.columns],
            columns_only_in_b=[c for c in considered if c not in a.columns],
            casts=casts,
            counts=counts,
            changed_by_column=by_column,
            examples={s: self._examples(s, keys) for s in OUTPUTS},
        )

    def _differs(self, ea: str, eb: str, type_name: str) -> str:
        """SQL that is true when the two values differ (NULL = NULL; within tolerance for floats)."""
        if self.opts.tolerance is not None and _FLOATS.match(type_name):
            # NaN = NaN and inf = inf in DuckDB; inf - inf is NaN, so test distinctness first
            tol = literal(float(self.opts.tolerance))
            return f"({ea} IS DISTINCT FROM {eb} AND NOT coalesce(abs({ea} - {eb}) <= {tol}, false))"
        return f"{ea} IS DISTINCT FROM {eb}"

    def _check_names(self, a: SideInfo, b: SideInfo) -> list[str]:
        keys = _dedupe(self.opts.key)
        for side, label in ((a, "A"), (b, "B")):
            missing = [k for k in keys if k not in side.columns]
            if missing:
                raise DiffError(
                    f"key column(s) {', '.join(missing)} not in {label} ({side.spec})",
                    hint=_did_you_mean(missing[0], list(side.columns)),
                )
        return keys

    def _considered(self, a: SideInfo, b: SideInfo, keys: list[str]) -> list[str]:
        every = list(a.columns) + [c for c in b.columns if c not in a.columns]
        for flag, names in (("--columns", self.opts.columns or []), ("--ignore", self.opts.ignore)):
            unknown = [c for c in names if c not in a.columns and c not in b.columns]
            if unknown:
                raise DiffError(
                    f"{flag} names unknown column(s): {', '.join(unknown)}", hint=_did_you_mean(unknown[0], every)
                )
        chosen = set(self.opts.columns) if self.opts.columns else None
        ignored = set(self.opts.ignore)
        return [c for c in every if c not in keys and c not in ignored and (chosen is None or c in chosen)]

    def _common_type(self, ta: str, tb: str) -> str:
        """The type UNION ALL gives two column types (DuckDB's own implicit-cast rules); text when
        the shapes differ (STRUCT vs INTEGER: DuckDB would pick the STRUCT and fail at run time)."""
        import duckdb

        if _shape(ta) != _shape(tb):
            return "VARCHAR"
        try:
            row = self.con.execute(f"DESCRIBE SELECT NULL::{ta} AS x UNION ALL SELECT NULL::{tb}").fetchone()
        except duckdb.Error:  # no common type (structs with other fields ...)
            return "VARCHAR"
        return str(row[1]) if row else "VARCHAR"

    def _check_unique(self, label: str, side: SideInfo, keys: list[str]) -> int:
        """The side's row count; a DiffError when a key value occurs more than once."""
        table = ident(f"side_{label.lower()}")
        group = ", ".join(ident(k) for k in keys)
        rows, dup_keys = self._sql(
            f"SELECT coalesce(sum(n), 0), count(*) FILTER (WHERE n > 1) "
            f"FROM (SELECT count(*) AS n FROM {table} GROUP BY {group})"
        ).fetchone() or (0, 0)
        if dup_keys:
            sample = self._sql(
                f"SELECT {group}, count(*) FROM {table} GROUP BY {group} HAVING count(*) > 1 ORDER BY {group} LIMIT 3"
            ).fetchall()
            shown = "; ".join(
                ", ".join(f"{k}={v!r}" for k, v in zip(keys, row[:-1], strict=True)) + f" ({row[-1]} rows)"
                for row in sample
            )
            raise DiffError(
                f"{dup_keys:,} key value(s) occur more than once in {label} ({side.spec}), e.g. {shown}",
                hint="rows are matched one to one: choose a key that is unique on both sides (--key a,b)",
            )
        return int(rows)

    def _examples(self, status: str, keys: list[str]) -> list[dict[str, Any]]:
        if self.opts.examples <= 0:
            return []
        cols = ", ".join(f"k_{i}" for i in range(len(keys)))
        rows = self._sql(
            f"SELECT {cols}, changed_columns FROM d WHERE status = {literal(status)} "
            f"ORDER BY {cols} LIMIT {int(self.opts.examples)}"
        ).fetchall()
        out = []
        for row in rows:
            example: dict[str, Any] = {"key": dict(zip(keys, row[:-1], strict=True))}
            if status == "changed":
                example["changed_columns"] = list(row[-1])
            out.append(example)
        return out

    # -- writing ----------------------------------------------------------------------------------
    def write(self, folder: Path, result: DiffResult) -> dict[str, str]:
        """only_a / only_b (each side's own columns) and changed (key, changed_columns, then
        ``<col>_a`` and ``<col>_b`` per compared column) as Parquet, each written atomically."""
        from oxiflow.oxis.files.common import atomic_output

        a_names, b_names = list(result.a.columns), list(result.b.columns)
        order = ", ".join(f"k_{i}" for i in range(len(result.key)))
        changed_names = [*result.key, "changed_columns"]
        for col in result.compared:
            changed_names += [f"{col}_a", f"{col}_b"]
        clash = _duplicates(changed_names)
        if clash:
            raise DiffError(
                f"the changed rows would have two columns named {clash[0]!r}",
                hint="leave one of the clashing columns out with --ignore",
            )
        changed_cols = [f"k_{i} AS {ident(k)}" for i, k in enumerate(result.key)] + ["changed_columns"]
        for col in result.compared:
            changed_cols += [
                f"a_{a_names.index(col)} AS {ident(col + '_a')}",
                f"b_{b_names.index(col)} AS {ident(col + '_b')}",
            ]
        queries = {
            "only_a": ", ".join(f"a_{i} AS {ident(c)}" for i, c in enumerate(a_names)),
            "only_b": ", ".join(f"b_{i} AS {ident(c)}" for i, c in enumerate(b_names)),
            "changed": ", ".join(changed_cols),
        }
        written = {}
        for status, select in queries.items():
            target = folder / f"{status}.parquet"
            with atomic_output(target, self.ctx) as tmp:
                self._sql(
                    f"COPY (SELECT {select} FROM d WHERE status = {literal(status)} ORDER BY {order}) "
                    f"TO {literal(str(tmp))} (FORMAT parquet, COMPRESSION zstd)"
                )
            written[status] = str(target)
        return written

    # -- errors -----------------------------------------------------------------------------------
    def _sql(self, query: str) -> duckdb.DuckDBPyConnection:
        import duckdb

        try:
            return self.con.execute(query)
        except duckdb.Error as exc:
            raise self._translate(exc) from None

    def _translate(self, exc: BaseException) -> BaseException:
        import duckdb

        if isinstance(exc, duckdb.InterruptException):
            from oxiflow.errors import RunCancelled

            return RunCancelled("diff interrupted")
        text = str(exc)
        for files, translate in self.translators:
            if any(f in text for f in files):  # an error of that side's scan (a bad CSV line ...)
                err = translate(exc)
                if isinstance(err, OxiflowError):
                    return DiffError(err.message, hint=err.hint, **err.context)
                return err
        first = " ".join(line.strip() for line in text.strip().splitlines()[:4] if line.strip())
        hint = None
        if "Conversion Error" in text or "Could not convert" in text:
            hint = "a column's values do not convert to the common type; leave it out with --ignore COL"
        return DiffError(f"comparing failed: {first}", hint=hint)


def _shape(type_name: str) -> str:
    """STRUCT, MAP, UNION, LIST or SCALAR: types of different shapes never cast into each other."""
    if type_name.endswith("]"):
        return "LIST"
    head = type_name.split("(", 1)[0]
    return head if head in ("STRUCT", "MAP", "UNION") else "SCALAR"


def _dedupe(names: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(names))


def _duplicates(names: list[str]) -> list[str]:
    seen: set[str] = set()
    return [n for n in names if n in seen or seen.add(n)]  # type: ignore[func-returns-value]


def _did_you_mean(name: str, known: list[str]) -> str:
    match = difflib.get_close_matches(name, known, n=1)
    if match:
        return f"did you mean {match[0]!r}?"
    return f"the columns are: {', '.join(known[:30])}" + (" ..." if len(known) > 30 else "")
