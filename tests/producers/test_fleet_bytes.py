"""The simulator's fast paths change no byte: the records are pinned, and equal the codec's.

The fleet writes its events' bytes directly (no Event model per event), builds its
kind models without validating them and draws from its scheduler without
``randrange``'s checks. None of that may change a record: the hashes below were
taken from the simulator before those paths existed. (The manifest's hashes were taken
again when duplicates stopped being listed among a run's violations: counted, not
published, issue 15; the records' hashes did not change.)
"""

from __future__ import annotations

import hashlib
import json

import pytest

from producers import FaultRates, Fleet, FleetConfig
from producers.runs import agent_profiles, plan_run
from schemas.codec import EventCodec

pytestmark = pytest.mark.unit

_ALL_FAULTS = FaultRates(gap=0.1, dup=0.1, reorder=0.1, after_end=0.1, conflict=0.1, corrupt=0.1)


def _digests(fleet: Fleet) -> tuple[int, str, str]:
    records = hashlib.sha256()
    count = 0
    for key, value, meta in fleet.records():
        records.update(key + b"|" + value + repr(tuple(meta)).encode() + b"\n")
        count += 1
    manifest = hashlib.sha256(json.dumps(fleet.manifest(), sort_keys=True).encode())
    return count, records.hexdigest(), manifest.hexdigest()


@pytest.mark.parametrize(
    ("seed", "runs", "expected"),
    [
        (
            7,
            300,
            (
                12142,
                "2bde4111ac34f45e821a843dec292ed1a669d0b21702d71d8e8b494345537fae",
                "d9e0aef5f2d7a8daa889f42d0f5aa2b86cdd7d28271fe2845ccd65b1ed906f49",
            ),
        ),
        (
            0,
            100,
            (
                4313,
                "69f77cf5ccb0865ab7e406ae399866e736432447ad709f409d6a3319c1d92a61",
                "d021adbfd96df4778762528d1e177014277bfd7852fc86d5aa8900505c05cf25",
            ),
        ),
    ],
)
def test_records_and_manifest_are_pinned(
    seed: int, runs: int, expected: tuple[int, str, str]
) -> None:
    fleet = Fleet(FleetConfig(runs=runs, agents=5, seed=seed, faults=_ALL_FAULTS))
    assert _digests(fleet) == expected


def test_direct_bytes_equal_the_codec_encoding_of_each_event() -> None:
    config = FleetConfig(runs=120, agents=4, seed=3, faults=_ALL_FAULTS)
    direct = Fleet(config)
    assert direct._direct is not None  # the fast path is on by default
    # An explicit encoder takes the Event-model path: Event -> EventCodec.encode.
    modelled = Fleet(config, encode=EventCodec().encode)
    assert modelled._direct is None
    assert list(direct.records()) == list(modelled.records())
    assert direct.manifest() == modelled.manifest()


def test_planned_kinds_equal_their_validated_models() -> None:
    agents = agent_profiles(5, 5)
    checked = 0
    for index in range(60):
        plan = plan_run(5, index, agents[index % 5], _ALL_FAULTS)
        for kind, _payload in plan.steps:
            if kind is None:
                continue
            validated = type(kind).model_validate(kind.model_dump())
            assert kind == validated
            assert list(kind.__dict__) == list(validated.__dict__)  # declaration order
            checked += 1
    assert checked > 1000


def test_planned_values_and_text_write_what_the_models_and_serde_write() -> None:
    """Each planned step's kind bytes and payload text equal the model's and serde's."""
    from schemas import avro_binary, serde

    agents = agent_profiles(11, 5)
    seen: set[type] = set()
    for index in range(80):
        plan = plan_run(11, index, agents[index % 5], _ALL_FAULTS)
        for (cls, values, text), (kind, payload) in zip(plan.planned, plan.steps, strict=True):
            assert serde.dumps(payload) == text
            if cls is None:
                continue
            seen.add(cls)
            written = avro_binary.KIND_VALUE_WRITERS[cls](values)
            assert written == avro_binary.KIND_WRITERS[cls](kind)
    assert len(seen) == 15  # every kind but graph_completed, which the fleet builds


@pytest.mark.parametrize(
    "kind",
    [
        "GraphStarted()",
        "GraphCompleted(iterations=4294967295, duration_ms=2**63 - 1)",
        "GraphFailed(error='é \"quoted\" \\n')",
        "GraphInterrupted(reason='cancelled', node_id='')",
        "NodeEntered(node_id='n' * 200, iteration=0)",
        "NodeExited(node_id='a', next_node=None, duration_ms=0)",
        "NodeExited(node_id='a', next_node='日本', duration_ms=64)",
        "NodeFailed(node_id='a', error='')",
        "NodeRetrying(node_id='a', attempt=3, delay_ms=10**12)",
        "ToolCalled(tool_name='t')",
        "ToolReturned(tool_name='t')",
        "ToolFailed(tool_name='t')",
        "CheckpointSaved(checkpoint_id='c', node_id='n')",
        "CheckpointRestored(checkpoint_id='c', node_id='n')",
        "CheckpointDeleted(checkpoint_id='c')",
        "StateUpdated(node_id='n', keys_changed=())",
        "StateUpdated(node_id='n', keys_changed=('a', 'b' * 70))",
        "MessageAdded(role='user', content_length=63)",
    ],
)
def test_kind_value_writers_equal_the_model_writers(kind: str) -> None:
    import schemas
    from schemas import avro_binary

    model = eval(kind, vars(schemas))  # noqa: S307 - a literal table of this test
    values = tuple(v for name, v in model.__dict__.items() if name != "type")
    writer = avro_binary.KIND_VALUE_WRITERS[type(model)]
    assert writer(values) == avro_binary.KIND_WRITERS[type(model)](model)


def test_the_manifest_is_built_once_and_counts_runs_as_they_finish() -> None:
    fleet = Fleet(FleetConfig(runs=40, agents=4, seed=9, faults=_ALL_FAULTS))
    finished = [fleet.runs_finished for _ in fleet.records()]
    assert finished[0] == 0 and finished[-1] == 39 and finished == sorted(finished)
    assert fleet.runs_finished == 40
    first = fleet.manifest()
    first["runs"].pop()  # a caller changing its copy changes nobody else's
    second = fleet.manifest()
    assert len(second["runs"]) == 40 and second["totals"]["runs"] == 40


def test_planned_texts_escape_any_agent_strings_as_serde_does() -> None:
    """graph_started's and graph_completed's payload text, for names that need escaping."""
    from producers.runs import AgentProfile
    from schemas import serde

    agent = AgentProfile(name="odd", agent_spec_digest='sp"ec\\', git_sha="é\n",
                         graph_name='g "q" \\ \u2028 ü', nodes=('n"1', "n\t2"), tools=("t\\",))
    checked = 0
    for index in range(40):
        plan = plan_run(3, index, agent, _ALL_FAULTS)
        started = {"agent_spec_digest": agent.agent_spec_digest, "git_sha": agent.git_sha,
                   "inputs": plan.inputs, "graph_name": agent.graph_name,
                   "entry_point": agent.nodes[0]}
        assert plan.planned[0][2] == serde.dumps(started)
        if plan.outputs is not None:
            completed = {"outputs": plan.outputs, "final_state_digest": plan.final_state_digest}
            assert plan.planned[-1][2] == serde.dumps(completed)
            checked += 1
        for (_, _, text), (_, payload) in zip(plan.planned, plan.steps, strict=True):
            assert serde.dumps(payload) == text
    assert checked > 20


def test_records_without_meta_are_the_same_records() -> None:
    config = FleetConfig(runs=60, agents=4, seed=8, faults=_ALL_FAULTS)
    with_meta, without = Fleet(config), Fleet(config)
    records = list(with_meta.records())
    bare = list(without.records(meta=False))
    assert [(k, v) for k, v, _ in records] == [(k, v) for k, v, _ in bare]
    assert all(meta is None for _, _, meta in bare)
    assert with_meta.manifest() == without.manifest()


@pytest.mark.parametrize("stamp", [1 << 55, (1 << 62) - 1, 1_767_225_600_000_000_000,
                                   1_767_225_600_123_456_789, (1 << 61) + (1 << 20) - 1])
def test_stamp_varints_by_parts_equal_the_codecs(stamp: int) -> None:
    from schemas.avro_binary import NINE_BYTE_STAMPS, write_long, write_stamp

    assert stamp in NINE_BYTE_STAMPS
    for value in (stamp, stamp ^ 1, stamp):  # the kept top bytes, then fresh ones
        assert write_stamp(value) == write_long(value)
