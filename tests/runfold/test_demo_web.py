"""`make demo`'s web view: `runfold serve` started in the background, found, and stopped."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from clients.settings import TopicNames
from runfold.demo_web import start_web_view, stop_web_view


def test_the_demo_web_view_serves_the_topics_and_stops(
    kafka_bootstrap: str, unique_topics: TopicNames, tmp_path: Path
) -> None:
    prefix = unique_topics.events.removesuffix("agent-run-events")
    url = start_web_view(kafka_bootstrap, prefix, home=tmp_path, timeout=90)
    pid = int((tmp_path / "serve" / "demo-serve.pid").read_text())
    try:
        with urllib.request.urlopen(f"{url}v1/fleet", timeout=10) as answer:  # noqa: S310
            fleet = json.load(answer)
        assert fleet["topics"]["runs"] == unique_topics.runs
        with urllib.request.urlopen(url, timeout=10) as page:  # noqa: S310
            assert b"<html" in page.read().lower()
    finally:
        assert stop_web_view(tmp_path) == pid
    assert _command_line(pid) == b""  # gone (or a zombie waiting for this test to reap it)
    assert stop_web_view(tmp_path) is None  # nothing left to stop


def _command_line(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
