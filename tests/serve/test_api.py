"""The /v1 read API over a simulated fleet folded by the real service."""

from __future__ import annotations

import httpx
from conftest import load_fleet, view_has, wait_for  # type: ignore[import-not-found]

from runfold.settings import RunfoldSettings


def test_runs_list_matches_the_fleet_manifest(
    kafka: RunfoldSettings, fold: object, client: httpx.Client
) -> None:
    manifest = load_fleet(kafka, runs=30, faults="gap=0.1,conflict=0.1,after_end=0.1")
    wait_for(view_has(client, 30), what="the view to hold the fleet")
    expected = {run["run_id"]: run for run in manifest["runs"]}
    seen: dict[str, dict] = {}
    cursor = None
    while True:
        page = client.get("/v1/runs", params={"limit": 7, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["runs"]) <= 7
        for run in body["runs"]:
            assert run["run_id"] not in seen
            seen[run["run_id"]] = run
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert set(seen) == set(expected)
    for run_id, run in seen.items():
        assert run["status"] == expected[run_id]["run"]["status"]
        assert run["events_applied"] == expected[run_id]["applied"]
