"""oxiflow: schema-aware data pipelines of Arrow-streaming oxis.

The public API is what ``__all__`` names (pinned by a test); everything else may change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "BatchTransform",
    "OxiConfig",
    "OxiData",
    "OxiSpec",
    "Sink",
    "Source",
    "StepContext",
    "Transform",
    "__version__",
    "load_pipeline",
    "oxi",
    "run_pipeline",
]

if TYPE_CHECKING:
    from oxiflow.config.load import load_pipeline
    from oxiflow.data import OxiData
    from oxiflow.oxi import BatchTransform, OxiConfig, OxiSpec, Sink, Source, StepContext, Transform, oxi

_LAZY = {
    "OxiData": "oxiflow.data",
    "BatchTransform": "oxiflow.oxi",
    "OxiConfig": "oxiflow.oxi",
    "OxiSpec": "oxiflow.oxi",
    "Sink": "oxiflow.oxi",
    "Source": "oxiflow.oxi",
    "StepContext": "oxiflow.oxi",
    "Transform": "oxiflow.oxi",
    "oxi": "oxiflow.oxi",
    "load_pipeline": "oxiflow.config.load",
}


def __getattr__(name: str) -> Any:
    # Lazy so `import oxiflow` (and `oxi --help`) does not pay for pyarrow/pydantic.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(module), name)


def run_pipeline(path: str, variables: dict[str, str] | None = None) -> Any:
    """Load, validate and run a pipeline file; returns the RunResult."""
    from oxiflow.config.load import load_pipeline
    from oxiflow.engine.local import RunOptions, run_plan

    plan = load_pipeline(path, variables=variables)
    return run_plan(plan, RunOptions(variables=dict(variables or {})))
