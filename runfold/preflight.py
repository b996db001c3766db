"""A bounded first contact with Kafka, so a bad address or bad credentials fail in one line.

librdkafka treats a failed SASL authentication like a network hiccup: it logs the failure
and reconnects forever, and a transactional client's ``init_transactions`` then times out
and is retried. :func:`check_connection` asks for cluster metadata once with a deadline,
listening on the error callback, and turns what went wrong into one
:class:`~schemas.errors.KafkaSetupError` sentence naming the cause. The password is never
part of it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from schemas.errors import KafkaSetupError

__all__ = ["check_connection"]

# librdkafka's own log lines (one per reconnect) would repeat what the error says.
_QUIET = logging.getLogger("runfold.preflight.librdkafka")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False

_AUTH_CODES = {KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED}


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
    conf.update({"logger": _QUIET, "error_cb": errors.append})
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
            raise KafkaSetupError(_auth_message(conf, auth))
        if time.monotonic() >= deadline:
            break
    raise KafkaSetupError(
        f"no Kafka broker answered at {conf.get('bootstrap.servers')} within {timeout:g}s "
        f"using security.protocol={conf.get('security.protocol', 'PLAINTEXT')} ({last}); is "
        "the broker running, the address right, and the protocol the one its listener speaks?"
    )


def _auth_message(conf: Mapping[str, Any], err: KafkaError) -> str:
    """One sentence about a failed authentication: who, where, what to check (no password)."""
    user = conf.get("sasl.username")
    mechanism = conf.get("sasl.mechanism", "SASL")
    detail = err.str()
    # librdkafka's text is "...: SASL authentication error: <broker's reason> (after N ms...)".
    if "authentication error:" in detail:
        detail = detail.split("authentication error:", 1)[1].split(" (after ", 1)[0].strip()
    return (
        f"Kafka at {conf.get('bootstrap.servers')} refused {mechanism} authentication of user "
        f"{user!r}: {detail}; check RUNFOLD_SASL_USERNAME and RUNFOLD_SASL_PASSWORD "
        "(or sasl_username/sasl_password in the settings file)"
    )
