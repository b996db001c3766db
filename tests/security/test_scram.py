"""Only authenticated clients get in, bad credentials fail fast, and the password never leaks.

Against a real broker started by ``LocalKafka.up(auth="scram")`` (SASL_PLAINTEXT,
SCRAM-SHA-512, users created at format time). Clients get their credentials from the
``RUNFOLD_*`` settings only: no command-line flag carries them.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from harness import clean_env, read_events, read_output
from scram_fixtures import PASSWORD, ScramCluster
from truth import fleet_config, fleet_truth, measure

from clients.connection import check_connection
from schemas.errors import KafkaSetupError

pytestmark = pytest.mark.integration

WRONG_PASSWORD = "Wr0ng-Pa55word-Xq81Lm"
_PARTITIONS = 2


def _runfold(
    *args: str, env: dict[str, str], timeout: float = 300
) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "runfold", *args],
        capture_output=True,
        text=True,
        env=clean_env(env),
        timeout=timeout,
        check=False,
    )
    return done, time.monotonic() - started


def _files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_plaintext_client_is_refused_and_credentials_let_one_in(
    scram_cluster: ScramCluster,
) -> None:
    with pytest.raises(KafkaSetupError) as refused:
        check_connection({"bootstrap.servers": scram_cluster.bootstrap}, timeout=5)
    assert "no Kafka broker answered" in str(refused.value)

    check_connection(scram_cluster.client_config(), timeout=30)


def test_secrets_on_disk_are_private(scram_cluster: ScramCluster) -> None:
    kafka_dir = scram_cluster.home / "kafka"
    private = [
        kafka_dir / "sasl.password",
        kafka_dir / "sasl-broker.password",
        kafka_dir / "node-1" / "server.properties",
    ]
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert (kafka_dir / "sasl.password").read_text().strip() == PASSWORD
    assert json.loads((kafka_dir / "cluster.json").read_text())["auth"] == "scram"


def test_fleet_through_the_authenticated_broker_and_no_output_holds_the_password(
    scram_cluster: ScramCluster, tmp_path: Path
) -> None:
    from clients.settings import TopicNames
    from runfold.topics import ensure_topics

    prefix = f"sec-{os.getpid()}-{time.monotonic_ns() % 10**6}-"
    topics = TopicNames().prefixed(prefix)
    admin = AdminClient(scram_cluster.client_config())
    assert ensure_topics(admin, topics, partitions=_PARTITIONS, replication=1, timeout=60).ok
    env = {**scram_cluster.env(), "RUNFOLD_TOPIC_PREFIX": prefix}
    config = fleet_config(runs=40, seed=5, faults="corrupt=0.3,dup=0.2,conflict=0.1")

    produced, _ = _runfold(
        "produce",
        "--runs",
        "40",
        "--agents",
        "16",
        "--seed",
        "5",
        "--faults",
        config.faults.as_text(),
        env=env,
    )
    consumed, _ = _runfold("consume", "--until-idle", "3", "--stats-json", "-v", env=env)
    # `kafka up` on the running cluster: prints the user and where the password is.
    up, _ = _runfold("kafka", "up", "--auth", "scram", "--home", str(scram_cluster.home), env={})

    assert produced.returncode == 0, produced.stderr[-2000:]
    assert consumed.returncode == 0, consumed.stderr[-2000:]
    assert up.returncode == 0, up.stderr
    assert f"user={scram_cluster.user}" in up.stderr
    truth = fleet_truth(config)
    conf = scram_cluster.client_config()
    folded = read_output(conf, topics, _PARTITIONS)
    result = measure(truth, read_events(conf, topics.events, _PARTITIONS), folded)
    assert result.state_equals_truth, result.state_mismatches[:5]
    assert folded.dlq, "the fleet sent corrupt records: the DLQ must hold some"

    outputs = {
        "produce stdout": produced.stdout,
        "produce stderr": produced.stderr,
        "consume stdout": consumed.stdout,
        "consume stderr": consumed.stderr,
        "kafka up output": up.stdout + up.stderr,
    }
    for msg in folded.dlq:
        for name, value in msg.headers() or []:
            outputs[f"DLQ header {name}"] = (value or b"").decode("utf-8", "replace")
    for path in _files_under(scram_cluster.home / "kafka" / "node-1" / "logs"):
        outputs[str(path)] = path.read_text(errors="replace")
    leaks = [where for where, text in outputs.items() if PASSWORD in text]
    assert leaks == []
    assert "INFO" in consumed.stderr, "verbose logs were captured (the check saw real logs)"


# Every command that talks to Kafka, with the arguments it needs.
_KAFKA_COMMANDS = {
    "produce": ["produce", "--runs", "5"],
    "consume": ["consume", "--until-idle", "2"],
    "topics create": ["topics", "create"],
    "runs list": ["runs", "list"],
    "runs show": ["runs", "show", "5b3c1e8a-0d4f-4c7e-9a21-7f6e5d4c3b2a"],
    "top": ["top", "--once"],
    "sql": ["sql", "SELECT count(*) FROM runs"],
}


@pytest.mark.parametrize("command", sorted(_KAFKA_COMMANDS))
@pytest.mark.parametrize(
    ("user", "password"),
    [
        pytest.param(None, WRONG_PASSWORD, id="wrong-password"),
        pytest.param("mallory", WRONG_PASSWORD, id="unknown-user"),
    ],
)
def test_bad_credentials_fail_fast_with_one_clear_line(
    scram_cluster: ScramCluster, command: str, user: str | None, password: str
) -> None:
    env = scram_cluster.env(user=user, password=password)

    done, seconds = _runfold(*_KAFKA_COMMANDS[command], env=env, timeout=120)

    assert done.returncode == 1
    assert seconds < 15, f"took {seconds:.1f}s: a retry loop instead of failing fast"
    lines = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("Error: authentication failed: "), lines[0]
    assert f"SCRAM-SHA-512 authentication of user {user or scram_cluster.user!r}" in lines[0]
    assert scram_cluster.bootstrap in lines[0]
    assert password not in lines[0] and PASSWORD not in lines[0]
