"""Fixtures for the producer tests: the wire codec the fleet encodes with, and small fleets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from producers import FaultRates, Fleet, FleetConfig, RecordMeta
from schemas import Event


@dataclass(frozen=True)
class Codec:
    """The encode/decode pair a fleet test uses."""

    encode: Callable[[Event], bytes]
    decode: Callable[[bytes], Event]


@pytest.fixture(scope="session")
def codec() -> Codec:
    """The project's Avro codec (single-object framing)."""
    from schemas.codec import EventCodec

    codec = EventCodec()
    return Codec(encode=codec.encode, decode=codec.decode)


FleetRecords = list[tuple[bytes, bytes, RecordMeta]]


@pytest.fixture
def make_fleet(codec: Codec) -> Callable[..., tuple[Fleet, FleetRecords]]:
    """Build a fleet from FleetConfig keywords (``faults`` may be text) and generate it."""

    def build(**options: object) -> tuple[Fleet, FleetRecords]:
        faults = options.pop("faults", FaultRates())
        if isinstance(faults, str):
            faults = FaultRates.parse(faults)
        config = FleetConfig(faults=faults, **options)  # type: ignore[arg-type]
        fleet = Fleet(config, encode=codec.encode)
        return fleet, list(fleet.records())

    return build

