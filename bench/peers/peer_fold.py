"""The fold every peer runs: one plain function, shared by the peer scripts (stdlib only).

Same rules as runfold's fold for a clean stream; simpler on faults (no reorder buffer, no
content digests, no DLQ), so a peer never does more work than runfold:

- ``seq == last_seq + 1``: applied (status from graph_completed / graph_failed /
  graph_interrupted with reason "cancelled"; identity from graph_started's payload);
- ``seq <= last_seq``: a duplicate, counted, not applied;
- ``seq > last_seq + 1``: a gap, counted, applied (no buffer);
- after a terminal status: counted as a violation, not applied.

``event`` is fastavro's reading of a ``runfold.Event`` with ``return_record_name=True``
(``kind`` is ``(record name, fields)``, ``payload`` JSON text).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["fold_run"]

_TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}
_ENDING = {
    "runfold.GraphCompleted": "COMPLETED",
    "runfold.GraphFailed": "FAILED",
}


def fold_run(run: dict[str, Any] | None, event: dict[str, Any]) -> dict[str, Any]:
    """The run's state after ``event`` (``run`` is updated in place when given)."""
    seq = event["seq"]
    kind_name, kind = event["kind"]
    if run is None:
        run = {
            "status": "RUNNING", "last_seq": 0, "events": 0, "duplicates": 0,
            "violations": 0, "agent_spec_digest": "", "git_sha": "",
            "started_at": event["timestamp"], "finished_at": None,
        }
    if run["status"] in _TERMINAL:
        run["violations"] += 1
        return run
    if seq <= run["last_seq"]:
        run["duplicates"] += 1
        return run
    if seq > run["last_seq"] + 1:
        run["violations"] += 1
    run["last_seq"] = seq
    run["events"] += 1
    if kind_name == "runfold.GraphStarted":
        payload = json.loads(event["payload"])
        run["agent_spec_digest"] = payload.get("agent_spec_digest", "")
        run["git_sha"] = payload.get("git_sha", "")
        run["started_at"] = event["timestamp"]
    elif kind_name in _ENDING:
        run["status"] = _ENDING[kind_name]
        run["finished_at"] = event["timestamp"]
    elif kind_name == "runfold.GraphInterrupted" and kind["reason"] == "cancelled":
        run["status"] = "CANCELLED"
        run["finished_at"] = event["timestamp"]
    return run
