"""hypothesis strategies for the contract's values (imported by the tests in this folder)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from schemas import EVENT_KINDS, Event, Run, RunStatus, Timestamp, Violation, ViolationKind

I64_MIN = -(2**63)
I64_MAX = 2**63 - 1
U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1
# chrono's DateTime<Utc> range, as nanoseconds.
CHRONO_MIN_NS = -8_334_601_228_800 * 10**9
CHRONO_MAX_NS = 8_210_266_876_799 * 10**9 + 999_999_999

texts = st.text(max_size=12)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=I64_MIN, max_value=U64_MAX),
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(texts, children, max_size=4)
    ),
    max_leaves=12,
)


def kinds(long_max: int = U64_MAX) -> st.SearchStrategy[Any]:
    """Any EventKind variant; u64 fields up to ``long_max`` (Avro: 2**63-1)."""
    u32 = st.integers(min_value=0, max_value=U32_MAX)
    u64 = st.integers(min_value=0, max_value=long_max)
    field_strategies = {
        "iterations": u32,
        "iteration": u32,
        "attempt": u32,
        "duration_ms": u64,
        "delay_ms": u64,
        "content_length": u64,
        "next_node": st.none() | texts,
        "keys_changed": st.lists(texts, max_size=3).map(tuple),
    }
    variants = []
    for cls in EVENT_KINDS.values():
        fields = {
            name: field_strategies.get(name, texts) for name in cls.model_fields if name != "type"
        }
        variants.append(st.builds(cls, **fields))
    return st.one_of(variants)


def events(*, avro: bool = False) -> st.SearchStrategy[Event]:
    """Events serde can hold; with ``avro`` only those the Avro codec reads back (a seq
    of 1 ..= 2**63 - 1, u64 fields within a ``long``)."""
    long_max = I64_MAX if avro else U64_MAX
    nanos = (
        st.integers(min_value=I64_MIN, max_value=I64_MAX)
        if avro
        else st.integers(min_value=CHRONO_MIN_NS, max_value=CHRONO_MAX_NS)
    )
    return st.builds(
        Event,
        run_id=st.uuids(),
        seq=st.integers(min_value=1 if avro else 0, max_value=long_max),
        timestamp=nanos.map(Timestamp),
        kind=kinds(long_max),
        payload=json_values,
    )


def runs(*, avro: bool = False) -> st.SearchStrategy[Run]:
    """Runs serde can hold; with ``avro`` timestamps an Avro ``long`` can carry."""
    nanos = (
        st.integers(min_value=I64_MIN, max_value=I64_MAX)
        if avro
        else st.integers(min_value=CHRONO_MIN_NS, max_value=CHRONO_MAX_NS)
    ).map(Timestamp)
    return st.builds(
        Run,
        run_id=st.uuids(),
        agent_spec_digest=texts,
        git_sha=texts,
        started_at=nanos,
        finished_at=st.none() | nanos,
        status=st.sampled_from(RunStatus),
        inputs=json_values,
        outputs=st.none() | json_values.filter(lambda v: v is not None),
        final_state_digest=st.none() | texts,
    )


def violations() -> st.SearchStrategy[Violation]:
    """Violations an Avro ``long`` can carry."""
    seqs = st.integers(min_value=0, max_value=I64_MAX)
    return st.builds(
        Violation,
        run_id=st.uuids(),
        kind=st.sampled_from(ViolationKind),
        first_seq=seqs,
        last_seq=seqs,
        message=texts,
    )
