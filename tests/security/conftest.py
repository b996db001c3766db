"""A SASL/SCRAM-protected local broker for the security tests (one per session).

Started with :class:`~runfold.kafka.local.LocalKafka` ``up(auth="scram")`` in a temporary
home, with a distinctive password so that the tests can search every output for it.
Stopped at the end of the session (and with pytest, via PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import atexit
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The scenario harness (subprocess helpers, output readers) lives next door.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reliability"))

from scram_fixtures import PASSWORD, USER, ScramCluster  # noqa: E402


@pytest.fixture(scope="session")
def scram_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScramCluster]:
    """``runfold kafka up --auth scram`` (through the API) in a temporary home."""
    from runfold.kafka.local import LocalKafka

    home = tmp_path_factory.mktemp("scram-home")
    local = LocalKafka(home)
    atexit.register(local.down, timeout=10.0)
    try:
        bootstrap = local.up(
            nodes=1,
            port=0,
            auth="scram",
            sasl_username=USER,
            sasl_password=PASSWORD,
            tie_to_parent=True,
            ready_timeout=300.0,
        )
        yield ScramCluster(bootstrap, USER, PASSWORD, home)
    finally:
        local.down(timeout=10.0)
