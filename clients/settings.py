"""runfold's one typed settings object: ``RUNFOLD_*`` environment variables and a TOML file.

Precedence, highest first: keyword arguments, environment variables, the TOML file named by
``RUNFOLD_CONFIG`` (or passed to :meth:`RunfoldSettings.load`), defaults. Nested values use
``__`` in environment variables (``RUNFOLD_TOPICS__EVENTS=my-events``). Unknown keys, in the
file or as ``RUNFOLD_*`` variables, are rejected with a :class:`~schemas.errors.ConfigError`
naming them. Secrets are :class:`~pydantic.SecretStr`: ``repr``/``str`` show ``**********``.

The librdkafka client configuration is derived here, once, by :meth:`RunfoldSettings.client_config`
and its producer/consumer/admin variants; nobody else maps settings to dotted keys. Every such
config carries a ``logger`` (:data:`~clients.librdkafka_log.LIBRDKAFKA_LOGGER`) that keeps
librdkafka's own lines off the terminal, at DEBUG level in Python logging.

Example ``runfold.toml``::

    bootstrap_servers = "broker-1:9092,broker-2:9092"
    security_protocol = "SASL_SSL"
    sasl_mechanism = "SCRAM-SHA-512"
    sasl_username = "runfold"
    [topics]
    events = "prod.agent-run-events"
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from clients.cluster_state import default_home, read_state
from clients.librdkafka_log import LIBRDKAFKA_LOGGER
from schemas.errors import ConfigError

__all__ = ["ENV_PREFIX", "RunfoldSettings", "TopicNames"]

ENV_PREFIX = "RUNFOLD_"
# Variables read by other parts of runfold rather than by this object.
_OTHER_ENV = frozenset({"RUNFOLD_CONFIG", "RUNFOLD_CACHE"})
# Prefixes of variables other settings objects own (serve.settings.ServeSettings).
_OTHER_ENV_PREFIXES = ("RUNFOLD_SERVE_",)
# librdkafka keys that have a field of their own (see RunfoldSettings.client_config).
_FIELD_OF_KEY = {
    "bootstrap.servers": "bootstrap_servers",
    "client.id": "client_id",
    "security.protocol": "security_protocol",
    "sasl.mechanism": "sasl_mechanism",
    "sasl.mechanisms": "sasl_mechanism",
    "sasl.username": "sasl_username",
    "sasl.password": "sasl_password",
    "ssl.ca.location": "ssl_ca_location",
    "ssl.certificate.location": "ssl_certificate_location",
    "ssl.key.location": "ssl_key_location",
    "ssl.key.password": "ssl_key_password",
    "ssl.endpoint.identification.algorithm": "ssl_endpoint_identification_algorithm",
}
_config_file: ContextVar[Path | None] = ContextVar("runfold_config_file", default=None)


class TopicNames(BaseModel):
    """The five topics of DESIGN §3; :meth:`prefixed` gives per-test or per-tenant names."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    events: str = "agent-run-events"
    runs: str = "agent-runs"
    violations: str = "agent-run-violations"
    dlq: str = "agent-run-events-dlq"
    changelog: str = "agent-runs-changelog"
    """The folding service's internal state changelog (what restore needs), compacted and
    co-partitioned with ``events``; ``runs`` is what downstream readers read."""

    def prefixed(self, prefix: str) -> TopicNames:
        """The same names with ``prefix`` in front of each."""
        return TopicNames(**{name: prefix + value for name, value in self.model_dump().items()})

    def all(self) -> list[str]:
        """The five names, events first."""
        return [self.events, self.runs, self.violations, self.dlq, self.changelog]


def _default_bootstrap() -> str:
    """``KAFKA_BOOTSTRAP_SERVERS``, else the cluster ``runfold kafka up`` started, else 9092."""
    explicit = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if explicit:
        return explicit
    state = read_state(default_home())
    if state is not None and any(node.pid for node in state.nodes):
        return state.bootstrap
    return "127.0.0.1:9092"


class RunfoldSettings(BaseSettings):
    """Everything runfold's clients need to reach Kafka, and the topic names."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        hide_input_in_errors=True,
    )

    home: Path = Field(default_factory=default_home, description="local broker files")
    bootstrap_servers: str = Field(default_factory=_default_bootstrap, min_length=1)
    client_id: str = "runfold"
    topic_prefix: str = ""
    topics: TopicNames = TopicNames()
    schema_registry_url: str | None = None
    connect_timeout: float = Field(
        default=10.0, gt=0, description="seconds a command waits for the cluster's first answer"
    )

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: SecretStr | None = None
    ssl_endpoint_identification_algorithm: Literal["https", "none"] | None = None
    librdkafka: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="other librdkafka keys for every client (e.g. sasl.oauthbearer.*, "
        "socket.keepalive.enable); values are never printed, as they may hold credentials",
    )

    @field_validator("librdkafka")
    @classmethod
    def _no_shadowed_keys(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        """A key with its own field must be set through that field, so it has one source."""
        for key in value:
            field_name = _FIELD_OF_KEY.get(key)
            if field_name is not None:
                raise ValueError(f"librdkafka key {key!r} is set with the {field_name!r} setting")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments, then the environment, then the TOML file."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_file.get() or (
            Path(os.environ["RUNFOLD_CONFIG"]) if os.environ.get("RUNFOLD_CONFIG") else None
        )
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @classmethod
    def load(cls, config_file: Path | str | None = None, **overrides: Any) -> RunfoldSettings:
        """Build the settings, turning every problem into one :class:`ConfigError` sentence.

        ``config_file`` (else ``$RUNFOLD_CONFIG``) is a TOML file with the same keys as the
        fields. Unknown ``RUNFOLD_*`` environment variables are rejected, so a typo is not
        silently ignored.
        """
        path = Path(config_file) if config_file is not None else None
        env_path = os.environ.get("RUNFOLD_CONFIG")
        for candidate in (path, Path(env_path) if env_path else None):
            if candidate is not None and not candidate.is_file():
                raise ConfigError(f"config file {candidate} does not exist")
        known = cls.known_env_vars()
        unknown = sorted(
            k
            for k in os.environ
            if k.startswith(ENV_PREFIX) and k not in known and not k.startswith(_OTHER_ENV_PREFIXES)
        )
        if unknown:
            raise ConfigError(
                f"unknown setting(s) in the environment: {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        token = _config_file.set(path)
        try:
            return cls(**overrides)
        except PydanticValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
                for err in exc.errors()
            )
            where = f" (file {path or env_path})" if (path or env_path) else ""
            raise ConfigError(f"invalid runfold settings{where}: {problems}") from None
        except ValueError as exc:  # e.g. malformed TOML
            raise ConfigError(f"could not read runfold settings: {exc}") from None
        finally:
            _config_file.reset(token)

    @classmethod
    def known_env_vars(cls) -> frozenset[str]:
        """Every ``RUNFOLD_*`` variable runfold understands."""
        names = {f"{ENV_PREFIX}{name.upper()}" for name in cls.model_fields}
        names |= {f"{ENV_PREFIX}TOPICS__{name.upper()}" for name in TopicNames.model_fields}
        return frozenset(names | _OTHER_ENV)

    @property
    def topic_names(self) -> TopicNames:
        """The topic names with :attr:`topic_prefix` applied."""
        return self.topics.prefixed(self.topic_prefix) if self.topic_prefix else self.topics

    def client_config(self) -> dict[str, Any]:
        """librdkafka keys shared by every client (connection, security, the ``logger``).

        Secrets are revealed: this is for the client, never for printing.
        """
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            "security.protocol": self.security_protocol,
            "logger": LIBRDKAFKA_LOGGER,
        }
        optional: dict[str, str | SecretStr | None] = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
            "ssl.key.password": self.ssl_key_password,
            "ssl.endpoint.identification.algorithm": self.ssl_endpoint_identification_algorithm,
        }
        for key, value in optional.items():
            if isinstance(value, SecretStr):
                config[key] = value.get_secret_value()
            elif value is not None:
                config[key] = value
        for key, secret in self.librdkafka.items():
            config[key] = secret.get_secret_value()
        return config

    def producer_config(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Client config for a producer; ``extra`` (librdkafka dotted keys) is added last."""
        return {**self.client_config(), **(extra or {})}

    def consumer_config(
        self, group_id: str, extra: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Client config for a consumer in ``group_id``; ``extra`` is added last."""
        return {**self.client_config(), "group.id": group_id, **(extra or {})}

    def admin_config(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Client config for an ``AdminClient``; ``extra`` is added last."""
        return {**self.client_config(), **(extra or {})}
