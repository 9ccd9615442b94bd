"""The ``broker-sched migrate`` subcommands: ``status`` and ``move``.

Each prints one line per queue and a total line, and exits 0 only when there is nothing
left to do: ``status`` when every old queue is empty, ``move`` when every queue was
moved completely. Queues are those of the configured actions (old names from
``migration.source_queue_template``, new ones from ``queue_template``) plus any named
with ``--queue`` (same name on both sides).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from typing import TextIO

from broker_sched.config import Settings
from broker_sched.errors import ConfigError
from broker_sched.migration import QueuePair, check_distinct, queue_pairs
from broker_sched.migration.move import MoveCount, Mover, QueueMove
from broker_sched.migration.targets import open_target
from broker_sched.topology import consumer_group
from transports.base import Backlog
from transports.registry import transport_from_settings


def _source(settings: Settings, source: str | None) -> str:
    name = source or settings.migration.drain_from
    if name is None:
        raise ConfigError("name the old transport with --from (or set migration.drain_from)")
    return name


def _backlog(backlog: Backlog) -> str:
    return f"{backlog.total} left ({backlog.pending} pending, {backlog.in_flight} in flight)"


async def status(
    settings: Settings,
    *,
    source: str | None = None,
    target: str | None = None,
    queues: Sequence[str] = (),
    out: TextIO = sys.stdout,
) -> int:
    """Backlog of every old queue and its new counterpart; 0 when the old side is empty.

    Counted from this process, a Kafka group's messages in flight elsewhere show as
    pending (Kafka does not tell who fetched what).
    """
    old_name = _source(settings, source)
    new_name = target or settings.transport
    check_distinct(settings, old_name, new_name)
    pairs = queue_pairs(settings, settings.actions, list(queues))
    async with contextlib.AsyncExitStack() as stack:
        old = await stack.enter_async_context(transport_from_settings(settings, name=old_name))
        new = await stack.enter_async_context(transport_from_settings(settings, name=new_name))
        before = await old.backlogs([(pair.source, pair.group) for pair in pairs])
        after = await new.backlogs([(pair.target, consumer_group(pair.target)) for pair in pairs])
    for pair, was, now in zip(pairs, before, after, strict=True):
        print(f"{pair.source}: {old_name} {_backlog(was)}; {new_name} {_backlog(now)}", file=out)
    total = sum(b.total for b in before)
    state = "drained" if total == 0 else "not drained"
    print(
        f"total: {old_name} {total} left in {len(pairs)} queues ({state}); "
        f"{new_name} {sum(b.total for b in after)} left",
        file=out,
    )
    return 0 if total == 0 else 1


async def move(
    settings: Settings,
    *,
    source: str | None = None,
    target: str | None = None,
    queues: Sequence[str] = (),
    batch: int | None = None,
    dry_run: bool = False,
    out: TextIO = sys.stdout,
) -> int:
    """Move (or with ``dry_run`` only count) every unfinished activation; 0 when complete."""
    old_name = _source(settings, source)
    new_name = target or settings.transport
    check_distinct(settings, old_name, new_name)
    pairs = queue_pairs(settings, settings.actions, list(queues))
    migration = settings.migration
    async with contextlib.AsyncExitStack() as stack:
        sink = await stack.enter_async_context(open_target(settings, new_name))
        old = await stack.enter_async_context(transport_from_settings(settings, name=old_name))
        mover = Mover(
            old,
            sink,
            batch=batch or migration.move_batch,
            idle_timeout_s=migration.move_idle_timeout_s,
        )
        if dry_run:
            return _print_plan(pairs, await mover.plan(pairs), old_name, new_name, out)
        done = await mover.move_all(pairs, on_done=lambda moved: _print_move(moved, out))
    total = MoveCount()
    for moved in done:
        total += moved.count
    incomplete = sum(1 for moved in done if not moved.complete)
    print(
        f"total: moved={total.moved} skipped={total.skipped} failed={total.failed} "
        f"left={total.left} ({old_name} -> {new_name}, {len(pairs)} queues"
        + (f", {incomplete} incomplete: run it again" if incomplete else "")
        + ")",
        file=out,
    )
    return 0 if incomplete == 0 else 1


def _print_plan(
    pairs: list[QueuePair], counts: list[int], old_name: str, new_name: str, out: TextIO
) -> int:
    for pair, count in zip(pairs, counts, strict=True):
        print(f"{pair.source} -> {pair.target}: would move {count}", file=out)
    print(f"total: would move {sum(counts)} ({old_name} -> {new_name}, dry run)", file=out)
    return 0


def _print_move(moved: QueueMove, out: TextIO) -> None:
    count = moved.count
    line = (
        f"{moved.pair.source} -> {moved.pair.target}: moved={count.moved} "
        f"skipped={count.skipped} failed={count.failed} left={count.left}"
    )
    if moved.error:
        line += f" (stopped: {moved.error})"
    print(line, file=out, flush=True)
