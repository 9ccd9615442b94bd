"""docs/configuration.md is generated; it must match what the code accepts."""

from pathlib import Path

from broker_sched.settings_doc import render_reference

DOC = Path(__file__).parents[2] / "docs" / "configuration.md"


def test_configuration_reference_is_current() -> None:
    assert DOC.read_text() == render_reference(), (
        "regenerate with: broker-sched config --reference > docs/configuration.md"
    )
