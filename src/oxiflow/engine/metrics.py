"""Per-step and per-run figures, and the conservation check."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class StepMetrics:
    step_id: str
    oxi: str
    kind: str
    reshapes: bool = False
    status: str = "pending"  # pending, running, ok, failed, continued, cancelled
    rows_in: int = 0
    rows_out: int = 0
    rows_rejected: int = 0
    rows_filtered: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    attempts: int = 0
    error: str | None = None
    fused: list[str] = field(default_factory=list)
    pushdown: bool = False  # ran inside one DuckDB statement with its neighbours (plan.pushdown)

    @property
    def balanced(self) -> bool:
        """rows in = rows out + rejected + filtered (not asked of steps that reshape rows)."""
        if self.reshapes or self.status not in ("ok", "continued"):
            return True
        return self.rows_in == self.rows_out + self.rows_rejected + self.rows_filtered

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "balanced": self.balanced}


@dataclass
class RunResult:
    run_id: str
    pipeline: str
    status: str  # ok, failed, cancelled
    steps: list[StepMetrics]
    seconds: float
    error: BaseException | None = None
    dlq_path: str | None = None
    dlq_count: int = 0
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def balanced(self) -> bool:
        return all(s.balanced for s in self.steps)

    @property
    def exit_code(self) -> int:
        if self.status == "ok":
            return 0
        return getattr(self.error, "exit_code", 1) if self.status == "cancelled" else 1

    def to_dict(self) -> dict[str, Any]:
        err = self.error
        return {
            "run_id": self.run_id,
            "pipeline": self.pipeline,
            "status": self.status,
            "seconds": round(self.seconds, 3),
            "balanced": self.balanced,
            "dlq_path": self.dlq_path,
            "dlq_count": self.dlq_count,
            "error": (err.to_dict() if hasattr(err, "to_dict") else {"message": str(err)}) if err else None,
            "steps": [s.to_dict() for s in self.steps],
            "metadata": self.metadata,
        }
