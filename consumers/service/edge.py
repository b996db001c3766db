"""The seam between the folding service and the pure parts it drives.

:class:`FoldEdge` is what the service (and the restore, the queries) asks of the codec
and the fold: decode an input record, fold an event into a run, turn a run's state and
a violation into bytes and back. One class with one method per question, so a reader
follows each call to the function that answers it; the lane's decoder rides along.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from consumers.run_view import RunView, run_reader
from consumers.sequence import apply_event
from consumers.service.lane import LaneDecoder, decoder
from consumers.state import DEFAULT_CONFIG, FoldConfig, Outcome, RunState
from schemas import Event, Violation, codec
from schemas.framing import CONFLUENT_HEADER_SIZE

__all__ = ["FoldEdge"]

_MAX_FRAMINGS = 64
"""Confluent schema ids looked at for the lane; a bound on what a stream of odd ids costs."""


class FoldEdge:
    """runfold's codec (:mod:`schemas.codec`) and fold (:mod:`consumers.sequence`) for one
    :class:`~consumers.state.FoldConfig`, as the service uses them.

    ``lane``: whether the service may use the batch lane's C decoder
    (:mod:`consumers.service.lane`) when it is built; False makes every record take the
    general path (the lane's oracle in the tests).
    """

    def __init__(self, config: FoldConfig = DEFAULT_CONFIG, *, lane: bool = True) -> None:
        self.config = config
        self.lane: LaneDecoder | None = decoder() if lane else None
        self._encode_state, self._decode_state, self._encode_records = _run_state_codec()
        self._read_run = run_reader(self._decode_state, config)
        self._framings_seen: set[bytes] = set()

    @classmethod
    def default(cls, config: FoldConfig = DEFAULT_CONFIG) -> FoldEdge:
        """The edge every command uses: runfold's codec and fold, the lane when built."""
        return cls(config)

    def decode_event(
        self, value: bytes, topic: str | None, partition: int | None, offset: int | None
    ) -> Event:
        """Bytes → Event; raises :class:`~schemas.errors.DecodeError` naming the record."""
        try:
            return codec.decode_event(value)
        except Exception as exc:
            at = getattr(exc, "at", None)
            if callable(at):
                at(topic, partition, offset)
            raise

    def learn_framing(self, value: bytes) -> None:
        """After the general path read a Confluent-framed record: if its schema id names the
        Event version the lane decoder reads, let the lane take the next ones with that id."""
        if value[:1] != b"\x00" or self.lane is None:
            return  # not Confluent-framed, or no lane to teach
        header = value[:CONFLUENT_HEADER_SIZE]
        if header in self._framings_seen:
            return
        if len(self._framings_seen) < _MAX_FRAMINGS:
            self._framings_seen.add(header)  # asked once per id, whatever the answer
        if codec.current_event_header(value) == header:
            self.lane.learn(header)

    def apply(self, state: RunState | None, event: Event) -> tuple[RunState, list[Outcome]]:
        """Fold one event into its run's state (``None``: a run not seen yet).

        The fold digests the decoded event (:func:`~consumers.digest.content_digest`,
        canonical), never the record's bytes: the same event framed or encoded otherwise
        is the same content, here and in the library fold. (The lane's C decoder hands
        :func:`~consumers.next_event.fold_next` the digest of bytes it proved canonical,
        which is the same value.)"""
        return apply_event(state, event, self.config)

    def encode_state(self, state: RunState) -> bytes:
        """A run's state as the bytes of its ``agent-runs`` record."""
        return self._encode_state(state)

    def decode_state(self, value: bytes) -> RunState:
        """The state in a changelog record's bytes (or an old ``agent-runs`` record's)."""
        return self._decode_state(value)

    def encode_records(self, state: RunState) -> tuple[bytes, bytes]:
        """A run's two records: its changelog record (``encode_state``, what a restore
        needs) and its ``agent-runs`` record (a ``runfold.RunSummary``, what readers want)."""
        return self._encode_records(state)

    def read_run(self, value: bytes) -> RunView:
        """What a reader wants of an ``agent-runs`` value, new (RunSummary) or old
        (RunState): :func:`consumers.run_view.run_reader`."""
        return self._read_run(value)

    def encode_violation(self, violation: Violation) -> bytes:
        """A violation as the bytes of its ``agent-run-violations`` record."""
        return codec.encode_violation(violation)


def _run_state_codec() -> tuple[
    Callable[[RunState], bytes],
    Callable[[bytes], RunState],
    Callable[[RunState], tuple[bytes, bytes]],
]:
    """Encode/decode a RunState as Avro single-object bytes of ``RunState.v2.avsc``, and
    encode its two records (changelog RunState, ``agent-runs`` RunSummary).

    Through :mod:`consumers.state_bytes` (the same bytes, four times cheaper) when it
    can; the general path (record dict and fastavro) otherwise, and for anything it
    fails on, so that a bad state is refused with the general path's precise error.
    """
    from consumers.state_bytes import outputs_writer, state_reader, state_writer
    from consumers.state_codec import summary_to_record

    encode_record: Callable[..., bytes] = codec.encode_record
    decode_record: Callable[..., Any] = codec.decode_record
    write = state_writer()
    write_both = outputs_writer()
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

    def encode_both(state: RunState) -> tuple[bytes, bytes]:
        if write_both is not None:
            try:
                return write_both(state)
            except Exception:  # noqa: BLE001, S110 - the general path says what is wrong
                pass
        return (
            encode_record("RunState", state.to_record()),
            encode_record("RunSummary", summary_to_record(state)),
        )

    return encode, decode, encode_both
