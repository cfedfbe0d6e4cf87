"""`oxiflow explain`: the plan with every step's inputs and output schema.

Schemas are probed by running the pipeline with sources limited to zero rows and sinks
skipped: each step computes its real output schema from its real input schema, without reading
the data or writing anything.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from oxiflow.plan.build import Plan


def schema_fields(schema: pa.Schema) -> list[dict[str, Any]]:
    return [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in schema]


def explain_plan(plan: Plan, *, probe: bool = True) -> dict[str, Any]:
    schemas: dict[str, pa.Schema] = {}
    errors: dict[str, str] = {}
    if probe:
        from oxiflow.engine.local import LocalEngine, RunOptions

        engine = LocalEngine(plan, RunOptions(explain=True))
        result = engine.run()
        schemas = engine.schemas
        for m in result.steps:
            if m.status == "failed" and m.error:
                errors[m.step_id] = m.error
    steps = []
    for s in plan.steps:
        entry: dict[str, Any] = {
            "id": s.id,
            "oxi": s.spec.name,
            "kind": s.spec.kind,
            "inputs": s.inputs,
        }
        if s.fused_from is not None:
            entry["fused"] = f"{s.fused_from.id} ({s.fused_from.spec.name}) + {s.id}: one streaming scan"
        chain = next((pd for pd in plan.pushdowns.values() if s.id in {m.id for m in [*pd.members, pd.sink]}), None)
        if chain is not None:
            entry["pushdown"] = chain.describe()
        if s.model.timeout_seconds:
            entry["timeout_seconds"] = s.model.timeout_seconds
        if s.model.retry_attempts:
            entry["retry_attempts"] = s.model.retry_attempts
        if s.id in schemas:
            entry["schema"] = schema_fields(schemas[s.id])
        elif s.spec.kind == "sink":
            entry["schema"] = None
        if s.id in errors:
            entry["error"] = errors[s.id]
        steps.append(entry)
    return {"pipeline": plan.name, "file": str(plan.file) if plan.file else None, "steps": steps}
