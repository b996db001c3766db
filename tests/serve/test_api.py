"""The /v1 read API over a simulated fleet folded by the real service."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from serve_fixtures import (
    ServerFactory,
    load_fleet,
    view_has,
    wait_for,
)

from clients import RunfoldSettings
from producers import ListSink, RunRecorder
from schemas import Event
from schemas.ledger import replay_digest

FAULTS = "gap=0.15,conflict=0.15,after_end=0.15"


@pytest.fixture(scope="module")
def fleet(module_kafka: RunfoldSettings, module_client: httpx.Client) -> dict[str, Any]:
    """A fleet of 30 runs with faults, folded and in the view (once per module); its manifest."""
    manifest = load_fleet(module_kafka, runs=30, faults=FAULTS)
    wait_for(view_has(module_client, manifest), what="the view to hold the fleet")
    return dict(manifest)


@pytest.fixture
def client(module_client: httpx.Client) -> httpx.Client:
    """The module's server (auth off)."""
    return module_client


def _all_pages(client: httpx.Client, limit: int = 7, **filters: Any) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": limit, **filters, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/runs", params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["runs"]) <= limit
        runs += body["runs"]
        cursor = body["next_cursor"]
        if cursor is None:
            return runs


def test_runs_list_pages_through_the_fleet_newest_first(
    fleet: dict[str, Any], client: httpx.Client
) -> None:
    runs = _all_pages(client)
    expected = {run["run_id"]: run for run in fleet["runs"]}
    assert len(runs) == len({r["run_id"] for r in runs}) == len(expected)
    assert {r["run_id"] for r in runs} == set(expected)
    assert [r["started_at"] for r in runs] == sorted((r["started_at"] for r in runs), reverse=True)
    for run in runs:
        truth = expected[run["run_id"]]
        assert run["status"] == truth["run"]["status"]
        assert run["events_applied"] == truth["applied"]
        assert sorted(run["violation_kinds"]) == sorted({v["kind"] for v in truth["violations"]})


@pytest.mark.parametrize("name", ["status", "agent", "violation", "time"])
def test_runs_list_filters_match_the_manifest(
    fleet: dict[str, Any], client: httpx.Client, name: str
) -> None:
    runs = fleet["runs"]
    if name == "status":
        value = "FAILED" if any(r["run"]["status"] == "FAILED" for r in runs) else "COMPLETED"
        params = {"status": value}
        want = {r["run_id"] for r in runs if r["run"]["status"] == value}
    elif name == "agent":
        value = runs[0]["run"]["agent_spec_digest"]
        params = {"agent": value}
        want = {r["run_id"] for r in runs if r["run"]["agent_spec_digest"] == value}
    elif name == "violation":
        params = {"violation": "gap"}
        want = {r["run_id"] for r in runs if any(v["kind"] == "gap" for v in r["violations"])}
    else:
        starts = sorted(r["run"]["started_at"] for r in runs)
        low, high = starts[5], starts[20]
        params = {"started_after": low, "started_before": high}
        want = {r["run_id"] for r in runs if low <= r["run"]["started_at"] < high}
    assert want and len(want) < len(runs), "the filter must select some runs, not all"
    got = {r["run_id"] for r in _all_pages(client, limit=4, **params)}
    assert got == want


def test_one_run_its_events_and_digest(fleet: dict[str, Any], client: httpx.Client) -> None:
    truth = next(r for r in fleet["runs"] if not r["violations"])
    run_id = truth["run_id"]
    doc = client.get(f"/v1/runs/{run_id}").json()
    assert doc["run"] == truth["run"]
    assert doc["counters"]["events_applied"] == truth["applied"]
    shared = set(doc["counters"]) & set(truth["counters"])
    assert len(shared) > 10
    assert {k: doc["counters"][k] for k in shared} == {k: truth["counters"][k] for k in shared}
    assert doc["violation_records"] == []

    events = client.get(f"/v1/runs/{run_id}/events").json()["events"]
    assert [e["seq"] for e in events] == list(range(1, truth["applied"] + 1))
    page = client.get(f"/v1/runs/{run_id}/events", params={"after_seq": 2, "limit": 3}).json()
    assert [e["seq"] for e in page["events"]] == [3, 4, 5] and page["next_after_seq"] == 5
    parsed = [Event.from_json(json.dumps(e, separators=(",", ":"))) for e in events]
    digest = client.get(f"/v1/runs/{run_id}/digest").json()
    assert digest == {"run_id": run_id, "digest": replay_digest(parsed),
                      "events": truth["applied"], "last_seq": truth["applied"], "complete": True}


def test_a_run_with_violations_lists_them(fleet: dict[str, Any], client: httpx.Client) -> None:
    truth = next(r for r in fleet["runs"] if r["violations"])
    doc = client.get(f"/v1/runs/{truth['run_id']}").json()
    got = sorted((v["kind"], v["first_seq"], v["last_seq"]) for v in doc["violation_records"])
    assert got == sorted((v["kind"], v["first_seq"], v["last_seq"]) for v in truth["violations"])


def test_fleet_summary_counts_statuses_and_violations(
    fleet: dict[str, Any], client: httpx.Client
) -> None:
    totals = fleet["totals"]
    statuses = {k.split(".", 1)[1]: v for k, v in totals.items() if k.startswith("status.")}
    kinds = {k.split(".", 1)[1]: v for k, v in totals.items() if k.startswith("violations.")}
    # The counts are reused for a second or more: poll until they are of the final view.
    summary = wait_for(
        lambda: (s := client.get("/v1/fleet").json())["runs_by_status"] == statuses and s,
        what="the summary's counts",
    )
    assert summary["violations_by_kind"] == kinds
    wait_for(lambda: client.get("/v1/fleet").json()["lag"]
             == {t: 0 for t in summary["topics"].values()}, what="the view's lag to be 0")
    # The fold committed everything (the view read what it wrote, so this comes soon).
    wait_for(lambda: client.get("/v1/fleet").json()["fold_lag"] == 0, what="fold lag 0")
    assert len(summary["recent_violations"]) == min(10, totals["violations"])
    # events/s counts events that reached Kafka in the last 10 s: post one now.
    sink = ListSink()
    with RunRecorder(sink).run("spec-rate", "sha", {}):
        pass
    posted = client.post("/v1/events", content="\n".join(e.to_json() for e in sink.events),
                         headers={"content-type": "application/x-ndjson"})
    assert posted.status_code == 200, posted.text
    wait_for(lambda: client.get("/v1/fleet").json()["events_per_s"] > 0, what="events/s > 0")


def test_stalled_runs(
    kafka: RunfoldSettings, fold: object, serve_factory: ServerFactory
) -> None:
    """A RUNNING run whose state does not change for stall_after is listed as stalled."""
    server = serve_factory(stall_after_s=1.0)
    sink = ListSink()
    handle = RunRecorder(sink).run("spec-stall", "sha", {})
    handle.__enter__()  # graph_started only: the run stays RUNNING
    body = "\n".join(e.to_json() for e in sink.events)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        posted = client.post("/v1/events", content=body,
                             headers={"content-type": "application/x-ndjson"})
        assert posted.status_code == 200, posted.text
        run_id = str(sink.events[0].run_id)
        wait_for(lambda: client.get("/v1/runs", params={"stalled": True}).json()["runs"],
                 what="a stalled run")
        stalled = client.get("/v1/runs", params={"stalled": True}).json()["runs"]
        assert [r["run_id"] for r in stalled] == [run_id]
        assert client.get("/v1/runs", params={"stalled": False}).json()["runs"] == []
        assert client.get(f"/v1/runs/{run_id}").json()["stalled"] is True


@pytest.mark.parametrize(
    ("path", "status", "error"),
    [
        ("/v1/runs/not-a-uuid", 400, "bad_run_id"),
        ("/v1/runs/0b6f4c1e-8a47-4c39-9d0e-2f1f4f3a9b10", 404, "run_not_found"),
        ("/v1/runs/0b6f4c1e-8a47-4c39-9d0e-2f1f4f3a9b10/events", 404, "run_not_found"),
        ("/v1/runs?cursor=bogus", 400, "bad_cursor"),
        ("/v1/runs?status=DONE", 400, "bad_request"),
        ("/v1/runs?started_after=yesterday", 400, "bad_time"),
        ("/v1/runs?limit=0", 400, "bad_request"),
    ],
)
def test_bad_requests_are_named(
    client: httpx.Client, path: str, status: int, error: str
) -> None:
    answer = client.get(path)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"] == error
    assert answer.json()["detail"]


def test_openapi_document_is_served(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/runs", "/v1/runs/{run_id}", "/v1/runs/{run_id}/events",
            "/v1/runs/{run_id}/digest", "/v1/fleet", "/v1/stream", "/v1/events"} <= set(paths)
    assert client.get("/docs").status_code == 200
