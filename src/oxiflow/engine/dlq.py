"""Dead-letter queue: rejected raw records with the reason, one JSON Lines file per run.

Each line: ``{"run_id", "pipeline", "step", "oxi", "reason", "file", "line", "column",
"raw", "time"}``. The file is created on the first rejected record, so clean runs leave nothing.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any


class DeadLetterQueue:
    def __init__(self, path: Path, run_id: str, pipeline: str) -> None:
        self.path = path
        self.run_id = run_id
        self.pipeline = pipeline
        self.count = 0
        self._lock = threading.Lock()
        self._fh: IO[str] | None = None

    def put(
        self,
        *,
        step: str,
        oxi: str,
        reason: str,
        raw: Any,
        file: str | None = None,
        line: int | None = None,
        column: str | int | None = None,
    ) -> None:
        record = {
            "run_id": self.run_id,
            "pipeline": self.pipeline,
            "step": step,
            "oxi": oxi,
            "reason": reason,
            "file": file,
            "line": line,
            "column": column,
            "raw": raw,
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        text = json.dumps(record, default=str, ensure_ascii=False)
        with self._lock:
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = self.path.open("a", encoding="utf-8")
            self._fh.write(text + "\n")
            self.count += 1

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None
