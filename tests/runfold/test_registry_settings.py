"""A schema registry named in the settings is used: producers write the Confluent wire
format, and every command that reads the topics resolves writer schemas there."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from clients import RunfoldSettings
from producers import EventProducer
from runfold.commands.options import load_settings
from schemas import Event, NodeEntered, Timestamp, codec

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _no_registry_left() -> Iterator[None]:
    yield
    codec.configure_registry(None)


def test_a_registry_in_the_settings_makes_producers_write_confluent_framing() -> None:
    plain = RunfoldSettings(bootstrap_servers="127.0.0.1:1")
    with_registry = RunfoldSettings(
        bootstrap_servers="127.0.0.1:1", schema_registry_url="mock://settings-test"
    )
    assert EventProducer(settings=plain).framing == "single-object"
    assert EventProducer(settings=with_registry).framing == "confluent"
    assert EventProducer(settings=with_registry, framing="single-object").framing == (
        "single-object"
    )


def test_commands_resolve_confluent_records_through_the_configured_registry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    event = Event(
        run_id=uuid.uuid4(),
        seq=3,
        timestamp=Timestamp(1_700_000_000_000_000_000),
        kind=NodeEntered(node_id="plan", iteration=1),
        payload={"k": 1},
    )
    monkeypatch.setenv("RUNFOLD_SCHEMA_REGISTRY_URL", "mock://command-test")
    load_settings()
    framed = codec.encode_event(event, framing="confluent")
    assert framed[:1] == b"\x00"  # magic byte, then the schema id the registry gave
    assert codec.decode_event(framed) == event
