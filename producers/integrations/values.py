"""Framework values made fit for an event payload; digests of state; the code's git sha.

Pure helpers shared by the integrations (no framework imported here):

- :func:`to_json`: a JSON-safe copy of any value a graph passes around (pydantic
  models, dataclasses, chat messages, tuples, sets...), so that ``inputs`` and
  ``outputs`` always fit serde's JSON (DESIGN.md §1) and never make ``emit`` raise;
- :func:`state_digest`: SHA-256 of a value's canonical JSON, the ``final_state_digest``;
- :func:`spec_digest`: SHA-256 of a graph's structure, the ``agent_spec_digest``;
- :func:`current_git_sha`: the sha of the code that runs, when it can be known.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import subprocess
from collections.abc import Mapping
from typing import Any

__all__ = ["current_git_sha", "spec_digest", "state_digest", "to_json"]

_I64_MIN = -(2**63)
_U64_MAX = 2**64 - 1
_MAX_DEPTH = 32
_MAX_REPR = 200

GIT_SHA_VARIABLES = ("RUNFOLD_GIT_SHA", "GIT_SHA", "GITHUB_SHA", "CI_COMMIT_SHA")
"""Environment variables that name the deployed commit, first set one wins."""


def to_json(value: Any, _depth: int = 0) -> Any:
    """A copy of ``value`` built only of dicts (str keys), lists, str, finite numbers, bools, None.

    Containers are copied item by item; a pydantic model is dumped, a dataclass turned
    into a dict, a chat message into ``{"type", "content"}``; integers outside serde's
    i64..u64 and non-finite floats become text; anything else (or anything nested deeper
    than 32 levels) becomes its ``repr``, cut to 200 characters.
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if _I64_MIN <= value <= _U64_MAX else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if _depth >= _MAX_DEPTH:
        return _short_repr(value)
    depth = _depth + 1
    if isinstance(value, Mapping):
        return {str(key): to_json(item, depth) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        return [to_json(item, depth) for item in items]
    message_type = getattr(value, "type", None)
    if isinstance(message_type, str) and hasattr(value, "content"):
        # A chat message (LangChain's BaseMessage and look-alikes): what was said, by whom.
        return {"type": message_type, "content": to_json(value.content, depth)}
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            return to_json(dump(mode="json"), depth)
        except Exception:  # noqa: BLE001 - a model that cannot dump itself is shown as repr
            return _short_repr(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return {"__type__": type(value).__name__, **to_json(fields, depth)}
    return _short_repr(value)


def _short_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not break the recording
        text = f"<{type(value).__name__}>"
    return text if len(text) <= _MAX_REPR else text[: _MAX_REPR - 3] + "..."


def canonical_json(value: Any) -> bytes:
    """``value`` (already JSON-safe) as compact JSON with sorted keys, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def state_digest(value: Any, *, converted: bool = False) -> str:
    """SHA-256 (hex) of the canonical JSON of :func:`to_json` of ``value``
    (``converted``: ``value`` is already what :func:`to_json` returned)."""
    return hashlib.sha256(canonical_json(value if converted else to_json(value))).hexdigest()


def spec_digest(structure: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a graph's structure (name, nodes, edges, policies) as canonical JSON.

    Two processes running the same graph definition get the same digest; any change to a
    node, an edge or a retry policy gives another.
    """
    return hashlib.sha256(canonical_json(to_json(structure))).hexdigest()


@functools.cache
def current_git_sha() -> str:
    """The commit of the code that runs: a ``GIT_SHA_VARIABLES`` value, else ``git rev-parse
    HEAD`` in the working directory, else ``""`` (not a repository, no git). Asked once."""
    for name in GIT_SHA_VARIABLES:
        sha = os.environ.get(name, "").strip()
        if sha:
            return sha
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""
