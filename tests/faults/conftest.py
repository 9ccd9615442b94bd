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

from broker_sched.bench.chaos import Row
from broker_sched.bench.invocation_checker import TABLE_HEADER, table_row

FAULTS_ENV = "BROKER_SCHED_TEST_FAULTS"
_CHECKED: list[tuple[str, Row]] = []


@pytest.fixture(scope="session")
def checker_rows() -> list[tuple[str, Row]]:
    """Where each case puts its row (config, row) for the checker's table."""
    return _CHECKED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The invocation checker's table of the session: fault x transport x verdicts."""
    if not _CHECKED:
        return
    terminalreporter.section("invocation checker")
    terminalreporter.write_line(TABLE_HEADER)
    for config, row in _CHECKED:
        transport = row.transport if config == "single" else f"{row.transport} ({config})"
        terminalreporter.write_line(table_row(transport, row.fault, row.checked))


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
