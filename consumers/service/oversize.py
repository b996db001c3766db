"""A run's state too large for ``agent-runs``: write it with its big JSON fields replaced.

``agent-runs`` accepts records up to its ``max.message.bytes`` (runfold creates it with
twice the events topic's limit, :func:`runfold.topics.output_max_bytes`). A state can still
be larger (a topic created elsewhere, big inputs *and* outputs, a reorder buffer of big
events). Stopping would make the record a poison pill: every restart meets it again. So
the written copy gets ``inputs`` and/or ``outputs`` (largest first) replaced by a marker::

    {"runfold.truncated": {"field": "inputs", "bytes": 10485770}}

(``bytes``: the size of the field's JSON text), and a warning names the run. The state in
memory keeps the full values until it is dropped; what is restored is the marked copy. A
state still too large without them is not written at all (an error names the run): its
previous version stays in ``agent-runs``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from consumers.service.dlq import record_size

__all__ = ["TRUNCATED_MARKER", "fit_state", "truncated_marker"]

log = logging.getLogger("runfold.consume")

TRUNCATED_MARKER = "runfold.truncated"
"""The key of the JSON object that stands in for a field too large to write."""

_FIELDS = ("inputs", "outputs")


def truncated_marker(field: str, size: int) -> dict[str, Any]:
    """The JSON value written instead of ``field`` whose JSON text has ``size`` bytes."""
    return {TRUNCATED_MARKER: {"field": field, "bytes": size}}


def fit_state(
    key: bytes,
    state: Any,
    encoded: bytes,
    encode: Callable[[Any], bytes],
    limit: int,
) -> bytes | None:
    """``encoded`` (``encode(state)``) if the record fits ``limit`` bytes; else the encoding
    of a copy whose ``inputs``/``outputs`` are replaced by :func:`truncated_marker`; ``None``
    when even that does not fit (or the state has no such fields)."""
    if record_size(key, encoded) <= limit:
        return encoded
    run = key.decode("utf-8", "replace")
    copy = getattr(state, "copy", None)
    if copy is None or not all(hasattr(state, name) for name in _FIELDS):
        log.error(
            "state of run %s is %d bytes, over the %d allowed: not written",
            run,
            len(encoded),
            limit,
        )
        return None
    smaller = copy()
    sizes = {name: _json_size(getattr(state, name)) for name in _FIELDS}
    replaced: list[str] = []
    for name in sorted(_FIELDS, key=lambda n: sizes[n], reverse=True):
        if getattr(state, name) is None:
            continue
        setattr(smaller, name, truncated_marker(name, sizes[name]))
        replaced.append(f"{name} ({sizes[name]} bytes)")
        value = encode(smaller)
        if record_size(key, value) <= limit:
            log.warning(
                "state of run %s is %d bytes, over the %d allowed: written with %s replaced "
                "by a %r marker",
                run,
                len(encoded),
                limit,
                " and ".join(replaced),
                TRUNCATED_MARKER,
            )
            return value
    log.error(
        "state of run %s is %d bytes, over the %d allowed even without inputs/outputs: not "
        "written (its previous version stays in agent-runs)",
        run,
        len(encoded),
        limit,
    )
    return None


def _json_size(value: Any) -> int:
    if value is None:
        return 0
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
