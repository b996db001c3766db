"""The simulator's per-event hot path: event bytes without models, scheduler draws.

:class:`DirectWriter` writes a fleet event's Avro single-object bytes straight from
the run's plan (what ``EventCodec().encode(Event(...))`` gives, byte for byte);
:func:`below_draws` is ``Random.randrange(n)`` without its argument checks. Both
were measured as the simulator's largest costs per event; ``tests/producers/
test_fleet_bytes.py`` pins the fleet's records so neither may change a byte.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from schemas import GraphCompleted
from schemas import fastpath as _fastpath

if TYPE_CHECKING:
    from producers.runs import RunPlan

__all__ = [
    "GROUP7_VARINT",
    "LOW14_VARINT",
    "NINE_BYTE_STAMPS",
    "DirectWriter",
    "InFlight",
    "PlanRandom",
    "below_draws",
    "completed_kind",
    "direct_writer",
    "stamp_bytes9",
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


def below_draws(rng: random.Random) -> Callable[[int], int]:
    """``rng.randrange(n)`` (so ``randint(a, b)`` is ``a + below(b - a + 1)``), inlined.

    The same draws from the same generator, hence the same records byte for byte
    (a test pins them); randrange's argument checks were a tenth of the simulator's
    time. Falls back to ``randrange`` if the generator draws some other way.
    """
    draws = random.Random._randbelow_with_getrandbits  # type: ignore[attr-defined]
    if type(rng)._randbelow is not draws:  # type: ignore[attr-defined]
        return rng.randrange
    getrandbits = rng.getrandbits

    def below(n: int) -> int:
        k = n.bit_length()
        r = getrandbits(k)
        while r >= n:
            r = getrandbits(k)
        return r

    return below


class PlanRandom(random.Random):
    """``random.Random`` whose ``randint`` and ``choice`` skip ``randrange``'s checks.

    The same draws (``getrandbits`` of the bit length, redrawn while out of range,
    as ``Random._randbelow_with_getrandbits``), so a plan drawn with it is the plan
    ``random.Random`` draws; the pinned records prove it. About a tenth of the
    simulator's cost per event was those checks.
    """

    def randint(self, a: int, b: int) -> int:
        n = b - a + 1
        if n <= 0:
            return super().randint(a, b)  # raises as Random does
        k = n.bit_length()
        getrandbits = self.getrandbits
        r = getrandbits(k)
        while r >= n:
            r = getrandbits(k)
        return a + r

    def sample(self, population: Any, k: int, *, counts: Any = None) -> list[Any]:
        """``Random.sample`` with its small-pool path inline for a tuple of up to 21 items.

        The same draws as Random's (a pool, ``randbelow(n - i)`` per pick); its
        ``isinstance(population, Sequence)`` ABC check cost as much as the draws.
        """
        n = len(population) if type(population) is tuple else -1
        if counts is not None or not 0 <= k <= n <= 21 or k > 5:
            return super().sample(population, k, counts=counts)
        getrandbits = self.getrandbits
        pool = list(population)
        result = []
        for i in range(k):
            size = n - i
            bits = size.bit_length()
            j = getrandbits(bits)
            while j >= size:
                j = getrandbits(bits)
            result.append(pool[j])
            pool[j] = pool[size - 1]  # move the item not chosen into the vacancy
        return result

    def choice(self, seq: Any) -> Any:
        n = len(seq)
        if not n:
            raise IndexError("Cannot choose from an empty sequence")
        k = n.bit_length()
        getrandbits = self.getrandbits
        r = getrandbits(k)
        while r >= n:
            r = getrandbits(k)
        return seq[r]


NINE_BYTE_STAMPS = range(1 << 55, 1 << 62)
"""Timestamps (ns; 1971..2116) whose Avro varint is 9 bytes: what :func:`stamp_bytes9` writes.

Test with comparisons (``_NINE_LOW <= n < _NINE_HIGH``), not ``in``: for an int
subclass such as Timestamp, range membership walks the range item by item."""
_NINE_LOW, _NINE_HIGH = NINE_BYTE_STAMPS.start, NINE_BYTE_STAMPS.stop


def stamp_bytes9(stamp: int) -> bytes:
    """The Avro long varint of ``stamp`` in :data:`NINE_BYTE_STAMPS` (zigzag: 2n), unrolled.

    The fleet writes the same expression inline in its loop (a call costs a tenth of it).
    """
    z = stamp << 1
    return bytes((z & 127 | 128, z >> 7 & 127 | 128, z >> 14 & 127 | 128, z >> 21 & 127 | 128,
                  z >> 28 & 127 | 128, z >> 35 & 127 | 128, z >> 42 & 127 | 128,
                  z >> 49 & 127 | 128, z >> 56))


LOW14_VARINT: list[bytes] = _fastpath._LOW14
"""The first two bytes of a longer varint whose low 14 bits are ``n``."""
GROUP7_VARINT: list[bytes] = _fastpath._GROUP7
"""One middle byte of a longer varint: 7 bits and the continuation bit."""

_KIND_CACHE_SIZE = 50_000


class DirectWriter:
    """Writes a fleet event's single-object bytes from the plan, without an Event model.

    Byte for byte what ``EventCodec().encode(event)`` gives (a test compares them):
    the header, the run_id, seq and timestamp, the kind from its planned values
    (:data:`schemas.fastpath.KIND_VALUE_WRITERS`) and the planned payload text.
    An event's bytes are ``heads[seq] + <timestamp varint> + tails[seq]`` (:meth:`parts`);
    only the timestamp, and the terminal graph_completed's duration, wait for the clock.
    """

    def __init__(self) -> None:
        from schemas import fastpath
        from schemas.framing import SINGLE_OBJECT_MAGIC

        self._header = SINGLE_OBJECT_MAGIC + fastpath.PINNED["Event"] + b"\x48"  # + run_id
        self._long = fastpath._long
        self._string = fastpath._string
        self._kind_writers = fastpath.KIND_VALUE_WRITERS
        self._small = [fastpath._long(n) for n in range(64)]
        self._empty = fastpath._string("{}")  # half of all payloads
        self._kinds: dict[tuple[type, tuple[Any, ...]], bytes] = {}

    def parts(self, run: InFlight) -> tuple[list[bytes], list[bytes | None]]:
        """``heads``, ``tails`` indexed by seq (index 0 unused); the terminal tail is None.

        Written for a whole run at once: one comprehension costs less than the same
        work spread over one call per event.
        """
        prefix = self._header + run.key
        long_, small, empty = self._long, self._small, self._empty
        writers = self._kind_writers
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
            else:  # fastpath._string(text), its one-byte length inline
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
            kind = self._kind_writers[GraphCompleted](
                (plan.iterations, (stamp - stamps[1]) // 1_000_000))
        else:
            kind = self._kind_writers[cls](values)
        long_ = self._long
        return b"".join(
            (
                self._header,
                run.key,
                self._small[seq] if seq < 64 else long_(seq),
                stamp_bytes9(stamp) if _NINE_LOW <= stamp < _NINE_HIGH else long_(stamp),
                kind,
                self._empty if text == "{}" else self._string(text),
            )
        )

    __call__ = write


def direct_writer() -> DirectWriter | None:
    """The fleet's :class:`DirectWriter`, or None when the codec's current Event version
    is not the one the fast path was written for."""
    from schemas import fastpath
    from schemas.codec import EventCodec

    if EventCodec().current.fingerprint != fastpath.PINNED["Event"]:
        return None
    return DirectWriter()
