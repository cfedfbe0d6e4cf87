"""The schema gate in front of a sink: the registry check the engine makes before a sink writes.

Every sink's dataset has its schema versions in the state store (when the run has one): before it writes,
:func:`check` compares the stream's schema (known before any row) with the latest registered version and reports
the drift (log lines, ``metadata.schema_drift``); after the write the schema is registered when it changed. That is
all for a sink without gate keys (one read of the latest version per run, a write only on change).

A sink step with ``contract:``, ``schema_contract:``, ``compatibility:`` or ``dataset:`` (pipeline-step keys,
config/model.py) also has the gate: the baseline of a new dataset is the contract's schema, the schema-contract
modes apply (contracts/enforce.py) and the compatibility mode is checked (contracts/schema_diff.py). A breaking
change stops the step before anything is written and records a pending approval; after ``oxiflow approve
DATASET`` the next run publishes it. A ``contract:`` is also enforced on the rows, by the ``validate`` step's own
implementation (row rules to the DLQ within ``max_invalid_ratio``, dataset checks before the sink commits).
Modes, compatibility and the ratio may be declared in the contract (contracts/enforcement.py); the step's keys win.
:meth:`Gate.commit`, after a successful write, registers the version written. docs/schema-evolution.md has the rules.
"""

from __future__ import annotations

import logging
import re
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oxiflow.errors import ConfigError, ConfigIssue, OxiflowError, Terminal

if TYPE_CHECKING:
    from collections.abc import Iterator

    import pyarrow as pa

    from oxiflow.config.model import StepModel
    from oxiflow.config.yaml_positions import Positions
    from oxiflow.contracts.enforce import SchemaPlan
    from oxiflow.contracts.model import Contract, Dataset
    from oxiflow.data import OxiData
    from oxiflow.oxi import Sink, StepContext
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


def _has_target(config: Any) -> bool:
    return any(getattr(config, key, None) for key in ("table", "database", "url", "path"))


class Gate:
    """What a sink writes (``data``) and what to record once it has (:meth:`commit`)."""

    def __init__(self, data: OxiData) -> None:
        self.data = data
        self.failure: BaseException | None = None

    def write(self, sink: Sink, ctx: StepContext) -> None:
        """``sink.write`` of ``data``. An error the gate's own stream raised (a failed quality check, a value the
        contract refuses) is re-raised as it is: a sink reading the stream through DuckDB would bury it in its own."""
        data = self.data
        try:
            sink.write(data.with_batches(self._watched(iter(data)), data.schema), ctx)
        except Exception:
            if self.failure is not None:
                raise self.failure from None
            raise

    def _watched(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        try:
            yield from batches
        except Exception as exc:
            self.failure = exc
            raise

    def commit(self) -> None:
        """The sink wrote ``data``: register its schema as the dataset's version."""


def check(step: PlannedStep, config: Any, data: OxiData, ctx: StepContext, state: StateStore | None) -> Gate:
    """The gate for a sink about to write ``data``; raises :class:`SchemaChangeBlocked` when the change needs a
    person's approval. Without schema keys: drift tracking only (nothing at all without a state store)."""
    if not configured(step.model):
        if state is None or ctx.limit_rows == 0 or not _has_target(config):
            return Gate(data)  # a sink without a target (stdout, a pipe) writes no dataset
        return _Tracked(step, config, data, ctx, state).decide()
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


class _Tracked(Gate):
    """A sink without gate keys: its dataset's drift is reported and its schema versions recorded, nothing more."""

    def __init__(self, step: PlannedStep, config: Any, data: OxiData, ctx: StepContext, store: StateStore) -> None:
        super().__init__(data)
        self.step = step
        self.ctx = ctx
        self.store = store
        self.dataset = dataset_name(step, config)
        self.base_version: int | None = None
        self.report: list[dict[str, Any]] = []

    def decide(self) -> Gate:
        from oxiflow.contracts.schema_diff import diff_schemas

        latest = self.store.latest_schema(self.dataset)
        self.ctx.metadata["dataset"] = self.dataset
        if latest is not None:
            self.base_version = latest.version
            self.report = [{**d.to_dict(), "action": "recorded"} for d in diff_schemas(latest.schema, self.data.schema)]
            for item in self.report:
                log.warning("dataset %s: %s: %s", self.dataset, _describe(item), item["action"])
        self.ctx.metadata["schema_drift"] = self.report
        return self

    def commit(self) -> None:
        from oxiflow.state.approvals import Registry

        with self.store.transaction() as tx:
            version = self.store.record_schema(self.dataset, self.data.schema, conn=tx)
            if version != self.base_version and self.base_version is not None:
                Registry(self.store).save_drift(self.dataset, version, self.report, self.ctx.run_id, conn=tx)
        self.ctx.metadata["schema_version"] = version
        if version != self.base_version and self.base_version is not None:
            log.warning("dataset %s: registered schema version %d", self.dataset, version)


class _Registered(Gate):
    def __init__(self, step: PlannedStep, config: Any, data: OxiData, ctx: StepContext, store: StateStore) -> None:
        from oxiflow.contracts.enforce import resolve_modes
        from oxiflow.contracts.enforcement import ContractSettings, contract_dataset, contract_settings
        from oxiflow.state.approvals import Registry

        super().__init__(data)
        self.step = step
        self.ctx = ctx
        self.store = store
        self.registry: Registry = Registry(store)
        self.dataset = dataset_name(step, config)
        self.table = getattr(config, "table", None)
        self.contract: Contract | None = None
        self.ds: Dataset | None = None
        declared = ContractSettings()
        if step.model.contract is not None:
            from oxiflow.contracts import load_contract

            self.contract = load_contract(str(_resolve(step.model.contract, ctx.base_dir)))
            self.ds = contract_dataset(self.contract, self.table)
            declared = contract_settings(self.contract, self.ds)
        # the step's keys win over what the contract declares
        self.modes = resolve_modes(step.model.schema_contract or declared.schema_contract)
        self.compatibility = step.model.compatibility or declared.compatibility or DEFAULT_COMPATIBILITY
        self.approval: Approval | None = None
        self.plan: SchemaPlan | None = None
        self.base_version: int | None = None

    def decide(self) -> Gate:
        from oxiflow.contracts.enforce import Conformer, plan_schema
        from oxiflow.contracts.enforcement import contract_shape
        from oxiflow.contracts.schema_diff import compatibility_problems
        from oxiflow.state.approvals import fingerprint

        model = self.step.model
        self.registry.save_settings(
            self.dataset, compatibility=self.compatibility, schema_contract=self.modes, contract=model.contract,
            pipeline=self.ctx.pipeline or None, step=self.step.id,
        )  # fmt: skip
        latest = self.store.latest_schema(self.dataset)
        shape = None
        base = latest.schema if latest is not None else None
        if self.ds is not None:
            contract_base, shape = contract_shape(self.ds, self.data.schema)
            base = base if base is not None else contract_base
        self.base_version = latest.version if latest is not None else None
        plan = self.plan = plan_schema(base, self.data.schema, self.modes, shape, new=latest is None)
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
        if self.contract is not None and self.ds is not None:
            self.data = self._enforce_contract(plan)
        elif not plan.passthrough:
            conformer = Conformer(plan, self.ctx, self.dataset)
            self.data = self.data.with_batches(conformer.stream(iter(self.data)), plan.target)
        return self

    def _enforce_contract(self, plan: SchemaPlan) -> OxiData:
        """The conformed stream through the contract's rules and checks: the ``validate`` step's implementation."""
        from oxiflow.contracts.validate import ValidateConfig, enforce

        assert self.contract is not None and self.ds is not None and self.step.model.contract is not None
        cfg = ValidateConfig(contract=str(_resolve(self.step.model.contract, self.ctx.base_dir)), dataset=self.ds.name)
        return enforce(cfg, [self.data], self.ctx, loaded=(self.contract, self.ds), plan=plan, dataset=self.dataset)

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
