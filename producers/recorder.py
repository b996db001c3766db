"""What an agent embeds to publish its run: :class:`RunRecorder` and :class:`AsyncRunRecorder`.

::

    recorder = RunRecorder(EventProducer("agent-run-events", bootstrap_servers="..."))
    with recorder.run(spec_digest, git_sha, {"question": q}, graph_name="qa") as run:
        run.emit(NodeEntered(node_id="plan", iteration=1), payload={"prompt_tokens": 812})
        ...
        run.complete(outputs={"answer": a}, final_state_digest=digest)
    report = recorder.close()          # flushes; DeliveryReport

Entering the block emits ``graph_started`` (seq 1) with the run's identity in its
payload, as the origin does: ``agent_spec_digest``, ``git_sha``, ``inputs``,
``graph_name``, ``entry_point``. Each :meth:`RunHandle.emit` takes the next seq.
Leaving the block ends the run:

- normally: ``graph_completed{iterations, duration_ms}`` with payload
  ``{"outputs", "final_state_digest"}``;
- on an ``Exception``: ``graph_failed{error}`` (``"TypeName: message"``), then the
  exception propagates;
- on ``KeyboardInterrupt`` or ``asyncio.CancelledError``: the run is cancelled
  (``graph_interrupted{reason="cancelled"}``), then it propagates;
- after :meth:`RunHandle.cancel` (or an ending event passed to ``emit``): nothing more.

After the end, ``emit`` raises :class:`RunClosedError`.

The sink is any object with ``send(event)`` (:class:`EventSink`): an
:class:`~producers.kafka.EventProducer`, or :class:`ListSink` in tests.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Protocol, runtime_checkable

from pydantic import JsonValue, TypeAdapter

from schemas import (
    EVENT_KINDS,
    Event,
    GraphCompleted,
    GraphFailed,
    GraphInterrupted,
    GraphStarted,
    NodeEntered,
    Timestamp,
)
from schemas.avro_binary import trusted
from schemas.errors import RunfoldError
from schemas.model import U64_MAX, SerdeJson

__all__ = [
    "AsyncRunHandle",
    "AsyncRunRecorder",
    "EventSink",
    "ListSink",
    "RunClosedError",
    "RunHandle",
    "RunRecorder",
]

CANCELLED = "cancelled"
"""The ``graph_interrupted`` reason that ends a run as CANCELLED (DESIGN.md §1)."""


class RunClosedError(RunfoldError):
    """An event was emitted into a run that has already ended."""


@runtime_checkable
class EventSink(Protocol):
    """Where a recorder sends events: anything with ``send(event)``."""

    def send(self, event: Event) -> None:
        """Publish one event (may queue it)."""


class ListSink:
    """An in-memory sink: keeps every event sent, in order (tests, demos, dry runs)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def send(self, event: Event) -> None:
        """Append ``event``."""
        self.events.append(event)


# What a kind means to the handle: starts the run, enters a node, ends the run, may end it.
_OTHER, _STARTED, _ENTERED, _ENDS, _INTERRUPTED = range(5)


def _role(kind: Any) -> int:
    if isinstance(kind, GraphStarted):
        return _STARTED
    if isinstance(kind, NodeEntered):
        return _ENTERED
    if isinstance(kind, GraphCompleted | GraphFailed):
        return _ENDS
    if isinstance(kind, GraphInterrupted):
        return _INTERRUPTED
    return _OTHER


_ROLES: dict[type, int] = {
    cls: _role(cls.model_construct()) for cls in EVENT_KINDS.values()
}
"""Each kind class's role, looked up by exact class."""


class RunHandle:
    """One run being recorded: numbers its events and ends it exactly once."""

    def __init__(
        self,
        send: Callable[[Event], None],
        run_id: uuid.UUID,
        clock: Callable[[], Timestamp],
    ) -> None:
        self.run_id = run_id
        self.outputs: JsonValue = None
        """Set before leaving the block (or via :meth:`complete`): ``graph_completed``'s outputs."""
        self.final_state_digest: str | None = None
        """Set before leaving the block (or via :meth:`complete`)."""
        self.iterations: int | None = None
        """``graph_completed.iterations``; by default the number of ``node_entered`` events."""
        self._send = send
        self._clock = clock
        self._seq = 0
        self._nodes_entered = 0
        self._last_node = ""
        self._started_at: Timestamp | None = None
        self._ended = False

    @property
    def seq(self) -> int:
        """The seq of the last event emitted (0 before ``graph_started``)."""
        return self._seq

    @property
    def ended(self) -> bool:
        """True once an ending event was emitted."""
        return self._ended

    def emit(self, kind: Any, payload: JsonValue = None) -> Event:
        """Emit one event of ``kind`` (e.g. ``NodeEntered(node_id="plan", iteration=1)``).

        ``payload`` defaults to ``{}``. Emitting ``graph_completed``, ``graph_failed`` or a
        ``graph_interrupted`` with reason ``"cancelled"`` ends the run.
        """
        return self._emit(kind, payload, None)

    def _emit(self, kind: Any, payload: JsonValue, timestamp: Timestamp | None) -> Event:
        if self._ended:
            raise RunClosedError(
                f"run {self.run_id} has ended (last seq {self._seq}); "
                f"cannot emit {getattr(kind, 'type', kind)!r} after its end"
            )
        # The kind's exact class decides (isinstance on a pydantic model class runs Python
        # code, four times per emit); a subclass of a kind takes isinstance's way.
        cls = type(kind)
        role = _ROLES.get(cls)
        if role is None:
            role = _role(kind)
        if role == _STARTED and self._seq > 0:
            raise RunClosedError(f"run {self.run_id} has already started; graph_started is seq 1")
        event = _event(
            self.run_id,
            self._seq + 1,
            self._clock() if timestamp is None else timestamp,
            kind,
            {} if payload is None else payload,
        )
        # Count only once the sink took it, so a failed send can be retried with the same seq.
        self._send(event)
        self._seq = event.seq
        if self._started_at is None:
            self._started_at = event.timestamp
        if role == _ENTERED:
            self._nodes_entered += 1
            self._last_node = kind.node_id
        elif role == _ENDS or (role == _INTERRUPTED and kind.reason == CANCELLED):
            self._ended = True
        return event

    def complete(self, outputs: JsonValue = None, final_state_digest: str | None = None) -> None:
        """Set what ``graph_completed`` will carry when the block ends normally."""
        self.outputs = outputs
        self.final_state_digest = final_state_digest

    def interrupt(self, reason: str, node_id: str | None = None) -> Event:
        """A pause (human in the loop): ``graph_interrupted``; the run stays RUNNING."""
        if reason == CANCELLED:
            return self.cancel(node_id=node_id)
        return self.emit(GraphInterrupted(reason=reason, node_id=node_id or self._last_node))

    def cancel(self, reason: str | None = None, node_id: str | None = None) -> Event:
        """End the run as CANCELLED: ``graph_interrupted{reason="cancelled", node_id}``.

        ``reason`` (free text, e.g. "user pressed stop") goes in the payload as ``detail``;
        ``node_id`` defaults to the last node entered.
        """
        payload: dict[str, JsonValue] = {} if reason is None else {"detail": reason}
        return self.emit(
            GraphInterrupted(reason=CANCELLED, node_id=node_id or self._last_node), payload
        )

    def _start(
        self, agent_spec_digest: str, git_sha: str, inputs: JsonValue,
        graph_name: str | None, entry_point: str | None,
    ) -> Event:
        return self.emit(
            GraphStarted(),
            {
                "agent_spec_digest": agent_spec_digest,
                "git_sha": git_sha,
                "inputs": inputs,
                "graph_name": graph_name,
                "entry_point": entry_point,
            },
        )

    def _complete_now(self) -> Event:
        # One clock reading: duration_ms is exactly the distance between the two timestamps.
        now = self._clock()
        started = self._started_at if self._started_at is not None else now
        duration_ms = max(0, (int(now) - int(started)) // 1_000_000)
        iterations = self._nodes_entered if self.iterations is None else self.iterations
        return self._emit(
            GraphCompleted(iterations=iterations, duration_ms=duration_ms),
            {"outputs": self.outputs, "final_state_digest": self.final_state_digest},
            now,
        )

    def _finish(self, exc: BaseException | None) -> None:
        """End the run according to how the block was left (no-op if it already ended)."""
        if self._ended:
            return
        if exc is None:
            self._complete_now()
        elif isinstance(exc, KeyboardInterrupt | asyncio.CancelledError):
            self.cancel(reason=type(exc).__name__)
        else:
            self.emit(GraphFailed(error=_error_text(exc)))


class _Declined(Exception):
    """The payload is not plain JSON built of exact dicts, lists, strings and numbers."""


def _plain_json(value: Any) -> Any:
    """A copy of ``value`` as the payload's validator returns it, for plain JSON values only.

    Exact ``dict`` (``str`` keys), ``list``, ``str``, ``bool``, ``None``, ``int`` within
    serde's i64..u64 and finite ``float`` come back as the validator gives them: new
    containers, the same scalars (a test compares the two on generated values). Anything
    else raises :class:`_Declined` and goes to the validator itself, which was most of
    an emit's cost even for ``{"input_tokens": 812}``.
    """
    kind = type(value)
    if kind is dict:
        copy = {}
        for key, item in value.items():
            if type(key) is not str:
                raise _Declined
            copy[key] = _plain_json(item)
        return copy
    if kind is str or kind is bool or value is None:
        return value
    if kind is int:
        if _I64_MIN <= value <= U64_MAX:
            return value
        raise _Declined
    if kind is float:
        if math.isfinite(value):
            return value
        raise _Declined
    if kind is list:
        return [_plain_json(item) for item in value]
    raise _Declined


_I64_MIN = -(2**63)
_KIND_CLASSES = frozenset(EVENT_KINDS.values())
_validate_payload = TypeAdapter(SerdeJson).validate_python


def _event(run_id: Any, seq: int, timestamp: Any, kind: Any, payload: Any) -> Event:
    """``Event(run_id=..., ...)``, validating only what a recorder cannot vouch for.

    An Event validates each field; here the seq is the handle's own count, and a
    ``UUID``, a ``Timestamp`` and a kind model instance are taken as they are by
    validation too, so only the payload is validated (with the field's own validator,
    which copies it and applies serde's number rules). Anything else, or any invalid
    payload, goes through ``Event(...)``, which raises the error naming the field.
    This was three quarters of :meth:`RunHandle.emit`'s cost.
    """
    if (type(run_id) is uuid.UUID and type(timestamp) is Timestamp
            and type(kind) in _KIND_CLASSES and 0 < seq <= U64_MAX):
        try:
            value = _plain_json(payload)
        except (_Declined, RecursionError):
            try:
                value = _validate_payload(payload)
            except ValueError:  # pydantic's ValidationError is one
                value = _Declined
        if value is not _Declined:
            event: Event = trusted(Event, {"run_id": run_id, "seq": seq, "timestamp": timestamp,
                                           "kind": kind, "payload": value})
            return event
    return Event(run_id=run_id, seq=seq, timestamp=timestamp, kind=kind, payload=payload)


def _error_text(exc: BaseException) -> str:
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


class RunRecorder:
    """Records runs into a sink; one recorder serves many runs (one at a time or nested)."""

    def __init__(
        self,
        sink: EventSink,
        *,
        clock: Callable[[], Timestamp] = Timestamp.now,
        run_id_factory: Callable[[], uuid.UUID] = uuid.uuid4,
    ) -> None:
        self.sink = sink
        self._clock = clock
        self._new_run_id = run_id_factory

    @contextmanager
    def run(
        self,
        agent_spec_digest: str,
        git_sha: str,
        inputs: JsonValue,
        *,
        graph_name: str | None = None,
        entry_point: str | None = None,
        run_id: uuid.UUID | None = None,
    ) -> Iterator[RunHandle]:
        """Open a run (emits ``graph_started``), yield its handle, end it on leaving."""
        handle = RunHandle(self.sink.send, run_id or self._new_run_id(), self._clock)
        handle._start(agent_spec_digest, git_sha, inputs, graph_name, entry_point)
        try:
            yield handle
        except BaseException as exc:
            handle._finish(exc)
            raise
        handle._finish(None)

    def close(self, timeout: float = 30.0) -> Any:
        """Close the sink if it can be closed (a Kafka producer returns its DeliveryReport)."""
        close = getattr(self.sink, "close", None)
        return close(timeout) if callable(close) else None


class AsyncRunHandle:
    """The async face of a :class:`RunHandle`: the same rules, awaitable sends."""

    def __init__(self, handle: RunHandle, call: Callable[..., Any]) -> None:
        self._handle = handle
        self._call_in_worker = call

    @property
    def run_id(self) -> uuid.UUID:
        """The run's id."""
        return self._handle.run_id

    @property
    def seq(self) -> int:
        """The seq of the last event emitted."""
        return self._handle.seq

    @property
    def ended(self) -> bool:
        """True once an ending event was emitted."""
        return self._handle.ended

    def complete(self, outputs: JsonValue = None, final_state_digest: str | None = None) -> None:
        """Set what ``graph_completed`` will carry."""
        self._handle.complete(outputs, final_state_digest)

    async def emit(self, kind: Any, payload: JsonValue = None) -> Event:
        """Emit one event (see :meth:`RunHandle.emit`)."""
        return await self._call(self._handle.emit, kind, payload)

    async def interrupt(self, reason: str, node_id: str | None = None) -> Event:
        """A pause; the run stays RUNNING."""
        return await self._call(self._handle.interrupt, reason, node_id)

    async def cancel(self, reason: str | None = None, node_id: str | None = None) -> Event:
        """End the run as CANCELLED."""
        return await self._call(self._handle.cancel, reason, node_id)

    async def _call(self, fn: Callable[..., Event], *args: Any) -> Event:
        event: Event = await self._call_in_worker(fn, *args)
        return event


class AsyncRunRecorder:
    """Records runs from asyncio code without blocking the event loop.

    Every sink call runs on one worker thread owned by the recorder: the loop never
    waits on a full producer queue, and events keep their order because one thread
    sends them all.
    """

    def __init__(
        self,
        sink: EventSink,
        *,
        clock: Callable[[], Timestamp] = Timestamp.now,
        run_id_factory: Callable[[], uuid.UUID] = uuid.uuid4,
    ) -> None:
        self.sink = sink
        self._clock = clock
        self._new_run_id = run_id_factory
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="runfold-recorder")

    async def _in_worker(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker, fn, *args)

    @asynccontextmanager
    async def run(
        self,
        agent_spec_digest: str,
        git_sha: str,
        inputs: JsonValue,
        *,
        graph_name: str | None = None,
        entry_point: str | None = None,
        run_id: uuid.UUID | None = None,
    ) -> AsyncIterator[AsyncRunHandle]:
        """``async with recorder.run(...) as run:``; same events as :meth:`RunRecorder.run`."""
        handle = RunHandle(self.sink.send, run_id or self._new_run_id(), self._clock)
        await self._in_worker(
            handle._start, agent_spec_digest, git_sha, inputs, graph_name, entry_point
        )
        try:
            yield AsyncRunHandle(handle, self._in_worker)
        except BaseException as exc:
            # Shielded: a cancelled task must still publish that its run was cancelled.
            await asyncio.shield(self._in_worker(handle._finish, exc))
            raise
        await self._in_worker(handle._finish, None)

    async def aclose(self, timeout: float = 30.0) -> Any:
        """Flush and close the sink on the worker thread; returns its report, if any."""
        close = getattr(self.sink, "close", None)
        result = await self._in_worker(close, timeout) if callable(close) else None
        self._worker.shutdown(wait=True)
        return result
