"""``runfold serve``'s settings: where it listens, its view's file and limits, its API keys.

Read from ``RUNFOLD_SERVE_*`` environment variables (``RUNFOLD_SERVE_PORT=8080``,
``RUNFOLD_SERVE_API_KEYS='[{"name": "grafana", "sha256": "...", "scopes": ["read"]}]'``)
and keyword arguments; the Kafka connection and topic names stay in
:class:`clients.RunfoldSettings`.

API keys are kept as the SHA-256 hex of the key, never the key itself:
``runfold serve --new-key read`` prints a fresh key and the entry to configure.
Without any key the API is open, which is allowed only on a loopback address.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import secrets
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from clients.cluster_state import default_home
from schemas.errors import ConfigError

__all__ = ["ApiKey", "Scope", "ServeSettings", "hash_key", "is_loopback", "new_key"]

Scope = Literal["read", "ingest"]
_ENV_PREFIX = "RUNFOLD_SERVE_"
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")


def hash_key(key: str) -> str:
    """The SHA-256 hex of an API key: what the settings hold instead of the key."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh random API key (``rf_`` and 43 URL-safe characters, 256 bits)."""
    return "rf_" + secrets.token_urlsafe(32)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ApiKey(BaseModel):
    """One API key: a name for people (shown in logs, never the key), its hash, its scopes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    sha256: str
    scopes: tuple[Scope, ...] = ("read",)

    @field_validator("sha256")
    @classmethod
    def _is_hex_digest(cls, value: str) -> str:
        if not _HEX64.match(value):
            raise ValueError(
                "must be the 64-character lower-case SHA-256 hex of the key, not the key "
                "(`runfold serve --new-key read` prints both)"
            )
        return value


class ServeSettings(BaseSettings):
    """Everything ``runfold serve`` needs besides the Kafka connection."""

    model_config = SettingsConfigDict(
        env_prefix=_ENV_PREFIX, extra="forbid", frozen=True, hide_input_in_errors=True
    )

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    data_dir: Path = Field(default_factory=lambda: default_home() / "serve")
    """Where the view's SQLite file lives (``view.sqlite``)."""
    api_keys: tuple[ApiKey, ...] = ()
    event_retention_s: float = Field(7 * 24 * 3600.0, gt=0)
    """Events are kept in the view this long after they reached Kafka (record timestamp)."""
    stall_after_s: float = Field(300.0, gt=0)
    """A RUNNING run whose state has not changed for this long (wall clock) is stalled."""
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    """Largest ingestion request body."""
    max_event_bytes: int = Field(1_000_000, ge=256)
    """Largest single event (one JSON document or NDJSON line)."""
    max_batch_events: int = Field(50_000, ge=1)
    """Most events in one ingestion request."""
    fold_group: str | None = "runfold"
    """The folding consumer group whose lag the fleet summary reports (None: not reported)."""
    ack_timeout_s: float = Field(30.0, gt=0)
    """How long an ingestion request waits for Kafka's acknowledgement."""

    @classmethod
    def load(cls, **overrides: object) -> ServeSettings:
        """Build the settings; any problem becomes one :class:`ConfigError` sentence.

        An unknown ``RUNFOLD_SERVE_*`` variable is refused, so a typo is not ignored.
        """
        known = {f"{_ENV_PREFIX}{name.upper()}" for name in cls.model_fields}
        unknown = sorted(k for k in os.environ if k.startswith(_ENV_PREFIX) and k not in known)
        if unknown:
            raise ConfigError(
                f"unknown runfold serve setting(s) in the environment: {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        try:
            return cls(**overrides)  # type: ignore[arg-type]
        except PydanticValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
                for err in exc.errors()
            )
            raise ConfigError(f"invalid runfold serve settings: {problems}") from None

    @property
    def auth_enabled(self) -> bool:
        """True when API keys are configured (every /v1 request must then bring one)."""
        return bool(self.api_keys)

    def check_exposure(self) -> None:
        """Refuse an open API (no keys) on anything but a loopback address."""
        if not self.auth_enabled and not is_loopback(self.host):
            raise ConfigError(
                f"refusing to serve without API keys on {self.host}: anyone who can reach it "
                "could read every run and post events. Listen on 127.0.0.1, or configure "
                "RUNFOLD_SERVE_API_KEYS (`runfold serve --new-key read` prints one)"
            )

    @property
    def view_path(self) -> Path:
        """The SQLite file of the materialized view."""
        return self.data_dir / "view.sqlite"
