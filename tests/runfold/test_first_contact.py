"""What a new user meets first: no broker there, and a run id that is not one (issue 16).

Every command that talks to Kafka is run as a real process against a closed local port:
it must end with one sentence naming the address it tried, saying that nothing answered
and how to start a broker or point at one, and no raw librdkafka line may reach the
terminal (they go to the ``runfold.librdkafka`` logger at DEBUG).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from click.testing import CliRunner

from runfold.cli import main

pytestmark = pytest.mark.unit

RUN_ID = "5b3c1e8a-0d4f-4c7e-9a21-7f6e5d4c3b2a"

# The part after each command: "{address}" is the closed port's HOST:PORT.
KAFKA_COMMANDS = {
    "topics create": ["topics", "create", "--bootstrap-servers", "{address}"],
    "runs list": ["runs", "list", "--bootstrap-servers", "{address}"],
    "runs show": ["runs", "show", RUN_ID, "--bootstrap-servers", "{address}"],
    "runs replay": ["runs", "replay", RUN_ID, "--bootstrap-servers", "{address}"],
    "export": ["export", "--out", "{tmp}/export", "--bootstrap-servers", "{address}"],
    "sql": ["sql", "SELECT count(*) FROM runs", "--bootstrap-servers", "{address}"],
    "top": ["top", "--once", "--bootstrap-servers", "{address}"],
    "produce": ["produce", "--runs", "1", "--bootstrap", "{address}"],
    "consume": ["consume", "--until-idle", "1", "--bootstrap-servers", "{address}"],
    "demo": ["demo", "--no-live", "--bootstrap-servers", "{address}"],
}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("RUNFOLD_") and k != "KAFKA_BOOTSTRAP_SERVERS"}
    return {**env, **extra}


@pytest.mark.parametrize("command", sorted(KAFKA_COMMANDS))
def test_an_unreachable_broker_is_one_sentence_with_what_to_do(
    command: str, tmp_path: pytest.TempPathFactory
) -> None:
    address = f"127.0.0.1:{_closed_port()}"
    args = [a.format(address=address, tmp=tmp_path) for a in KAFKA_COMMANDS[command]]
    done = subprocess.run(
        [sys.executable, "-m", "runfold", *args],
        capture_output=True, text=True, timeout=60, check=False,
        env=_clean_env(RUNFOLD_CONNECT_TIMEOUT="1.5", RUNFOLD_HOME=str(tmp_path / "home")),
    )
    lines = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.strip()]
    assert done.returncode == 1, lines
    assert len(lines) == 1, lines  # no librdkafka "%3|...|FAIL|" lines, no traceback
    line = lines[0]
    assert line.startswith(f"Error: no Kafka broker answered at {address} within 1.5s"), line
    assert "Connection refused" in line
    assert "`runfold kafka up`" in line and "RUNFOLD_BOOTSTRAP_SERVERS" in line


@pytest.mark.parametrize("subcommand", ["show", "replay"])
@pytest.mark.parametrize("run_id", ["42", "not-a-run", "5b3c1e8a-0d4f-4c7e-9a21"])
def test_runs_show_of_something_not_a_uuid_says_so_without_searching(
    subcommand: str, run_id: str
) -> None:
    # A closed port: a search would fail differently (and take seconds).
    address = f"127.0.0.1:{_closed_port()}"
    result = CliRunner().invoke(
        main, ["runs", subcommand, run_id, "--bootstrap-servers", address]
    )
    assert result.exit_code == 2, result.output
    assert f"'{run_id}' is not a run id: run ids are UUIDs" in result.output
    assert "no Kafka broker answered" not in result.output


def test_a_run_id_in_another_spelling_is_searched_as_its_canonical_text() -> None:
    from runfold.commands.runs import _run_id

    upper = RUN_ID.upper().replace("-", "")
    assert _run_id(click_context(), click_param(), upper) == RUN_ID


def click_context() -> object:
    import click

    return click.Context(main)


def click_param() -> object:
    import click

    return click.Argument(["run_id"])
