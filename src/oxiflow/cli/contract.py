"""`oxi contract test|diff|infer|lint`: data contracts (ODCS v3, datacontract-specification) outside pipelines."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from oxiflow.cli import output
from oxiflow.cli.options import JsonOpt

app = typer.Typer(help="Data contracts (ODCS v3): test data against one, diff two versions, infer one, lint one.")

FormatOpt = Annotated[
    str | None, typer.Option("--format", "-f", help="Input format when the extension does not tell: csv, json, ...")
]
DatasetOpt = Annotated[
    str | None, typer.Option("--dataset", "-d", help="Which dataset (schema object / model) of the contract.")
]


def register(parent: typer.Typer) -> None:
    parent.add_typer(app, name="contract")


def _fail(exc: Exception) -> typer.Exit:
    output.err(f"error: {exc}")
    return typer.Exit(getattr(exc, "exit_code", 1))


@app.command("test")
def test(
    contract: Annotated[str, typer.Argument(help="The contract (ODCS v3 or datacontract-specification YAML).")],
    data: Annotated[
        str,
        typer.Argument(help="A file, glob or folder; `db.duckdb::table`; or `postgresql://...::schema.table`."),
    ],
    dataset: DatasetOpt = None,
    fmt: FormatOpt = None,
    json_out: JsonOpt = False,
    junit: Annotated[str | None, typer.Option("--junit", metavar="PATH", help="Also write JUnit XML (CI).")] = None,
    memory_limit_mb: Annotated[int, typer.Option("--memory-limit-mb", min=64, help="DuckDB memory limit.")] = 1024,
) -> None:
    """Check data against a contract: fields present with their types, required, unique, primary
    key, enum, pattern, ranges, lengths, quality rules (library metrics and SQL) and freshness.

    Exit code 0 when every check passes (warnings allowed), 1 when one fails, 2 for a bad contract.

    Example: oxi contract test orders.odcs.yaml data/orders.parquet --junit contract.xml
    """
    from oxiflow.contracts import load_contract
    from oxiflow.contracts.runner import render_junit, render_text, run_contract
    from oxiflow.errors import OxiflowError

    try:
        report = run_contract(load_contract(contract), data, fmt=fmt, dataset=dataset, memory_limit_mb=memory_limit_mb)
    except OxiflowError as exc:
        raise _fail(exc) from None
    if junit:
        try:
            Path(junit).write_text(render_junit(report), encoding="utf-8")
        except OSError as exc:
            output.err(f"error: cannot write {junit}: {exc.strerror or exc}")
            raise typer.Exit(1) from None
    if json_out:
        output.print_json(report.to_dict())
    else:
        typer.echo(render_text(report))
    raise typer.Exit(0 if report.passed else 1)


@app.command("diff")
def diff(
    old: Annotated[str, typer.Argument(help="The earlier contract.")],
    new: Annotated[str, typer.Argument(help="The later contract.")],
    json_out: JsonOpt = False,
) -> None:
    """Classify every change between two contract versions as breaking or not (rules: docs/contracts.md).

    Exit code 1 when a change is breaking, 0 otherwise.

    Example: oxi contract diff orders-v1.odcs.yaml orders-v2.odcs.yaml
    """
    from oxiflow.contracts import load_contract
    from oxiflow.contracts.diff import diff_contracts
    from oxiflow.errors import OxiflowError

    try:
        changes = diff_contracts(load_contract(old), load_contract(new))
    except OxiflowError as exc:
        raise _fail(exc) from None
    breaking = [c for c in changes if c.breaking]
    if json_out:
        output.print_json({"breaking": bool(breaking), "changes": [c.to_dict() for c in changes]})
    else:
        for c in changes:
            typer.echo(f"{'BREAKING' if c.breaking else 'ok      '} {c.path}: {c.description}")
        typer.echo(f"{len(changes)} change(s), {len(breaking)} breaking" if changes else "no changes")
    raise typer.Exit(1 if breaking else 0)


@app.command("infer")
def infer(
    data: Annotated[str, typer.Argument(help="A file, glob or folder (or `db.duckdb::table`).")],
    out: Annotated[
        str | None, typer.Option("--output", "-o", help="Write the contract here (default: stdout).")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Dataset name (default: from the file name).")] = None,
    fmt: FormatOpt = None,
    sample: Annotated[
        int, typer.Option("--sample", min=100, help="Values per column the PII detectors look at.")
    ] = 10_000,
) -> None:
    """Draft an ODCS v3 contract from data: types, required, unique, enums for low-cardinality
    strings, ranges, and likely PII (emails, phones, cards (Luhn), IPs, IBANs (mod 97), names)
    flagged as `classification: pii`. Review it before use: it describes this data, not intent.

    Example: oxi contract infer customers.parquet -o customers.odcs.yaml
    """
    from oxiflow.contracts.infer import infer_contract
    from oxiflow.errors import OxiflowError

    try:
        text = infer_contract(data, fmt=fmt, name=name, sample=sample)
    except OxiflowError as exc:
        raise _fail(exc) from None
    if out:
        Path(out).write_text(text, encoding="utf-8")
        output.err(f"wrote {out}")
    else:
        typer.echo(text, nl=False)


@app.command("lint")
def lint(
    contract: Annotated[str, typer.Argument(help="The contract to check.")],
    schema: Annotated[
        str | None,
        typer.Option("--schema", metavar="PATH", help="Validate against this JSON Schema instead (needs jsonschema)."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Check that a contract is valid for its standard (ODCS v3 required fields and types; the full JSON Schema
    with `oxiflow[contracts]` installed or --schema) and list the parts oxiflow keeps but does not check.

    Exit code 0 when valid, 1 when the document breaks its standard, 2 when it cannot be read as a contract.

    Example: oxi contract lint orders.odcs.yaml --schema odcs-json-schema-v3.0.2.json
    """
    from oxiflow.contracts import load_contract
    from oxiflow.contracts.lint import lint as lint_document
    from oxiflow.errors import OxiflowError

    try:
        result = lint_document(contract, schema)
        c = load_contract(contract)
    except OxiflowError as exc:
        raise _fail(exc) from None
    if json_out:
        output.print_json(
            {
                "contract": contract,
                "format": c.source_format,
                "valid": result.valid,
                "errors": result.errors,
                "schema": result.schema,
                "datasets": [{"name": d.name, "fields": len(d.fields)} for d in c.datasets],
                "unsupported": c.unsupported,
            }
        )
        raise typer.Exit(0 if result.valid else 1)
    typer.echo(f"{contract}: {c.source_format} {c.api_version or ''}, {len(c.datasets)} dataset(s)")
    for d in c.datasets:
        typer.echo(f"  {d.name}: {len(d.fields)} field(s), {len(d.quality)} dataset rule(s)")
    for note in c.unsupported:
        typer.echo(f"  not checked: {note}")
    for error in result.errors:
        typer.echo(f"  invalid: {error}")
    for note in result.notes:
        output.err(f"note: {note}")
    verdict = "valid" if result.valid else f"INVALID: {len(result.errors)} error(s)"
    typer.echo(f"{verdict}" + (f" (JSON Schema {result.schema})" if result.schema else ""))
    raise typer.Exit(0 if result.valid else 1)
