"""RunfoldSettings: environment, file, librdkafka mapping, unknown keys, secrets."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from clients.librdkafka_log import LIBRDKAFKA_LOGGER
from clients.settings import RunfoldSettings, TopicNames
from runfold.cli import main
from schemas.errors import ConfigError

pytestmark = pytest.mark.unit

SECRET = "s3cr3t-hunter2"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("RUNFOLD_") or key == "KAFKA_BOOTSTRAP_SERVERS":
            monkeypatch.delenv(key)


def test_secrets_are_not_in_repr_str_or_dump() -> None:
    settings = RunfoldSettings.load(
        bootstrap_servers="b:9092",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="alice",
        sasl_password=SECRET,
        ssl_key_password=SECRET,
    )
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert SECRET not in text
    assert settings.client_config()["sasl.password"] == SECRET  # revealed only to the client


def test_secret_in_a_bad_value_is_not_echoed_in_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNFOLD_SECURITY_PROTOCOL", SECRET)
    with pytest.raises(ConfigError) as err:
        RunfoldSettings.load()
    assert "security_protocol" in str(err.value)
    assert SECRET not in str(err.value)


def test_maps_once_to_librdkafka_dotted_keys() -> None:
    settings = RunfoldSettings.load(
        bootstrap_servers="b1:9092,b2:9092",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username="alice",
        sasl_password=SECRET,
        ssl_ca_location="/ca.pem",
    )
    assert settings.admin_config() == {
        "bootstrap.servers": "b1:9092,b2:9092",
        "client.id": "runfold",
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": "alice",
        "sasl.password": SECRET,
        "ssl.ca.location": "/ca.pem",
        "logger": LIBRDKAFKA_LOGGER,
    }
    consumer = settings.consumer_config("folders", {"isolation.level": "read_committed"})
    assert consumer["group.id"] == "folders"
    assert consumer["isolation.level"] == "read_committed"
    assert settings.producer_config({"linger.ms": 5})["linger.ms"] == 5


def test_unknown_environment_variable_is_rejected_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNFOLD_BOOTSTRAP_SERVER", "typo:9092")  # missing S
    with pytest.raises(ConfigError, match="RUNFOLD_BOOTSTRAP_SERVER\\b"):
        RunfoldSettings.load()


def test_unknown_file_key_is_rejected_with_file_and_key(tmp_path: Path) -> None:
    config = tmp_path / "runfold.toml"
    config.write_text('bootstrap_servers = "b:9092"\nsasl_pasword = "x"\n')
    with pytest.raises(ConfigError) as err:
        RunfoldSettings.load(config)
    assert "sasl_pasword" in str(err.value) and str(config) in str(err.value)


def test_unknown_keyword_is_rejected() -> None:
    with pytest.raises(ConfigError, match="linger_ms"):
        RunfoldSettings.load(linger_ms=5)


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        RunfoldSettings.load(tmp_path / "nope.toml")


def test_precedence_keyword_over_env_over_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "runfold.toml"
    config.write_text(
        'bootstrap_servers = "file:1"\nclient_id = "from-file"\n[topics]\nevents = "file-events"\n'
    )
    monkeypatch.setenv("RUNFOLD_CONFIG", str(config))
    monkeypatch.setenv("RUNFOLD_BOOTSTRAP_SERVERS", "env:2")
    monkeypatch.setenv("RUNFOLD_TOPICS__RUNS", "env-runs")
    settings = RunfoldSettings.load(client_id="kw")
    assert (settings.bootstrap_servers, settings.client_id) == ("env:2", "kw")
    assert settings.topic_names.events == "file-events"
    assert settings.topic_names.runs == "env-runs"


def test_kafka_bootstrap_servers_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kbs:9092")
    assert RunfoldSettings.load().bootstrap_servers == "kbs:9092"


def test_topic_prefix_applies_to_every_topic() -> None:
    names = RunfoldSettings.load(topic_prefix="t1-").topic_names
    assert names == TopicNames(
        events="t1-agent-run-events",
        runs="t1-agent-runs",
        violations="t1-agent-run-violations",
        dlq="t1-agent-run-events-dlq",
        changelog="t1-agent-runs-changelog",
    )


def test_cli_help_shows_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNFOLD_SASL_PASSWORD", SECRET)
    for args in (["--help"], ["topics", "create", "--help"], ["kafka", "up", "--help"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0
        assert SECRET not in result.output
