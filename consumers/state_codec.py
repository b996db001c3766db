"""RunState to and from the record of ``schemas/avro/RunState.v2.avsc`` (the changelog's),
and to and from ``RunSummary.v1.avsc`` (``agent-runs``: the same first six fields,
then the reorder buffer counted; :func:`summary_to_record`, :func:`summary_from_record`).

Two forms of the record: its values (:class:`~schemas.avro_binary.StateRecord`, which
:mod:`schemas.avro_binary` writes and reads as bytes; :func:`to_values`,
:func:`from_values`) and the plain dict fastavro writes and reads (:func:`to_record`,
:func:`from_record`, the general path for any schema version).

The record holds ``run`` in the shape of ``runfold.Run`` (JSON values as serde JSON
text), counters, the violation summary, and a ``restore`` part with the reorder
buffer (events as serde JSON, each with its content digest), the digest window and
the declared-missing ranges. ``from_record(to_record(s), config) == s`` for a state
built with ``config``.

Avro ``long`` is signed: a seq of 2**63 or more cannot be written and raises
:class:`~schemas.errors.EncodeError` (the event codec refuses such events too).
"""

from __future__ import annotations

import sys
from array import array
from collections import deque
from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Any
from uuid import UUID

from consumers.state import (
    COUNTER_NAMES,
    DEFAULT_CONFIG,
    FIRST_RING,
    FoldConfig,
    RunState,
    relaid_ring,
    shared_text,
)
from schemas import Event, RunStatus, Timestamp, Violation, ViolationKind
from schemas.avro_binary import RunRecord, StateRecord, SummaryRecord
from schemas.errors import EncodeError, SchemaError

# to_values/from_values serve consumers.state_bytes (the byte path), the summary_* forms
# and oldest_pending consumers.run_view and the service's agent-runs record; the package's
# public API stays the RunState record form.
__all__ = ["from_record", "to_record"]

_LONG_MAX = 2**63 - 1
_LITTLE = sys.byteorder == "little"
_KINDS = list(ViolationKind)
_counters = attrgetter(*COUNTER_NAMES)
# _record(StateRecord, values): the NamedTuple without its Python-level __new__ (a third
# of its cost; a state is written per run per transaction). ``values`` must be complete.
_record = tuple.__new__


def _compile_set_counters() -> Callable[[RunState, Sequence[int]], None]:
    # One generated assignment sets every counter (a setattr loop costs several times more).
    env: dict[str, Any] = {}
    targets = ", ".join(f"state.{name}" for name in COUNTER_NAMES)
    exec(f"def set_counters(state, values):\n    ({targets},) = values\n", env)  # noqa: S102
    set_counters: Callable[[RunState, Sequence[int]], None] = env["set_counters"]
    return set_counters


_set_counters = _compile_set_counters()


def _long(value: int, what: str, run_id: UUID) -> int:
    if value > _LONG_MAX:
        raise EncodeError(
            f"run {run_id}: {what} = {value} does not fit an Avro long (at most 2**63 - 1); "
            "the state cannot be written"
        )
    return value


def _ring_bytes(digests: array[int]) -> bytes:
    if _LITTLE:
        return digests.tobytes()
    swapped = array("Q", digests)
    swapped.byteswap()
    return swapped.tobytes()


def _ring_from(data: bytes) -> array[int]:
    ring = array("Q")
    ring.frombytes(data)
    if not _LITTLE:
        ring.byteswap()
    return ring


def to_values(state: RunState) -> StateRecord:
    """The ``runfold.RunState`` record's values of ``state``, for :mod:`schemas.avro_binary`."""
    finished = state.finished_at
    counts = state.violation_counts
    pending = state.pending_events
    run = _record(
        RunRecord,
        (
            str(state.run_id),
            state.agent_spec_digest,
            state.git_sha,
            int(state.started_at),
            None if finished is None else int(finished),
            state.status,
            state.inputs_json,
            state.outputs_json,
            state.final_state_digest,
        ),
    )
    return _record(
        StateRecord,
        (
            run,
            state.last_seq,
            _counters(state),
            [counts[kind] for kind in _KINDS],
            state.recent_violations,
            state.stalled_since,
            state.source_offset,
            state.has_identity,
            int(state.stream_time),
            [
                (seq, digest.to_bytes(8, "little"), event.to_json())
                for seq, (event, digest) in sorted(pending.items())
            ]
            if pending
            else (),
            _ring_bytes(state.digests),
            state.missing,
        ),
    )


def oldest_pending(state: RunState) -> int | None:
    """The timestamp of the oldest event in ``state``'s reorder buffer; None when empty."""
    return state.pending_oldest_ts if state.pending_events else None


def from_values(values: StateRecord, config: FoldConfig = DEFAULT_CONFIG) -> RunState:
    """The RunState of a ``runfold.RunState`` record's values (bounds from ``config``).

    A digest window of another size is re-laid by seq, and only the newest
    ``max_recent_violations`` violations are kept.
    """
    state = _from_head(values, config)
    state.source_offset = values.source_offset
    state.has_identity = values.has_identity
    state.stream_time = values.stream_time
    if values.pending:
        pending = state.pending_events = {}
        for seq, digest, event_json in values.pending:
            pending[seq] = (Event.from_json(event_json), int.from_bytes(digest, "little"))
        state.pending_oldest_ts = min(int(event.timestamp) for event, _ in pending.values())
    _restore_window(state, _ring_from(values.digest_window))
    state.missing = list(values.missing) if values.missing else ()
    return state


def summary_from_values(
    values: SummaryRecord, config: FoldConfig = DEFAULT_CONFIG
) -> tuple[RunState, int, int | None]:
    """The RunState of a ``runfold.RunSummary`` record's values (what a reader sees; its
    resume part is empty: ``source_offset`` -1, no buffer, no digests), with the
    summary's ``pending`` and ``oldest_pending_at``."""
    state = _from_head(values, config)
    return state, values.pending, values.oldest_pending_at


def _from_head(values: StateRecord | SummaryRecord, config: FoldConfig) -> RunState:
    """A RunState with the fields a RunState and a RunSummary share set from ``values``."""
    run = values.run
    state = RunState.new(UUID(run.run_id), Timestamp(run.started_at), config)
    state.agent_spec_digest = shared_text(run.agent_spec_digest)
    state.git_sha = shared_text(run.git_sha)
    finished = run.finished_at
    state.finished_at = None if finished is None else Timestamp(finished)
    state.status = run.status
    state.inputs_json = run.inputs
    state.outputs_json = run.outputs
    state.final_state_digest = run.final_state_digest
    state.last_seq = values.last_seq
    _set_counters(state, values.counters)
    if any(values.violation_counts):
        state.violation_counts = dict(zip(_KINDS, values.violation_counts, strict=True))
    if values.recent_violations:
        state.recent_violations = deque(
            values.recent_violations, maxlen=config.max_recent_violations
        )
    state.stalled_since = values.stalled_since
    return state


def to_record(state: RunState) -> dict[str, Any]:
    """The fastavro record of ``state`` for ``runfold.RunState`` v2."""
    v = to_values(state)
    run_id = state.run_id
    return {
        **_head_record(v, run_id),
        "restore": {
            "source_offset": v.source_offset,
            "has_identity": v.has_identity,
            "stream_time": v.stream_time,
            "pending": [
                {
                    "seq": _long(seq, "a buffered event's seq", run_id),
                    "digest": digest,
                    "event_json": event_json,
                }
                for seq, digest, event_json in v.pending
            ],
            "digest_window": v.digest_window,
            "missing": [
                {
                    "first_seq": _long(first, "a missing range's first_seq", run_id),
                    "last_seq": _long(last, "a missing range's last_seq", run_id),
                }
                for first, last in v.missing
            ],
        },
    }


def summary_to_record(state: RunState) -> dict[str, Any]:
    """The fastavro record of ``state`` for ``runfold.RunSummary`` v1 (``agent-runs``)."""
    v = to_values(state)
    return {
        **_head_record(v, state.run_id),
        "pending": len(state.pending_events),
        "oldest_pending_at": oldest_pending(state),
    }


def _head_record(v: StateRecord, run_id: UUID) -> dict[str, Any]:
    """The fields RunState and RunSummary share, as fastavro's record."""
    return {
        "run": {**v.run._asdict(), "status": v.run.status.value},
        "last_seq": _long(v.last_seq, "last_seq", run_id),
        "counters": dict(zip(COUNTER_NAMES, v.counters, strict=True)),
        "violation_counts": {
            kind.value: count for kind, count in zip(_KINDS, v.violation_counts, strict=True)
        },
        "recent_violations": [
            {
                "run_id": str(violation.run_id),
                "kind": violation.kind.value,
                "first_seq": _long(violation.first_seq, "a violation's first_seq", run_id),
                "last_seq": _long(violation.last_seq, "a violation's last_seq", run_id),
                "message": violation.message,
            }
            for violation in v.recent_violations
        ],
        "stalled_since": v.stalled_since,
    }


def from_record(record: dict[str, Any], config: FoldConfig = DEFAULT_CONFIG) -> RunState:
    """The RunState in a ``runfold.RunState`` record (as fastavro reads it).

    Bounds come from ``config`` (see :func:`from_values`). Raises
    :class:`~schemas.errors.SchemaError` naming the field that is wrong.
    """
    where = ["RunState record"]
    try:
        head = _head_values(record, where)
        restore = record["restore"]
        values = _record(
            StateRecord,
            (
                *head,
                restore["source_offset"],
                restore["has_identity"],
                restore["stream_time"],
                [(p["seq"], p["digest"], p["event_json"]) for p in restore["pending"]],
                restore["digest_window"],
                [(r["first_seq"], r["last_seq"]) for r in restore["missing"]],
            ),
        )
        return from_values(values, config)
    except (KeyError, TypeError, ValueError) as exc:
        problem = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise SchemaError(f"{where[0]} cannot be restored: {problem}") from exc


def summary_from_record(
    record: dict[str, Any], config: FoldConfig = DEFAULT_CONFIG
) -> tuple[RunState, int, int | None]:
    """:func:`summary_from_values` of a ``runfold.RunSummary`` record (as fastavro reads
    it). Raises :class:`~schemas.errors.SchemaError` naming the field that is wrong."""
    where = ["RunSummary record"]
    try:
        head = _head_values(record, where)
        values = _record(SummaryRecord, (*head, record["pending"], record["oldest_pending_at"]))
        return summary_from_values(values, config)
    except (KeyError, TypeError, ValueError) as exc:
        problem = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise SchemaError(f"{where[0]} cannot be read: {problem}") from exc


def _head_values(record: dict[str, Any], where: list[str]) -> tuple[Any, ...]:
    """The values of the fields RunState and RunSummary share, from fastavro's record;
    ``where[0]`` is given the run's id once it is known (for the error message)."""
    run = record["run"]
    run_id = run["run_id"] if isinstance(run["run_id"], UUID) else UUID(run["run_id"])
    where[0] = f"{where[0]} of run {run_id}"
    counters = record["counters"]
    counts = record["violation_counts"]
    return (
        RunRecord(
            str(run_id),
            run["agent_spec_digest"],
            run["git_sha"],
            run["started_at"],
            run["finished_at"],
            RunStatus(run["status"]),
            run["inputs"],
            run["outputs"],
            run["final_state_digest"],
        ),
        record["last_seq"],
        [counters.get(name, 0) for name in COUNTER_NAMES],
        [counts.get(kind.value, 0) for kind in _KINDS],
        [
            Violation(
                run_id=v["run_id"],
                kind=ViolationKind(v["kind"]),
                first_seq=v["first_seq"],
                last_seq=v["last_seq"],
                message=v["message"],
            )
            for v in record["recent_violations"]
        ],
        record.get("stalled_since"),
    )


def _restore_window(state: RunState, saved: array[int]) -> None:
    """Take the saved digest ring when it has one of the two lengths a run's ring has
    (:data:`~consumers.state.FIRST_RING`, the window); else lay its seqs into a ring of
    this config's window (a ring of any length holds the digests of its last seqs)."""
    window = state.config.digest_window
    if len(saved) == window or len(saved) == FIRST_RING < window:
        state.digests = saved
        return
    if saved:
        state.digests = relaid_ring(saved, state.last_seq, window)
