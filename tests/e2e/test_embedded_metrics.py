"""An invoker's own /metrics, under either policy: the cold start it made, and its
containers as its heartbeat says them."""

from __future__ import annotations

import pytest
from embedded import embedded_settings, stack_with
from prometheus_client.parser import text_string_to_metric_families

from broker_sched.metrics import invoker_exposition
from broker_sched.model import Action

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("policy", ["acs", "sharding"])
async def test_an_invoker_exposes_its_cold_starts_and_containers(policy: str) -> None:
    actions = [Action(name="echo", handler="broker_sched.samples:echo")]
    async with stack_with(actions, settings=embedded_settings(policy=policy)) as stack:
        assert stack.controller is not None
        result = await stack.controller.invoke("echo", {"x": 1})
        (invoker,) = stack.invokers
        text = invoker_exposition(invoker).decode()

    assert result.ok
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert samples["broker_sched_cold_start_seconds_count", (("start", "cold"),)] == 1
    assert samples["broker_sched_cold_start_seconds_sum", (("start", "cold"),)] > 0
    running = (("action", "guest/echo"), ("state", "running"))
    assert samples["broker_sched_containers", running] == 1
    assert ("broker_sched_record_write_failures_total", ()) in samples
