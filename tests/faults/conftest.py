"""Where the fault suite finds the brokers it may kill.

``BROKER_SCHED_TEST_FAULTS`` names a directory holding ``single.toml`` (single-node
brokers) and one ``<cluster>.toml`` per cluster, all started by `brokers.sh` in the
state directory ``BROKER_SCHED_STATE_DIR`` names — brokers of the fault suite's own,
never the shared ones the rest of the suite uses (`scripts/test-all.sh` starts them).
Without it the suite is skipped, and with ``BROKER_SCHED_REQUIRE_BROKERS=1`` that is an
error instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from brokers import brokers_required

FAULTS_ENV = "BROKER_SCHED_TEST_FAULTS"


@pytest.fixture(scope="session")
def fault_configs() -> Path:
    directory = os.environ.get(FAULTS_ENV)
    if not directory or not os.environ.get("BROKER_SCHED_STATE_DIR"):
        message = (
            f"the fault suite needs {FAULTS_ENV} and BROKER_SCHED_STATE_DIR naming brokers "
            "it may kill (scripts/test-all.sh starts them)"
        )
        if brokers_required():
            pytest.fail(message)
        pytest.skip(message)
    return Path(directory)
