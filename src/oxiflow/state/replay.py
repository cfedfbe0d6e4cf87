"""``oxiflow dlq replay``: send dead-lettered (fixed) records back through the pipeline from the step
that rejected them.

The replay plan is the pipeline with the rejecting step's (first) input replaced by a source reading
the records (``read_parquet`` of a scratch file typed with the step's input schema); for a source
step, the source itself is replaced. Only that step, the steps downstream of it and whatever else
those need (the other side of a join) are kept. The replay is a run of the pipeline like any other
(new run id, recorded, under the pipeline's lock); records it rejects again go to the DLQ under
that run id, and the replayed ones are marked ``replayed_at`` / ``replay_run_id``.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oxiflow.errors import ConfigError, OxiflowError

if TYPE_CHECKING:
    import pyarrow as pa

    from oxiflow.plan.build import Plan
    from oxiflow.state.dlq import DlqRecord, DlqTable

REPLAY_ID = "dlq_replay"


class ReplayError(OxiflowError):
    """The records cannot be replayed as asked (masked values, unknown step, no schema)."""

    exit_code = 2


@dataclass
class ReplayItem:
    id: str | None  # the DLQ record it fixes (None: a new record from the file)
    step: str
    raw: dict[str, Any]
    schema_fp: str | None = None
    masked: list[str] = field(default_factory=list)


def items_from_table(records: list[DlqRecord]) -> list[ReplayItem]:
    out = []
    for r in records:
        if not isinstance(r.raw, dict):
            raise ReplayError(
                f"record {r.id} (step {r.step}) holds a raw line, not a record: {str(r.raw)[:60]!r}",
                hint="export it (`oxiflow dlq export --format jsonl`), write the fixed record as a JSON object in "
                "`raw`, and replay with --from-file",
            )
        out.append(ReplayItem(r.id, r.step, r.raw, r.schema_fp, r.masked))
    return out


def items_from_file(path: Path, table: DlqTable) -> list[ReplayItem]:
    """Lines of ``dlq export --format jsonl`` (``id`` and the fixed ``raw``), or ``{step, raw}``."""
    out = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ReplayError(f"{path}:{n}: not JSON: {exc.msg}", file=str(path), line=n) from None
            if not isinstance(doc, dict) or not isinstance(doc.get("raw"), dict):
                raise ReplayError(f"{path}:{n}: expected an object with `raw` (the fixed record as an object)")
            known = table.get(doc["id"]) if doc.get("id") else None
            step = known.step if known is not None else doc.get("step")
            if not step:
                raise ReplayError(f"{path}:{n}: record {doc.get('id')!r} is not in the DLQ and names no `step`")
            masked = [c for c in (known.masked if known else []) if str(doc["raw"].get(c, "")).startswith("sha256:")]
            out.append(
                ReplayItem(known.id if known else None, step, doc["raw"], known.schema_fp if known else None, masked)
            )
    return out


def check_unmasked(items: list[ReplayItem]) -> None:
    masked = [i for i in items if i.masked]
    if masked:
        first = masked[0]
        raise ReplayError(
            f"{len(masked)} record(s) hold masked PII ({', '.join(first.masked)} of record {first.id}): replaying "
            "them would load hashes",
            hint="export them, put the real values back, and replay with --from-file (or set dlq: {mask_pii: false})",
        )


def _descendants(plan: Plan, step_id: str) -> set[str]:
    out = {step_id}
    for p in plan.steps:  # topological order: a consumer comes after its inputs
        if any(ref in out for ref in p.inputs):
            out.add(p.id)
    return out


def _ancestors(plan: Plan, refs: list[str]) -> set[str]:
    out: set[str] = set()
    todo = list(refs)
    while todo:
        ref = todo.pop()
        if ref not in out:
            out.add(ref)
            todo.extend(plan.step(ref).inputs)
    return out


def replay_plan(plan: Plan, step_id: str, data_path: Path) -> Plan:
    """The pipeline from ``step_id`` on, its (first) input replaced by ``read_parquet`` of ``data_path``."""
    from oxiflow.config.model import StepModel
    from oxiflow.plan.build import build_plan

    try:
        target = plan.step(plan.fused.get(step_id, step_id))
    except KeyError:
        raise ReplayError(f"the pipeline {plan.name} has no step {step_id!r} any more") from None
    is_source = target.spec.kind == "source"
    down = _descendants(plan, target.id)
    keep = set(down)
    for p in plan.steps:
        if p.id in down and p.id != target.id:
            keep |= _ancestors(plan, [ref for ref in p.inputs if ref not in down])
    if not is_source:
        keep |= _ancestors(plan, target.inputs[1:])  # a validate step's reference inputs
    replay_id = target.id if is_source else REPLAY_ID
    steps = [StepModel(name="read_parquet", id=replay_id, inputs=[], config={"path": str(data_path)})]
    for p in plan.steps:
        if p.id not in keep or (is_source and p.id == target.id):
            continue
        inputs = list(p.inputs)
        if p.id == target.id:
            inputs[0] = REPLAY_ID
        steps.append(p.model.model_copy(update={"id": p.id, "inputs": inputs}))
    model = plan.model.model_copy(
        update={"pipeline": steps, "metadata": plan.model.metadata.model_copy(update={"name": plan.name})}
    )
    try:
        return build_plan(model, plan.positions, base_dir=plan.base_dir, file=plan.file, project=plan.project)
    except ConfigError as exc:
        raise ReplayError(f"cannot build the replay plan from step {step_id}: {exc}") from None


def input_schema(plan: Plan, step_id: str) -> pa.Schema:
    """The schema of the rows that enter ``step_id`` (its output for a source), probed like `explain`."""
    from oxiflow.engine.local import LocalEngine, RunOptions

    target = plan.step(plan.fused.get(step_id, step_id))
    engine = LocalEngine(plan, RunOptions(explain=True))
    result = engine.run()
    producer = target.id if target.spec.kind == "source" else engine._producer_of(target.inputs[0])
    if producer not in engine.schemas:
        raise ReplayError(f"could not learn the input schema of step {step_id}: {result.error}")
    return engine.schemas[producer]


def records_table(items: list[ReplayItem], schema: pa.Schema) -> pa.Table:
    """The records as Arrow with ``schema``: one column at a time, values that JSON turned into
    strings (dates, decimals) cast back by Arrow."""
    import pyarrow as pa

    columns = []
    for f in schema:
        values = [i.raw.get(f.name) for i in items]
        try:
            arr = pa.array(values, type=f.type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            try:
                arr = pa.array([None if v is None else str(v) for v in values], pa.string()).cast(f.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise ReplayError(f"column {f.name}: the records' values do not fit {f.type}: {exc}") from None
        columns.append(arr)
    return pa.Table.from_arrays(columns, schema=schema)


def write_records(items: list[ReplayItem], schema: pa.Schema, folder: Path) -> Path:
    import pyarrow.parquet as pq

    path = folder / "dlq-replay.parquet"
    pq.write_table(records_table(items, schema), path)
    return path


def scratch_dir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="oxiflow-replay-")
