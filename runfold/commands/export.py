"""``runfold export`` and ``runfold sql``: the folded runs as tables for analytics.

Both read the latest record of every run from ``agent-runs`` (``read_committed``) and
lay it out as two Arrow tables:

- ``runs``: one row per run: the ``Run`` fields (``inputs``/``outputs`` as JSON text,
  timestamps as ``timestamp[ns, UTC]`` plus exact ``*_ns`` integers, because DuckDB's
  ``TIMESTAMPTZ`` keeps microseconds only), ``last_seq``, ``pending`` (events in the
  reorder buffer), every fold counter, and violation counts (total and per kind);
- ``violations``: the violations each run keeps with their text (the most recent
  ``FoldConfig.max_recent_violations`` per run; the counts in ``runs`` cover all).

``runfold export --format parquet --out DIR`` writes ``DIR/runs.parquet`` and
``DIR/violations.parquet`` (or ``.csv``); ``runfold sql "SELECT ..."`` runs DuckDB over
the same tables, read live from Kafka or, with ``--from DIR``, from an export.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click

from clients import RunfoldSettings
from runfold.commands.options import connected_settings, connection_options
from schemas.errors import ConfigError, RunfoldError

__all__ = ["build_tables", "export", "read_tables", "sql"]

_VIOLATION_KINDS = ("gap", "duplicate", "conflict", "after_terminal", "missing_start")


def _json_text(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def build_tables(views: Iterable[Any]) -> tuple[Any, Any]:
    """``(runs, violations)`` pyarrow tables of folded runs (pure, no Kafka): each a
    :class:`consumers.run_view.RunView` of its ``agent-runs`` record."""
    import pyarrow as pa  # type: ignore[import-untyped]

    from consumers.state import COUNTER_NAMES

    ts = pa.timestamp("ns", tz="UTC")
    runs_schema = pa.schema(
        [
            ("run_id", pa.string()),
            ("status", pa.string()),
            ("agent_spec_digest", pa.string()),
            ("git_sha", pa.string()),
            ("started_at", ts),
            ("finished_at", ts),
            ("started_at_ns", pa.int64()),
            ("finished_at_ns", pa.int64()),
            ("duration_ms", pa.float64()),
            ("inputs", pa.string()),
            ("outputs", pa.string()),
            ("final_state_digest", pa.string()),
            ("last_seq", pa.uint64()),
            ("pending", pa.int64()),
            *((name, pa.int64()) for name in COUNTER_NAMES),
            ("violations", pa.int64()),
            *((f"violations_{kind}", pa.int64()) for kind in _VIOLATION_KINDS),
        ]
    )
    violations_schema = pa.schema(
        [
            ("run_id", pa.string()),
            ("kind", pa.string()),
            ("first_seq", pa.uint64()),
            ("last_seq", pa.uint64()),
            ("message", pa.string()),
        ]
    )
    rows: list[dict[str, Any]] = []
    violation_rows: list[dict[str, Any]] = []
    for view in views:
        state = view.state
        run = json.loads(state.run.to_json())
        started = int(state.started_at)
        finished = None if state.finished_at is None else int(state.finished_at)
        counts = {kind.value: n for kind, n in state.violation_counts.items()}
        row: dict[str, Any] = {
            "run_id": run["run_id"],
            "status": run["status"],
            "agent_spec_digest": run["agent_spec_digest"],
            "git_sha": run["git_sha"],
            "started_at": started,
            "finished_at": finished,
            "started_at_ns": started,
            "finished_at_ns": finished,
            "duration_ms": None if finished is None else (finished - started) / 1e6,
            "inputs": _json_text(run["inputs"]),
            "outputs": _json_text(run["outputs"]),
            "final_state_digest": run["final_state_digest"],
            "last_seq": state.last_seq,
            "pending": view.pending,
            **state.counters(),
            "violations": sum(counts.values()),
        }
        for kind in _VIOLATION_KINDS:
            row[f"violations_{kind}"] = counts.get(kind, 0)
        rows.append(row)
        for violation in state.violations:
            violation_rows.append(
                {
                    "run_id": str(violation.run_id),
                    "kind": violation.kind.value,
                    "first_seq": violation.first_seq,
                    "last_seq": violation.last_seq,
                    "message": violation.message,
                }
            )
    return (
        pa.Table.from_pylist(rows, schema=runs_schema),
        pa.Table.from_pylist(violation_rows, schema=violations_schema),
    )


def read_tables(settings: RunfoldSettings) -> tuple[Any, Any]:
    """Read every run's latest state from ``agent-runs`` and build the two tables."""
    from consumers.service.edge import FoldEdge
    from consumers.service.queries import list_runs

    edge = FoldEdge.default()
    views = list_runs(settings.client_config(), settings.topic_names.runs, edge.read_run)
    return build_tables(views)


def write_tables(runs: Any, violations: Any, out: Path, fmt: str) -> list[Path]:
    """Write ``runs`` and ``violations`` as ``out/runs.<fmt>`` and ``out/violations.<fmt>``."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a directory (it is created if missing)")
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, table in (("runs", runs), ("violations", violations)):
        path = out / f"{name}.{fmt}"
        if fmt == "parquet":
            import pyarrow.parquet as pq  # type: ignore[import-untyped]

            pq.write_table(table, path)
        else:
            import pyarrow.csv as pacsv  # type: ignore[import-untyped]

            pacsv.write_csv(table, path)
        written.append(path)
    return written


@click.command()
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv"]), default="parquet",
              show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Directory to write runs.<format> and violations.<format> into.")
@connection_options
def export(fmt: str, out: Path, bootstrap_servers: str | None, prefix: str | None) -> None:
    """Export the folded runs (and their violations) from agent-runs to Parquet or CSV."""
    if out.exists() and not out.is_dir():  # say so before reading the whole topic
        raise ConfigError(f"--out {out} is a file; give a directory (it is created if missing)")
    settings = connected_settings(bootstrap_servers, prefix)
    runs, violations = read_tables(settings)
    for path in write_tables(runs, violations, out, fmt):
        rows = runs.num_rows if path.stem == "runs" else violations.num_rows
        click.echo(f"{path}: {rows} rows")


def _connect(source: Path | None, settings_args: tuple[str | None, str | None]) -> Any:
    """A DuckDB connection with ``runs`` and ``violations`` (from Kafka or an export)."""
    import duckdb

    con = duckdb.connect()
    if source is None:
        runs, violations = read_tables(connected_settings(*settings_args))
        con.register("runs", runs)
        con.register("violations", violations)
        return con
    for name in ("runs", "violations"):
        for fmt, reader in (("parquet", "read_parquet"), ("csv", "read_csv_auto")):
            path = source / f"{name}.{fmt}"
            if path.is_file():
                literal = str(path).replace("'", "''")
                con.execute(f"CREATE VIEW {name} AS SELECT * FROM {reader}('{literal}')")
                break
        else:
            raise ConfigError(
                f"--from {source}: no {name}.parquet or {name}.csv there; "
                "write one with `runfold export --out DIR`"
            )
    return con


@click.command()
@click.argument("query")
@click.option("--from", "source", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Query an export directory instead of reading agent-runs.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True)
@connection_options
def sql(query: str, source: Path | None, fmt: str, bootstrap_servers: str | None,
        prefix: str | None) -> None:
    """Run a DuckDB query over the tables `runs` and `violations`.

    Example: runfold sql "SELECT status, count(*) FROM runs GROUP BY 1 ORDER BY 2 DESC"
    """
    import duckdb

    con = _connect(source, (bootstrap_servers, prefix))
    try:
        result = con.execute(query)
    except duckdb.Error as exc:
        raise RunfoldError(f"query failed: {exc}") from None
    columns = [d[0] for d in result.description or []]
    rows = result.fetchall()
    if fmt == "json":
        click.echo(json.dumps([dict(zip(columns, row, strict=True)) for row in rows],
                              default=str))
        return
    if fmt == "csv":
        import csv
        import sys

        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    Console().print(table)
    click.echo(f"{len(rows)} row(s)", err=True)
