"""write_arrow: IPC file (Feather v2) and stream, compression, read back with pyarrow.ipc (the oracle)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.ipc as ipc
import pytest

from oxiflow.data import OxiData
from oxiflow.errors import DataError
from oxiflow.oxi import StepContext
from oxiflow.oxis.files.arrow_ipc import WriteArrow, WriteArrowConfig

ROWS = pa.table(
    {
        "id": pa.array([1, 2, 3], pa.int64()),
        "tags": pa.array([["a"], [], None], pa.list_(pa.string())),
        "user": pa.array([{"n": "x"}, {"n": None}, None], pa.struct([("n", pa.string())])),
    },
    metadata={b"owner": b"team"},
)


def write(tmp_path: Path, **cfg: object) -> Path:
    ctx = StepContext("w", "write_arrow", "t", base_dir=tmp_path)
    WriteArrow(WriteArrowConfig(**cfg)).write(OxiData.from_table(ROWS), ctx)  # type: ignore[arg-type]
    return tmp_path / str(cfg["path"])


@pytest.mark.parametrize("compression", ["none", "lz4", "zstd"])
def test_file_format_reads_back_identical(tmp_path: Path, compression: str) -> None:
    path = write(tmp_path, path="out.arrow", compression=compression)
    with ipc.open_file(path) as reader:
        got = reader.read_all()
    assert got.equals(ROWS) and got.schema.metadata == {b"owner": b"team"}
    assert feather.read_table(str(path)).to_pylist() == ROWS.to_pylist()  # Feather v2 is the IPC file


def test_stream_format(tmp_path: Path) -> None:
    path = write(tmp_path, path="out.arrows", format="stream", compression="zstd")
    with ipc.open_stream(path) as reader:
        assert reader.read_all().equals(ROWS)
    with pytest.raises(pa.ArrowInvalid):
        ipc.open_file(path)  # a stream has no file footer


def test_compression_makes_repetitive_data_smaller(tmp_path: Path) -> None:
    big = pa.table({"s": ["the same text, again and again"] * 50_000})
    sizes = {}
    for compression in ("none", "zstd"):
        ctx = StepContext("w", "write_arrow", "t", base_dir=tmp_path)
        WriteArrow(WriteArrowConfig(path=f"{compression}.arrow", compression=compression)).write(  # type: ignore[arg-type]
            OxiData.from_table(big), ctx
        )
        sizes[compression] = (tmp_path / f"{compression}.arrow").stat().st_size
    assert sizes["zstd"] * 10 < sizes["none"]


def test_overwrite_false_refuses_an_existing_file(tmp_path: Path) -> None:
    (tmp_path / "out.arrow").write_bytes(b"keep me")
    with pytest.raises(DataError, match="exists and overwrite is false"):
        write(tmp_path, path="out.arrow", overwrite=False)
    assert (tmp_path / "out.arrow").read_bytes() == b"keep me"
