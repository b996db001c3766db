"""The simulator's per-event hot path: event bytes without models, scheduler draws.

:func:`direct_writer` writes a fleet event's Avro single-object bytes straight from
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

if TYPE_CHECKING:
    from producers.runs import RunPlan

__all__ = ["InFlight", "PlanRandom", "below_draws", "completed_kind", "direct_writer"]


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


def direct_writer() -> Callable[[InFlight, int], bytes] | None:
    """Writes a fleet event's single-object bytes from the plan, without an Event model.

    Byte for byte what ``EventCodec().encode(event)`` gives (a test compares them):
    the header, the run_id, seq and timestamp, the kind from its planned values
    (:data:`schemas.fastpath.KIND_VALUE_WRITERS`) and the planned payload text. None
    when the codec's current Event version is not the one the fast path was written for.
    """
    from schemas import fastpath
    from schemas.codec import EventCodec
    from schemas.framing import SINGLE_OBJECT_MAGIC

    fingerprint = fastpath.PINNED["Event"]
    if EventCodec().current.fingerprint != fingerprint:
        return None
    header = SINGLE_OBJECT_MAGIC + fingerprint + b"\x48"  # then the 36 bytes of run_id
    long_ = fastpath._long
    string = fastpath._string
    kind_writers = fastpath.KIND_VALUE_WRITERS
    write_completed = kind_writers[GraphCompleted]
    small = [long_(n) for n in range(64)]
    empty = string("{}")  # half of all payloads
    # Timestamps from 2**55 to 2**62 ns (1971..2116) are 9-byte varints, written inline.
    nine_lo, nine_hi = 1 << 55, 1 << 62

    def write(run: InFlight, seq: int) -> bytes:
        plan = run.plan
        cls, values, text = plan.planned[seq - 1]
        stamps = run.stamps
        stamp = stamps[seq]
        if cls is None:
            kind = write_completed((plan.iterations, (stamp - stamps[1]) // 1_000_000))
        else:
            kind = kind_writers[cls](values)
        if nine_lo <= stamp < nine_hi:
            z = stamp << 1
            stamp_bytes = bytes((z & 127 | 128, z >> 7 & 127 | 128, z >> 14 & 127 | 128,
                                 z >> 21 & 127 | 128, z >> 28 & 127 | 128, z >> 35 & 127 | 128,
                                 z >> 42 & 127 | 128, z >> 49 & 127 | 128, z >> 56))
        else:
            stamp_bytes = long_(stamp)
        return b"".join(
            (
                header,
                run.key,
                small[seq] if seq < 64 else long_(seq),
                stamp_bytes,
                kind,
                empty if text == "{}" else string(text),
            )
        )

    return write
