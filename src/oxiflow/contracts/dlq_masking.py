"""PII in the dead-letter queue: the one place where values of PII fields are masked before a record is written.

Every DLQ record goes through :meth:`DlqMasking.apply` (engine/dlq.py calls it): the ``validate`` step, a sink's
contract and schema gate, readers, ``cast``. Which columns are PII comes from the contracts of the run (fields
with ``classification: pii`` or a tag ``pii`` / ``pii:<kind>``), collected before the run starts
(:func:`for_plan`), plus a ``validate`` step's ``dlq.pii_columns``; ``dlq: {mask_pii: false}`` on a ``validate``
step keeps that step's values (and leaves its contract's columns out of the run's set).

Masking replaces a value by ``sha256:`` + hex SHA-256 of salt ‖ value (the ``validate`` step's ``dlq.salt``, else a
random salt per run: hashes then do not correlate across runs) and names the field in ``masked``. A reader's
record holds the raw text line, whose fields cannot be told apart reliably (it is the line that did not parse):
when the run has PII columns the whole line is hashed and ``masked`` is ``["*"]``.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from oxiflow.contracts.model import Dataset
    from oxiflow.oxi import StepContext
    from oxiflow.plan.build import Plan

log = logging.getLogger("oxiflow.dlq")

WHOLE_LINE = "*"  # `masked` of a raw text line hashed as a whole


def hash_value(salt: str, value: Any) -> str:
    return "sha256:" + hashlib.sha256((salt + str(value)).encode()).hexdigest()


@dataclass(frozen=True)
class DlqMasking:
    """Which fields to mask in DLQ records, with which salt; ``enabled=False`` keeps the values."""

    columns: frozenset[str]
    salt: str
    enabled: bool = True

    @property
    def active(self) -> bool:
        return self.enabled and bool(self.columns)

    def apply(self, raw: Any, values: Any, masked: list[str] | None) -> tuple[Any, Any, list[str]]:
        """``raw``, ``values`` and ``masked`` of a record as written."""
        done = set(masked or [])
        if not self.active:
            return raw, values, sorted(done)
        if isinstance(raw, dict):
            done |= {k for k in raw if k in self.columns}
            raw = self._mask(raw)
        elif isinstance(raw, str | bytes) and raw:
            raw = hash_value(self.salt, raw)
            done.add(WHOLE_LINE)
        if isinstance(values, dict):
            done |= {k for k in values if k in self.columns}
            values = self._mask(values)
        return raw, values, sorted(done)

    def show(self, column: str, value: Any) -> str:
        """A value as a reason shows it: ``<pii>`` for a masked column."""
        if self.active and column in self.columns:
            return "<pii>"
        return "NULL" if value is None else repr(value) if isinstance(value, str) else str(value)

    def _mask(self, row: dict[str, Any]) -> dict[str, Any]:
        return {k: (hash_value(self.salt, v) if k in self.columns and v is not None else v) for k, v in row.items()}


def pii_columns(ds: Dataset | None) -> set[str]:
    """The columns of ``ds`` a contract classifies as PII."""
    out = set()
    for f in ds.fields if ds is not None else []:
        tags = [t.lower() for t in f.tags]
        if (f.classification or "").lower() == "pii" or "pii" in tags or any(t.startswith("pii:") for t in tags):
            out.add(f.column)
    return out


def run_masking(dlq: Any) -> DlqMasking | None:
    """The run's policy of a DLQ (None: it has none)."""
    return getattr(dlq, "masking", None) if dlq is not None else None


def protect(ctx: StepContext, columns: set[str], *, salt: str | None = None, enabled: bool = True) -> DlqMasking:
    """Register the policy of the step ``ctx`` runs with its DLQ: the run's PII columns and ``columns``, masked
    unless ``enabled`` is False. Returns it (reasons use it to show ``<pii>``)."""
    run = run_masking(ctx.dlq)
    policy = DlqMasking(
        frozenset(columns | (set(run.columns) if run is not None else set())),
        salt or (run.salt if run is not None else None) or secrets.token_hex(16),
        enabled,
    )
    step_masking = getattr(ctx.dlq, "step_masking", None)
    if step_masking is not None:
        step_masking[ctx.step_id] = policy
    return policy


def for_plan(plan: Plan) -> DlqMasking | None:
    """The run's policy: the PII columns of every contract a step of ``plan`` uses (``validate`` steps, sinks'
    ``contract:``), with the first salt a ``validate`` step configures. None when the plan has no PII columns."""
    columns: set[str] = set()
    salt: str | None = None
    for p in plan.steps:
        contract_path, dataset, table, enabled = None, None, None, True
        if p.spec.name == "validate" and not p.deferred:
            cfg: Any = p.config
            contract_path, dataset = cfg.contract, cfg.dataset
            enabled = cfg.dlq.mask_pii
            if enabled:
                columns |= set(cfg.dlq.pii_columns)
                if cfg.dlq.salt is not None and salt is None:
                    salt = cfg.dlq.salt.get_secret_value() or None
        elif p.spec.kind == "sink" and p.model.contract is not None:
            contract_path, table = p.model.contract, getattr(p.config, "table", None)
        if contract_path is None or not enabled:
            continue
        columns |= _contract_pii(plan.base_dir, str(contract_path), dataset, table)
    if not columns:
        return None
    return DlqMasking(frozenset(columns), salt or secrets.token_hex(16))


def _contract_pii(base_dir: Path, path: str, dataset: str | None, table: str | None) -> set[str]:
    from oxiflow.contracts import load_contract
    from oxiflow.contracts.enforcement import contract_dataset
    from oxiflow.errors import OxiflowError

    p = Path(path).expanduser()
    try:
        contract = load_contract(str(p if p.is_absolute() else base_dir / p))
        return pii_columns(contract_dataset(contract, table, dataset))
    except (OxiflowError, OSError) as exc:  # the step that uses the contract reports it
        log.debug("could not read the PII fields of %s: %s", path, exc)
        return set()
