"""The ``/v1`` HTTP API: runs, their events and digest, the fleet, live changes, ingestion.

Every read is answered from the view (:class:`serve.store.ViewReader`), never by reading
a topic. Errors are ``{"error": code, "detail": sentence}`` (:class:`serve.errors.ApiError`).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from schemas import ViolationKind
from schemas.errors import ValidationError
from schemas.ledger import replay_digest
from serve.auth import Authenticator
from serve.errors import ApiError
from serve.ingest import IngestWorker, dumps, parse_events, results_body
from serve.settings import Scope, ServeSettings
from serve.store import BadCursor, RunFilter, ViewReader
from serve.tailer import ViewTailer

__all__ = ["ChangeFeed", "ServeContext", "router"]

_RECENT_VIOLATIONS = 10
_SUMMARY_TTL_S = 1.0


class ChangeFeed:
    """Wakes the live streams when the tailer wrote runs (called from the tailer's thread)."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed = asyncio.Event()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The event loop the streams wait in."""
        self._loop = loop
        self._changed = asyncio.Event()

    def publish(self, change: int) -> None:
        """Thread-safe: there are runs with change numbers up to ``change``."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait(self, timeout: float) -> bool:
        """Until the next change (True) or ``timeout`` seconds (False)."""
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
            return True
        except TimeoutError:
            return False


@dataclass
class ServeContext:
    """What the routes need; one per app, in ``app.state.ctx``."""

    settings: ServeSettings
    reader: ViewReader
    tailer: ViewTailer
    ingest: IngestWorker
    feed: ChangeFeed
    auth: Authenticator
    topics: dict[str, str]
    _summary: tuple[float, dict[str, Any]] | None = field(default=None, repr=False)
    """The counts of the fleet summary, and until when (monotonic) they are reused."""


def _ctx(request: Request) -> ServeContext:
    ctx: ServeContext = request.app.state.ctx
    return ctx


def _scope(scope: Scope) -> Callable[[Request], ServeContext]:
    def check(request: Request) -> ServeContext:
        ctx = _ctx(request)
        ctx.auth.check(request.headers.get("authorization"), scope)
        return ctx

    return check


Reader = Annotated[ServeContext, Depends(_scope("read"))]
Ingester = Annotated[ServeContext, Depends(_scope("ingest"))]
router = APIRouter(prefix="/v1")


def _run_id(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise ApiError(
            400, "bad_run_id", f"{text[:60]!r} is not a run id (a UUID such as "
            "'0b6f4c1e-8a47-4c39-9d0e-2f1f4f3a9b10')"
        ) from None


def _time_ns(text: str | None, name: str) -> int | None:
    if text is None:
        return None
    from schemas import Timestamp

    try:
        return int(Timestamp.parse(text))
    except (ValidationError, ValueError):
        raise ApiError(
            400, "bad_time", f"{name}={text[:60]!r} is not an RFC 3339 time such as "
            "'2026-01-01T00:00:00Z'"
        ) from None


@router.get("/runs", summary="List runs, newest first, with filters and cursor pagination")
def list_runs(
    ctx: Reader,
    status: Literal["RUNNING", "COMPLETED", "FAILED", "CANCELLED"] | None = None,
    agent: Annotated[str | None, Query(description="agent_spec_digest")] = None,
    started_after: Annotated[str | None, Query(description="RFC 3339, inclusive")] = None,
    started_before: Annotated[str | None, Query(description="RFC 3339, exclusive")] = None,
    violation: Annotated[ViolationKind | None, Query(description="has violations of")] = None,
    stalled: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> dict[str, Any]:
    where = RunFilter(
        status=status,
        agent_spec_digest=agent,
        started_after_ns=_time_ns(started_after, "started_after"),
        started_before_ns=_time_ns(started_before, "started_before"),
        violation_kind=violation.value if violation is not None else None,
        stalled=stalled,
    )
    try:
        runs, next_cursor = ctx.reader.list_runs(where, limit=limit, cursor=cursor)
    except BadCursor as exc:
        raise ApiError(400, "bad_cursor", str(exc)) from None
    return {"runs": runs, "next_cursor": next_cursor}


def _found(ctx: ServeContext, run_id: str) -> dict[str, Any]:
    doc = ctx.reader.run(run_id)
    if doc is None:
        raise ApiError(
            404, "run_not_found", f"no run {run_id} in the view of {ctx.topics['runs']} "
            "(it may not be folded yet)"
        )
    return doc


@router.get("/runs/{run_id}", summary="One run: the Run, its counters and violations")
def get_run(ctx: Reader, run_id: str) -> dict[str, Any]:
    doc = _found(ctx, _run_id(run_id))
    doc["violation_records"] = ctx.reader.violations(doc["run_id"])
    return doc


@router.get(
    "/runs/{run_id}/events",
    summary="A run's events in seq order (serde JSON); next_after_seq pages on",
)
def get_events(
    ctx: Reader,
    run_id: str,
    after_seq: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
) -> Response:
    run_id = _run_id(run_id)
    events = ctx.reader.events(run_id, after_seq=after_seq, limit=limit)
    if not events:
        _found(ctx, run_id)
    more = events[-1].seq if len(events) == limit else None
    # Each event's serde JSON as it is, byte for byte what Rust would write.
    body = (
        f'{{"run_id":"{run_id}","events":[{",".join(e.to_json() for e in events)}],'
        f'"next_after_seq":{"null" if more is None else more}}}'
    )
    return Response(body, media_type="application/json")


@router.get("/runs/{run_id}/digest", summary="The origin ledger's replay digest of the run")
def get_digest(ctx: Reader, run_id: str) -> dict[str, Any]:
    run_id = _run_id(run_id)
    doc = _found(ctx, run_id)
    last_seq = int(doc["last_seq"])
    events = ctx.reader.events(run_id, limit=last_seq or 1)
    applied = [event for event in events if event.seq <= last_seq]
    return {
        "run_id": run_id,
        "digest": replay_digest(applied),
        "events": len(applied),
        "last_seq": last_seq,
        # Events past retention, or a declared gap, leave holes: the digest is then not
        # the origin's, and this says so.
        "complete": [event.seq for event in applied] == list(range(1, last_seq + 1)),
    }


@router.get(
    "/fleet",
    summary="Runs by status, events/s, the fold's and the view's lag, recent violations",
)
def fleet(ctx: Reader) -> dict[str, Any]:
    cached = ctx._summary
    now = time.monotonic()
    if cached is not None and now < cached[0]:
        counts = cached[1]
    else:
        counts = ctx.reader.counts()
        # Counting a million runs takes about 0.4 s: kept ten times as long as it took.
        took = time.monotonic() - now
        ctx._summary = (now + max(_SUMMARY_TTL_S, 10 * took), counts)
    tail = ctx.tailer.status()
    return {
        **counts,
        "events_per_s": tail["events_per_s"],
        "lag": tail["lag"],
        "fold_lag": tail["fold_lag"],
        "view": {key: tail[key] for key in ("records_read", "undecodable", "partitions",
                                            "caught_up", "error")},
        "ingested": {"acknowledged": ctx.ingest.acknowledged,
                     "unacknowledged": ctx.ingest.unacknowledged},
        "recent_violations": ctx.reader.recent_violations(_RECENT_VIOLATIONS),
        "topics": ctx.topics,
    }


@router.get(
    "/stream",
    summary="Server-Sent Events: one `run` event per changed run (id = its change number)",
    response_class=StreamingResponse,
)
async def stream(
    request: Request, ctx: Reader,
    after: Annotated[int | None, Query(ge=0, description="resume after this change")] = None,
) -> StreamingResponse:
    resume = request.headers.get("last-event-id")
    start = after if after is not None else int(resume) if resume and resume.isdigit() else None
    return StreamingResponse(
        _changes(request, ctx, start),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _changes(request: Request, ctx: ServeContext, after: int | None) -> AsyncIterator[str]:
    last = after if after is not None else await run_in_threadpool(ctx.reader.latest_change)
    yield f"retry: 2000\nevent: hello\ndata: {json.dumps({'change': last})}\n\n"
    while not await request.is_disconnected():
        rows = await run_in_threadpool(ctx.reader.changes, last, 500)
        for row in rows:
            last = row["change"]
            yield f"id: {last}\nevent: run\ndata: {json.dumps(row, separators=(',', ':'))}\n\n"
        if len(rows) == 500:
            continue
        if not await ctx.feed.wait(timeout=15.0):
            yield ": keep-alive\n\n"


@router.post(
    "/events",
    summary="Post one event (application/json) or a batch (application/x-ndjson)",
    description="Each event is validated with the model and produced to agent-run-events "
    "with its run id as key; the answer comes after Kafka acknowledged (acks=all), with a "
    "result per event. 200: all accepted; 207: some rejected; 400: all rejected; "
    "413: too large; 503: Kafka did not acknowledge.",
)
async def post_events(request: Request, ctx: Ingester) -> Response:
    settings = ctx.settings
    body = await _read_body(request, settings.max_body_bytes)
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if content_type not in ("application/json", "application/x-ndjson", "application/ndjson"):
        raise ApiError(
            415, "unsupported_media_type", f"Content-Type {content_type!r} is not accepted; "
            "send application/json (one event) or application/x-ndjson (one event per line)"
        )
    ndjson = content_type != "application/json"
    # The line count bounds the event count; blank lines are counted out only when needed.
    if ndjson and body.count(b"\n") + 1 > settings.max_batch_events and sum(
        1 for line in body.split(b"\n") if line.strip()
    ) > settings.max_batch_events:
        raise ApiError(
            413, "too_many_events", f"a request holds at most {settings.max_batch_events:,} "
            "events; split the batch"
        )
    accepted, rejected = await run_in_threadpool(
        parse_events, body, ndjson=ndjson, max_event_bytes=settings.max_event_bytes
    )
    acknowledged: bool | str = True
    if accepted:
        try:
            acknowledged = await asyncio.wait_for(
                asyncio.wrap_future(ctx.ingest.submit([event for _, event in accepted])),
                settings.ack_timeout_s + 5.0,
            )
        except TimeoutError:
            acknowledged = False
        except Exception as exc:  # noqa: BLE001 - the sentence goes back to the client
            acknowledged = f"could not produce to Kafka: {exc}"
    status, answer = results_body(accepted, rejected, acknowledged)
    return Response(dumps(answer), status_code=status, media_type="application/json")


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413, "body_too_large", f"the request body is larger than {limit:,} bytes; split the batch"
    )
