"""RunState to and from the record of ``schemas/avro/RunState.v1.avsc`` (a plain dict).

The record is what fastavro writes and reads: ``run`` in the shape of
``runfold.Run`` (JSON values as serde JSON text), counters, the violation
summary, and a ``restore`` part with the reorder buffer (events as serde JSON,
each with its content digest), the digest window and the declared-missing
ranges. ``from_record(to_record(s), config) == s`` for a state built with
``config``.

Avro ``long`` is signed: a seq of 2**63 or more cannot be written and raises
:class:`~schemas.errors.EncodeError` (the event codec refuses such events too).
"""

from __future__ import annotations

import sys
from array import array
from typing import Any
from uuid import UUID

from consumers.state import COUNTER_NAMES, DEFAULT_CONFIG, FoldConfig, RunState
from schemas import Event, RunStatus, Timestamp, Violation, ViolationKind, serde
from schemas.errors import EncodeError, SchemaError

__all__ = ["from_record", "to_record"]

_LONG_MAX = 2**63 - 1
_LITTLE = sys.byteorder == "little"


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


def to_record(state: RunState) -> dict[str, Any]:
    """The fastavro record of ``state`` for ``runfold.RunState`` v1."""
    run_id = state.run_id
    violations = state.violation_counts
    return {
        "run": {
            "run_id": str(run_id),
            "agent_spec_digest": state.agent_spec_digest,
            "git_sha": state.git_sha,
            "started_at": int(state.started_at),
            "finished_at": None if state.finished_at is None else int(state.finished_at),
            "status": state.status.value,
            "inputs": serde.dumps(state.inputs),
            "outputs": None if state.outputs is None else serde.dumps(state.outputs),
            "final_state_digest": state.final_state_digest,
        },
        "last_seq": _long(state.last_seq, "last_seq", run_id),
        "counters": {name: getattr(state, name) for name in COUNTER_NAMES},
        "violation_counts": {kind.value: violations[kind] for kind in ViolationKind},
        "recent_violations": [
            {
                "run_id": str(v.run_id),
                "kind": v.kind.value,
                "first_seq": _long(v.first_seq, "a violation's first_seq", run_id),
                "last_seq": _long(v.last_seq, "a violation's last_seq", run_id),
                "message": v.message,
            }
            for v in state.recent_violations
        ],
        "restore": {
            "source_offset": state.source_offset,
            "has_identity": state.has_identity,
            "stream_time": int(state.stream_time),
            "pending": [
                {
                    "seq": _long(seq, "a buffered event's seq", run_id),
                    "digest": digest.to_bytes(8, "little"),
                    "event_json": event.to_json(),
                }
                for seq, (event, digest) in sorted(state.pending_events.items())
            ],
            "digest_window": _ring_bytes(state.digests),
            "missing": [
                {
                    "first_seq": _long(first, "a missing range's first_seq", run_id),
                    "last_seq": _long(last, "a missing range's last_seq", run_id),
                }
                for first, last in state.missing
            ],
        },
    }


def from_record(record: dict[str, Any], config: FoldConfig = DEFAULT_CONFIG) -> RunState:
    """The RunState in a ``runfold.RunState`` record (as fastavro reads it).

    Bounds come from ``config``: a digest window of another size is re-laid by
    seq, and only the newest ``max_recent_violations`` violations are kept.
    Raises :class:`~schemas.errors.SchemaError` naming the field that is wrong.
    """
    where = "RunState record"
    try:
        run = record["run"]
        run_id = run["run_id"] if isinstance(run["run_id"], UUID) else UUID(run["run_id"])
        where = f"RunState record of run {run_id}"
        state = RunState.new(run_id, Timestamp(run["started_at"]), config)
        state.agent_spec_digest = run["agent_spec_digest"]
        state.git_sha = run["git_sha"]
        finished = run["finished_at"]
        state.finished_at = None if finished is None else Timestamp(finished)
        state.status = RunStatus(run["status"])
        state.inputs = serde.loads(run["inputs"])
        state.outputs = None if run["outputs"] is None else serde.loads(run["outputs"])
        state.final_state_digest = run["final_state_digest"]
        state.last_seq = record["last_seq"]
        counters = record["counters"]
        for name in COUNTER_NAMES:
            setattr(state, name, counters.get(name, 0))
        counts = record["violation_counts"]
        state.violation_counts = {kind: counts.get(kind.value, 0) for kind in ViolationKind}
        state.recent_violations.extend(
            Violation(
                run_id=v["run_id"],
                kind=ViolationKind(v["kind"]),
                first_seq=v["first_seq"],
                last_seq=v["last_seq"],
                message=v["message"],
            )
            for v in record["recent_violations"]
        )
        restore = record["restore"]
        state.source_offset = restore["source_offset"]
        state.has_identity = restore["has_identity"]
        state.stream_time = restore["stream_time"]
        for item in restore["pending"]:
            event = Event.from_json(item["event_json"])
            state.pending_events[item["seq"]] = (event, int.from_bytes(item["digest"], "little"))
        if state.pending_events:
            state.pending_oldest_ts = min(
                int(event.timestamp) for event, _ in state.pending_events.values()
            )
        _restore_window(state, _ring_from(restore["digest_window"]))
        state.missing = [(r["first_seq"], r["last_seq"]) for r in restore["missing"]]
    except (KeyError, TypeError, ValueError) as exc:
        problem = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise SchemaError(f"{where} cannot be restored: {problem}") from exc
    return state


def _restore_window(state: RunState, saved: array[int]) -> None:
    ring = state.digests
    if len(saved) == len(ring):
        state.digests = saved
        return
    if not saved:
        return
    # Another window size: carry over each seq both windows can hold.
    last = state.last_seq
    for seq in range(max(1, last - min(len(saved), len(ring)) + 1), last + 1):
        ring[seq % len(ring)] = saved[seq % len(saved)]
