"""Moving a deployment from one transport to another without losing an activation.

Two ways, both keyed on the activation id (the runbook is docs/migration.md):

* **drain** (:mod:`.drain`): invokers on the new transport also run what is still queued
  on the old one, in containers of their own, until every old queue stays empty. The
  results go back over the old transport, where the controller that published the
  activation listens.
* **move** (:mod:`.move`): ``broker-sched migrate move`` copies every activation the old
  group has not finished to the new transport, acking it on the old one only after the
  new one confirmed the copy. The copy is idempotent per activation id
  (:mod:`.targets`), so an interrupted move can simply be run again.

Only this package, the ``migrate`` command and the invoker's drain wiring import it; it
reaches brokers only through the transport contract.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker_sched.config import Settings
from broker_sched.errors import ConfigError
from broker_sched.model import Action
from broker_sched.topology import consumer_group


@dataclass(frozen=True, slots=True)
class QueuePair:
    """One action's queue on the old transport and on the new one.

    The old queue's consumer group is its own name, as the container proxies use it.
    """

    action: str
    source: str
    target: str

    @property
    def group(self) -> str:
        return consumer_group(self.source)


def source_queue(settings: Settings, namespace: str, action: str) -> str:
    template = settings.migration.source_queue_template or settings.queue_template
    return template.format(namespace=namespace, action=action)


def queue_pairs(settings: Settings, actions: list[Action], queues: list[str]) -> list[QueuePair]:
    """The pairs for ``actions`` plus explicitly named ``queues`` (same name on both sides).

    Raises :class:`ConfigError` when there is nothing to work on.
    """
    pairs = [
        QueuePair(
            action.fqn,
            source_queue(settings, action.namespace, action.name),
            settings.queue_name(action.namespace, action.name),
        )
        for action in actions
    ]
    pairs += [QueuePair("", queue, queue) for queue in queues]
    if not pairs:
        raise ConfigError("no queues to migrate: configure [[actions]] or name them with --queue")
    unique: dict[str, QueuePair] = {}
    for pair in pairs:
        unique.setdefault(pair.source, pair)
    return list(unique.values())


def check_distinct(settings: Settings, source: str, target: str) -> None:
    """Migrating a transport onto itself under the same queue names would loop forever."""
    same_names = (settings.migration.source_queue_template or settings.queue_template) == (
        settings.queue_template
    )
    if source == target and same_names:
        raise ConfigError(
            f"nothing to migrate: the old transport is the current one ({source!r}) and "
            "migration.source_queue_template names the same queues"
        )
