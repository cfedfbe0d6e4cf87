"""Shared helpers of the database integration tests: service URLs, unique names, oxi runners."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa

from oxiflow.data import OxiData
from oxiflow.engine.local import new_run_id
from oxiflow.oxi import StepContext

PG_URL = os.environ.get("OXIFLOW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("OXIFLOW_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")


def unique(prefix: str = "t") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def ctx(base: Path, name: str = "step", **kw: Any) -> StepContext:
    return StepContext(step_id=name, oxi_name=name, run_id=new_run_id(), base_dir=base, **kw)


def read_all(source: Any, c: StepContext) -> pa.Table:
    data = source.read(c)
    return pa.Table.from_batches(list(data), schema=data.schema)


def write(sink: Any, table: pa.Table, c: StepContext) -> None:
    sink.write(OxiData.from_table(table), c)
