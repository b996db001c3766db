"""What LangGraph's graphs and callback values mean to runfold: structure, names, updates.

Pure readers used by :mod:`producers.integrations.langgraph` (LangGraph imported, no
state kept): a compiled graph's structure (what its spec digest covers) and the nodes
each node hands control to; a task namespace as a node path; a node's return value as
a state update and the nodes it jumps to; the chat messages in an update, with the role
and length runfold's ``message_added`` carries; the checkpoints a thread has.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.types import Command, Send

__all__ = [
    "END",
    "START",
    "chat_messages",
    "checkpoints_after",
    "content_length",
    "graph_structure",
    "latest_checkpoint",
    "message_role",
    "node_path",
    "split_output",
    "static_successors",
]

START, END = "__start__", "__end__"
"""LangGraph's names of the virtual first and last nodes."""

_ROLES = {"human": "user", "ai": "assistant", "AIMessageChunk": "assistant",
          "system": "system", "tool": "tool", "function": "tool"}
"""LangChain message types as the roles runfold's events use."""


def graph_structure(graph: Any) -> dict[str, Any]:
    """What identifies a compiled graph's definition: name, node ids, edges, retry policies.

    The ``agent_spec_digest`` is the digest of this; functions are named, never
    ``repr``-ed, so the digest is the same in every process running the same code.
    """
    drawable = graph.get_graph()
    edges = sorted(
        (edge.source, edge.target, bool(edge.conditional),
         edge.data if isinstance(edge.data, str) else None)
        for edge in drawable.edges
    )
    retries: dict[str, list[list[Any]]] = {}
    for name, node in sorted(getattr(graph, "nodes", {}).items()):
        policies = getattr(node, "retry_policy", None) or ()
        retries[name] = [
            [p.max_attempts, p.initial_interval, p.backoff_factor, p.max_interval, p.jitter,
             getattr(p.retry_on, "__qualname__", None) or repr(p.retry_on)]
            for p in policies
        ]
    return {"name": graph.get_name(), "nodes": sorted(drawable.nodes), "edges": edges,
            "retry_policies": retries}


def node_path(task: str) -> str:
    """``"sub:<task id>|inner:<task id>"`` -> ``"sub/inner"``: the node's path of names."""
    return "/".join(part.rpartition(":")[0] or part for part in task.split("|"))


def static_successors(edges: list[tuple[str, str, bool, Any]]) -> dict[str, list[str]]:
    """Node -> its next nodes when its edges are all plain (no branch decides), END left out."""
    targets: dict[str, list[str]] = {}
    branching: set[str] = set()
    for source, target, conditional, _ in edges:
        if conditional:
            branching.add(source)
        elif target != END:
            targets.setdefault(source, []).append(target)
    return {node: sorted(t) for node, t in targets.items() if node not in branching}


def split_output(outputs: Any) -> tuple[Mapping[Any, Any] | None, list[str]]:
    """A node's return value as (state update, nodes it sends control to)."""
    if isinstance(outputs, Command):
        update = outputs.update
        if isinstance(update, list | tuple):
            update = dict(item for item in update if isinstance(item, tuple) and len(item) == 2)
        gotos = outputs.goto if isinstance(outputs.goto, list | tuple) else [outputs.goto]
        names = [g.node if isinstance(g, Send) else str(g) for g in gotos if g]
        return (update if isinstance(update, Mapping) else None), [n for n in names if n != END]
    return (outputs if isinstance(outputs, Mapping) else None), []


def chat_messages(values: Mapping[Any, Any]) -> Iterator[BaseMessage]:
    for value in values.values():
        items = value if isinstance(value, list | tuple) else (value,)
        for item in items:
            if isinstance(item, BaseMessage) and item.type != "remove":
                yield item


def content_length(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):  # content blocks: count the text ones
        return sum(content_length(part if isinstance(part, str) else part.get("text", ""))
                   for part in content if isinstance(part, str | dict))
    return len(str(content))


def message_role(message: BaseMessage) -> str:
    """The role runfold's events use for ``message`` (``user``, ``assistant``...)."""
    return _ROLES.get(message.type, message.type)


def _thread_config(thread_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}


def latest_checkpoint(saver: BaseCheckpointSaver[Any], thread_id: str) -> str | None:
    """The id of the newest checkpoint of ``thread_id``'s root graph, if any."""
    latest = saver.get_tuple(_thread_config(thread_id))
    return None if latest is None else str(latest.config["configurable"]["checkpoint_id"])


def checkpoints_after(saver: BaseCheckpointSaver[Any], thread_id: str, after: str | None
                      ) -> list[tuple[str, int | None, str | None]]:
    """``(checkpoint_id, step, source)`` of each root checkpoint of ``thread_id`` newer
    than ``after`` (all when None), oldest first."""
    newer: list[tuple[str, int | None, str | None]] = []
    for item in saver.list(_thread_config(thread_id)):  # newest first
        checkpoint_id = str(item.config["configurable"]["checkpoint_id"])
        # LangGraph's checkpoint ids sort in time order (its own savers rely on it).
        if after is not None and checkpoint_id <= after:
            break
        metadata = item.metadata or {}
        step, source = metadata.get("step"), metadata.get("source")
        newer.append((checkpoint_id, step if isinstance(step, int) else None,
                      source if isinstance(source, str) else None))
    return newer[::-1]
