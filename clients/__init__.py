"""The bottom layer every Kafka client of runfold shares: settings and where Kafka is.

- :class:`RunfoldSettings` (:mod:`clients.settings`): the one typed settings object
  (``RUNFOLD_*`` environment variables, a TOML file) and the one mapping of those settings
  to librdkafka's dotted keys (:meth:`RunfoldSettings.client_config` and its producer,
  consumer and admin variants).
- :class:`TopicNames`: the four topics of DESIGN §3.
- :mod:`clients.cluster_state`: the record of the local cluster ``runfold kafka up``
  started, which gives the default bootstrap address.

Layers: ``schemas`` <- ``clients`` <- ``producers``, ``consumers`` <- ``runfold`` (CLI).
This package imports nothing from the packages above it (a test checks).
"""

from __future__ import annotations

from clients.settings import ENV_PREFIX, RunfoldSettings, TopicNames

__all__ = ["ENV_PREFIX", "RunfoldSettings", "TopicNames"]
