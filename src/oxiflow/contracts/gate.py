"""The schema gate in front of a sink: the registry check the engine makes before a sink writes.

A sink step with ``contract:``, ``schema_contract:``, ``compatibility:`` or ``dataset:`` (pipeline-step keys,
config/model.py) has its dataset's schema versions in the state store. Before it writes,
:func:`check` compares the stream's schema (known before any row) with the latest registered version
(or, for a new dataset, the contract's schema), reports the drift (log lines, ``metadata.schema_drift``),
applies the schema-contract modes (contracts/enforce.py) and checks the compatibility mode
(contracts/schema_diff.py). A breaking change stops the step before anything is written and records a
pending approval; after ``oxiflow approve DATASET`` the next run publishes it. :meth:`Gate.commit`, after a
successful write, registers the version written. Steps without those keys pay one attribute check.
docs/schema-evolution.md has the rules.
"""

from __future__ import annotations

import logging
import re
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oxiflow.errors import ConfigError, ConfigIssue, OxiflowError, Terminal

if TYPE_CHECKING:
    import pyarrow as pa

    from oxiflow.config.model import StepModel
    from oxiflow.config.yaml_positions import Positions
    from oxiflow.contracts.enforce import SchemaPlan
    from oxiflow.data import OxiData
    from oxiflow.oxi import StepContext
    from oxiflow.plan.build import PlannedStep
    from oxiflow.state.approvals import Approval, Registry
    from oxiflow.state.store import StateStore

log = logging.getLogger("oxiflow.schema")

KEYS = ("dataset", "contract", "schema_contract", "compatibility")
DEFAULT_COMPATIBILITY = "backward"
_PASSWORD = re.compile(r"(://[^:/@\s]+):[^/@\s]*@")


class SchemaChangeBlocked(Terminal, OxiflowError):
    """A run would publish a schema change its dataset's contract does not allow; nothing was written."""


def configured(model: StepModel) -> bool:
    """Whether the step has the schema gate (any of its keys set)."""
    return any(getattr(model, key, None) is not None for key in KEYS)


def config_issues(
    model: StepModel, kind: str, base_dir: Path, pos: Positions, path: tuple[Any, ...]
) -> list[ConfigIssue]:
    """Validate-time checks: the keys belong on sinks, and the contract file must load."""
    if not configured(model):
        return []
    used = [key for key in KEYS if getattr(model, key, None) is not None]
    if kind != "sink":
        return [
            pos.issue(
                f"`{key}` is only allowed on sink steps; {model.name} is a {kind}",
                (*path, key),
                key=True,
                hint="put it on the step that writes the dataset",
            )
            for key in used
        ]
    if model.contract is not None:
        from oxiflow.contracts import load_contract
        from oxiflow.contracts.model import ContractError

        try:
            load_contract(str(_resolve(model.contract, base_dir)))
        except ContractError as exc:
            return [pos.issue(f"contract: {exc.message}", (*path, "contract"), hint=exc.hint)]
        except OSError as exc:
            return [pos.issue(f"contract: cannot read {model.contract}: {exc.strerror}", (*path, "contract"))]
    return []


def dataset_name(step: PlannedStep, config: Any = None) -> str:
    """The dataset a sink writes: its ``dataset:`` key, else its target as configured: ``DATABASE:TABLE``
    (``write_duckdb``), ``URL:TABLE`` with the password left out (SQL sinks), ``PATH`` (file sinks); else
    ``PIPELINE.STEP``-like ``step ID``."""
    if step.model.dataset:
        return step.model.dataset
    config = config if config is not None else step.config
    table = getattr(config, "table", None)
    target = getattr(config, "database", None) or getattr(config, "url", None) or getattr(config, "path", None)
    if target is not None:
        target = _PASSWORD.sub(r"\1@", str(target))
    if table and target:
        return f"{target}:{table}"
    return str(table or target or step.id)


class Gate:
    """What a sink writes (``data``) and what to record once it has (:meth:`commit`)."""

    def __init__(self, data: OxiData) -> None:
        self.data = data

    def commit(self) -> None:
        """The sink wrote ``data``: register its schema as the dataset's version."""


def check(step: PlannedStep, config: Any, data: OxiData, ctx: StepContext, state: StateStore | None) -> Gate:
    """The gate for a sink about to write ``data``; raises :class:`SchemaChangeBlocked` when the change needs a
    person's approval. A no-op when the step has no schema keys."""
    if not configured(step.model):
        return Gate(data)
    if state is None:
        raise ConfigError(
            [
                ConfigIssue(
                    f"step {step.id} has a schema contract, whose schema versions live in the state store",
                    hint="run it without --no-state",
                )
            ],
            step=step.id,
        )
    return _Registered(step, config, data, ctx, state).decide()


class _Registered(Gate):
    def __init__(self, step: PlannedStep, config: Any, data: OxiData, ctx: StepContext, store: StateStore) -> None:
        from oxiflow.contracts.enforce import resolve_modes
        from oxiflow.state.approvals import Registry

        super().__init__(data)
        self.step = step
        self.ctx = ctx
        self.store = store
        self.registry: Registry = Registry(store)
        self.dataset = dataset_name(step, config)
        self.table = getattr(config, "table", None)
        self.modes = resolve_modes(step.model.schema_contract)
        self.compatibility = step.model.compatibility or DEFAULT_COMPATIBILITY
        self.approval: Approval | None = None
        self.plan: SchemaPlan | None = None
        self.base_version: int | None = None

    def decide(self) -> Gate:
        from oxiflow.contracts.enforce import Conformer, plan_schema
        from oxiflow.contracts.schema_diff import compatibility_problems
        from oxiflow.state.approvals import fingerprint

        model = self.step.model
        self.registry.save_settings(
            self.dataset, compatibility=self.compatibility, schema_contract=self.modes, contract=model.contract,
            pipeline=self.ctx.pipeline or None, step=self.step.id,
        )  # fmt: skip
        latest = self.store.latest_schema(self.dataset)
        base = latest.schema if latest is not None else self._contract_schema(self.data.schema)
        self.base_version = latest.version if latest is not None else None
        plan = self.plan = plan_schema(base, self.data.schema, self.modes)
        breaking = list(plan.blocked)
        if plan.base is not None:
            breaking += compatibility_problems(plan.base, plan.target, self.compatibility)
        report = plan.report()
        self.ctx.metadata["dataset"] = self.dataset
        self.ctx.metadata["schema_drift"] = report
        for item in report:
            log.warning("dataset %s: %s: %s", self.dataset, _describe(item), item["action"])
        if breaking:
            schema_fp = fingerprint(plan.target)
            self.approval = self.registry.approved(self.dataset, schema_fp)
            if self.approval is None:
                self.registry.request(
                    self.dataset, schema_fp, breaking, base_version=self.base_version,
                    pipeline=self.ctx.pipeline or None, step=self.step.id, run_id=self.ctx.run_id,
                )  # fmt: skip
                raise self._blocked(breaking)
            log.warning(
                "dataset %s: breaking change approved by %s (%s)",
                self.dataset, self.approval.approved_by, self.approval.reason or "no reason given",
            )  # fmt: skip
        if not plan.passthrough:
            conformer = Conformer(plan, self.ctx, self.dataset)
            self.data = self.data.with_batches(conformer.stream(iter(self.data)), plan.target)
        return self

    def commit(self) -> None:
        plan = self.plan
        if plan is None or plan.reject_all is not None:
            return  # nothing of this schema was written
        with self.store.transaction() as tx:
            version = self.store.record_schema(self.dataset, plan.target, conn=tx)
            if version != self.base_version:
                self.registry.save_drift(self.dataset, version, plan.report(), self.ctx.run_id, conn=tx)
            if self.approval is not None:
                self.registry.mark_applied(self.approval.id, version, self.ctx.run_id, conn=tx)
        self.ctx.metadata["schema_version"] = version
        if version != self.base_version:  # a new version of a known dataset is news; a first one is not
            log.log(logging.INFO if self.base_version is None else logging.WARNING,
                    "dataset %s: registered schema version %d", self.dataset, version)  # fmt: skip

    def _contract_schema(self, incoming: pa.Schema) -> pa.Schema | None:
        """The contract's dataset as an Arrow schema (the baseline of a dataset with no version yet); a field
        whose type the contract leaves open takes the data's type."""
        if self.step.model.contract is None:
            return None
        import pyarrow as pa

        from oxiflow.contracts import load_contract
        from oxiflow.contracts.types import declared_type, normalize_logical

        contract = load_contract(str(_resolve(self.step.model.contract, self.ctx.base_dir)))
        names = {d.name for d in contract.datasets} | {d.table for d in contract.datasets}
        ds = contract.dataset(self.table if self.table in names else None)
        logical = {
            "integer": pa.int64(), "number": pa.float64(), "string": pa.string(), "boolean": pa.bool_(),
            "date": pa.date32(), "timestamp": pa.timestamp("us"),
        }  # fmt: skip
        fields = []
        for f in ds.fields:
            t = declared_type(f) or logical.get(normalize_logical(f.logical_type) or "")
            if t is None:
                t = incoming.field(f.column).type if f.column in incoming.names else pa.string()
            fields.append(pa.field(f.column, t, nullable=not f.required))
        return pa.schema(fields)

    def _blocked(self, breaking: list[str]) -> SchemaChangeBlocked:
        changes = "; ".join(breaking)
        command = f"oxiflow approve {shlex.quote(self.dataset)} --reason '...'"
        return SchemaChangeBlocked(
            f"dataset {self.dataset}: the run would publish a breaking schema change "
            f"(compatibility: {self.compatibility}, schema_contract: {_modes_text(self.modes)}): {changes}. "
            "Nothing was written; a pending approval is recorded",
            step=self.step.id,
            hint=f"to accept it: `{command}`, then run again; or fix the data or the step's schema_contract",
        )


def _describe(item: dict[str, Any]) -> str:
    from oxiflow.contracts.schema_diff import Drift

    return Drift(item["column"], item["kind"], item["old"], item["new"]).describe()


def _modes_text(modes: dict[str, str]) -> str:
    values = set(modes.values())
    return values.pop() if len(values) == 1 else ", ".join(f"{k}={v}" for k, v in modes.items())


def _resolve(path: str, base_dir: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else base_dir / p
