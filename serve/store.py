"""The materialized view: one SQLite file (WAL) holding what the tailer read from the topics.

Tables::

    runs(run_id, status, agent_spec_digest, started_ns, ..., change_seq, doc)
        the latest agent-runs record of each run: indexed columns for the filters,
        ``doc`` the JSON document the API returns, ``change_seq`` a counter the
        live stream follows (each write of a run takes the next number)
    violations(partition, offset, run_id, kind, first_seq, last_seq, message, kafka_ms)
    events(run_id, seq, kafka_ms, type, body)      the record's bytes; first per (run, seq) wins
    offsets(topic, partition, next_offset)          where the tailer resumes
    meta(key, value)                                what the file was built from

One writer (the tailer's thread, :class:`ViewWriter`) commits each consumed batch
together with its offsets, so a restart resumes exactly where the file is, and a
deleted file is rebuilt from the topics. Readers (:class:`ViewReader`) use one
connection per thread; WAL lets them read while the writer writes.
"""

from __future__ import annotations

import base64
import fcntl
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from schemas import Event, ViolationKind, decode_event
from schemas.errors import ConfigError, RunfoldError

__all__ = [
    "BadCursor",
    "EventRow",
    "RunFilter",
    "RunRow",
    "ViewBatch",
    "ViewReader",
    "ViewWriter",
    "ViolationRow",
    "kind_mask",
    "open_view",
]

_SCHEMA_VERSION = "2"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS offsets(
    topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
    PRIMARY KEY(topic, partition)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs(
    run_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    agent_spec_digest TEXT NOT NULL,
    started_ns INTEGER NOT NULL,
    finished_ns INTEGER,
    events_applied INTEGER NOT NULL,
    violation_mask INTEGER NOT NULL,
    violations INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    stalled_ns INTEGER,
    change_seq INTEGER NOT NULL,
    doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS runs_started ON runs(started_ns, run_id);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status, started_ns, run_id);
CREATE INDEX IF NOT EXISTS runs_agent ON runs(agent_spec_digest, started_ns, run_id);
CREATE INDEX IF NOT EXISTS runs_change ON runs(change_seq);
CREATE TABLE IF NOT EXISTS violations(
    partition INTEGER NOT NULL, offset INTEGER NOT NULL, run_id TEXT NOT NULL,
    kind TEXT NOT NULL, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,
    message TEXT NOT NULL, kafka_ms INTEGER NOT NULL,
    PRIMARY KEY(partition, offset));
CREATE INDEX IF NOT EXISTS violations_run ON violations(run_id);
CREATE TABLE IF NOT EXISTS events(
    run_id TEXT NOT NULL, seq INTEGER NOT NULL, kafka_ms INTEGER NOT NULL,
    type TEXT NOT NULL, body BLOB NOT NULL,
    PRIMARY KEY(run_id, seq)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_age ON events(kafka_ms);
"""
_KIND_BITS = {kind: 1 << index for index, kind in enumerate(ViolationKind)}


class BadCursor(RunfoldError, ValueError):
    """A pagination cursor this view did not hand out."""


def kind_mask(kinds: Iterable[ViolationKind | str]) -> int:
    """The bit mask of violation kinds stored in ``runs.violation_mask``."""
    return sum(_KIND_BITS[ViolationKind(kind)] for kind in set(kinds))


@dataclass(frozen=True, slots=True)
class RunRow:
    """A run's latest agent-runs record as the view stores it."""

    run_id: str
    status: str
    agent_spec_digest: str
    started_ns: int
    finished_ns: int | None
    events_applied: int
    violation_mask: int
    violations: int
    updated_ms: int
    stalled_ns: int | None
    doc: str


@dataclass(frozen=True, slots=True)
class ViolationRow:
    """One agent-run-violations record."""

    partition: int
    offset: int
    run_id: str
    kind: str
    first_seq: int
    last_seq: int
    message: str
    kafka_ms: int


@dataclass(frozen=True, slots=True)
class EventRow:
    """One agent-run-events record: the event's place, and the record's Avro bytes.

    The bytes, not the event's JSON: writing the JSON cost the tailer a quarter of its
    time per event, and a run's events are read far less often than they are written.
    """

    run_id: str
    seq: int
    kafka_ms: int
    type: str
    body: bytes


@dataclass(slots=True)
class ViewBatch:
    """What one consume call produced: written in one transaction with its offsets."""

    runs: dict[str, RunRow] = field(default_factory=dict)
    """Latest row per run in the batch (a compacted topic: the last record wins)."""
    forgotten: set[str] = field(default_factory=set)
    """Runs whose agent-runs key got a tombstone."""
    violations: list[ViolationRow] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    """(topic, partition) -> next offset to read."""

    def __bool__(self) -> bool:
        return bool(self.runs or self.forgotten or self.violations or self.events or self.offsets)


@dataclass(frozen=True)
class RunFilter:
    """The runs list's filters; ``None`` means "any"."""

    status: str | None = None
    agent_spec_digest: str | None = None
    started_after_ns: int | None = None
    started_before_ns: int | None = None
    violation_kind: str | None = None
    stalled: bool | None = None


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    # The offsets commit with the rows; NORMAL under WAL loses at most the last commits on
    # power loss, which the tailer then reads again from Kafka.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA cache_size=-65536")
    return conn


def open_view(path: Path, source: str) -> ViewWriter:
    """Open (or create) the view at ``path`` for the topics named by ``source``.

    A file built from other topics or by another schema version is started afresh, as
    is a file SQLite cannot read; the topics are the truth, the file only a cache.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = _lock(path)
    try:
        writer = ViewWriter(path)
        if writer.meta("source") in (None, source) and writer.meta("schema") in (
            None,
            _SCHEMA_VERSION,
        ):
            writer.set_meta({"source": source, "schema": _SCHEMA_VERSION})
            writer.lock = lock
            return writer
        writer.close()
    except sqlite3.DatabaseError:
        pass
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    writer = ViewWriter(path)
    writer.set_meta({"source": source, "schema": _SCHEMA_VERSION})
    writer.lock = lock
    return writer


def _lock(path: Path) -> IO[bytes]:
    """An exclusive lock on ``path``'s view: two writers would move each other's offsets."""
    handle = open(f"{path}.lock", "ab")  # noqa: SIM115 - held until the writer closes
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise ConfigError(
            f"another runfold serve is using the view {path}; stop it, or give this one "
            "its own data directory (--data-dir)"
        ) from None
    return handle


class ViewWriter:
    """The view's one writer: applies batches and keeps the resume offsets."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock: IO[bytes] | None = None
        """The view's lock file, held while this writer is open (see :func:`open_view`)."""
        self._conn = _connect(path)
        self._conn.executescript(_SCHEMA)
        row = self._conn.execute("SELECT max(change_seq) FROM runs").fetchone()
        self.change_seq: int = row[0] or 0

    def meta(self, key: str) -> str | None:
        """A value of the meta table."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, values: dict[str, str]) -> None:
        """Set meta values."""
        with self._transaction():
            self._conn.executemany(
                "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", values.items()
            )

    def offsets(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> the next offset to read, for every partition read so far."""
        rows = self._conn.execute("SELECT topic, partition, next_offset FROM offsets")
        return {(topic, partition): offset for topic, partition, offset in rows}

    def apply(self, batch: ViewBatch) -> int:
        """Write ``batch`` and its offsets in one transaction; returns the latest change_seq."""
        conn = self._conn
        with self._transaction():
            rows = []
            for run in batch.runs.values():
                self.change_seq += 1
                rows.append(
                    (
                        run.run_id, run.status, run.agent_spec_digest, run.started_ns,
                        run.finished_ns, run.events_applied, run.violation_mask,
                        run.violations, run.updated_ms, run.stalled_ns, self.change_seq, run.doc,
                    )
                )
            conn.executemany(
                "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
            )
            conn.executemany(
                "DELETE FROM runs WHERE run_id = ?", [(run_id,) for run_id in batch.forgotten]
            )
            conn.executemany(
                "INSERT OR IGNORE INTO violations VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (v.partition, v.offset, v.run_id, v.kind, v.first_seq, v.last_seq,
                     v.message, v.kafka_ms)
                    for v in batch.violations
                ],
            )
            conn.executemany(
                "INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?)",
                [(e.run_id, e.seq, e.kafka_ms, e.type, e.body) for e in batch.events],
            )
            conn.executemany(
                "INSERT OR REPLACE INTO offsets VALUES (?, ?, ?)",
                [(topic, part, offset) for (topic, part), offset in batch.offsets.items()],
            )
        return self.change_seq

    def expire_events(self, older_than_ms: int) -> int:
        """Delete events that reached Kafka before ``older_than_ms``; returns how many."""
        with self._transaction():
            cursor = self._conn.execute("DELETE FROM events WHERE kafka_ms < ?", (older_than_ms,))
        return cursor.rowcount

    def _transaction(self) -> _Transaction:
        return _Transaction(self._conn)

    def close(self) -> None:
        """Close the connection and let go of the view's lock."""
        self._conn.close()
        if self.lock is not None:
            self.lock.close()
            self.lock = None


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on an exception)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self._conn.execute("ROLLBACK" if exc_type is not None else "COMMIT")


def encode_cursor(started_ns: int, run_id: str) -> str:
    """The opaque cursor of the page after the run (started_ns, run_id)."""
    return base64.urlsafe_b64encode(json.dumps([started_ns, run_id]).encode()).decode()


def decode_cursor(cursor: str) -> tuple[int, str]:
    """The position a cursor points after; :class:`BadCursor` if it is not one of ours."""
    try:
        started_ns, run_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if isinstance(started_ns, int) and isinstance(run_id, str):
            return started_ns, run_id
    except (ValueError, TypeError):
        pass
    raise BadCursor(f"cursor {cursor[:40]!r} is not a cursor this API handed out")


_SUMMARY_COLUMNS = (
    "run_id, status, agent_spec_digest, started_ns, finished_ns, events_applied, "
    "violation_mask, violations, updated_ms, stalled_ns, change_seq"
)


class ViewReader:
    """Queries over the view; safe to share between threads (one connection per thread)."""

    def __init__(self, path: Path, stall_after_s: float) -> None:
        self.path = path
        self.stall_after_ms = int(stall_after_s * 1000)
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = _connect(self.path)
            conn.execute("PRAGMA query_only=1")
        return conn

    def _stalled_sql(self) -> tuple[str, int]:
        cutoff = int(time.time() * 1000) - self.stall_after_ms
        # Only a RUNNING run can be stalled; saying so lets SQLite use the status index.
        return "(status = 'RUNNING' AND (stalled_ns IS NOT NULL OR updated_ms < ?))", cutoff

    def run(self, run_id: str) -> dict[str, Any] | None:
        """One run's document with its view columns, or ``None``."""
        row = self._conn().execute(
            f"SELECT {_SUMMARY_COLUMNS}, doc FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        if row is None:
            return None
        summary = self._summary(row[:-1])
        return {**summary, **json.loads(row[-1])}

    def list_runs(
        self, where: RunFilter, *, limit: int, cursor: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Runs matching ``where``, newest ``started_at`` first; and the next page's cursor."""
        mask = None if where.violation_kind is None else kind_mask([where.violation_kind])
        conditions = (
            ("status = ?", where.status),
            ("agent_spec_digest = ?", where.agent_spec_digest),
            ("started_ns >= ?", where.started_after_ns),
            ("started_ns < ?", where.started_before_ns),
            ("(violation_mask & ?) != 0", mask),
        )
        clauses = [sql for sql, value in conditions if value is not None]
        params: list[Any] = [value for _, value in conditions if value is not None]
        if where.stalled is not None:
            sql, cutoff = self._stalled_sql()
            clauses.append(sql if where.stalled else f"NOT {sql}")
            params.append(cutoff)
        if cursor is not None:
            clauses.append("(started_ns, run_id) < (?, ?)")
            params.extend(decode_cursor(cursor))
        sql = f"SELECT {_SUMMARY_COLUMNS} FROM runs"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY started_ns DESC, run_id DESC LIMIT ?"
        rows = self._conn().execute(sql, (*params, limit + 1)).fetchall()
        items = [self._summary(row) for row in rows[:limit]]
        more = len(rows) > limit
        last = rows[limit - 1] if more else None
        return items, encode_cursor(last[3], last[0]) if last is not None else None

    def changes(self, after: int, limit: int = 500) -> list[dict[str, Any]]:
        """Run summaries written after change number ``after``, in write order."""
        rows = self._conn().execute(
            f"SELECT {_SUMMARY_COLUMNS} FROM runs WHERE change_seq > ? "
            "ORDER BY change_seq LIMIT ?",
            (after, limit),
        )
        return [self._summary(row) for row in rows]

    def latest_change(self) -> int:
        """The newest change number in the view (0 when empty)."""
        return int(self._conn().execute("SELECT max(change_seq) FROM runs").fetchone()[0] or 0)

    def events(self, run_id: str, *, after_seq: int = 0, limit: int = 10_000) -> list[Event]:
        """The run's events in seq order, from ``after_seq + 1``."""
        rows = self._conn().execute(
            "SELECT body FROM events WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (run_id, after_seq, limit),
        )
        return [decode_event(row[0]) for row in rows]

    def violations(self, run_id: str) -> list[dict[str, Any]]:
        """Every violation record of the run, in the order they were published."""
        rows = self._conn().execute(
            "SELECT kind, first_seq, last_seq, message, kafka_ms FROM violations "
            "WHERE run_id = ? ORDER BY partition, offset",
            (run_id,),
        )
        return [_violation(run_id, *row) for row in rows]

    def recent_violations(self, limit: int) -> list[dict[str, Any]]:
        """The newest violation records of the fleet (by Kafka timestamp)."""
        rows = self._conn().execute(
            "SELECT run_id, kind, first_seq, last_seq, message, kafka_ms FROM violations "
            "ORDER BY kafka_ms DESC, partition, offset DESC LIMIT ?",
            (limit,),
        )
        return [_violation(*row) for row in rows]

    def counts(self) -> dict[str, Any]:
        """Runs by status, stalled runs, violations by kind, events stored."""
        conn = self._conn()
        by_status = dict(conn.execute("SELECT status, count(*) FROM runs GROUP BY status"))
        sql, cutoff = self._stalled_sql()
        stalled = conn.execute(f"SELECT count(*) FROM runs WHERE {sql}", (cutoff,)).fetchone()[0]
        kinds = dict(conn.execute("SELECT kind, count(*) FROM violations GROUP BY kind"))
        events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        return {
            "runs": sum(by_status.values()),
            "runs_by_status": by_status,
            "stalled": stalled,
            "violations_by_kind": kinds,
            "events_stored": events,
        }

    def _summary(self, row: Sequence[Any]) -> dict[str, Any]:
        (run_id, status, agent, started_ns, finished_ns, applied, mask, violations,
         updated_ms, stalled_ns, change_seq) = row
        stalled = status == "RUNNING" and (
            stalled_ns is not None or updated_ms < time.time() * 1000 - self.stall_after_ms
        )
        return {
            "run_id": run_id,
            "status": status,
            "agent_spec_digest": agent,
            "started_at": _rfc3339(started_ns),
            "finished_at": None if finished_ns is None else _rfc3339(finished_ns),
            "events_applied": applied,
            "violation_kinds": [kind.value for kind, bit in _KIND_BITS.items() if mask & bit],
            "violation_total": violations,
            "updated_at": _rfc3339(updated_ms * 1_000_000),
            "stalled": stalled,
            "change": change_seq,
        }

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def _violation(
    run_id: str, kind: str, first_seq: int, last_seq: int, message: str, kafka_ms: int
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "kind": kind,
        "first_seq": first_seq,
        "last_seq": last_seq,
        "message": message,
        "published_at": _rfc3339(kafka_ms * 1_000_000),
    }


def _rfc3339(ns: int) -> str:
    from schemas import Timestamp

    return Timestamp(ns).isoformat()
