"""SASL/SCRAM-SHA-512 for the local broker (``runfold kafka up --auth scram``).

The client listener becomes ``SASL_PLAINTEXT`` with SCRAM-SHA-512; brokers talk to each
other over the same listener as their own user. Both users are created when the storage is
formatted (``kafka.tools.StorageTool format --add-scram``), which is how KRaft bootstraps
SCRAM credentials before any broker runs. Files (all mode 0600, under ``<home>/kafka``)::

    sasl.password          the client user's password (``RUNFOLD_SASL_PASSWORD=$(cat ...)``)
    sasl-broker.password   the brokers' own password (generated)
    sasl.user              the client user's name

The client's password comes from the caller, else ``$RUNFOLD_SASL_PASSWORD``, else a
generated one. Only the user name is ever printed; a password appears in the 0600 files,
in each node's ``server.properties`` (0600, the broker needs it) and, briefly, on the
storage tool's command line during the first format.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.errors import KafkaSetupError

__all__ = [
    "BROKER_USER",
    "LISTENER",
    "MECHANISM",
    "ScramCredentials",
    "load_or_create",
]

MECHANISM = "SCRAM-SHA-512"
LISTENER = "SASL_PLAINTEXT"
BROKER_USER = "runfold-broker"
DEFAULT_USER = "runfold"

# The storage tool's `[name=...,password=...]` syntax and the JAAS line quote nothing, so a
# password may not contain the characters that would end a field there.
_SAFE = re.compile(r'^[^\s"\\,\[\]=;\']{8,256}$')
_SAFE_USER = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@dataclass(frozen=True)
class ScramCredentials:
    """The client user and the brokers' own user of a local SCRAM cluster."""

    username: str
    password: str
    broker_password: str

    def __repr__(self) -> str:  # never show a password, even in a traceback
        return f"ScramCredentials(username={self.username!r}, password=***)"

    def format_args(self) -> list[str]:
        """``--add-scram`` arguments of ``StorageTool format`` creating both users."""
        return [
            "--add-scram",
            f"{MECHANISM}=[name={self.username},password={self.password}]",
            "--add-scram",
            f"{MECHANISM}=[name={BROKER_USER},password={self.broker_password}]",
        ]

    def broker_properties(
        self, host: str, broker_port: int, controller_port: int
    ) -> dict[str, Any]:
        """``server.properties`` entries that put the client listener behind SCRAM."""
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{BROKER_USER}" password="{self.broker_password}";'
        )
        return {
            "listeners": f"{LISTENER}://{host}:{broker_port},CONTROLLER://{host}:{controller_port}",
            "advertised.listeners": f"{LISTENER}://{host}:{broker_port}",
            "listener.security.protocol.map": f"{LISTENER}:{LISTENER},CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": LISTENER,
            "sasl.enabled.mechanisms": MECHANISM,
            "sasl.mechanism.inter.broker.protocol": MECHANISM,
            f"listener.name.{LISTENER.lower()}.{MECHANISM.lower()}.sasl.jaas.config": jaas,
        }

    def client_config(self) -> dict[str, str]:
        """librdkafka keys for a client of this cluster (the readiness check uses them)."""
        return {
            "security.protocol": LISTENER,
            "sasl.mechanism": MECHANISM,
            "sasl.username": self.username,
            "sasl.password": self.password,
        }


def _write_secret(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` created 0600 (never readable by others, not even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text + "\n")
    os.chmod(path, 0o600)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def load_or_create(
    root: Path, username: str | None, password: str | None, *, formatted: bool
) -> ScramCredentials:
    """The cluster's credentials: kept ones when ``formatted`` (users exist), else new ones.

    ``password`` (else ``$RUNFOLD_SASL_PASSWORD``, else generated) is the client user's.
    For an already formatted cluster the users cannot change: a different name or
    password is refused with the way out (``kafka down --wipe``).
    """
    username = username or _read(root / "sasl.user") or DEFAULT_USER
    password = password or os.environ.get("RUNFOLD_SASL_PASSWORD") or None
    if not _SAFE_USER.match(username):
        raise KafkaSetupError(
            f"SASL user name {username!r} is not usable: use 1-64 letters, digits, '.', '_' or '-'"
        )
    if formatted:
        kept_user = _read(root / "sasl.user")
        kept_password = _read(root / "sasl.password")
        broker_password = _read(root / "sasl-broker.password")
        if kept_user is None or kept_password is None or broker_password is None:
            raise KafkaSetupError(
                f"the local cluster in {root} was formatted without SCRAM users: "
                "`runfold kafka down --wipe` deletes it, then run `runfold kafka up --auth scram`"
            )
        if username != kept_user or (password is not None and password != kept_password):
            raise KafkaSetupError(
                f"the local cluster in {root} already has SCRAM user {kept_user!r} with the "
                f"password in {root / 'sasl.password'}; users are created when the storage is "
                "formatted, so `runfold kafka down --wipe` is needed to change them"
            )
        return ScramCredentials(kept_user, kept_password, broker_password)
    if password is None:
        password = secrets.token_urlsafe(24)
    elif not _SAFE.match(password):
        raise KafkaSetupError(
            "the SASL password is not usable: it needs 8-256 characters, none of them "
            "whitespace or any of \" \\ , [ ] = ; '"
        )
    creds = ScramCredentials(username, password, secrets.token_urlsafe(24))
    _write_secret(root / "sasl.password", creds.password)
    _write_secret(root / "sasl-broker.password", creds.broker_password)
    _write_secret(root / "sasl.user", creds.username)
    return creds
