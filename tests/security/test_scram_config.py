"""SCRAM set-up of the local broker without a broker: credentials, files, properties."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from clients.settings import RunfoldSettings
from runfold.kafka.scram import BROKER_USER, load_or_create
from schemas.errors import KafkaSetupError

pytestmark = pytest.mark.unit


def test_new_credentials_are_written_private_and_never_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RUNFOLD_SASL_PASSWORD", raising=False)
    creds = load_or_create(tmp_path, "alice", None, formatted=False)

    assert len(creds.password) >= 24 and creds.password != creds.broker_password
    for name in ("sasl.password", "sasl-broker.password", "sasl.user"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    assert creds.password not in repr(creds)
    args = " ".join(creds.format_args())
    assert "name=alice" in args and f"name={BROKER_USER}" in args
    props = creds.broker_properties("127.0.0.1", 9092, 9093)
    assert props["listeners"].startswith("SASL_PLAINTEXT://127.0.0.1:9092")
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"


def test_password_from_the_environment_and_kept_across_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNFOLD_SASL_PASSWORD", "from-the-env-123")
    first = load_or_create(tmp_path, None, None, formatted=False)
    again = load_or_create(tmp_path, None, None, formatted=True)

    assert first.password == again.password == "from-the-env-123"
    assert first.username == again.username == "runfold"
    assert first.broker_password == again.broker_password


def test_formatted_users_cannot_change_without_wipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RUNFOLD_SASL_PASSWORD", raising=False)
    load_or_create(tmp_path, "alice", "first-password", formatted=False)

    with pytest.raises(KafkaSetupError, match="--wipe") as changed:
        load_or_create(tmp_path, "alice", "other-password", formatted=True)
    assert "other-password" not in str(changed.value)
    assert "first-password" not in str(changed.value)
    with pytest.raises(KafkaSetupError, match="formatted without SCRAM"):
        load_or_create(tmp_path / "plain", None, None, formatted=True)


@pytest.mark.parametrize("password", ["short", 'has"quote', "has,comma", "has space1"])
def test_unusable_password_is_refused_without_echoing_it(tmp_path: Path, password: str) -> None:
    with pytest.raises(KafkaSetupError) as refused:
        load_or_create(tmp_path, None, password, formatted=False)
    assert password not in str(refused.value)


def test_settings_never_show_the_password() -> None:
    settings = RunfoldSettings(
        bootstrap_servers="127.0.0.1:1",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="u",
        sasl_password="Sekr1t-in-settings",  # type: ignore[arg-type]
    )
    assert "Sekr1t-in-settings" not in repr(settings) + str(settings)
    assert settings.client_config()["sasl.password"] == "Sekr1t-in-settings"
