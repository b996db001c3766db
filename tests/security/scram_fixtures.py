"""The SCRAM cluster handle and the distinctive credentials of the security tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PASSWORD = "Sekr1t-Pa55word-7f3Qz9"
"""The client user's password: distinctive, so finding it anywhere is unambiguous."""
USER = "fleet-writer"


@dataclass(frozen=True)
class ScramCluster:
    """A running SCRAM broker: where it is, who may log in, and its home directory."""

    bootstrap: str
    user: str
    password: str
    home: Path

    def env(self, *, user: str | None = None, password: str | None = None) -> dict[str, str]:
        """``RUNFOLD_*`` settings of a client (the right credentials unless overridden)."""
        return {
            "RUNFOLD_BOOTSTRAP_SERVERS": self.bootstrap,
            "RUNFOLD_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "RUNFOLD_SASL_MECHANISM": "SCRAM-SHA-512",
            "RUNFOLD_SASL_USERNAME": user or self.user,
            "RUNFOLD_SASL_PASSWORD": password or self.password,
        }

    def client_config(self) -> dict[str, str]:
        """librdkafka keys of an authenticated client."""
        return {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": self.user,
            "sasl.password": self.password,
        }
