"""The service's watch for stalled runs: when each owned run last got an event (wall clock).

The rule is :func:`consumers.stall.flag_stalled`; this module only knows *when* to ask
it. Event time cannot tell a dead agent from a slow one (a silent run has no event time
at all), so the watch runs on the wall clock (``time.time_ns``, injectable for tests),
and it is checked at every commit (every ``txn_interval_ms`` while records flow) and,
while the service is idle, by the loop (which opens a transaction for what it flags).

It costs nothing per event: the runs a transaction changed are stamped with the commit's
time (:meth:`StallWatch.touch`), in an ``OrderedDict`` per partition kept in last-seen
order, so a check pops the runs that are due from its head and stops at the first one
that is not. A popped run leaves the watch (flagged, finished or already stalled) until
an event touches it again.

Runs restored on assignment start their wait at the restore time: a restart (or a
rebalance, or an abort, which restores) restarts the wait, and a run silent since before
it is flagged ``stall_after`` after the restore at the earliest. ``stalled_since`` is part
of the stored state, so a run flagged before is not flagged again. Restored runs held as
bytes (:class:`~consumers.service.store.PartitionStore`) are not stamped one by one: the
partition's restore time stands for all of them, and when it is due they are checked a
bounded number per check (their status read from the bytes; only a RUNNING one is
decoded), so a million restored runs do not stop one commit for seconds.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from consumers.service.store import PartitionStore
from consumers.stall import Stall, flag_stalled
from consumers.state import FoldConfig, RunState
from schemas import RunStatus

__all__ = ["StallWatch"]

log = logging.getLogger("runfold.consume")

_RUNNING = RunStatus.RUNNING
_CHECKED_PER_TURN = 2_000
"""Restored runs held as bytes checked per check (~5 us each to read the status)."""


@dataclass
class _Restored:
    """A partition's runs restored as bytes: their wait started at ``at``."""

    at: int
    keys: list[bytes] | None = None
    """Snapshot of the keys still held as bytes, taken when the check is due."""
    next: int = 0


class StallWatch:
    """Which owned runs are due a stall check, by the wall time they last got an event."""

    def __init__(
        self, stall_after_s: float, fail: bool = False, clock: Callable[[], int] = time.time_ns
    ) -> None:
        self.stall_after_ns = round(stall_after_s * 1e9)
        self.fail = fail
        self.clock = clock
        """Wall-clock nanoseconds now."""
        self.stalled = 0
        """Runs of the owned partitions flagged stalled and still RUNNING, as far as the
        watch has seen them (a restored one counts once its check is due): a gauge."""
        self._seen: dict[int, OrderedDict[bytes, int]] = {}
        self._restored: dict[int, _Restored] = {}
        self._stalled: dict[int, set[bytes]] = {}

    def restored(self, store: PartitionStore, partitions: list[int], now: int) -> None:
        """``partitions`` were just restored into ``store``: their runs' wait starts now."""
        for partition in partitions:
            self._seen[partition] = OrderedDict.fromkeys(store.runs.get(partition, ()), now)
            self._restored[partition] = _Restored(now)
            self._stalled[partition] = set()
        self._count(store)

    def touch(self, dirty: Mapping[int, set[bytes]], store: PartitionStore, now: int) -> None:
        """The runs ``dirty`` changed in the transaction being committed got an event now.

        A stalled run among them is counted stalled no more once an event cleared it."""
        for partition, keys in dirty.items():
            seen = self._seen.get(partition)
            if seen is None:
                seen = self._seen[partition] = OrderedDict()
            runs = store.runs.get(partition, {})
            for key in keys:
                state = runs.get(key)
                if state is not None and state.is_terminal:
                    # A finished run cannot stall: not watched, so the watch holds the
                    # runs under way, not every run that ended in the last stall_after.
                    seen.pop(key, None)
                    continue
                seen[key] = now
                seen.move_to_end(key)
            stalled = self._stalled.get(partition)
            if stalled:
                runs = store.runs.get(partition, {})
                for key in stalled & keys:
                    state = runs.get(key)
                    if state is None or state.stalled_since is None or state.is_terminal:
                        stalled.discard(key)
        self._count(store)

    def due(self, now: int) -> bool:
        """Whether a check now would find a run to look at (cheap: the heads only)."""
        after = self.stall_after_ns
        for seen in self._seen.values():
            if seen and now - next(iter(seen.values())) >= after:
                return True
        return any(now - restored.at >= after for restored in self._restored.values())

    def check(
        self, store: PartitionStore, now: int, config: FoldConfig
    ) -> list[tuple[int, bytes, Stall]]:
        """Flag every due run of ``store`` (:func:`~consumers.stall.flag_stalled`);
        ``(partition, key, stall)`` of each run it changed, to be written and published."""
        flagged: list[tuple[int, bytes, Stall]] = []
        after = self.stall_after_ns
        for partition in list(self._seen):
            runs = store.runs.get(partition)
            if runs is None:  # revoked or lost since: forgotten with its state
                self._forget(partition)
                continue
            seen = self._seen[partition]
            while seen:
                key, last = next(iter(seen.items()))
                if now - last < after:
                    break
                del seen[key]
                state = runs.get(key)
                if state is None:
                    # Paged out since (idle over --max-active-runs, consumers.service.lifecycle),
                    # or a finished run's marker (not RUNNING: nothing to flag).
                    state = self._running_stored(store, partition, key)
                if state is not None:
                    self._flag(partition, key, state, last, now, config, flagged)
            restored = self._restored.get(partition)
            if restored is not None and now - restored.at >= after:
                self._check_restored(store, partition, restored, now, config, flagged)
        self._count(store)
        return flagged

    def _check_restored(
        self,
        store: PartitionStore,
        partition: int,
        restored: _Restored,
        now: int,
        config: FoldConfig,
        flagged: list[tuple[int, bytes, Stall]],
    ) -> None:
        if restored.keys is None:
            restored.keys = store.untouched(partition)
        keys, start = restored.keys, restored.next
        end = min(len(keys), start + _CHECKED_PER_TURN)
        for key in keys[start:end]:
            # None: decoded since, so stamped when its transaction committed.
            state = self._running_stored(store, partition, key)
            if state is not None:
                self._flag(partition, key, state, restored.at, now, config, flagged)
        restored.next = end
        if end >= len(keys):
            del self._restored[partition]

    def _running_stored(self, store: PartitionStore, partition: int, key: bytes) -> RunState | None:
        """The state of a run held as bytes if it is RUNNING (decoded then), else None."""
        try:
            if store.stored_status(partition, key) is not _RUNNING:
                return None
            return store.get(partition, key)
        except Exception as exc:  # noqa: BLE001 - a damaged state must not stop the watch
            # Its run's next record meets the same error on the fold's path; the watch
            # only skips it.
            log.warning(
                "stall check: the stored state of run %s cannot be read: %s",
                key.decode("utf-8", "replace"),
                exc,
            )
            return None

    def _flag(
        self,
        partition: int,
        key: bytes,
        state: RunState,
        last: int,
        now: int,
        config: FoldConfig,
        flagged: list[tuple[int, bytes, Stall]],
    ) -> None:
        stall = flag_stalled(state, last, now, self.stall_after_ns, fail=self.fail, config=config)
        if stall is not None:
            flagged.append((partition, key, stall))
        if state.stalled_since is not None and not state.is_terminal:
            self._stalled.setdefault(partition, set()).add(key)

    def _forget(self, partition: int) -> None:
        self._seen.pop(partition, None)
        self._restored.pop(partition, None)
        self._stalled.pop(partition, None)

    def _count(self, store: PartitionStore) -> None:
        self.stalled = sum(
            len(keys) for partition, keys in self._stalled.items() if partition in store.runs
        )
