"""Reaching Kafka: a bounded first contact, the sentences for its failures, librdkafka's logs.

librdkafka treats an unreachable broker and a failed SASL authentication alike, as network
hiccups: it logs a line per reconnect (about twenty a second, straight to stderr unless a
``logger`` is configured) and retries forever, and a transactional client's
``init_transactions`` then times out and is retried. So:

- :func:`check_connection` asks for cluster metadata once with a deadline, listening on the
  error callback, and turns what went wrong into one :class:`~schemas.errors.KafkaSetupError`
  sentence: which address was tried, that nothing answered (or who was refused, by which
  mechanism), and what to do. The password is never part of it.
- the other clients log through :data:`clients.librdkafka_log.LIBRDKAFKA_LOGGER` (set by
  :class:`~clients.RunfoldSettings`), at DEBUG level, off the terminal.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from schemas.errors import KafkaSetupError

__all__ = ["auth_failed_message", "check_connection", "unreachable_message"]

_AUTH_CODES = {KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED}

_SILENT = logging.getLogger("runfold.librdkafka.first-contact")
# The first contact's reconnect lines repeat what its error says: dropped, even at DEBUG.
_SILENT.addHandler(logging.NullHandler())
_SILENT.propagate = False


def unreachable_message(bootstrap: object, timeout: float, protocol: object, detail: str) -> str:
    """The one sentence for "nothing answered at ``bootstrap``": what was tried, what to do."""
    return (
        f"no Kafka broker answered at {bootstrap} within {timeout:g}s ({detail}). Start one "
        "here with `runfold kafka up`, or point runfold at yours with "
        "RUNFOLD_BOOTSTRAP_SERVERS=HOST:PORT (or --bootstrap-servers); if a broker is "
        f"listening there, check that it speaks security.protocol={protocol}"
    )


def auth_failed_message(conf: Mapping[str, Any], err: KafkaError) -> str:
    """One sentence about a failed authentication: who, by which mechanism, where; no password."""
    user = conf.get("sasl.username")
    mechanism = conf.get("sasl.mechanism") or conf.get("sasl.mechanisms") or "SASL"
    detail = err.str()
    # librdkafka's text is "...: SASL authentication error: <broker's reason> (after N ms...)".
    if "authentication error:" in detail:
        detail = detail.split("authentication error:", 1)[1].split(" (after ", 1)[0].strip()
    return (
        f"authentication failed: Kafka at {conf.get('bootstrap.servers')} refused "
        f"{mechanism} authentication of user {user!r}: {detail}; check RUNFOLD_SASL_USERNAME "
        "and RUNFOLD_SASL_PASSWORD (or sasl_username/sasl_password in the settings file)"
    )


def check_connection(config: Mapping[str, Any], *, timeout: float = 10.0) -> None:
    """Return once the cluster answers a metadata request with ``config``'s credentials.

    Raises :class:`KafkaSetupError` within about ``timeout`` seconds (sooner on an
    authentication failure, which the broker reports on the first attempt).
    """
    errors: list[KafkaError] = []
    conf = {
        key: value
        for key, value in config.items()
        if not callable(value) and key not in ("logger", "error_cb")
    }
    conf.update({"logger": _SILENT, "error_cb": errors.append})
    try:
        admin = AdminClient(conf)
    except KafkaException as exc:
        raise KafkaSetupError(f"librdkafka rejected the client configuration: {exc}") from exc
    deadline = time.monotonic() + timeout
    last: str = "no answer"
    while True:
        try:
            admin.list_topics(timeout=min(1.0, max(0.1, deadline - time.monotonic())))
            return
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            last = err.str() if isinstance(err, KafkaError) else str(exc)
        admin.poll(0)  # serves the error callback
        auth = next((e for e in errors if e.code() in _AUTH_CODES), None)
        if auth is not None:
            raise KafkaSetupError(auth_failed_message(conf, auth))
        if time.monotonic() >= deadline:
            break
    # The connection's own failure ("Connection refused", a name that does not resolve)
    # says more than the metadata request's "Broker transport failure".
    transport = [e for e in errors if e.code() == KafkaError._TRANSPORT]
    detail = _connect_failure(transport[-1]) if transport else last
    raise KafkaSetupError(
        unreachable_message(
            conf.get("bootstrap.servers"), timeout, conf.get("security.protocol", "PLAINTEXT"),
            detail,
        )
    )


def _connect_failure(err: KafkaError) -> str:
    """librdkafka's connection error without its broker prefix and timing suffix.

    ``127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused (after
    0ms in state CONNECT)`` becomes ``Connect to ipv4#127.0.0.1:1 failed: Connection refused``.
    """
    text = err.str().split(" (after ", 1)[0]
    return text.split("/bootstrap: ", 1)[-1]
