"""`run --workers`: several invoker processes, and only invokers."""

from __future__ import annotations

import pytest

from broker_sched.cli import main


@pytest.mark.parametrize("role", ["all", "controller"])
def test_workers_needs_the_invoker_role(role: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--role", role, "--workers", "2", "--api", "off"]) == 2
    assert "--workers runs invoker processes: it needs --role invoker" in capsys.readouterr().err


def test_workers_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--role", "invoker", "--workers", "0"]) == 2
    assert "--workers must be at least 1, not 0" in capsys.readouterr().err
