"""librdkafka's own log lines, into Python logging at DEBUG level.

Without a ``logger`` in its configuration librdkafka writes to stderr itself: a broker that
refuses connections gives about twenty raw lines a second over runfold's output, and its
error levels say nothing about what runfold does next (it retries, or reports one sentence
of its own; see :mod:`clients.connection`). :data:`LIBRDKAFKA_LOGGER` is the ``logger``
every client config built by :class:`~clients.RunfoldSettings` carries: the lines go to the
Python logger ``runfold.librdkafka`` at DEBUG, where a debug log keeps them, e.g.::

    logging.basicConfig()
    logging.getLogger("runfold.librdkafka").setLevel(logging.DEBUG)

This module imports no Kafka client, so the settings can name it without loading one.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["LIBRDKAFKA_LOG", "LIBRDKAFKA_LOGGER", "DebugLevelLog"]

LIBRDKAFKA_LOG = logging.getLogger("runfold.librdkafka")
"""Where librdkafka's own log lines go, at DEBUG level."""


class DebugLevelLog:
    """A ``logger`` for librdkafka that files every line at DEBUG, whatever its syslog level.

    confluent-kafka calls ``logger.log(level, "%s [%s] %s", facility, client, message)``;
    the line is kept (for a debug log) but its level is not trusted: librdkafka reports a
    refused connection, which runfold turns into its own sentence, as an error.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def log(self, level: int, msg: str, *args: Any, **kwargs: Any) -> None:
        """File one librdkafka line at DEBUG."""
        self.logger.debug(msg, *args, **kwargs)


LIBRDKAFKA_LOGGER = DebugLevelLog(LIBRDKAFKA_LOG)
"""The ``logger`` value of every client config :class:`~clients.RunfoldSettings` builds."""
