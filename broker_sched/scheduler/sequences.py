"""Sequence actions: several actions run in order as one (OpenWhisk's sequences).

A sequence is an :class:`~broker_sched.model.Action` with ``sequence`` set to the
actions it runs. Invoking it invokes each step through the controller like any other
activation, the step's result the next step's input, so every step has its own
activation record, and the sequence gets one more: its final result, the total time,
and ``steps``, the ids of the steps that ran. A step may itself be a sequence.

Bad definitions fail when the controller starts (:func:`check_sequences`): a step
naming an unknown action, or sequences that contain themselves. At run time a step
that fails ends the sequence with that step's status and an error naming it; a step
that could not even be invoked (throttled, no capacity, its deadline) ends it with a
system error or a timeout, named the same way. Only when the first step is refused has
nothing run, and the refusal is the caller's answer as for a plain action.

Under the ``acs`` policy the later steps' containers are pre-warmed when the sequence
starts (:mod:`broker_sched.scheduler.chain_warmer`), unless ``sequences.prewarm`` is off.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pydantic import JsonValue

from broker_sched.errors import BrokerSchedError, ConfigError, InvocationTimeout
from broker_sched.model import Action, ActivationResult, Status, fqn, new_id
from broker_sched.scheduler.chain_warmer import ChainWarmer, WarmingLedger

if TYPE_CHECKING:
    from broker_sched.scheduler.controller import Controller


def step_name(sequence: Action, step: str) -> str:
    """A step's ``namespace/name``: a bare name is in the sequence's namespace."""
    return step if "/" in step else fqn(sequence.namespace, step)


def check_sequences(actions: Mapping[str, Action]) -> None:
    """Raise :class:`ConfigError` for a step that names no action, or a cycle."""
    for action in actions.values():
        for step in action.sequence:
            if step_name(action, step) not in actions:
                raise ConfigError(
                    f"sequence {action.fqn}: step {step!r} is not an action "
                    f"(known: {', '.join(sorted(actions))})"
                )
    for action in actions.values():
        _check_acyclic(action, actions, (action.fqn,))


def _check_acyclic(action: Action, actions: Mapping[str, Action], path: tuple[str, ...]) -> None:
    for step in action.sequence:
        name = step_name(action, step)
        if name in path:
            raise ConfigError(f"sequences form a cycle: {' → '.join((*path, name))}")
        _check_acyclic(actions[name], actions, (*path, name))


class Sequences:
    """Runs the sequence actions of one controller."""

    def __init__(self, controller: Controller) -> None:
        check_sequences(controller.actions)
        self.controller = controller
        self.settings = controller.settings.sequences
        self.ledger = WarmingLedger()

    async def invoke(
        self, sequence: Action, payload: JsonValue, *, blocking: bool, timeout_s: float
    ) -> ActivationResult | str:
        """The sequence's result, or at once its activation id when not blocking."""
        activation_id = new_id()
        if blocking:
            return await self._run(sequence, payload, activation_id, timeout_s)
        first = self.controller.actions[step_name(sequence, sequence.sequence[0])]
        self.controller.policy.admit(first)
        self.controller.spawn(self._run_unattended, sequence, payload, activation_id, timeout_s)
        return activation_id

    async def _run_unattended(
        self, sequence: Action, payload: JsonValue, activation_id: str, timeout_s: float
    ) -> None:
        try:
            await self._run(sequence, payload, activation_id, timeout_s)
        except BrokerSchedError as exc:
            self._report(
                sequence, activation_id, time.monotonic(), [], Status.SYSTEM_ERROR, None, str(exc)
            )

    async def _run(
        self, sequence: Action, payload: JsonValue, activation_id: str, timeout_s: float
    ) -> ActivationResult:
        started_s = time.monotonic()
        deadline_s = started_s + timeout_s
        steps = [self.controller.actions[step_name(sequence, s)] for s in sequence.sequence]
        warmer = self._warmer(sequence, steps)
        ran: list[ActivationResult] = []
        value = payload
        try:
            for index, step in enumerate(steps):
                if warmer is not None:
                    warmer.reached(index)
                where = f"step {index + 1} of {len(steps)} ({step.fqn})"
                try:
                    result = await self._invoke_step(step, value, deadline_s)
                except BrokerSchedError as exc:
                    if index == 0:
                        raise
                    timed_out = isinstance(exc, InvocationTimeout)
                    return self._report(
                        sequence,
                        activation_id,
                        started_s,
                        ran,
                        Status.TIMEOUT if timed_out else Status.SYSTEM_ERROR,
                        None,
                        f"{where}: {exc}",
                    )
                ran.append(result)
                if not result.ok:
                    return self._report(
                        sequence,
                        activation_id,
                        started_s,
                        ran,
                        result.status,
                        result.result,
                        f"{where}: {result.error}",
                    )
                value = result.result
            return self._report(sequence, activation_id, started_s, ran, Status.SUCCESS, value)
        finally:
            if warmer is not None:
                self.controller.spawn(warmer.finish)

    async def _invoke_step(
        self, step: Action, value: JsonValue, deadline_s: float
    ) -> ActivationResult:
        remaining_s = deadline_s - time.monotonic()
        if remaining_s <= 0:
            raise InvocationTimeout(f"the sequence's deadline passed before {step.fqn}")
        return await self.controller.invoke(step.fqn, value, timeout_s=remaining_s)

    def _warmer(self, sequence: Action, steps: list[Action]) -> ChainWarmer | None:
        monitor = self.controller.monitor
        if not self.settings.prewarm or monitor is None or any(s.sequence for s in steps):
            return None
        warmer = ChainWarmer(
            monitor=monitor,
            settings=self.settings,
            sequence=sequence.fqn,
            steps=steps,
            ledger=self.ledger,
            retry_s=self.controller.settings.scheduler.check_interval_s,
        )
        self.controller.spawn(warmer.ask_in_time)
        return warmer

    def _report(
        self,
        sequence: Action,
        activation_id: str,
        started_s: float,
        ran: list[ActivationResult],
        status: Status,
        value: JsonValue,
        error: str | None = None,
    ) -> ActivationResult:
        """The sequence's own result: its record is the controller's to keep (the
        invokers keep only their steps'), and it goes to the result listeners."""
        result = ActivationResult(
            activation_id=activation_id,
            namespace=sequence.namespace,
            action=sequence.name,
            status=status,
            result=value,
            error=error,
            wait_ms=sum(step.wait_ms for step in ran),
            init_ms=sum(step.init_ms for step in ran),
            run_ms=(time.monotonic() - started_s) * 1000,
            steps=[step.activation_id for step in ran],
        )
        self.controller.results[activation_id] = result
        self.controller.records.keep(result)
        for listener in self.controller.result_listeners:
            listener(result)
        return result
