"""Record LangGraph runs into runfold: :class:`RunfoldCallback`, one object per graph.

::

    from producers.integrations.langgraph import RunfoldCallback
    tracer = RunfoldCallback(graph)   # a RunRecorder over an EventProducer from RUNFOLD_*
    graph.invoke(inputs, config={"callbacks": [tracer], "configurable": {"thread_id": "t-1"}})
    ...
    tracer.close()                    # at exit: flush, the DeliveryReport

It is a LangGraph ``GraphCallbackHandler`` (the callback LangGraph's docs name for
observing graph lifecycle, itself a LangChain callback handler), so it sees every node,
tool, interrupt and resume through LangGraph's own callbacks and emits through
:class:`~producers.recorder.RunRecorder`'s public API only:

======================================  ===============================================
LangGraph                               runfold event (payload extras)
======================================  ===============================================
graph invoked (root chain starts)       ``graph_started`` (identity: spec digest of the
                                        graph's structure, git sha, inputs, graph name,
                                        entry point); ``message_added`` per input message
node starts / ends                      ``node_entered`` (step, task id, LangGraph run and
                                        thread ids) / ``state_updated`` (keys written),
                                        ``message_added`` per message written,
                                        ``node_exited`` (duration, next node when known)
node raises, then runs again            ``node_retrying`` (attempt, measured delay) before
(a ``RetryPolicy``)                     its next ``node_entered``
node raises for good                    ``node_failed``
tool starts / ends / raises             ``tool_called`` / ``tool_returned`` / ``tool_failed``
``interrupt()`` or a static breakpoint  ``graph_interrupted`` (interrupt ids and values);
                                        the run stays RUNNING
``Command(resume=...)``, same thread    the SAME run goes on: ``checkpoint_restored``
each invocation ends (checkpointer)     ``checkpoint_saved`` per checkpoint it wrote
graph returns / raises                  ``graph_completed`` (outputs, final state digest)
                                        / ``graph_failed``
======================================  ===============================================

One runfold run per graph invocation; an invocation that pauses on an interrupt keeps
its run open, and the next invocation on the same ``thread_id`` (through this object)
continues it, seq and all. A paused run lives in this object: ``cancel(thread_id)``
ends one nobody will resume, and ``close()`` (or the object's end) ends those left, as
CANCELLED. Events of one object are serialized by a lock, so seq stays
contiguous when LangGraph runs parallel branches on threads or tasks; nothing is
emitted after a run's end. The recorder's sink may fail (no broker at start-up): the
run is then left unrecorded, counted in :attr:`RunfoldCallback.sink_failures`, logged,
and the graph runs on; for :attr:`RunfoldCallback.retry_after` seconds new runs are
not attempted (counted in ``runs_dropped``) so an outage costs no start-up timeouts.
A broker lost mid-run is the producer's business: events queue and are accounted as
delivered, failed or indeterminate in its ``DeliveryReport``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
import weakref
from collections import Counter
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

try:
    from langgraph.callbacks import GraphCallbackHandler, GraphInterruptEvent, GraphResumeEvent
    from langgraph.checkpoint.base import BaseCheckpointSaver
    from langgraph.errors import GraphBubbleUp, GraphInterrupt

    from producers.integrations.langgraph_graph import (
        START,
        chat_messages,
        checkpoints_after,
        content_length,
        graph_structure,
        latest_checkpoint,
        message_role,
        node_path,
        split_output,
        static_successors,
    )
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "producers.integrations.langgraph needs LangGraph 1.2 or later: "
        "pip install 'runfold[langgraph]'"
    ) from exc

from producers.integrations.values import current_git_sha, spec_digest, state_digest, to_json
from producers.kafka import EventProducer
from producers.recorder import RunHandle, RunRecorder
from schemas import (
    CheckpointRestored,
    CheckpointSaved,
    GraphInterrupted,
    MessageAdded,
    NodeEntered,
    NodeExited,
    NodeFailed,
    NodeRetrying,
    StateUpdated,
    ToolCalled,
    ToolFailed,
    ToolReturned,
)

__all__ = ["RunfoldCallback"]

_log = logging.getLogger("runfold.langgraph")

_CHECKPOINT_STEP_NODES = {-1: "__input__", 0: START}
"""LangGraph's checkpoints before the first node: the input, then the start node's writes."""

_ROOT, _NODE, _TOOL, _INNER = range(4)


class _Run:
    """One runfold run: a graph invocation, or several on one thread across interrupts."""

    def __init__(self, scope: AbstractContextManager[RunHandle], handle: RunHandle,
                 thread_id: str | None) -> None:
        self.scope = scope
        """The :meth:`RunRecorder.run` block, left when the run ends."""
        self.handle = handle
        self.thread_id = thread_id
        self.langgraph_run_id = ""
        """LangGraph's id of the invocation in progress."""
        self.visits: Counter[str] = Counter()
        self.step_nodes: dict[int, list[str]] = {}
        """Top-level nodes by LangGraph step: a checkpoint's ``node_id``."""
        self.last_checkpoint: str | None = None
        self.paused_at: str | None = None
        """The node whose ``interrupt()`` (or breakpoint) paused the run last."""
        self.last_exit: tuple[str, list[str]] = ("", [])
        """The node that exited last and its next nodes, where a breakpoint stands."""
        self.paused = False
        """An interrupt happened in the invocation in progress."""
        self.failed_attempts: dict[str, _Attempt] = {}
        """Task namespace -> its failed attempt, until the task runs again or the step ends."""
        self.broken = False
        """The sink failed: nothing more is sent for this run."""

    def end_unfinished(self, detail: str | None) -> None:
        """End the run as CANCELLED (``detail`` in the payload) unless it has ended."""
        if self.broken or self.handle.ended:
            return
        self.handle.cancel(reason=detail, node_id=self.paused_at)
        self.scope.__exit__(None, None, None)


class _Attempt:
    __slots__ = ("error", "failed_ns", "node_id", "number", "step", "task")

    def __init__(self, span: _Span, error: str) -> None:
        self.node_id, self.task, self.step = span.node_id, span.task, span.step
        self.number = span.failed_before + 1
        self.error = error
        self.failed_ns = time.monotonic_ns()


class _Span:
    """A LangChain run this object follows: the graph, a node, a tool or something inside."""

    __slots__ = ("call_id", "failed_before", "kind", "name", "node_id", "root", "run",
                 "started_ns", "step", "task")

    def __init__(self, root: uuid.UUID, run: _Run | None, kind: int, node_id: str, task: str,
                 step: int = 0, name: str = "") -> None:
        self.root = root
        """The LangChain run id of the graph invocation this span belongs to."""
        self.run, self.kind, self.node_id, self.task, self.step = run, kind, node_id, task, step
        self.name = name
        self.call_id: str | None = None
        """A tool span's ``tool_call_id`` (the model's id of the call), when it has one."""
        self.failed_before = 0
        self.started_ns = time.monotonic_ns()


class RunfoldCallback(GraphCallbackHandler):
    """Records each invocation of ``graph`` as a runfold run (see the module docstring).

    Pass it in the invocation's config: ``config={"callbacks": [callback], ...}``. One
    object may serve many invocations, also concurrent ones (each is its own run).
    ``recorder`` defaults to a :class:`RunRecorder` over an :class:`EventProducer` built
    from the ``RUNFOLD_*`` settings (no connection until the first event); ``git_sha``
    to :func:`~producers.integrations.values.current_git_sha`; ``checkpoints=False``
    skips the checkpointer queries behind ``checkpoint_saved``.
    """

    run_inline = True
    """Called on the event loop's thread under ``ainvoke``: events keep their order and
    no thread hop is paid per callback (emit only queues to the producer)."""
    # Not followed: models (their messages reach the state, where they are counted) and the
    # rest. ``ignore_agent`` stays False: LangChain routes tool callbacks through it.
    ignore_llm = ignore_chat_model = ignore_retriever = ignore_custom_event = True

    def __init__(self, graph: Any, recorder: RunRecorder | None = None, *,
                 git_sha: str | None = None, checkpoints: bool = True,
                 retry_after: float = 30.0) -> None:
        self.recorder = RunRecorder(EventProducer()) if recorder is None else recorder
        self.graph_name: str = graph.get_name()
        structure = graph_structure(graph)
        self.agent_spec_digest = spec_digest(structure)
        self.git_sha = current_git_sha() if git_sha is None else git_sha
        self.entry_point = ",".join(t for s, t, _, _ in structure["edges"] if s == START) or None
        self._next_node = static_successors(structure["edges"])
        saver = getattr(graph, "checkpointer", None)
        self._checkpointer = saver if checkpoints and isinstance(saver, BaseCheckpointSaver) \
            else None
        self.retry_after = retry_after
        """Seconds during which no new run is attempted after the sink failed."""
        self.sink_failures = 0
        """Runs whose recording stopped because the sink raised."""
        self.runs_dropped = 0
        """Invocations not recorded because the sink had failed less than ``retry_after`` ago."""
        self.last_run_id: uuid.UUID | None = None
        """The runfold run id of the latest run started."""
        self._sink_down_until = 0.0
        # Reentrant: converting a user's value (its repr, its model_dump) under the lock
        # could call back into this object; that must never deadlock the graph.
        self._lock = threading.RLock()
        self._spans: dict[uuid.UUID, _Span] = {}
        self._roots: dict[uuid.UUID, _Run] = {}
        self._paused: dict[str, _Run] = {}
        # Discarded without close(): its paused runs end as cancelled. A weakref callback
        # runs before the collector finalizes the runs' recorder blocks, which would
        # report the GeneratorExit they receive as a failure of the graph. Not at exit:
        # the producer may be closed by then.
        weakref.finalize(self, _cancel_paused, self._paused).atexit = False

    # --- what users may ask ------------------------------------------------------------

    def close(self, timeout: float = 30.0) -> Any:
        """End the runs still paused as CANCELLED (nothing can resume them through this
        object any more), then close the recorder's sink (flush the producer); returns
        its ``DeliveryReport``."""
        with self._lock:
            paused = list(self._paused.values())
            self._paused.clear()
            for run in paused:
                self._end_paused(run, "the runfold callback was closed while the run was paused")
        return self.recorder.close(timeout)

    def paused_run(self, thread_id: str) -> uuid.UUID | None:
        """The run id waiting for a resume on ``thread_id``, if any."""
        with self._lock:
            run = self._paused.get(thread_id)
            return None if run is None else run.handle.run_id

    def cancel(self, thread_id: str, reason: str | None = None) -> bool:
        """End the run paused on ``thread_id`` as CANCELLED (nobody will resume it).

        Returns False when no run is paused there.
        """
        with self._lock:
            run = self._paused.pop(thread_id, None)
            if run is None:
                return False
            self._end_paused(run, reason)
            return True

    def _end_paused(self, run: _Run, detail: str | None) -> None:
        try:
            run.end_unfinished(detail)
        except Exception as exc:  # noqa: BLE001 - see _sink_failed
            self._sink_failed(exc, run)

    # --- LangChain / LangGraph callbacks -----------------------------------------------

    def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: uuid.UUID,
                       parent_run_id: uuid.UUID | None = None,
                       metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        """A graph, node or inner runnable starts."""
        meta = metadata or {}
        with self._lock:
            parent = self._spans.get(parent_run_id) if parent_run_id is not None else None
            if parent is None:
                self._open_invocation(run_id, inputs, meta, kwargs.get("name"))
                return
            task = meta.get("langgraph_checkpoint_ns")
            if not isinstance(task, str) or task == parent.task:
                self._spans[run_id] = _Span(parent.root, parent.run, _INNER, parent.node_id,
                                            parent.task)
                return
            self._enter_node(run_id, parent, task, meta)

    def on_chain_end(self, outputs: Any, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        """A graph, node or inner runnable returns."""
        with self._lock:
            span = self._pop_span(run_id)
            if span is None or span.run is None:
                return
            if span.kind == _ROOT:
                self._close_invocation(run_id, span.run, outputs, None)
            elif span.kind == _NODE:
                self._exit_node(span, span.run, outputs)

    def on_chain_error(self, error: BaseException, *, run_id: uuid.UUID,
                       **kwargs: Any) -> None:
        """A graph, node or inner runnable raises."""
        with self._lock:
            span = self._pop_span(run_id)
            if span is None or span.run is None:
                return
            run = span.run
            if span.kind == _ROOT:
                # A graph invoked inside one we do not follow bubbles its pause (and its
                # Command to the parent graph) up: a pause, and control flow, not failures.
                if isinstance(error, GraphInterrupt) and not run.paused:
                    self._pause(run, "interrupt", error.args[0] if error.args else (), None)
                failed = None if isinstance(error, GraphBubbleUp) else error
                self._close_invocation(run_id, run, None, failed)
            elif span.kind == _NODE:
                if isinstance(error, GraphBubbleUp):
                    # A pause (interrupt) or a jump (Command to the parent), not a failure.
                    if isinstance(error, GraphInterrupt):
                        run.paused_at = span.node_id
                    return
                run.failed_attempts[span.task] = _Attempt(span, _error_text(error))

    def on_tool_start(self, serialized: Any, input_str: str, *, run_id: uuid.UUID,
                      parent_run_id: uuid.UUID | None = None, **kwargs: Any) -> None:
        """A tool is called inside a node we follow."""
        with self._lock:
            parent = self._spans.get(parent_run_id) if parent_run_id is not None else None
            if parent is None:
                return
            name = (serialized or {}).get("name") or kwargs.get("name") or "tool"
            span = _Span(parent.root, parent.run, _TOOL, parent.node_id, parent.task,
                         name=str(name))
            if kwargs.get("tool_call_id") is not None:
                span.call_id = str(kwargs["tool_call_id"])
            self._spans[run_id] = span
            self._emit(span.run, ToolCalled(tool_name=span.name), _tool_payload(span))

    def on_tool_end(self, output: Any, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        """A tool returns."""
        with self._lock:
            span = self._spans.pop(run_id, None)
            if span is not None and span.kind == _TOOL:
                self._emit(span.run, ToolReturned(tool_name=span.name),
                           _tool_payload(span, duration_ms=_ms_since(span)))

    def on_tool_error(self, error: BaseException, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        """A tool raises (an ``interrupt()`` inside a tool is a pause, not a failure)."""
        with self._lock:
            span = self._spans.pop(run_id, None)
            if span is not None and span.kind == _TOOL and not isinstance(error, GraphBubbleUp):
                self._emit(span.run, ToolFailed(tool_name=span.name),
                           _tool_payload(span, error=_error_text(error)))

    def on_interrupt(self, event: GraphInterruptEvent) -> None:
        """The graph pauses: ``graph_interrupted``; the run stays open for the resume.

        Only for a graph invocation this object opened a run for: a subgraph's pause is
        reported by its root graph too.
        """
        with self._lock:
            run = self._roots.get(event.run_id) if event.run_id is not None else None
            if run is None:
                return
            # A breakpoint stands after the node that exited last, or before its next one.
            exited, following = run.last_exit
            if event.status == "interrupt_after":
                run.paused_at = exited
            elif event.status == "interrupt_before":
                run.paused_at = ",".join(following)
            reason = "interrupt" if event.status == "pending" else event.status
            self._pause(run, reason, event.interrupts, event.checkpoint_id)

    def on_resume(self, event: GraphResumeEvent) -> None:
        """The graph resumes from a checkpoint: ``checkpoint_restored``."""
        with self._lock:
            run = self._roots.get(event.run_id) if event.run_id is not None else None
            if run is None:
                return
            self._emit(
                run,
                CheckpointRestored(checkpoint_id=event.checkpoint_id,
                                   node_id=run.paused_at or ""),
                {"langgraph_run_id": run.langgraph_run_id, "thread_id": run.thread_id},
            )

    # --- the mapping ---------------------------------------------------------------------

    def _open_invocation(self, run_id: uuid.UUID, inputs: Any, meta: Mapping[str, Any],
                         name: Any) -> None:
        thread = meta.get("thread_id")
        thread_id = None if thread is None else str(thread)
        run = self._paused.pop(thread_id, None) if thread_id is not None else None
        if run is None:
            run = self._start_run(inputs, thread_id, str(name or self.graph_name))
        self._spans[run_id] = _Span(run_id, run, _ROOT, "", "")
        if run is not None:
            run.langgraph_run_id = str(run_id)
            self._roots[run_id] = run

    def _pop_span(self, run_id: uuid.UUID) -> _Span | None:
        """The span ``run_id`` ends. When it is an invocation's, the spans of that
        invocation whose end never came (a branch still running when the graph raised)
        go too, so that nothing accumulates."""
        span = self._spans.pop(run_id, None)
        if span is not None and span.kind == _ROOT:
            for key in [key for key, other in self._spans.items() if other.root == run_id]:
                del self._spans[key]
        return span

    def _start_run(self, inputs: Any, thread_id: str | None, graph_name: str) -> _Run | None:
        if time.monotonic() < self._sink_down_until:
            self.runs_dropped += 1
            return None
        scope = self.recorder.run(self.agent_spec_digest, self.git_sha, to_json(inputs),
                                  graph_name=graph_name, entry_point=self.entry_point)
        try:
            handle = scope.__enter__()
        except Exception as exc:  # noqa: BLE001 - see _sink_failed
            self._sink_failed(exc, None)
            return None
        run = _Run(scope, handle, thread_id)
        self.last_run_id = handle.run_id
        run.last_checkpoint = self._latest_checkpoint(thread_id)
        if isinstance(inputs, Mapping):
            self._emit_messages(run, inputs)
        return run

    def _enter_node(self, run_id: uuid.UUID, parent: _Span, task: str,
                    meta: Mapping[str, Any]) -> None:
        step = meta.get("langgraph_step")
        run = parent.run
        span = _Span(parent.root, run, _NODE, node_path(task), task,
                     step if isinstance(step, int) else 0)
        self._spans[run_id] = span
        if run is None:
            return
        self._settle_failures(run, task, span.step)
        attempt = run.failed_attempts.pop(task, None)
        if attempt is not None:
            span.failed_before = attempt.number
            delay_ms = (span.started_ns - attempt.failed_ns) // 1_000_000
            self._emit(run, NodeRetrying(node_id=span.node_id, attempt=attempt.number,
                                         delay_ms=delay_ms), {"error": attempt.error})
        else:
            run.visits[span.node_id] += 1
            nodes = run.step_nodes.setdefault(span.step, [])
            if "|" not in task and span.node_id not in nodes:  # top level, once per step
                nodes.append(span.node_id)
        # Keys in code point order, as in every payload built here: the consumer's batch
        # lane takes a record of a counted kind only when its payload text is canonical.
        payload = {"langgraph_run_id": run.langgraph_run_id, "step": span.step,
                   "task_id": task.rpartition(":")[2], "thread_id": run.thread_id}
        self._emit(run, NodeEntered(node_id=span.node_id, iteration=run.visits[span.node_id]),
                   payload)

    def _exit_node(self, span: _Span, run: _Run, outputs: Any) -> None:
        update, goto = split_output(outputs)
        if update:
            keys = tuple(str(key) for key in update)
            self._emit(run, StateUpdated(node_id=span.node_id, keys_changed=keys))
            self._emit_messages(run, update)
        targets = goto or self._next_node.get(span.node_id.rpartition("/")[2], [])
        run.last_exit = (span.node_id, targets)
        self._emit(run, NodeExited(node_id=span.node_id,
                                   next_node=",".join(targets) or None,
                                   duration_ms=_ms_since(span)))

    def _emit_messages(self, run: _Run, values: Mapping[Any, Any]) -> None:
        for message in chat_messages(values):
            self._emit(run, MessageAdded(role=message_role(message),
                                         content_length=content_length(message.content)))

    def _settle_failures(self, run: _Run, task: str | None, step: int | None) -> None:
        """Failed attempts that will not run again become ``node_failed``: all of them
        (``task`` None, the invocation ends) or those of earlier steps in ``task``'s graph."""
        if not run.failed_attempts:
            return
        graph_ns = None if task is None else task.rpartition("|")[0]
        for key, attempt in list(run.failed_attempts.items()):
            if graph_ns is None or (attempt.task.rpartition("|")[0] == graph_ns
                                    and step is not None and attempt.step < step):
                del run.failed_attempts[key]
                self._emit(run, NodeFailed(node_id=attempt.node_id, error=attempt.error),
                           {"attempts": attempt.number})

    def _pause(self, run: _Run, reason: str, interrupts: Any, checkpoint_id: str | None
               ) -> None:
        """``graph_interrupted``; the run stays open until an invocation on its thread ends."""
        run.paused = True
        payload = {
            "checkpoint_id": checkpoint_id,
            "interrupts": [{"id": getattr(i, "id", None), "value": to_json(getattr(i, "value", i))}
                           for i in interrupts],
            "langgraph_run_id": run.langgraph_run_id,
            "thread_id": run.thread_id,
        }
        self._emit(run, GraphInterrupted(reason=reason, node_id=run.paused_at or ""), payload)

    def _close_invocation(self, run_id: uuid.UUID, run: _Run, outputs: Any,
                          error: BaseException | None) -> None:
        self._roots.pop(run_id, None)
        self._settle_failures(run, None, None)
        self._record_checkpoints(run)
        if error is None and run.paused:
            run.paused = False
            if run.thread_id is not None:
                self._paused[run.thread_id] = run
            else:  # cannot happen with LangGraph's checkpointers, which need a thread id
                self._end_paused(run, "paused without a thread_id: nothing can resume it")
            return  # RUNNING until an invocation on the same thread ends it
        if run.broken:
            return
        try:
            if error is None:
                final = to_json(outputs)
                run.handle.complete(final, state_digest(final, converted=True))
                run.scope.__exit__(None, None, None)
            else:
                run.scope.__exit__(type(error), error, error.__traceback__)
        except Exception as exc:  # noqa: BLE001 - see _sink_failed
            self._sink_failed(exc, run)

    # --- checkpoints ---------------------------------------------------------------------

    def _latest_checkpoint(self, thread_id: str | None) -> str | None:
        if self._checkpointer is None or thread_id is None:
            return None
        try:
            return latest_checkpoint(self._checkpointer, thread_id)
        except Exception as exc:  # noqa: BLE001 - e.g. an async-only saver
            self._checkpoints_unreadable(exc)
            return None

    def _record_checkpoints(self, run: _Run) -> None:
        """``checkpoint_saved`` for each checkpoint written since the run last looked."""
        if self._checkpointer is None or run.thread_id is None or run.broken:
            return
        try:
            written = checkpoints_after(self._checkpointer, run.thread_id, run.last_checkpoint)
        except Exception as exc:  # noqa: BLE001 - e.g. an async-only saver
            self._checkpoints_unreadable(exc)
            return
        for checkpoint_id, step, source in written:
            node_id = "" if step is None else _CHECKPOINT_STEP_NODES.get(step) or ",".join(
                run.step_nodes.get(step, ()))
            self._emit(run, CheckpointSaved(checkpoint_id=checkpoint_id, node_id=node_id),
                       {"source": source, "step": step})
            run.last_checkpoint = checkpoint_id

    def _checkpoints_unreadable(self, exc: Exception) -> None:
        _log.warning("runfold: cannot read the graph's checkpointer (%s: %s); "
                     "checkpoint_saved events are off for this callback",
                     type(exc).__name__, str(exc))
        self._checkpointer = None

    # --- sending -------------------------------------------------------------------------

    def _emit(self, run: _Run | None, kind: Any, payload: Any = None) -> None:
        if run is None or run.broken or run.handle.ended:
            return
        try:
            run.handle.emit(kind, payload)
        except Exception as exc:  # noqa: BLE001 - see _sink_failed
            self._sink_failed(exc, run)

    def _sink_failed(self, exc: Exception, run: _Run | None) -> None:
        """The graph must not fail because recording did: stop this run, pause new ones.

        Logged as text: a log record holding ``exc`` would keep its traceback, and with it
        a half-built Kafka client retrying its broker, alive.
        """
        self.sink_failures += 1
        self._sink_down_until = time.monotonic() + self.retry_after
        if run is not None:
            run.broken = True
        _log.warning("runfold: recording %s stopped, the event sink raised %s: %s; the graph "
                     "runs on, new runs are not recorded for %gs",
                     f"run {run.handle.run_id}" if run is not None else "a new run",
                     type(exc).__name__, str(exc), self.retry_after)


def _cancel_paused(paused: dict[str, _Run]) -> None:
    for run in paused.values():
        with contextlib.suppress(Exception):  # nothing may escape a finalizer
            run.end_unfinished("the runfold callback was discarded while the run was paused")
    paused.clear()


def _tool_payload(span: _Span, **extra: Any) -> dict[str, Any]:
    """A tool event's payload: ``extra`` (``duration_ms`` or ``error``), the node calling
    the tool, the model's call id: keys in code point order, so the consumer's lane takes it."""
    payload: dict[str, Any] = {**extra, "node_id": span.node_id}
    if span.call_id is not None:
        payload["tool_call_id"] = span.call_id
    return payload


def _ms_since(span: _Span) -> int:
    return (time.monotonic_ns() - span.started_ns) // 1_000_000


def _error_text(exc: BaseException) -> str:
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
