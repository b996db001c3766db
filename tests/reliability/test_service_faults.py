"""Faults found by the scenarios, pinned as unit tests of the service's error handling.

In scenario 3 (2 of 3 brokers killed) a consumer was fenced by the broker
("Static consumer fenced by other consumer with same group.instance.id" after the group
coordinator moved). librdkafka then delivers a *message* whose error code is
``KafkaError._FATAL``; that ``KafkaError`` says ``fatal() == False`` (the flag belongs to
the client's fatal state, not to the message). ``FoldService._consumer_error`` checks only
the fenced codes and ``fatal()``, logged "consumer error (will retry)" and went on: the
process stayed alive, folded nothing more and held its partitions, so a supervisor that
restarts dead processes never replaced it. Fixed in ``consumers/service/errors.py``:
first by stopping; now (issue 15) by neither going on with the dead consumer nor exiting:
the error is a suspect group fence, checked against the producer epoch and, when no newer
instance holds it, recovered by rebuilding the clients (``FoldService._recover``).
"""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from consumers.service.config import ServiceConfig
from consumers.service.errors import ClientsFailed, ErrorPolicy, ServiceStopped

pytestmark = pytest.mark.unit


_FENCED_TEXT = (
    "Fatal error: Broker: Static consumer fenced by other consumer with same group.instance.id"
)


@pytest.mark.parametrize(
    "err",
    [
        KafkaError(KafkaError._FATAL, _FENCED_TEXT),
        KafkaError(KafkaError.FENCED_INSTANCE_ID, "fenced"),
    ],
)
def test_a_fatal_consumer_error_never_leaves_a_consumer_that_folds_nothing(
    err: KafkaError,
) -> None:
    # Exactly-once: the consumer is replaced once the producer epoch says no newer
    # instance took over (else the service stops, fenced).
    policy = ErrorPolicy(ServiceConfig(kafka={}), lambda: False)
    with pytest.raises(ClientsFailed) as failed:
        policy.consumer_error(err)
    assert failed.value.suspect and failed.value.consumer
    # At-least-once has no producer epoch to ask: it stops, fenced.
    policy = ErrorPolicy(ServiceConfig(kafka={}, guarantee="at-least-once"), lambda: False)
    with pytest.raises(ServiceStopped) as stopped:
        policy.consumer_error(err)
    assert stopped.value.fenced
