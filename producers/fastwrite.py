"""The simulator's per-event hot path: event bytes without models, and plan draws.

:class:`DirectWriter` writes a fleet event's Avro single-object bytes straight from
the run's plan with :mod:`schemas.avro_binary` (what ``EventCodec().encode(Event(...))``
gives, byte for byte); :class:`PlanRandom` draws below a bound with ``getrandbits``
alone. Both were measured as the simulator's largest costs per event;
``tests/producers/test_fleet_bytes.py`` pins the fleet's records so neither may change
a byte.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, Protocol

from schemas import GraphCompleted, avro_binary
from schemas.avro_binary import KIND_VALUE_WRITERS, UUID_LENGTH, write_long, write_stamp

if TYPE_CHECKING:
    from producers.runs import RunPlan

__all__ = [
    "DirectWriter",
    "InFlight",
    "PlanRandom",
    "completed_kind",
    "direct_writer",
]


class InFlight(Protocol):
    """What the writer reads of a run being sent (``producers.fleet._RunInFlight``)."""

    plan: RunPlan
    key: bytes
    """The run_id text, UTF-8."""
    stamps: dict[int, int]
    """seq -> timestamp (ns) of the events stamped so far."""


def completed_kind(plan: RunPlan, elapsed_ns: int) -> GraphCompleted:
    """The terminal graph_completed, whose duration is known once the run is stamped."""
    return GraphCompleted(iterations=plan.iterations, duration_ms=elapsed_ns // 1_000_000)


class PlanRandom(random.Random):
    """``random.Random`` drawing below a bound with ``getrandbits`` only, in one method.

    :meth:`below` draws ``getrandbits(n.bit_length())`` again while out of range: what
    CPython's ``randrange(n)`` does today, so plans equal the ones ``random.Random``
    drew, but defined here with public methods so that the records the pinned hashes
    hold do not depend on an interpreter's private helpers. ``randint``, ``choice``
    and small ``sample`` calls go through it, skipping ``randrange``'s argument checks
    (about a tenth of the simulator's cost per event).
    """

    def below(self, n: int) -> int:
        """A uniform integer in ``0..n-1`` (``n >= 1``)."""
        k = n.bit_length()
        getrandbits = self.getrandbits
        r = getrandbits(k)
        while r >= n:
            r = getrandbits(k)
        return r

    def randint(self, a: int, b: int) -> int:
        """A uniform integer in ``a..b``."""
        if b < a:
            return super().randint(a, b)  # raises as Random does
        return a + self.below(b - a + 1)

    def sample(self, population: Any, k: int, *, counts: Any = None) -> list[Any]:
        """``Random.sample`` with its small-pool path inline for a tuple of up to 21 items.

        The same draws as Random's (a pool, ``below(n - i)`` per pick); its
        ``isinstance(population, Sequence)`` ABC check cost as much as the draws.
        """
        n = len(population) if type(population) is tuple else -1
        if counts is not None or not 0 <= k <= n <= 21 or k > 5:
            return super().sample(population, k, counts=counts)
        below = self.below
        pool = list(population)
        result = []
        for i in range(k):
            j = below(n - i)
            result.append(pool[j])
            pool[j] = pool[n - i - 1]  # move the item not chosen into the vacancy
        return result

    def choice(self, seq: Any) -> Any:
        """A uniform item of ``seq``."""
        if not seq:
            raise IndexError("Cannot choose from an empty sequence")
        return seq[self.below(len(seq))]


_KIND_CACHE_SIZE = 50_000


class DirectWriter:
    """Writes a fleet event's single-object bytes from the plan, without an Event model.

    Byte for byte what ``EventCodec().encode(event)`` gives (a test compares them):
    the header, the run_id, seq and timestamp, the kind from its planned values
    (:data:`schemas.avro_binary.KIND_VALUE_WRITERS`) and the planned payload text.
    An event's bytes are ``heads[seq] + <timestamp varint> + tails[seq]`` (:meth:`parts`);
    only the timestamp, and the terminal graph_completed's duration, wait for the clock.
    """

    def __init__(self) -> None:
        from schemas.framing import SINGLE_OBJECT_MAGIC

        self._header = SINGLE_OBJECT_MAGIC + avro_binary.PINNED["Event"] + UUID_LENGTH
        self._small = [write_long(n) for n in range(64)]
        self._empty = avro_binary.write_string("{}")  # half of all payloads
        self._kinds: dict[tuple[type, tuple[Any, ...]], bytes] = {}

    def parts(self, run: InFlight) -> tuple[list[bytes], list[bytes | None]]:
        """``heads``, ``tails`` indexed by seq (index 0 unused); the terminal tail is None.

        Written for a whole run at once: one comprehension costs less than the same
        work spread over one call per event.
        """
        prefix = self._header + run.key
        long_, small, empty = write_long, self._small, self._empty
        writers = KIND_VALUE_WRITERS
        planned = run.plan.planned
        heads = [b""]
        heads.extend(prefix + (small[seq] if seq < 64 else long_(seq))
                     for seq in range(1, len(planned) + 1))
        kinds = self._kinds
        tails: list[bytes | None] = [b""]
        append = tails.append
        for cls, values, text in planned:
            if cls is None:
                append(None)
                continue
            # Most kinds repeat across runs (a node entered at an iteration, a tool
            # called): their bytes are written once. The cache stops growing at its cap.
            key = (cls, values)
            kind = kinds.get(key)
            if kind is None:
                kind = writers[cls](values)
                if len(kinds) < _KIND_CACHE_SIZE:
                    kinds[key] = kind
            if text == "{}":
                append(kind + empty)
            else:  # write_string(text), its one-byte length inline
                data = text.encode()
                size = len(data)
                append(b"".join((kind, small[size] if size < 64 else long_(size),
                                 data)))
        return heads, tails

    def write(self, run: InFlight, seq: int) -> bytes:
        """The bytes of event ``seq`` of ``run``, stamped (``run.stamps``) already."""
        plan = run.plan
        cls, values, text = plan.planned[seq - 1]
        stamps = run.stamps
        stamp = stamps[seq]
        if cls is None:
            kind = KIND_VALUE_WRITERS[GraphCompleted](
                (plan.iterations, (stamp - stamps[1]) // 1_000_000))
        else:
            kind = KIND_VALUE_WRITERS[cls](values)
        return b"".join(
            (
                self._header,
                run.key,
                self._small[seq] if seq < 64 else write_long(seq),
                write_stamp(stamp),
                kind,
                self._empty if text == "{}" else avro_binary.write_string(text),
            )
        )

    __call__ = write


def direct_writer() -> DirectWriter | None:
    """The fleet's :class:`DirectWriter`, or None when the codec's current Event version
    is not the one :mod:`schemas.avro_binary` was written for."""
    from schemas.codec import EventCodec

    if EventCodec().current.fingerprint != avro_binary.PINNED["Event"]:
        return None
    return DirectWriter()
