"""The folding side: the pure fold of run events into ``Run`` state, and its Kafka edges."""

from __future__ import annotations

from consumers.edge import FoldEdge
from consumers.fold import (
    FoldResult,
    FoldStats,
    Tally,
    apply_event,
    content_digest,
    digest_bytes,
    flush,
    fold,
)
from consumers.kafka_errors import ServiceStopped
from consumers.service import FoldService
from consumers.service_config import ServiceConfig
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
from consumers.stats import ServiceStats

__all__ = [
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
    "flush",
    "fold",
    "from_record",
    "to_record",
    # the folding service
    "FoldEdge",
    "FoldService",
    "ServiceConfig",
    "ServiceStats",
    "ServiceStopped",
]
