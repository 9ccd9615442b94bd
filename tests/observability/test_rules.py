"""The shipped Prometheus configuration and rules are valid, and each alert is proved by
``promtool test rules`` to fire when it should and to stay quiet when it should not."""

from __future__ import annotations

import subprocess

from observed import REPO, tool

PROMETHEUS_DIR = REPO / "compose" / "prometheus"


def promtool(*args: str) -> str:
    done = subprocess.run(
        [tool("promtool"), *args],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_the_config_and_its_rules_are_valid() -> None:
    promtool("check", "config", "prometheus.yml")
    promtool("check", "rules", *sorted(str(p) for p in (PROMETHEUS_DIR / "rules").glob("*.yml")))


def test_every_alert_and_recording_rule_passes_its_unit_tests() -> None:
    tests = sorted(str(p) for p in (PROMETHEUS_DIR / "tests").glob("*.yml"))
    assert tests
    assert "SUCCESS" in promtool("test", "rules", *tests)


def test_every_alert_has_a_unit_test() -> None:
    rules = (PROMETHEUS_DIR / "rules" / "broker-sched.yml").read_text()
    tested = "".join(p.read_text() for p in (PROMETHEUS_DIR / "tests").glob("*.yml"))
    alerts = [line.split(":", 1)[1].strip() for line in rules.splitlines() if "- alert:" in line]
    assert alerts
    assert [name for name in alerts if f"alertname: {name}" not in tested] == []
