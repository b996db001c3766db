"""The folding side's pure core: run events in, ``Run`` state and named anomalies out.

No Kafka here (importing :mod:`consumers` never imports ``confluent_kafka``; a test
checks): :mod:`consumers.sequence` holds the sequence rules of one run,
:mod:`consumers.next_event` the rule that applies its next event, :mod:`consumers.digest`
the content digest that tells a duplicate from a conflict, :mod:`consumers.runs` the fold
of many runs within global bounds, :mod:`consumers.lifecycle` what is kept of a
finished run (grace, marker, retention), :mod:`consumers.tally` the accounting of
outcomes, :mod:`consumers.state` the values and :mod:`consumers.state_codec` their Avro
record. The Kafka service around it is :mod:`consumers.service`.
"""

from __future__ import annotations

from consumers.digest import content_digest, digest_bytes
from consumers.next_event import COUNTED_KINDS, fold_next
from consumers.runs import FoldResult, FoldStats, fold
from consumers.sequence import apply_event, duplicate_violation, expire, flush
from consumers.state import (
    COUNTER_NAMES,
    DEFAULT_CONFIG,
    FoldConfig,
    FoldError,
    Outcome,
    OutcomeKind,
    RunState,
)
from consumers.state_codec import from_record, to_record
from consumers.tally import Tally

__all__ = [
    "COUNTED_KINDS",
    "COUNTER_NAMES",
    "DEFAULT_CONFIG",
    "FoldConfig",
    "FoldError",
    "FoldResult",
    "FoldStats",
    "Outcome",
    "OutcomeKind",
    "RunState",
    "Tally",
    "apply_event",
    "content_digest",
    "digest_bytes",
    "duplicate_violation",
    "expire",
    "flush",
    "fold",
    "fold_next",
    "from_record",
    "to_record",
]
