"""sql: queries over named inputs, fan-in joins, fan-out, probe schemas, clear errors (oracle: DuckDB)."""

from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from oxiflow.config.load import load_pipeline
from oxiflow.engine.local import LocalEngine, RunOptions, run_plan

ORDERS = "order_id,customer_id,amount,status\n" + "".join(
    f"{i},{i % 7},{(i * 37) % 500 / 4},{['paid', 'open', 'void'][i % 3]}\n" for i in range(1, 2001)
)
CUSTOMERS = "customer_id,country\n" + "".join(f"{c},{['DE', 'FR', 'NL'][c % 3]}\n" for c in range(6))


def setup(tmp_path: Path) -> None:
    (tmp_path / "orders.csv").write_text(ORDERS)
    (tmp_path / "customers.csv").write_text(CUSTOMERS)


def metrics(result):
    return {s.step_id: (s.rows_in, s.rows_out, s.rows_filtered) for s in result.steps}


@pytest.mark.parametrize("table", ["input", "orders"])
def test_single_input_is_named_by_id_and_as_input(tmp_path: Path, write_pipeline, table: str) -> None:
    setup(tmp_path)
    path = write_pipeline(
        f"""
        settings: {{batch_size: 128}}
        pipeline:
          - {{name: read_csv, id: orders, config: {{path: orders.csv}}}}
          - name: sql
            id: agg
            config:
              query: |
                select status, count(*) as n, sum(amount) as total
                from {table} group by status order by status
          - {{name: write_parquet, config: {{path: out/agg.parquet}}}}
        """
    )
    result = run_plan(load_pipeline(path))
    assert result.status == "ok", result.error
    expected = duckdb.sql(
        f"select status, count(*) as n, sum(amount) as total from read_csv('{tmp_path / 'orders.csv'}') "
        "group by status order by status"
    ).to_arrow_table()
    assert pq.read_table(tmp_path / "out/agg.parquet").equals(expected)
    assert metrics(result)["agg"][:2] == (2000, 3)
    assert result.balanced


def test_two_inputs_joined_fan_in(tmp_path: Path, write_pipeline) -> None:
    setup(tmp_path)
    path = write_pipeline(
        """
        settings: {batch_size: 100, queue_size: 2}
        pipeline:
          - {name: read_csv, id: orders, config: {path: orders.csv}}
          - {name: read_csv, id: customers, config: {path: customers.csv}}
          - name: sql
            id: joined
            inputs: [orders, customers]
            config:
              query: |
                select o.order_id, o.amount, c.country
                from orders o join customers c using (customer_id)
          - {name: write_parquet, config: {path: out/j.parquet}}
        """
    )
    result = run_plan(load_pipeline(path))
    assert result.status == "ok", result.error
    got = pq.read_table(tmp_path / "out/j.parquet").sort_by("order_id")
    expected = duckdb.sql(
        f"select o.order_id, o.amount, c.country from read_csv('{tmp_path / 'orders.csv'}') o "
        f"join read_csv('{tmp_path / 'customers.csv'}') c using (customer_id) order by o.order_id"
    ).to_arrow_table()
    assert got.equals(expected)
    assert got.num_rows == sum(1 for i in range(1, 2001) if i % 7 < 6)  # customer 6 does not exist
    assert metrics(result)["joined"][:2] == (2000 + 6, got.num_rows)
    assert result.balanced


def test_fan_out_two_sinks_read_the_same_step(tmp_path: Path, write_pipeline) -> None:
    setup(tmp_path)
    path = write_pipeline(
        """
        settings: {batch_size: 100, queue_size: 2}
        pipeline:
          - {name: read_csv, id: orders, config: {path: orders.csv}}
          - {name: sql, id: big, config: {query: "select * from input where amount > 60"}}
          - {name: write_parquet, id: a, inputs: [big], config: {path: out/a.parquet}}
          - {name: write_parquet, id: b, inputs: [big], config: {path: out/b.parquet}}
        """
    )
    result = run_plan(load_pipeline(path))
    assert result.status == "ok", result.error
    expected = duckdb.sql(f"select * from read_csv('{tmp_path / 'orders.csv'}') where amount > 60").to_arrow_table()
    a = pq.read_table(tmp_path / "out/a.parquet")
    b = pq.read_table(tmp_path / "out/b.parquet")
    assert a.sort_by("order_id").equals(expected.sort_by("order_id"))
    assert b.equals(a)
    m = metrics(result)
    assert m["a"][:2] == m["b"][:2] == (expected.num_rows, expected.num_rows)
    assert result.balanced


def test_table_aliases(tmp_path: Path, write_pipeline) -> None:
    setup(tmp_path)
    path = write_pipeline(
        """
        pipeline:
          - {name: read_csv, id: raw-orders, config: {path: orders.csv}}
          - {name: sql, id: q, config: {query: "select count(*) as n from o", tables: {raw-orders: o}}}
          - {name: write_parquet, config: {path: out/q.parquet}}
        """
    )
    result = run_plan(load_pipeline(path))
    assert result.status == "ok", result.error
    assert pq.read_table(tmp_path / "out/q.parquet").column("n").to_pylist() == [2000]


def test_probe_gives_schema_without_rows(tmp_path: Path, write_pipeline) -> None:
    setup(tmp_path)
    path = write_pipeline(
        """
        pipeline:
          - {name: read_csv, id: orders, config: {path: orders.csv}}
          - {name: sql, id: q, config: {query: "select order_id, amount * 2 as double_amount, status from orders"}}
        """
    )
    engine = LocalEngine(load_pipeline(path), RunOptions(explain=True))
    result = engine.run()
    assert result.status == "ok", result.error
    schema = engine.schemas["q"]
    assert schema.names == ["order_id", "double_amount", "status"]
    assert str(schema.field("order_id").type) == "int64" and str(schema.field("status").type) == "string"
    assert [s.rows_out for s in result.steps] == [0, 0]


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ("select nope from input", 'column "nope"'),
        ("selec * from input", "syntax error"),
        ("select * from missing_table", "missing_table"),
    ],
)
def test_bad_query_names_step_and_duckdb_message(tmp_path: Path, write_pipeline, query: str, needle: str) -> None:
    setup(tmp_path)
    path = write_pipeline(
        f"""
        pipeline:
          - {{name: read_csv, id: orders, config: {{path: orders.csv}}}}
          - {{name: sql, id: my_query, config: {{query: "{query}"}}}}
          - {{name: write_parquet, config: {{path: out/x.parquet}}}}
        """
    )
    for explain in (True, False):
        result = LocalEngine(load_pipeline(path), RunOptions(explain=explain)).run()
        assert result.status == "failed"
        text = str(result.error)
        assert "step my_query" in text and needle.lower() in text.lower(), text
    assert not (tmp_path / "out/x.parquet").exists()


def test_scanning_an_input_twice_explains_the_workaround(tmp_path: Path, write_pipeline) -> None:
    setup(tmp_path)
    path = write_pipeline(
        """
        pipeline:
          - {name: read_csv, id: orders, config: {path: orders.csv}}
          - {name: sql, id: self_join, config: {query: "select count(*) from orders a join orders b using (order_id)"}}
        """
    )
    result = run_plan(load_pipeline(path))
    assert result.status == "failed"
    assert "MATERIALIZED" in str(result.error) and "step self_join" in str(result.error)
    fixed = write_pipeline(
        """
        pipeline:
          - {name: read_csv, id: orders, config: {path: orders.csv}}
          - name: sql
            id: self_join
            config:
              query: >
                with t as materialized (select * from orders)
                select count(*) as n from t a join t b using (order_id)
          - {name: write_parquet, config: {path: out/n.parquet}}
        """,
        "fixed.yaml",
    )
    result = run_plan(load_pipeline(fixed))
    assert result.status == "ok", result.error
    assert pq.read_table(tmp_path / "out/n.parquet").column("n").to_pylist() == [2000]
