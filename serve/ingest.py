"""HTTP ingestion: parse posted events, then produce them and wait for Kafka's acknowledgement.

:func:`parse_events` reads one JSON event or an NDJSON batch in the serde JSON of the Rust
origin (:meth:`schemas.Event.from_json`, the model's own validation) and names, for each
bad line, the field and the reason. :class:`IngestWorker` owns the one
:class:`producers.EventProducer` (idempotent, ``acks=all``, keyed by run id) in its own
thread: it takes every request waiting, produces their events, flushes, and answers each
request only once Kafka has acknowledged every record of the group.

When Kafka does not acknowledge a group (a record failed or timed out), every event of
the group is answered ``unacknowledged``: the producer's accounting is per group, not per
record. Posting them again is safe: the fold drops an event whose (run, seq) it already
applied with the same content as a duplicate.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, NamedTuple

import pydantic

from producers import EventProducer
from schemas import Event
from schemas.errors import ValidationError

__all__ = ["IngestWorker", "Rejection", "parse_events"]

log = logging.getLogger(__name__)

_GROUP_EVENTS = 100_000
"""Most events produced before one flush (several requests' worth)."""


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why one posted event was refused: where it was, which field, what was wrong."""

    index: int
    """Position in the request (0-based; the NDJSON line is ``index + 1``)."""
    field: str | None
    reason: str

    def as_result(self) -> dict[str, Any]:
        """The per-event result entry."""
        return {
            "index": self.index,
            "status": "rejected",
            "code": 400,
            "field": self.field,
            "reason": self.reason,
        }


def parse_events(
    body: bytes, *, ndjson: bool, max_event_bytes: int
) -> tuple[list[tuple[int, Event]], list[Rejection]]:
    """The valid events of a request body (with their index), and a rejection for each other.

    ``ndjson``: one event per line (blank lines are skipped but keep their index);
    otherwise the whole body is one event.
    """
    lines = body.split(b"\n") if ndjson else [body]
    events: list[tuple[int, Event]] = []
    rejected: list[Rejection] = []
    for index, line in enumerate(lines):
        if ndjson and not line.strip():
            continue
        if len(line) > max_event_bytes:
            rejected.append(
                Rejection(index, None, f"event is {len(line):,} bytes; at most "
                                       f"{max_event_bytes:,} are accepted")
            )
            continue
        try:
            events.append((index, Event.from_json(line)))
        except ValidationError as exc:
            rejected.append(Rejection(index, *_field_and_reason(exc)))
    return events, rejected


def _field_and_reason(exc: ValidationError) -> tuple[str | None, str]:
    """The first field pydantic named, and its message; the whole sentence otherwise."""
    cause = exc.__cause__
    if isinstance(cause, pydantic.ValidationError):
        errors = cause.errors(include_url=False)
        if errors:
            first = errors[0]
            # A tagged union's variant name is part of pydantic's location; the field's
            # path in the JSON document does not have it.
            parts = [str(p) for p in first["loc"] if not str(p).startswith("function-")]
            where = ".".join(_json_path(parts)) or None
            given = first.get("input")
            shown = repr(given)[:80] if isinstance(given, str | int | float | bool) else ""
            reason = first["msg"] + (f" (got {shown})" if shown else "")
            if len(errors) > 1:
                reason += f"; and {len(errors) - 1} more problem(s): {exc}"
            return where, reason
    if isinstance(cause, ValueError) and not isinstance(cause, ValidationError):
        return None, f"not valid JSON: {cause}"
    return None, str(exc)


def _json_path(parts: list[str]) -> list[str]:
    """``kind.node_entered.iteration`` -> ``kind.iteration`` (the type tag is not a field)."""
    from schemas import EVENT_KINDS

    if len(parts) >= 2 and parts[0] == "kind" and parts[1] in EVENT_KINDS:
        return [parts[0], *parts[2:]]
    return parts


@dataclass
class _Pending:
    events: list[Event]
    done: Future[bool]


class IngestWorker:
    """Produces posted events through one :class:`EventProducer`, acknowledging by group."""

    def __init__(self, producer: EventProducer, *, ack_timeout_s: float) -> None:
        self.producer = producer
        self.ack_timeout_s = ack_timeout_s
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.acknowledged = 0
        self.unacknowledged = 0

    def start(self) -> None:
        """Start the producing thread."""
        self._thread = threading.Thread(target=self._run, name="runfold-serve-ingest", daemon=True)
        self._thread.start()

    def submit(self, events: list[Event]) -> Future[bool]:
        """Queue ``events``; the future is True once Kafka acknowledged all of them."""
        pending = _Pending(events, Future())
        self._queue.put(pending)
        return pending.done

    def stop(self, timeout: float = 30.0) -> None:
        """Finish what is queued, close the producer (flushing), stop the thread."""
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)
        self.producer.close(timeout=min(timeout, 10.0))

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            group = [first]
            size = len(first.events)
            while size < _GROUP_EVENTS:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                group.append(more)
                size += len(more.events)
            self._produce(group)

    def _produce(self, group: list[_Pending]) -> None:
        producer = self.producer
        try:
            before = producer.report
            for pending in group:
                for event in pending.events:
                    producer.send(event)
            after = producer.flush(self.ack_timeout_s)
        except Exception as exc:  # the broker is unreachable, the producer is misconfigured
            log.warning("ingestion could not produce %d request(s): %s", len(group), exc)
            for pending in group:
                # A request that gave up waiting has cancelled its future.
                if pending.done.set_running_or_notify_cancel():
                    pending.done.set_exception(exc)
            return
        acknowledged = (
            after.pending == 0
            and after.failed == before.failed
            and after.indeterminate == before.indeterminate
        )
        events = sum(len(pending.events) for pending in group)
        if acknowledged:
            self.acknowledged += events
        else:
            self.unacknowledged += events
            log.warning("Kafka did not acknowledge a group of %d events: %s", events,
                        after.summary())
        for pending in group:
            if pending.done.set_running_or_notify_cancel():
                pending.done.set_result(acknowledged)


def results_body(
    accepted: list[tuple[int, Event]], rejected: list[Rejection], acknowledged: bool | str
) -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON answer of an ingestion request.

    ``acknowledged``: True, False (Kafka did not acknowledge in time) or the sentence of a
    failure to produce at all. 200 when every event was acknowledged, 207 when some were
    rejected and the rest acknowledged, 400 when every event was rejected, 503 when
    Kafka did not acknowledge the valid ones.
    """
    results: list[dict[str, Any] | _Json] = [r.as_result() for r in rejected]
    if acknowledged is True:
        # Written as text: a dict per event and json.dumps of it cost more than the producer.
        results += [
            _Json(i, f'{{"index":{i},"status":"accepted","run_id":"{e.run_id}","seq":{e.seq}}}')
            for i, e in accepted
        ]
    else:
        reason = (
            acknowledged if isinstance(acknowledged, str)
            else "Kafka did not acknowledge the event in time"
        ) + "; posting it again is safe (the fold drops an already applied event as a duplicate)"
        results += [
            {"index": i, "status": "unacknowledged", "code": 503, "run_id": str(e.run_id),
             "seq": e.seq, "reason": reason}
            for i, e in accepted
        ]
    results.sort(key=lambda r: r.position if isinstance(r, _Json) else int(r["index"]))
    if accepted and acknowledged is not True:
        status = 503
    elif not accepted and rejected:
        status = 400
    else:
        status = 207 if rejected else 200
    body = {
        "accepted": len(accepted) if acknowledged is True else 0,
        "rejected": len(rejected),
        "unacknowledged": 0 if acknowledged is True else len(accepted),
        "results": results,
    }
    return status, body


class _Json(NamedTuple):
    """A result already written as JSON text, with its index (to sort by)."""

    position: int
    text: str


def dumps(body: dict[str, Any]) -> bytes:
    """Compact JSON bytes of an answer (results written as text go in as they are)."""
    results = body.get("results", [])
    head = json.dumps({k: v for k, v in body.items() if k != "results"}, separators=(",", ":"))
    items = ",".join(
        r.text if isinstance(r, _Json) else json.dumps(r, separators=(",", ":")) for r in results
    )
    separator = "," if len(head) > 2 else ""
    return f'{head[:-1]}{separator}"results":[{items}]}}'.encode()
