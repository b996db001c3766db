"""Faults found by the scenarios, pinned as unit tests of the service's error handling.

In scenario 3 (2 of 3 brokers killed) a consumer was fenced by the broker
("Static consumer fenced by other consumer with same group.instance.id" after the group
coordinator moved). librdkafka then delivers a *message* whose error code is
``KafkaError._FATAL``; that ``KafkaError`` says ``fatal() == False`` (the flag belongs to
the client's fatal state, not to the message). ``FoldService._consumer_error`` checks only
the fenced codes and ``fatal()``, logged "consumer error (will retry)" and went on: the
process stayed alive, folded nothing more and held its partitions, so a supervisor that
restarts dead processes never replaced it. Fixed in ``consumers/service/errors.py``.
"""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from consumers.service.config import ServiceConfig
from consumers.service.errors import ErrorPolicy, ServiceStopped

pytestmark = pytest.mark.unit


def test_a_fatal_consumer_error_stops_the_service() -> None:
    policy = ErrorPolicy(ServiceConfig(kafka={}), lambda: False)
    err = KafkaError(
        KafkaError._FATAL,
        "Fatal error: Broker: Static consumer fenced by other consumer with same group.instance.id",
    )

    with pytest.raises(ServiceStopped):
        policy.consumer_error(err)


def test_a_fenced_instance_error_stops_the_service() -> None:
    policy = ErrorPolicy(ServiceConfig(kafka={}), lambda: False)

    with pytest.raises(ServiceStopped) as stopped:
        policy.consumer_error(KafkaError(KafkaError.FENCED_INSTANCE_ID, "fenced"))
    assert stopped.value.fenced
