"""Records kept by the invoker that answers: a caller whose result was lost on the
results channel is answered from the record, not left to time out."""

from __future__ import annotations

import asyncio

import pytest
from embedded import eventually, stack_with

from broker_sched.errors import BrokerUnavailable
from broker_sched.model import Action, ActivationResult, Status
from broker_sched.records import ActivationRecords
from transports.base import Listener
from transports.memory import MemoryTransport

pytestmark = pytest.mark.slow

ECHO = Action(name="echo")
RESULT_WAIT_S = 30.0
"""Generous: a loaded machine may be slow, and the outcome, not the time, is asserted."""
POLL_S = 0.05


class LosingResults(MemoryTransport):
    """Results sent to controllers vanish, as when the broker dies before passing them
    on; ``outage()`` makes the controller's results channel fail once, as a broker
    restart does."""

    def __init__(self) -> None:
        super().__init__()
        self.down = asyncio.Event()

    async def send(self, channel: str, body: bytes) -> None:
        if not channel.startswith("results-"):
            await super().send(channel, body)

    async def listen(self, channel: str) -> Listener:
        listener = await super().listen(channel)
        return _FailingOnce(listener, self.down) if channel.startswith("results-") else listener


class _FailingOnce(Listener):
    def __init__(self, inner: Listener, down: asyncio.Event) -> None:
        self.channel = inner.channel
        self._inner = inner
        self._down = down

    async def _receive(self, timeout_s: float) -> bytes | None:
        if self._down.is_set():
            self._down.clear()
            raise BrokerUnavailable("the broker restarted")
        return await self._inner.receive(min(timeout_s, 0.1))

    async def close(self) -> None:
        await self._inner.close()


async def test_a_caller_whose_result_was_lost_gets_the_record_at_its_deadline() -> None:
    transport = LosingResults()
    async with stack_with([ECHO], transport=transport) as stack:
        controller = stack.controller
        assert controller is not None
        result = await controller.invoke("echo", {"name": "lost"}, timeout_s=3.0)
        assert result.status is Status.SUCCESS
        assert result.result == {"name": "lost"}
        assert result.invoker_id, "the invoker's own record"
        assert controller.results[result.activation_id] == result


async def test_a_caller_is_answered_from_the_record_when_the_channel_is_back() -> None:
    transport = LosingResults()
    async with stack_with([ECHO], transport=transport) as stack:
        controller = stack.controller
        assert controller is not None
        call = asyncio.ensure_future(
            controller.invoke("echo", {"name": "back"}, timeout_s=10 * RESULT_WAIT_S)
        )
        try:
            await eventually(lambda: bool(controller._waiting), RESULT_WAIT_S)
            (activation_id, (namespace, _)), *_ = controller._waiting.items()
            await _recorded(controller.records, namespace, activation_id)
            transport.down.set()
            async with asyncio.timeout(RESULT_WAIT_S):
                result = await call
        finally:
            call.cancel()
        assert result.activation_id == activation_id
        assert result.result == {"name": "back"}


async def test_records_are_kept_for_non_blocking_calls_whose_results_were_lost() -> None:
    transport = LosingResults()
    async with stack_with([ECHO], transport=transport) as stack:
        controller = stack.controller
        assert controller is not None
        activation_id = await controller.invoke("echo", {"name": "later"}, blocking=False)
        record = await _recorded(controller.records, "guest", activation_id)
        assert record.result == {"name": "later"}


async def _recorded(
    records: ActivationRecords, namespace: str, activation_id: str
) -> ActivationResult:
    for _ in range(int(RESULT_WAIT_S / POLL_S)):
        record = await records.get(namespace, activation_id)
        if record is not None:
            return record
        await asyncio.sleep(POLL_S)
    raise AssertionError(f"no record of {activation_id}")
