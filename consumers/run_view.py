"""What a reader of ``agent-runs`` gets from one record: :class:`RunView`, via :func:`run_reader`.

``agent-runs`` holds ``runfold.RunSummary`` records (the run, counters, violations,
``stalled_since``, the reorder buffer counted); before the changelog split it held the
service's whole ``runfold.RunState``, and a topic that has not been compacted since
still does. Every reader in runfold (``runfold runs``, ``export``, the live view,
``runfold serve``, the bench, the reliability harness) reads both through the one
function :func:`run_reader` makes, so none of them cares which one a record is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from consumers.state import DEFAULT_CONFIG, FoldConfig, RunState
from consumers.state_bytes import PINNED_RUN_SUMMARY, summary_reader
from consumers.state_codec import oldest_pending, summary_from_record
from schemas import codec
from schemas.catalog import default_catalog
from schemas.errors import DecodeError
from schemas.framing import SINGLE_OBJECT_HEADER_SIZE, SINGLE_OBJECT_MAGIC

__all__ = ["RunView", "holds_summary", "run_reader"]

_ANOTHER_SCHEMA = frozenset({"unknown-fingerprint", "unknown-schema-id"})
"""DecodeError reasons of a record that is a kept schema other than RunSummary."""


class RunView(NamedTuple):
    """One ``agent-runs`` record as a reader wants it."""

    state: RunState
    """The run, its counters and violations. Read from a RunSummary, the part only the
    service needs is empty (``source_offset`` -1, no buffered events, no digests)."""
    pending: int
    """Events held in the run's reorder buffer."""
    oldest_pending_at: int | None
    """Timestamp (ns) of the oldest of them; None when none is held."""

    @classmethod
    def of_state(cls, state: RunState) -> RunView:
        """The view of a whole state (an old ``agent-runs`` record, or the service's own)."""
        return cls(state, len(state.pending_events), oldest_pending(state))


_SUMMARY_HEADER = SINGLE_OBJECT_MAGIC + PINNED_RUN_SUMMARY


def holds_summary(value: bytes) -> bool:
    """Whether an ``agent-runs`` value is a RunSummary (of any kept version), not an old
    whole RunState. Only single-object framing is looked at: the service writes no
    other, so a Confluent-framed value there is an older writer's RunState."""
    if value.startswith(_SUMMARY_HEADER):
        return True
    if value[:2] != SINGLE_OBJECT_MAGIC:
        return False
    version = default_catalog().by_fingerprint(value[2:SINGLE_OBJECT_HEADER_SIZE])
    return version is not None and version.name == "RunSummary"


def run_reader(
    decode_state: Callable[[bytes], RunState], config: FoldConfig = DEFAULT_CONFIG
) -> Callable[[bytes], RunView]:
    """``value -> RunView`` for any ``agent-runs`` value: a RunSummary (fast path for the
    pinned version, fastavro for any other or for damaged bytes, whose error it raises),
    or an old RunState record of any kept version or framing, read by ``decode_state``
    (:meth:`consumers.service.FoldEdge.decode_state`). Raises
    :class:`~schemas.errors.DecodeError` (or the state decoder's error) when it is neither.
    """
    fast = summary_reader(config)

    def read(value: bytes) -> RunView:
        if fast is not None:
            try:
                got = fast(value)
            except Exception:  # noqa: BLE001 - the general path says what is wrong
                got = None
            if got is not None:
                return RunView(*got)
        try:
            record = codec.decode_record("RunSummary", value)
        except DecodeError as exc:
            if exc.reason not in _ANOTHER_SCHEMA:
                raise
            return RunView.of_state(decode_state(value))
        return RunView(*summary_from_record(record, config))

    return read
