"""``contract test``: open the data (file, glob, folder or ``db.duckdb::table``), run the checks, report.

The data is queried where it lies when its reader offers a DuckDB scan (CSV, JSON, Parquet) or
the table is in a DuckDB file (attached read-only); other formats (Avro, Arrow) are spooled once
into a temporary DuckDB file, so the checks and every SQL rule scan it with bounded memory.
Columnar data (Parquet, DuckDB tables) lets the checks read single columns on their own, and
Parquet answers min/max/null counts from its metadata (``checks.evaluate``'s shortcuts); CSV and
JSON, parsed whole at each scan, get the one scan.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oxiflow.contracts.checks import CheckResult, DataShape, compile_checks, evaluate
from oxiflow.contracts.model import Contract
from oxiflow.engine.duck import ident, literal

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

# formats whose column types DuckDB sniffs from text: values are checked by casting them
SNIFFED_FORMATS = {"csv", "json", "jsonl"}


@dataclass
class Report:
    contract: str
    data: str
    dataset: str
    rows: int | None
    results: list[CheckResult] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if r.status in ("failed", "error")]

    @property
    def passed(self) -> bool:
        return not self.failed

    def counts(self) -> dict[str, int]:
        out = {"passed": 0, "failed": 0, "warning": 0, "error": 0, "skipped": 0}
        for r in self.results:
            out[r.status] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "contract": self.contract,
            "data": self.data,
            "dataset": self.dataset,
            "rows": self.rows,
            "result": "passed" if self.passed else "failed",
            "counts": self.counts(),
            "checks": [r.to_dict() for r in self.results],
            "unsupported": self.unsupported,
        }


@dataclass
class OpenedData:
    """The data at a path as a DuckDB relation, and what reading it costs."""

    con: duckdb.DuckDBPyConnection
    relation: str
    sniffed: bool  # types sniffed from text (CSV, JSON)
    narrow_scans: bool  # one column can be read without the others (not CSV/JSON)
    metadata_stats: bool  # min/max/null counts come from file metadata (Parquet)


@contextlib.contextmanager
def open_relation(
    path: str, fmt: str | None = None, memory_limit_mb: int = 1024
) -> Iterator[tuple[duckdb.DuckDBPyConnection, str, bool]]:
    """(connection, relation name, types-were-sniffed) for the data at ``path``; cleans up after."""
    with open_data(path, fmt, memory_limit_mb) as opened:
        yield opened.con, opened.relation, opened.sniffed


@contextlib.contextmanager
def open_data(path: str, fmt: str | None = None, memory_limit_mb: int = 1024) -> Iterator[OpenedData]:
    """The data at ``path`` (file, glob, folder, ``db.duckdb::table``, ``postgresql://...::table``)."""
    from oxiflow.engine.duck import connect
    from oxiflow.pipe.inputs import EXTENSIONS, format_of, open_input, spool_stream

    with tempfile.TemporaryDirectory(prefix="oxiflow-contract-") as tmp:
        database, _, table = path.rpartition("::")
        if database and (fmt or EXTENSIONS.get(Path(database).suffix.lower())) == "duckdb":
            con = connect(None, memory_limit=f"{memory_limit_mb}MB")
            try:
                con.execute(f"ATTACH {literal(database)} AS oxiflow_src (READ_ONLY)")
                parts = [ident(p) for p in table.split(".")]
                con.execute(f"CREATE TEMP VIEW oxiflow_data AS SELECT * FROM oxiflow_src.{'.'.join(parts)}")
                yield OpenedData(con, "oxiflow_data", sniffed=False, narrow_scans=True, metadata_stats=False)
            finally:
                con.close()
            return
        if path.startswith(("postgres://", "postgresql://")) and "::" in path:
            con = connect(None, str(Path(tmp) / "spool.duckdb"), memory_limit=f"{memory_limit_mb}MB")
            try:
                spool_stream(con, _postgres_table(database, table).data(), "oxiflow_data")
                yield OpenedData(con, "oxiflow_data", sniffed=False, narrow_scans=True, metadata_stats=False)
            finally:
                con.close()
            return
        kind = format_of(path, fmt)
        opened = open_input(path, fmt, memory_limit_mb=memory_limit_mb)
        scan = opened.scan()
        con = connect(opened.ctx, ":memory:" if scan is not None else str(Path(tmp) / "spool.duckdb"))
        try:
            if scan is not None:
                con.execute(f"CREATE TEMP VIEW oxiflow_data AS {scan.sql}")
            else:
                spool_stream(con, opened.data(), "oxiflow_data")
            parquet = scan is not None and kind == "parquet"
            yield OpenedData(
                con,
                "oxiflow_data",
                sniffed=kind in SNIFFED_FORMATS,
                narrow_scans=scan is None or parquet,  # spooled: a DuckDB table
                metadata_stats=parquet,
            )
        finally:
            con.close()


def _postgres_table(url: str, table: str) -> Any:
    """A PostgreSQL table read by the ``read_postgres`` oxi (streamed Arrow, spooled by the caller)."""
    from oxiflow.engine.local import new_run_id
    from oxiflow.oxi import StepContext
    from oxiflow.pipe.inputs import OpenedInput
    from oxiflow.registry import default_registry

    spec = default_registry().get("read_postgres")
    source = spec.factory(spec.config.model_validate({"url": url, "table": table}))
    ctx = StepContext(step_id="read_postgres", oxi_name="read_postgres", run_id=new_run_id(), base_dir=Path.cwd())
    return OpenedInput(url, "read_postgres", source, ctx)  # type: ignore[arg-type]


def shape_of(con: duckdb.DuckDBPyConnection, relation: str, sniffed: bool) -> DataShape:
    schema: pa.Schema = con.sql(f"SELECT * FROM {relation} LIMIT 0").to_arrow_table().schema
    duck_types = {name: str(typ) for name, typ, *_ in con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()}
    return DataShape(schema, duck_types, sniffed)


def run_contract(
    contract: Contract,
    data: str,
    *,
    fmt: str | None = None,
    dataset: str | None = None,
    memory_limit_mb: int = 1024,
) -> Report:
    """Check the data at ``data`` against one dataset of ``contract``."""
    ds = contract.dataset(dataset)
    with open_data(data, fmt, memory_limit_mb) as opened:
        con, relation = opened.con, opened.relation
        shape = shape_of(con, relation, opened.sniffed)
        # SQL rules name the dataset (FROM orders, FROM {model}): give the data those names
        for name in {ds.name, ds.physical_name} - {None}:
            con.execute(f"CREATE TEMP VIEW {ident(str(name))} AS SELECT * FROM {relation}")
        checks = compile_checks(ds, shape, contract.sla)
        done = evaluate(
            con, relation, ds, checks, narrow_scans=opened.narrow_scans, metadata_stats=opened.metadata_stats
        )
    return Report(contract.path or "", data, ds.name, done.rows, done.results, contract.unsupported)


def render_text(report: Report) -> str:
    """The report for a person: one line per check, failures with their reason."""
    marks = {"passed": "ok  ", "failed": "FAIL", "warning": "warn", "error": "ERR ", "skipped": "skip"}
    lines = [f"{report.data} against {report.contract} (dataset {report.dataset}, {report.rows:,} rows)"]
    for r in report.results:
        line = f"  {marks[r.status]} {r.check.name}"
        if r.reason:
            line += f" — {r.reason}"
        lines.append(line)
    c = report.counts()
    summary = ", ".join(f"{n} {k}" for k, n in c.items() if n)
    lines.append(f"{'PASSED' if report.passed else 'FAILED'}: {summary}")
    if report.unsupported:
        lines.append(f"{len(report.unsupported)} part(s) of the contract not checked (oxi contract lint lists them)")
    return "\n".join(lines)


def render_junit(report: Report) -> str:
    """JUnit XML: one testsuite for the dataset, one testcase per check (failures and errors marked)."""
    import xml.etree.ElementTree as ET

    c = report.counts()
    suite = ET.Element(
        "testsuite",
        name=f"contract {report.dataset}",
        tests=str(len(report.results)),
        failures=str(c["failed"]),
        errors=str(c["error"]),
        skipped=str(c["skipped"]),
    )
    for r in report.results:
        case = ET.SubElement(suite, "testcase", classname=f"{report.dataset}", name=f"{r.check.id}: {r.check.name}")
        if r.status == "failed":
            ET.SubElement(case, "failure", message=r.reason, type=r.check.kind).text = r.reason
        elif r.status == "error":
            ET.SubElement(case, "error", message=r.reason, type=r.check.kind).text = r.reason
        elif r.status == "warning":
            ET.SubElement(case, "system-out").text = f"warning: {r.reason}"
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
