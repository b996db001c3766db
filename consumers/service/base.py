"""The folding service's state: clients, the open transaction, the owned runs, counters.

:class:`ServiceBase` holds what every part of :class:`~consumers.service.loop.FoldService`
shares, built in one ``__init__`` (no network: the clients are built by ``run``), and the
few helpers they all use. The parts are layered classes, each in its module:
``ServiceBase`` ← :class:`~consumers.service.outputs.ServiceOutputs` (what is produced and
committed) ← :class:`~consumers.service.recovery.ServiceRecovery` (rebalances, abort,
rewind, restore, failover) ← :class:`~consumers.service.loop.FoldService` (the loop).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import (
    Consumer,
    KafkaError,
    Message,
    Producer,
)

from consumers.service.config import (
    OutputLimits,
    ServiceConfig,
    consumer_config,
    producer_config,
)
from consumers.service.edge import FoldEdge
from consumers.service.errors import (
    ErrorPolicy,
    ServiceStopped,
)
from consumers.service.stalls import StallWatch
from consumers.service.stats import ServiceStats
from consumers.service.store import PartitionStore

__all__ = ["ServiceBase"]


IDLE_WAIT = 0.2
"""Longest wait of one consume call (then the loop checks for stop and idleness)."""


class ServiceBase:
    """State and shared helpers of one folding service instance."""

    def __init__(
        self,
        config: ServiceConfig,
        *,
        edge: FoldEdge | None = None,
        stats: ServiceStats | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.config = config
        self.edge: FoldEdge = edge if edge is not None else FoldEdge.default()
        self._store = PartitionStore(self.edge, config.lifecycle, wall_clock)
        self.gauges: dict[str, int] = {}
        """What the state store held at the last commit (:meth:`PartitionStore.gauges`);
        replaced whole, so a metrics scrape on another thread reads one consistent set."""
        self.stats = stats if stats is not None else ServiceStats()
        self._clock = clock
        # When each owned run last got an event, on the wall clock: stalled runs.
        self._stalls = StallWatch(config.stall_after_s, config.fail_stalled_runs, wall_clock)
        self._eos = config.guarantee == "exactly-once"
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        # The open transaction (or, at-least-once, the uncommitted batch).
        self._in_txn = False
        self._txn_started = 0.0
        # When the records of the latest consume may have started waiting: a transaction
        # they open is due txn_interval_ms after that (see _next_records).
        self._waiting_since = 0.0
        self._returned = 0.0
        self._txn_events = 0
        self._txn_stats = ServiceStats()
        self._dirty: dict[int, set[bytes]] = {}
        self._next_offsets: dict[int, int] = {}
        self._delivery_failures: list[str] = []
        # Record size limits of agent-runs, the changelog and the DLQ (read at start, run()).
        self._limits = OutputLimits(1_000_000, 1_000_000)
        self._stopping = False
        self._assigned_at = 0.0
        # Partitions assigned and restored (set by on_assign, cleared on revoke/lost).
        self._assigned = False
        self._errors = ErrorPolicy(config, in_transaction=lambda: self._eos and self._in_txn)
        # Runs whose state failed to encode at a commit: checked after each general-path
        # record until a commit writes them (see _state_records).
        self._guarded: set[bytes] = set()
        # Client rebuilds in a row (see _recover), and what "in a row" is measured from.
        self._rebuilds_in_row = 0
        self._transactions_at_rebuild = 0
        self._rebuilt_at = 0.0
        # The last moment this instance was known to be fine: a commit, an idle turn with
        # its partitions assigned, a finished rebuild (see _txn_timed_out).
        self._healthy_at = 0.0

    def _consumer_config(self) -> dict[str, Any]:
        return consumer_config(self.config, error_cb=self._errors.on_error)

    def _producer_config(self) -> dict[str, Any]:
        return producer_config(self.config, error_cb=self._errors.on_error, limits=self._limits)

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._delivery_failures.append(f"{msg.topic()}[{msg.partition()}]: {err.str()}")

    def _producer_or_fail(self) -> Producer:
        if self._producer is None:
            raise ServiceStopped("the producer is not started")
        return self._producer

    def _consumer_or_fail(self) -> Consumer:
        if self._consumer is None:
            raise ServiceStopped("the consumer is not started")
        return self._consumer

    def _ensure_txn(self) -> None:
        if self._in_txn:
            return
        if self._eos:
            self._errors.call("begin_transaction", self._producer_or_fail().begin_transaction)
        self._in_txn = True
        self._txn_started = max(self._waiting_since, self._clock() - IDLE_WAIT)
        self._txn_events = 0
        self._txn_stats = ServiceStats()
        self._delivery_failures.clear()

    def _reset_txn(self) -> None:
        self._in_txn = False
        self._txn_events = 0
        self._txn_stats = ServiceStats()
        self._dirty = {}
        self._next_offsets = {}
