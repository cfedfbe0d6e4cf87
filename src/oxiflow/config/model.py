"""Typed models of the pipeline file and the project file (``oxiflow.yaml``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")  # field docstrings: oxiflow.oxi.field_docs


class PipelineMetadata(BaseModel):
    """Descriptive facts; unknown keys are kept (Oxide Flow files carry their own)."""

    model_config = ConfigDict(extra="allow")
    name: str | None = None
    description: str | None = None
    version: str | None = None
    author: str | None = None
    category: str | None = None
    tags: list[str] = Field(default_factory=list)


SchemaMode = Literal["evolve", "freeze", "discard_row", "discard_value"]


class SchemaContractModel(_Strict):
    """Per-entity schema-contract modes (dlt's names; docs/schema-evolution.md)."""

    tables: SchemaMode = "evolve"
    """When the dataset has no registered schema yet (its first write)."""
    columns: SchemaMode = "evolve"
    """When columns are added to or removed from the registered schema."""
    data_type: SchemaMode = "evolve"
    """When a column's values do not fit its registered type, or nulls arrive in a NOT NULL column."""


class StepModel(_Strict):
    name: str
    """The oxi to run (a registered plugin name)."""
    id: str | None = None
    """Identifier other steps use in `inputs` and `${steps.ID.metadata.KEY}`; defaults to the oxi name."""
    inputs: list[str] | None = None
    """Ids of the steps feeding this one; default: the previous step."""
    config: dict[str, Any] = Field(default_factory=dict)
    """The oxi's own configuration."""
    retry_attempts: int = Field(0, ge=0)
    """Extra attempts after a retryable failure."""
    retry_delay_seconds: float = Field(1.0, ge=0)
    """Delay before the first retry; doubles each retry, with jitter."""
    timeout_seconds: float | None = Field(None, gt=0)
    """Per-attempt time limit; the step is interrupted when it runs out."""
    max_memory_mb: int | None = Field(None, gt=0)
    """Memory budget of the step (DuckDB memory_limit, batch sizes)."""
    continue_on_error: bool = False
    """On final failure, log it and pass the step's input on instead of failing the run."""
    dataset: str | None = None
    """Sinks only: the dataset's name in the schema registry (default: the sink's target, e.g.
    `warehouse.duckdb:orders` or `out/orders.parquet`; docs/schema-evolution.md)."""
    contract: str | None = None
    """Sinks only: an ODCS / datacontract-specification file describing the dataset. Turns the schema
    gate on; its schema is the baseline until the dataset has a registered version."""
    schema_contract: SchemaMode | SchemaContractModel | None = None
    """Sinks only: what to do when the data's schema differs from the registered one: one mode for the
    existing columns and types (the first write establishes the schema), or `{tables: ..., columns: ...,
    data_type: ...}`; modes `evolve` (default), `freeze`, `discard_row`, `discard_value`. Turns the schema
    gate on (needs the state store)."""
    compatibility: Literal["backward", "forward", "full", "none"] | None = None
    """Sinks only: the compatibility a new schema version must have with the registered one (Kafka
    schema registry semantics; default `backward`); an incompatible change waits for `oxiflow approve`."""
    # keys whose values were invalid and already reported: validation goes on without them (so one
    # wrong type does not hide the oxi-level errors) but does not check what depends on them
    _invalid: set[str] = PrivateAttr(default_factory=set)

    @property
    def invalid_keys(self) -> set[str]:
        return self._invalid


class PipelineSettings(_Strict):
    memory_limit_mb: int | None = Field(None, gt=0)
    """Memory budget for the whole run (shared by DuckDB work in every step)."""
    batch_size: int = Field(122_880, gt=0)
    """Rows per Arrow batch read from sources."""
    queue_size: int = Field(4, gt=0)
    """Batches buffered between two steps (backpressure)."""
    output_root: str | None = None
    """Sinks may only write below this folder (default: no restriction beyond `..` checks)."""
    dlq_dir: str = ".oxiflow/dlq"
    """Where dead-letter files go (one JSON Lines file per run)."""
    pushdown: bool = True
    """Run a source -> [sql] -> sink chain that is all DuckDB as one DuckDB statement (docs/engine.md)."""


class PipelineModel(_Strict):
    metadata: PipelineMetadata = Field(default_factory=PipelineMetadata)
    environment: dict[str, Any] = Field(default_factory=dict)
    """Defaults for ${VAR}; the process environment wins over them."""
    engine: Literal["local", "spark"] = "local"
    settings: PipelineSettings = Field(default_factory=lambda: PipelineSettings())
    pipeline: list[StepModel] = Field(min_length=1)
    tests: list[dict[str, Any]] = Field(default_factory=list)
    """Pipeline-level tests run by `oxiflow pipeline test`."""


class ProjectInfo(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str | None = None
    version: str | None = None
    description: str | None = None


class ProjectSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    output_dir: str = "./output"
    """The default of `${OUTPUT_DIR}` in the project's pipelines (below the project's `environment`,
    the pipeline's, the process environment and `--var`); relative to the project root."""
    pipeline_dir: str = "./pipelines"
    """Where `oxiflow run NAME` and `oxiflow pipeline ...` look for NAME.yaml (or NAME/pipeline.yaml)."""
    oxis_dir: str = "./oxis"
    """A folder of the project's own oxis: every `*.py` in it is loaded and its oxis registered for
    the project's pipelines (config/project_oxis.py)."""
    state_url: str | None = None
    """Where runs, cursors and locks are kept: an SQLite file path (relative to the project root) or a
    `postgresql://` URL (`?schema=NAME` picks a schema). Default `.oxiflow/state.db`; `$OXIFLOW_STATE_URL`
    and `--state-url` win over it (docs/state.md)."""


class ProjectModel(BaseModel):
    """``oxiflow.yaml``: compatible with the Oxide Flow project file."""

    model_config = ConfigDict(extra="forbid")
    project: ProjectInfo = Field(default_factory=ProjectInfo)
    oxis: Any = None
    """Where oxis come from, Oxide Flow's shape: `{NAME: {source: builtin | MODULE | path.py, version,
    description}}` (config/project_oxis.py)."""
    settings: ProjectSettings = Field(default_factory=ProjectSettings)
    environment: dict[str, Any] = Field(default_factory=dict)
    state_manager: dict[str, Any] = Field(default_factory=dict)
    defaults: dict[str, Any] = Field(default_factory=dict)
