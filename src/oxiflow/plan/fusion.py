"""Fusion rules: rewrite adjacent steps that run better as one.

``read_file -> parse_csv`` and ``read_file -> parse_json`` become one streaming scan of the
file, so a large file is never loaded into memory as text. A parser oxi opts in by defining
``scan_file(reader_config, ctx) -> OxiData``; the folded ``read_file`` step still reports its
metadata (``path``, ``size``, ``content_type``) under its own id.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from oxiflow.plan.build import Plan


def apply_fusions(plan: Plan) -> None:
    folded: list[str] = []
    for step in plan.steps:
        if step.fused_from is not None or len(step.inputs) != 1 or step.deferred:
            continue
        upstream = next((s for s in plan.steps if s.id == step.inputs[0]), None)
        if upstream is None or upstream.spec.name != "read_file" or upstream.deferred:
            continue
        if getattr(upstream.config, "binary", False):
            continue
        if not hasattr(step.spec.factory, "scan_file"):
            continue
        if len(plan.consumers(upstream.id)) != 1:
            continue  # the text is also used elsewhere: keep the steps apart
        step.fused_from = upstream
        step.inputs = []
        folded.append(upstream.id)
        plan.fused[upstream.id] = step.id
    if folded:
        plan.steps = [s for s in plan.steps if s.id not in folded]
