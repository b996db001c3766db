"""The folding service: the Kafka edge around the pure fold of :mod:`consumers`.

::

    loop.FoldService ── the transaction loop: consume, fold (lane or general path)
      ├─ recovery ── rebalances, abort and rewind, restore, failover (clients rebuilt)
      ├─ outputs ── violations, dead letters, run states; the commit
      ├─ base ── the state every part shares (clients, open transaction, counters)
      ├─ store.PartitionStore ── the runs of the owned partitions: restore, migration, rebuild
      │    ├─ lifecycle.StoreLifecycle ── at every commit: markers, paging out, forced flushes
      │    ├─ owned.OwnedRuns ── what is held (decoded or packed), thaw, clocks, buffers
      │    └─ restore ── read the changelog (latest state per key) and the events topic
      ├─ edge.FoldEdge ── what the loop asks of the codec and the fold
      ├─ lane ── the batch lane: common records decoded in C, folded by the one rule
      ├─ dlq, oversize ── dead letters and records too large for their topic
      ├─ errors ── Kafka errors by class: retry, abort and rewind, or stop
      ├─ config ── ServiceConfig and the librdkafka configurations it implies
      └─ stats ── ServiceStats: the shared Tally plus the service's own counters
    queries ── read-side: list, find and replay runs from the topics
"""

from __future__ import annotations

from consumers.service.config import Guarantee, ServiceConfig
from consumers.service.edge import FoldEdge
from consumers.service.errors import ServiceStopped
from consumers.service.loop import FoldService
from consumers.service.stats import ServiceStats

__all__ = [
    "FoldEdge",
    "FoldService",
    "Guarantee",
    "ServiceConfig",
    "ServiceStats",
    "ServiceStopped",
]
