"""The seam between the folding service and the pure parts it drives.

:class:`FoldEdge` bundles what the service needs from the codec and the fold:
decode an input record, fold an event into a run, and turn a run's state and a
violation into bytes (and back, for restore). The service only talks to this
object, so the Kafka edge can be tested with another fold, and the codec or the
fold can change their signatures in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from consumers.sequence import digest_bytes
from consumers.state import DEFAULT_CONFIG, FoldConfig, Outcome, RunState
from schemas import Event, Violation
from schemas.framing import CONFLUENT_HEADER_SIZE, SINGLE_OBJECT_HEADER_SIZE, SINGLE_OBJECT_MAGIC

if TYPE_CHECKING:
    from consumers.fastlane import BatchLane

__all__ = ["FoldEdge", "RunStateT", "body_digest"]

RunStateT = TypeVar("RunStateT")


@dataclass(frozen=True)
class FoldEdge(Generic[RunStateT]):
    """The codec and fold functions one service instance uses."""

    decode_event: Callable[[bytes, str | None, int | None, int | None], Event]
    """Bytes → Event; raises :class:`~schemas.errors.DecodeError` (with ``reason``)."""
    apply: Callable[..., tuple[RunStateT, Sequence[Outcome]]]
    """``apply(state, event, digest=None)``: fold one event into its run's state
    (``None``: a run not seen yet), given the event's content digest (``None``: the
    fold computes its own; the service passes ``digest(value)``)."""
    encode_state: Callable[[RunStateT], bytes]
    decode_state: Callable[[bytes], RunStateT]
    encode_violation: Callable[[Violation], bytes]
    source_offset: Callable[[RunStateT], int]
    """Input offset of the last event folded into the state (-1: unknown)."""
    set_source_offset: Callable[[RunStateT, int], None]
    digest: Callable[[bytes], int | None] = lambda value: None
    """The content digest of a decoded record's bytes, passed to ``apply``. One method
    for every event a state ever sees: the digests are kept in it, and restored."""
    batch_lane: BatchLane | None = None
    """Fold consumed records straight from their bytes up to the first one that is not the
    simple common case, which the general path then takes (:mod:`consumers.fastlane`)."""

    @staticmethod
    def default(config: FoldConfig = DEFAULT_CONFIG) -> FoldEdge[RunState]:
        """runfold's codec and fold (:mod:`schemas.codec`, :mod:`consumers.fold`)."""
        from consumers.fastlane import batch_lane
        from consumers.fold import apply_event
        from schemas.codec import decode_event, encode_violation

        state_codec = _run_state_codec()

        def decode(
            value: bytes, topic: str | None, partition: int | None, offset: int | None
        ) -> Event:
            try:
                return decode_event(value)
            except Exception as exc:
                at = getattr(exc, "at", None)
                if callable(at):
                    at(topic, partition, offset)
                raise

        def apply(
            state: RunState | None, event: Event, digest: int | None = None
        ) -> tuple[RunState, Sequence[Outcome]]:
            return apply_event(state, event, config, digest)

        def set_offset(state: RunState, offset: int) -> None:
            state.source_offset = offset

        return FoldEdge(
            decode_event=decode,
            apply=apply,
            encode_state=state_codec[0],
            decode_state=state_codec[1],
            encode_violation=encode_violation,
            source_offset=lambda state: state.source_offset,
            set_source_offset=set_offset,
            digest=body_digest,
            batch_lane=batch_lane(),
        )


def body_digest(value: bytes) -> int:
    """:func:`~consumers.sequence.digest_bytes` of a decoded record's Avro body.

    The framing is left out (single-object or Confluent: the same event has the
    same body under both). The service's one digest method: a redelivered record has
    the same bytes, an event with other content has other bytes. (An event re-encoded
    by another writer schema version would differ too, and be told a conflict.)
    """
    single_object = value[:1] == SINGLE_OBJECT_MAGIC[:1]
    start = SINGLE_OBJECT_HEADER_SIZE if single_object else CONFLUENT_HEADER_SIZE
    return digest_bytes(value[start:])


def _run_state_codec() -> tuple[Callable[[RunState], bytes], Callable[[bytes], RunState]]:
    """Encode/decode a RunState as Avro single-object bytes of ``RunState.v1.avsc``.

    Through :mod:`consumers.state_bytes` (the same bytes, four times cheaper) when it
    can; the general path (record dict and fastavro) otherwise, and for anything it
    fails on, so that a bad state is refused with the general path's precise error.
    """
    from consumers.state_bytes import state_reader, state_writer
    from schemas import codec

    encode_record: Callable[..., bytes] = codec.encode_record
    decode_record: Callable[..., Any] = codec.decode_record
    write = state_writer()
    read = state_reader()

    def encode(state: RunState) -> bytes:
        if write is not None:
            try:
                return write(state)
            except Exception:  # noqa: BLE001, S110 - the general path says what is wrong
                pass
        return encode_record("RunState", state.to_record())

    def decode(value: bytes) -> RunState:
        if read is not None:
            try:
                state = read(value)
            except Exception:  # noqa: BLE001 - the general path says what is wrong
                state = None
            if state is not None:
                return state
        return RunState.from_record(decode_record("RunState", value))

    return encode, decode
