"""Benchmarks of runfold against its anchors: the client, the broker and peer frameworks.

``runfold bench`` (:mod:`runfold.commands.bench`) drives :func:`bench.suite.run_suite`, which
measures, in one invocation against one broker:

1. the client ceiling (confluent-kafka producing/consuming runfold's encoded bytes);
2. the broker ceiling (Kafka's ``ProducerPerformance`` / ``ConsumerPerformance``);
3. runfold's producer (simulator + codec + idempotent producer);
4. runfold's folding service, exactly-once and at-least-once, over a pre-loaded topic;
5. peers doing the same fold over the same topic (Quix Streams, faust-streaming), each
   checked to end in the same state as runfold;
6. end-to-end latency at a fixed offered rate;
7. restore time and RSS per tracked run.

The modules ``codec_bench``, ``fold_bench`` and ``producer_bench`` are separate
micro-benchmarks, runnable as scripts.
"""

from __future__ import annotations

from bench.results import Measurement, Ratio, Report
from bench.suite import SuiteOptions, run_suite

__all__ = ["Measurement", "Ratio", "Report", "SuiteOptions", "run_suite"]
