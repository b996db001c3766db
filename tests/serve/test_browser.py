"""The web view in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

Skipped, with the reason, when /usr/bin/chromium or the playwright package is missing;
``.ci/ensure-chromium`` installs the browser so that CI always runs these.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from serve_fixtures import load_fleet, view_has, wait_for

from clients import RunfoldSettings
from producers import ListSink, RunRecorder
from schemas import NodeEntered
from serve import ServeHandle

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]
NDJSON = {"content-type": "application/x-ndjson"}

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is not installed (pip install playwright)"
)
if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is missing: run .ci/ensure-chromium (apt-get install chromium)",
                allow_module_level=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium; never downloaded (`playwright install` is not used)."""
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def fleet(module_kafka: RunfoldSettings, module_client: httpx.Client) -> dict[str, Any]:
    """A small fleet with faults, folded and in the view."""
    manifest = load_fleet(module_kafka, runs=12, seed=3, faults="gap=0.2,after_end=0.2")
    wait_for(view_has(module_client, manifest), what="the view to hold the fleet")
    return dict(manifest)


@pytest.fixture
def page(browser: Any, module_server: ServeHandle) -> Iterator[Any]:
    """A fresh page; fails the test if it requested anything from another origin."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(60_000)  # a shared, loaded CI machine
    tab = context.new_page()
    elsewhere: list[str] = []
    tab.on("request", lambda r: None if r.url.startswith(module_server.url)
           else elsewhere.append(r.url))
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    context.close()
    assert elsewhere == [], f"the page requested other origins: {elsewhere}"
    assert errors == [], f"JavaScript errors: {errors}"


def test_runs_table_lists_the_fleet(
    page: Any, module_server: ServeHandle, fleet: dict[str, Any]
) -> None:
    page.goto(module_server.url)
    page.wait_for_function("document.querySelectorAll('#runs tbody tr').length >= 12")
    shown = page.eval_on_selector_all("#runs tbody tr", "rows => rows.map(r => r.dataset.runId)")
    assert sorted(shown) == sorted(run["run_id"] for run in fleet["runs"])
    assert page.inner_text("#f-runs") == "12"
    # A filter narrows the table to what the API says.
    failed = {r["run_id"] for r in fleet["runs"] if r["run"]["status"] != "COMPLETED"}
    page.select_option("select[name=status]", "COMPLETED")
    page.wait_for_function(f"document.querySelectorAll('#runs tbody tr').length === "
                           f"{12 - len(failed)}")


def test_run_page_draws_one_bar_per_node(
    page: Any, module_server: ServeHandle, fleet: dict[str, Any]
) -> None:
    run = max((r for r in fleet["runs"] if not r["violations"]),
              key=lambda r: r["applied_kinds"].get("node_entered", 0))
    nodes = run["applied_kinds"]["node_entered"]
    tools = run["applied_kinds"].get("tool_called", 0)
    page.goto(f"{module_server.url}#/runs/{run['run_id']}")
    page.wait_for_selector("svg.timeline")
    assert page.locator("svg.timeline rect.bar-node").count() == nodes
    assert page.locator("svg.timeline rect.bar-tool").count() == tools
    assert page.inner_text("#r-id") == run["run_id"]
    assert page.inner_text("#r-status") == run["run"]["status"]
    target = os.environ.get("RUNFOLD_SCREENSHOT_DIR")
    if target:  # docs/img/serve-run.png is made this way (see README "runfold serve")
        page.screenshot(path=str(Path(target) / "serve-run.png"), full_page=True)


def test_a_live_runs_status_changes_without_reload(
    page: Any, module_server: ServeHandle, module_client: httpx.Client, fleet: dict[str, Any]
) -> None:
    sink = ListSink()
    recording = RunRecorder(sink).run("spec-live", "sha", {"q": 1})
    recording.__enter__().emit(NodeEntered(node_id="think", iteration=1))
    posted = module_client.post("/v1/events", headers=NDJSON,
                                content="\n".join(e.to_json() for e in sink.events))
    assert posted.status_code == 200, posted.text
    run_id = str(sink.events[0].run_id)
    wait_for(lambda: module_client.get(f"/v1/runs/{run_id}").status_code == 200,
             what="the live run to be folded")

    page.goto(module_server.url)
    row = f"#runs tr[data-run-id='{run_id}'] td[data-field=status]"
    page.wait_for_selector(row)
    assert page.inner_text(row) == "RUNNING"
    page.evaluate("window.sameDocument = true")
    page.wait_for_selector("#live.on")

    recording.__exit__(None, None, None)  # graph_completed
    posted = module_client.post("/v1/events", headers=NDJSON, content=sink.events[-1].to_json())
    assert posted.status_code == 200, posted.text
    page.wait_for_function(
        f"document.querySelector(\"{row}\").textContent === 'COMPLETED'", timeout=30_000
    )
    assert page.evaluate("window.sameDocument") is True

    # The run page follows it too, and shows the open node bar closed by the end.
    page.goto(f"{module_server.url}#/runs/{run_id}")
    page.wait_for_selector("svg.timeline rect.bar-node")
    assert page.inner_text("#r-status") == "COMPLETED"



def test_with_api_keys_the_page_asks_for_one(
    browser: Any, module_kafka: RunfoldSettings, fleet: dict[str, Any], tmp_path: Path
) -> None:
    """The key goes in a header (also for the live stream), never in a URL."""
    from serve import ApiKey, ServeSettings, hash_key, new_key, start_in_thread

    key = new_key()
    settings = ServeSettings(data_dir=tmp_path, port=0,
                             api_keys=(ApiKey(name="web", sha256=hash_key(key)),))
    handle = start_in_thread(settings, module_kafka)
    context = browser.new_context()
    context.set_default_timeout(60_000)
    try:
        tab = context.new_page()
        urls: list[str] = []
        tab.on("request", lambda r: urls.append(r.url))
        tab.goto(handle.url)
        tab.wait_for_selector("#keyform:not([hidden])")
        assert "needs an API key" in tab.inner_text("#keyerror")
        tab.fill("#key", key)
        tab.click("#keyform button")
        tab.wait_for_function("document.querySelectorAll('#runs tbody tr').length >= 12")
        tab.wait_for_selector("#live.on")
        assert not any(key in url for url in urls)
    finally:
        context.close()
        handle.stop()
