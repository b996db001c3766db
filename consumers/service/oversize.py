"""A run's state too large for the changelog: shrink it before anything commits.

The changelog and ``agent-runs`` accept records up to their ``max.message.bytes``
(runfold creates both with twice the events topic's limit,
:func:`runfold.topics.output_max_bytes`). The changelog record (the whole state) is the
large one; the ``agent-runs`` summary is that state less its resume part, so both are
encoded from the same state and shrunk together until each fits. A state can still
be larger (a topic created elsewhere, big inputs *and* outputs, a reorder buffer of big
events, long identity strings). Writing nothing for it while its offsets commit would
lose the events folded since its last written version at the next restart; stopping
would make the record a poison pill. So :func:`shrink_to_fit` shrinks the state itself,
in memory (what is written is what a restart restores), step by step, the least
lossy first, until its record fits:

1. ``inputs`` / ``outputs`` (largest first, if over :data:`KEPT_CHARS` bytes) are
   replaced by a marker::

       {"runfold.truncated": {"field": "inputs", "bytes": 10485770}}

   (``bytes``: the size of the field's JSON text);
2. the texts of the recent violations are dropped (they were published to
   ``agent-run-violations`` already; the counts by kind stay, ``violations_dropped``
   grows);
3. the reorder buffer is given up (:func:`consumers.flush`): the gaps before the
   buffered events are declared (``gap`` violations, published in the same
   transaction) and the events applied;
4. identity strings (``agent_spec_digest``, ``git_sha``, ``final_state_digest``) longer
   than :data:`KEPT_CHARS` keep their start and say how long they were.

What is left then is bounded (counters, the digest window, at most ``max_missing_ranges``
ranges): a few KiB. Each step is logged with the run's id. Only a topic limit smaller
than that leaves a state that cannot fit (:class:`StateTooLarge`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from consumers.sequence import flush
from consumers.service.dlq import record_size
from consumers.state import FoldConfig, Outcome, RunState
from schemas.errors import RunfoldError

__all__ = [
    "KEPT_CHARS",
    "TRUNCATED_MARKER",
    "Fitted",
    "StateTooLarge",
    "shrink_to_fit",
    "truncated_marker",
]

log = logging.getLogger("runfold.consume")

TRUNCATED_MARKER = "runfold.truncated"
"""The key of the JSON object that stands in for a field too large to write."""

KEPT_CHARS = 256
"""How much of an identity string too long to write is kept (step 4); JSON fields no
larger than this are never marked (step 1)."""

_JSON_FIELDS = ("inputs", "outputs")
_TEXT_FIELDS = ("agent_spec_digest", "git_sha", "final_state_digest")


class StateTooLarge(RunfoldError):
    """A run's state does not fit the changelog even shrunk: the topic's limit is too small."""


def truncated_marker(field: str, size: int) -> dict[str, Any]:
    """The JSON value written instead of ``field`` whose JSON text has ``size`` bytes."""
    return {TRUNCATED_MARKER: {"field": field, "bytes": size}}


@dataclass
class Fitted:
    """A state's records that fit, and what shrinking it did."""

    values: tuple[bytes, ...]
    """The records' values (``encode(state)`` of the state as it now is; one value when
    ``encode`` gives bytes)."""
    outcomes: list[Outcome] = field(default_factory=list)
    """Outcomes of the buffered events released by step 3: to publish and count."""
    steps: list[str] = field(default_factory=list)
    """What was shrunk, for a person (empty: the state fitted as it was)."""

    @property
    def value(self) -> bytes:
        """The first record's value (the changelog's, the largest)."""
        return self.values[0]


def shrink_to_fit(
    key: bytes,
    state: RunState,
    encode: Callable[[RunState], bytes | tuple[bytes, ...]],
    limit: int,
    config: FoldConfig,
) -> Fitted:
    """``encode(state)`` (a record's value, or several) with every record of at most
    ``limit`` bytes, shrinking ``state`` in place by the steps of the module docstring
    until they fit; :class:`StateTooLarge` when even the last step leaves one too large.
    Encoding errors propagate."""

    def records() -> tuple[bytes, ...]:
        encoded = encode(state)
        return (encoded,) if isinstance(encoded, bytes) else encoded

    def fits(values: tuple[bytes, ...]) -> bool:
        return all(record_size(key, value) <= limit for value in values)

    fitted = Fitted(records())
    if fits(fitted.values):
        return fitted
    original = max(map(len, fitted.values))
    for step in (_mark_json_fields, _drop_violation_texts, _flush_buffer, _cut_identity):
        for done in step(state, config, fitted.outcomes):
            fitted.steps.append(done)
            fitted.values = records()
            if fits(fitted.values):
                log.warning(
                    "state of run %s was %d bytes, over the %d allowed: shrunk (%s)",
                    key.decode("utf-8", "replace"),
                    original,
                    limit,
                    "; ".join(fitted.steps),
                )
                return fitted
    raise StateTooLarge(
        f"state of run {key.decode('utf-8', 'replace')} is {max(map(len, fitted.values))} "
        f"bytes even shrunk ({'; '.join(fitted.steps) or 'nothing to shrink'}), over the "
        f"{limit} allowed: raise max.message.bytes of the changelog and agent-runs topics"
    )


def _mark_json_fields(state: RunState, config: FoldConfig, outcomes: list[Outcome]) -> Any:
    values = {name: getattr(state, name) for name in _JSON_FIELDS}  # each parsed once
    sizes = {name: _json_size(value) for name, value in values.items()}
    for name in sorted(_JSON_FIELDS, key=lambda n: sizes[n], reverse=True):
        value = values[name]
        if value is None or _is_marker(value) or sizes[name] <= KEPT_CHARS:
            continue  # a small value is not what makes the state too large
        setattr(state, name, truncated_marker(name, sizes[name]))
        yield f"{name} ({sizes[name]} bytes) replaced by a {TRUNCATED_MARKER!r} marker"


def _drop_violation_texts(state: RunState, config: FoldConfig, outcomes: list[Outcome]) -> Any:
    kept = len(state.recent_violations)
    if kept:
        state.recent_violations = ()
        state.violations_dropped += kept
        yield f"{kept} violation texts dropped (counted by kind, published before)"


def _flush_buffer(state: RunState, config: FoldConfig, outcomes: list[Outcome]) -> Any:
    held = len(state.pending_events)
    if held:
        outcomes.extend(flush(state, config))
        yield f"reorder buffer of {held} events flushed (gaps declared)"
        yield from _drop_violation_texts(state, config, outcomes)


def _cut_identity(state: RunState, config: FoldConfig, outcomes: list[Outcome]) -> Any:
    for name in _TEXT_FIELDS:
        text = getattr(state, name)
        if text is not None and len(text) > KEPT_CHARS:
            size = len(text.encode())
            setattr(state, name, f"{text[:KEPT_CHARS]}...({TRUNCATED_MARKER}: {size} bytes)")
            yield f"{name} ({size} bytes) cut to {KEPT_CHARS} characters"


def _is_marker(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {TRUNCATED_MARKER}


def _json_size(value: Any) -> int:
    if value is None:
        return 0
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
