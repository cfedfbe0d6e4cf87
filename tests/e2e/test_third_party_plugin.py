"""A plugin package built outside oxiflow is found through its entry point and runs."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from _cli import oxiflow, write

from oxiflow.testing import check_oxi

PLUGIN = '''
"""A third-party oxi: multiply a numeric column."""

import pyarrow as pa
import pyarrow.compute as pc

from oxiflow.oxi import BatchTransform, OxiConfig, oxi


class ScaleConfig(OxiConfig):
    column: str
    """Column to multiply."""
    factor: float = 2.0
    """Multiplier."""


@oxi(
    "scale_column",
    kind="transform",
    config=ScaleConfig,
    summary="Multiply one column by a factor.",
    example="- name: scale_column\\n  config:\\n    column: amount\\n    factor: 3",
)
class ScaleColumn(BatchTransform):
    def transform_batch(self, batch, ctx):
        i = batch.schema.get_field_index(self.config.column)
        scaled = pc.multiply(batch.column(i).cast(pa.float64()), self.config.factor)
        return batch.set_column(i, self.config.column, scaled)
'''

DIST = "oxiflow_scale_plugin-0.0.1"
META = {
    "METADATA": "Metadata-Version: 2.1\nName: oxiflow-scale-plugin\nVersion: 0.0.1\n",
    "WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    "entry_points.txt": "[oxiflow.oxis]\nscale_column = oxiflow_scale:ScaleColumn\n",
}


def build_wheel(folder: Path) -> Path:
    """A wheel is a zip with a .dist-info folder; writing it directly needs no build backend."""
    files = {
        "oxiflow_scale.py": textwrap.dedent(PLUGIN).lstrip(),
        **{f"{DIST}.dist-info/{k}": v for k, v in META.items()},
    }
    record = [f"{name},sha256={_digest(text)},{len(text.encode())}" for name, text in files.items()]
    files[f"{DIST}.dist-info/RECORD"] = "\n".join([*record, f"{DIST}.dist-info/RECORD,,"]) + "\n"
    path = folder / f"{DIST}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path


def _digest(text: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()


def test_third_party_plugin_runs_and_is_listed(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    site = tmp_path / "site"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}

    (tmp_path / "in.csv").write_text("id,amount\n1,1.5\n2,-2\n3,10\n", encoding="utf-8")
    write(
        tmp_path / "p.yaml",
        """
        pipeline:
          - name: read_csv
            config: {path: in.csv}
          - name: scale_column
            config: {column: amount, factor: 3}
          - name: write_parquet
            config: {path: out.parquet}
        """,
    )
    r = oxiflow("run", "p.yaml", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    got = pq.read_table(tmp_path / "out.parquet")
    assert got.column("id").to_pylist() == [1, 2, 3]
    assert got.column("amount").to_pylist() == [4.5, -6.0, 30.0]
    assert got.schema.field("amount").type == pa.float64()

    listed = oxiflow("plugins", "list", "--json", cwd=tmp_path, env=env)
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows["scale_column"]["origin"] == "oxiflow-scale-plugin"
    assert rows["scale_column"]["kind"] == "transform"
    described = oxiflow("plugins", "describe", "scale_column", "--json", cwd=tmp_path, env=env)
    fields = {f["name"]: f for f in json.loads(described.stdout)["config"]}
    assert fields["factor"] == {
        "name": "factor",
        "type": "float",
        "required": False,
        "default": 2.0,
        "description": "Multiplier.",
    }

    # Without the plugin on the path the same file is a config error naming the oxi.
    missing = oxiflow("validate", "p.yaml", cwd=tmp_path)
    assert missing.returncode == 2
    assert "unknown oxi 'scale_column'" in missing.stderr


def test_the_plugin_passes_the_conformance_kit(tmp_path: Path) -> None:
    """What a plugin's own test suite runs: oxiflow.testing.check_oxi on its registration."""
    import importlib.util

    source = tmp_path / "oxiflow_scale.py"  # a real file: field docs are read from the source
    source.write_text(textwrap.dedent(PLUGIN), encoding="utf-8")
    spec = importlib.util.spec_from_file_location("oxiflow_scale_kit", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # inspect finds a class's source through its module
    spec.loader.exec_module(module)
    sample = pa.table({"id": [1, 2, 3], "amount": [1.5, -2.0, 10.0]})
    report = check_oxi(module.ScaleColumn, config={"column": "amount", "factor": 3}, sample=sample, workdir=tmp_path)
    ran = {r.name for r in report.results if not r.skipped}
    assert {"config_model", "config_documented", "example", "transform_schema", "probe_schema", "conservation"} <= ran
    assert report.passed, str(report)
