"""API keys: hashed in the settings, scopes read and ingest, clear 401/403 answers."""

from __future__ import annotations

import logging

import httpx
import pytest
from serve_fixtures import ServerFactory

from schemas.errors import ConfigError
from serve import ApiKey, ServeSettings, hash_key, new_key

READ, INGEST = new_key(), new_key()


@pytest.fixture
def secured(serve_factory: ServerFactory) -> str:
    """A server with a read key and an ingest key; its URL."""
    keys = (
        ApiKey(name="dashboard", sha256=hash_key(READ), scopes=("read",)),
        ApiKey(name="agents", sha256=hash_key(INGEST), scopes=("ingest",)),
    )
    return serve_factory(api_keys=keys).url


@pytest.mark.parametrize(
    ("method", "path", "key", "status", "error"),
    [
        ("GET", "/v1/runs", None, 401, "missing_api_key"),
        ("GET", "/v1/runs", "Basic abc", 401, "bad_authorization"),
        ("GET", "/v1/runs", "Bearer rf_not-a-key", 401, "invalid_api_key"),
        ("GET", "/v1/fleet", f"Bearer {INGEST}", 403, "insufficient_scope"),
        ("POST", "/v1/events", f"Bearer {READ}", 403, "insufficient_scope"),
        ("POST", "/v1/events", None, 401, "missing_api_key"),
        ("GET", "/v1/stream", None, 401, "missing_api_key"),
    ],
)
def test_refusals(
    secured: str, method: str, path: str, key: str | None, status: int, error: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    headers = {"authorization": key} if key else {}
    with caplog.at_level(logging.DEBUG), httpx.Client(base_url=secured, timeout=30) as client:
        answer = client.request(method, path, headers=headers, content=b"{}")
    assert answer.status_code == status
    assert answer.json()["error"] == error
    assert answer.json()["detail"]
    if status == 401:
        assert answer.headers["www-authenticate"].startswith("Bearer")
    if status == 403:
        assert "dashboard" in answer.json()["detail"] or "agents" in answer.json()["detail"]
    assert READ not in caplog.text and INGEST not in caplog.text


def test_the_right_key_is_let_in(secured: str) -> None:
    with httpx.Client(base_url=secured, timeout=30) as client:
        answer = client.get("/v1/runs", headers={"authorization": f"Bearer {READ}"})
        assert answer.status_code == 200
        # Validation runs after auth: an ingest key reaches the event parser.
        answer = client.post("/v1/events", content=b"{}",
                             headers={"authorization": f"Bearer {INGEST}"})
        assert answer.status_code == 400 and answer.json()["rejected"] == 1
        # The page itself holds no data and needs no key.
        assert client.get("/").status_code == 200


@pytest.mark.unit
def test_no_keys_only_on_loopback() -> None:
    ServeSettings(host="127.0.0.1").check_exposure()
    ServeSettings(host="::1").check_exposure()
    with pytest.raises(ConfigError, match="without API keys on 0.0.0.0"):
        ServeSettings(host="0.0.0.0").check_exposure()
    key = ApiKey(name="k", sha256=hash_key("x"))
    ServeSettings(host="0.0.0.0", api_keys=(key,)).check_exposure()


@pytest.mark.unit
def test_settings_hold_hashes_not_keys() -> None:
    with pytest.raises(ConfigError, match="SHA-256 hex of the key, not the key"):
        ServeSettings.load(api_keys=[{"name": "k", "sha256": "rf_plain-key"}])
    assert "rf_plain-key" not in repr(ServeSettings.load.__doc__)
