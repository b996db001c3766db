"""``runfold serve`` as a user starts it: a subprocess that prints its URL and serves."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from clients import TopicNames
from runfold.cli import main


def test_serve_prints_its_url_serves_and_stops_on_ctrl_c(
    kafka_bootstrap: str, unique_topics: TopicNames, tmp_path: Path
) -> None:
    prefix = unique_topics.events[: -len(TopicNames().events)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNFOLD_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "runfold", "serve", "--port", "0", "--data-dir", str(tmp_path),
         "--bootstrap-servers", kafka_bootstrap, "--prefix", prefix],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        url = re.search(r"(http://127\.0\.0\.1:\d+/) ", banner)
        assert url, banner
        assert "no API keys: open on loopback only" in banner
        answer = httpx.get(url.group(1) + "v1/fleet", timeout=30)
        assert answer.status_code == 200
        assert answer.json()["topics"]["runs"] == unique_topics.runs
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(30)
    assert process.returncode == 0, process.stderr.read() if process.stderr else ""
    assert (tmp_path / "view.sqlite").exists()


@pytest.mark.unit
def test_serve_refuses_an_open_api_off_loopback() -> None:
    result = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 1
    assert "refusing to serve without API keys on 0.0.0.0" in result.output


@pytest.mark.unit
def test_new_key_prints_a_key_and_its_hash() -> None:
    from serve import hash_key

    result = CliRunner().invoke(main, ["serve", "--new-key", "read,ingest"])
    assert result.exit_code == 0, result.output
    key = re.search(r"(rf_\S+)", result.output)
    assert key and hash_key(key.group(1)) in result.output
    assert '"scopes": ["read", "ingest"]' in result.output


def test_a_taken_port_is_replaced_when_asked(
    kafka_bootstrap: str, unique_topics: TopicNames, tmp_path: Path
) -> None:
    """What the demo uses: the web view on 8080, or on a free port when 8080 is taken."""
    import socket

    from clients import RunfoldSettings
    from serve import ServeSettings, start_in_thread

    prefix = unique_topics.events[: -len(TopicNames().events)]
    kafka = RunfoldSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=prefix)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = ServeSettings(data_dir=tmp_path, port=port)
        handle = start_in_thread(settings, kafka, any_port_if_taken=True)
        try:
            assert handle.url.startswith("http://127.0.0.1:")
            assert not handle.url.endswith(f":{port}/")
            assert httpx.get(handle.url + "v1/runs", timeout=30).status_code == 200
        finally:
            handle.stop()


def test_a_second_server_on_the_same_view_is_refused(
    kafka_bootstrap: str, unique_topics: TopicNames, tmp_path: Path
) -> None:
    from clients import RunfoldSettings
    from schemas.errors import ConfigError
    from serve import ServeSettings, start_in_thread

    prefix = unique_topics.events[: -len(TopicNames().events)]
    kafka = RunfoldSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=prefix)
    first = start_in_thread(ServeSettings(data_dir=tmp_path, port=0), kafka)
    try:
        with pytest.raises(ConfigError, match="another runfold serve is using the view"):
            start_in_thread(ServeSettings(data_dir=tmp_path, port=0), kafka)
    finally:
        first.stop()
