"""runfold's command line, settings, topic setup and local Kafka.

Public API: :class:`~clients.settings.RunfoldSettings`, :class:`~clients.settings.TopicNames`,
:func:`~runfold.topics.ensure_topics` and :class:`~runfold.kafka.LocalKafka`. Import them from
their modules (``from runfold.topics import ensure_topics``): this package imports nothing
heavy so that ``runfold --help`` stays fast.
"""

from __future__ import annotations

__all__: list[str] = []
