"""The runtime contract: how the invoker gets a container and runs an activation in it.

A runtime hides what a container is (an OS process, a simulated timer, a Docker
container); the container proxy only needs ``run``, ``pause``, ``resume`` and ``remove``,
and the cost of each so it can report cold starts and run times.

What can go wrong, and how it is reported:
- the handler fails or returns ``{"error": ...}`` → a :class:`RunOutcome` with
  ``ACTION_ERROR`` or ``APPLICATION_ERROR``; the container stays usable;
- the run exceeds its time limit → ``TIMEOUT``; the container was killed and is no
  longer ``alive`` (its state is unknown, so it is never reused);
- the container dies under a run, or cannot be used at all → :class:`ContainerCrashed`
  from ``run`` (or ``create``); the caller discards the container and gives the work
  back to the queue so another container can redo it.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from pydantic import JsonValue

from broker_sched.model import Action, Start, Status


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """One run's result.

    ``result`` is the handler's JSON value for ``SUCCESS`` and ``APPLICATION_ERROR``
    (the handler's own ``{"error": ...}`` dict), ``None`` otherwise; ``error`` is set
    for every status but ``SUCCESS``. ``logs`` is what the run wrote to stdout and
    stderr, one OpenWhisk-style line each (``<time> stdout: <text>``), at most
    :data:`LOG_LIMIT_BYTES`; empty where the runtime does not collect them.
    """

    status: Status
    result: JsonValue
    error: str | None
    run_ms: float
    logs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ContainerTimings:
    """What a container's start cost: making the container, then loading the action's code.

    A container made from a stem cell (``start = PREWARM``) paid its create long before
    any activation needed it, so ``create_ms`` is 0 and only ``init_ms`` was waited for.
    """

    create_ms: float
    init_ms: float
    start: Start = Start.COLD


class ContainerCrashed(Exception):
    """The container died mid-run or cannot be used; discard it and give the work back."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


LOG_LIMIT_BYTES = 64 * 1024
"""The most output one activation keeps with its record; the rest is dropped with a
last line saying so (OpenWhisk keeps 10 MB in a log store; a record here travels
through the broker, whose messages are about a megabyte at most)."""


def completed(result: JsonValue, run_ms: float, logs: tuple[str, ...] = ()) -> RunOutcome:
    """The outcome of a run that returned ``result``.

    A dict with an ``"error"`` key is the handler reporting its own failure (OpenWhisk's
    application error); anything else is a success.
    """
    if isinstance(result, dict) and "error" in result:
        error = result["error"]
        return RunOutcome(
            Status.APPLICATION_ERROR,
            result,
            error if isinstance(error, str) else json.dumps(error),
            run_ms,
            logs,
        )
    return RunOutcome(Status.SUCCESS, result, None, run_ms, logs)


class Container(ABC):
    """One container of one action; ``action.concurrency`` runs may be in flight at once."""

    id: str
    action: Action
    paused: bool

    @property
    @abstractmethod
    def alive(self) -> bool:
        """False once the container was removed, killed after a timeout, or died."""

    @abstractmethod
    async def run(self, payload: JsonValue, timeout_s: float) -> RunOutcome:
        """Run the handler once; raises :class:`ContainerCrashed` if the container dies.

        A paused container does not run anything until it is resumed; the wait counts
        against ``timeout_s``.
        """

    @abstractmethod
    async def pause(self) -> float:
        """Freeze the container so an idle one costs no CPU; returns the ms it took."""

    @abstractmethod
    async def resume(self) -> float:
        """Unfreeze a paused container (no-op otherwise); returns the ms it took."""

    @abstractmethod
    async def remove(self) -> float:
        """Stop the container and free what it holds; idempotent; returns the ms it took."""


class StemCell(ABC):
    """A container created and started for an action kind and memory size, with no
    action's code yet: OpenWhisk's prewarmed container.

    Taking one for an action costs only that action's init, which is the point of
    keeping a pool of them; a stem cell holds a slot and its memory while it waits.
    """

    id: str
    kind: str
    memory_mb: int
    create_ms: float

    @property
    @abstractmethod
    def alive(self) -> bool:
        """False once removed, given an action, or dead on its own."""

    @abstractmethod
    async def remove(self) -> float:
        """Stop the stem cell; idempotent; returns the ms it took."""


class Runtime(ABC):
    """Makes containers; owns every container it made until they are removed."""

    name: ClassVar[str]
    makes_stem_cells: ClassVar[bool] = False
    """Whether :meth:`start_stem_cell` and :meth:`initialise` work (a prewarm pool needs them)."""

    @abstractmethod
    async def create(self, action: Action) -> tuple[Container, ContainerTimings]:
        """Cold-start a container for ``action``.

        Raises :class:`ContainerCrashed` with the reason when the container cannot be
        started, e.g. the handler fails to import.
        """

    @abstractmethod
    async def close(self) -> None:
        """Remove every container this runtime created and still holds."""

    async def start_stem_cell(self, kind: str, memory_mb: int) -> StemCell:
        """Create and start a container of ``kind`` that has loaded no action yet.

        Raises :class:`ContainerCrashed` when it cannot be started, or when this runtime
        makes no stem cells.
        """
        raise ContainerCrashed(f"the {self.name} runtime makes no stem cells")

    async def initialise(
        self, cell: StemCell, action: Action
    ) -> tuple[Container, ContainerTimings]:
        """Give ``cell`` the code of ``action``; the cell becomes that action's container.

        The timings have ``start = PREWARM`` and ``create_ms = 0``. Raises
        :class:`ContainerCrashed` (the cell is removed) when the init fails.
        """
        raise ContainerCrashed(f"the {self.name} runtime makes no stem cells")
