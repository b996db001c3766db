"""The view survives a restart (resumes from its offsets) and is rebuilt when deleted."""

from __future__ import annotations

import sqlite3

import httpx
from serve_fixtures import ServerFactory, load_fleet, view_has, wait_for

from clients import RunfoldSettings


def _everything(url: str) -> tuple[list[dict], dict[str, list[dict]]]:
    """Every run's summary and every run's events, as the API serves them."""
    with httpx.Client(base_url=url, timeout=30) as client:
        runs = client.get("/v1/runs", params={"limit": 1000}).json()["runs"]
        events = {r["run_id"]: client.get(f"/v1/runs/{r['run_id']}/events").json()["events"]
                  for r in runs}
    for run in runs:
        run.pop("stalled")
        run.pop("change")
    return runs, events


def test_restart_resumes_and_a_deleted_view_is_rebuilt(
    kafka: RunfoldSettings, fold: object, serve_factory: ServerFactory
) -> None:
    manifest = load_fleet(kafka, runs=12, faults="gap=0.2")
    first = serve_factory()
    with httpx.Client(base_url=first.url, timeout=30) as client:
        wait_for(view_has(client, manifest), what="the view to hold the fleet")
    before = _everything(first.url)
    path = first.server.config.app.state.ctx.settings.view_path
    first.stop()
    offsets = dict(
        ((t, p), o) for t, p, o in sqlite3.connect(path).execute("SELECT * FROM offsets")
    )
    assert offsets and all(o > 0 for o in offsets.values())

    # Restarted: it starts from the file (the runs are there at once) and reads nothing twice.
    again = serve_factory()
    with httpx.Client(base_url=again.url, timeout=30) as client:
        assert client.get("/v1/fleet").json()["runs"] == 12
        wait_for(lambda: client.get("/v1/fleet").json()["view"]["caught_up"],
                 what="the restarted view to catch up")
        assert client.get("/v1/fleet").json()["view"]["records_read"] == 0
    assert _everything(again.url) == before
    again.stop()

    # Deleted: rebuilt from the topics, the same.
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    rebuilt = serve_factory()
    with httpx.Client(base_url=rebuilt.url, timeout=30) as client:
        wait_for(view_has(client, manifest), what="the rebuilt view to catch up")
        wait_for(lambda: client.get("/v1/fleet").json()["view"]["caught_up"],
                 what="the rebuilt view to read to the end")
        assert client.get("/v1/fleet").json()["view"]["records_read"] > 0
    assert _everything(rebuilt.url) == before
