"""Bearer API keys with scopes (``read``, ``ingest``), checked against their SHA-256 hashes.

A key is never stored, compared or logged in clear: the settings hold its hash, a request's
key is hashed and looked up, and what logs and answers name is the key's ``name``.
"""

from __future__ import annotations

from collections.abc import Iterable

from serve.errors import ApiError
from serve.settings import ApiKey, Scope, hash_key

__all__ = ["Authenticator"]


class Authenticator:
    """Decides whether a request's ``Authorization`` header grants a scope."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self._by_hash = {key.sha256: key for key in keys}

    @property
    def enabled(self) -> bool:
        """False when no key is configured (the API is open; loopback only)."""
        return bool(self._by_hash)

    def check(self, authorization: str | None, scope: Scope) -> str | None:
        """The name of the key that grants ``scope`` (``None`` when auth is off).

        Raises :class:`ApiError` 401 for a missing or unknown key, 403 for a key
        without ``scope``.
        """
        if not self._by_hash:
            return None
        challenge = {"WWW-Authenticate": f'Bearer realm="runfold", scope="{scope}"'}
        if not authorization:
            raise ApiError(
                401, "missing_api_key",
                "this endpoint needs an API key: send the header 'Authorization: Bearer <key>'",
                headers=challenge,
            )
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(
                401, "bad_authorization",
                "the Authorization header must be 'Bearer <key>'",
                headers=challenge,
            )
        key = self._by_hash.get(hash_key(token.strip()))
        if key is None:
            raise ApiError(
                401, "invalid_api_key", "this API key is not one of the configured keys",
                headers=challenge,
            )
        if scope not in key.scopes:
            raise ApiError(
                403, "insufficient_scope",
                f"API key {key.name!r} has scope(s) {', '.join(key.scopes)}; "
                f"this endpoint needs {scope!r}",
            )
        return key.name
