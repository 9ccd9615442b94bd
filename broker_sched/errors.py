"""The project's exceptions, one tree, so callers can catch by meaning not by origin.

Broker-client exceptions never leave a transport: each backend translates them at its
boundary and raises one of these ``from`` the original. ``retryable`` tells a caller
whether trying the same thing again later can succeed.

    BrokerSchedError
    ├── ConfigError                 fatal: bad or unknown setting
    ├── ExtraNotInstalled           fatal: a command's optional libraries are missing
    ├── InvalidAction               fatal: an action document that cannot be deployed
    ├── TransportError
    │   ├── UnknownTransport        fatal: no backend by that name ("did you mean …")
    │   ├── TransportNotInstalled   fatal: the backend's extra is missing
    │   └── BrokerUnavailable       retryable: cannot reach the broker / it went away
    ├── MessageError
    │   ├── MalformedMessage        fatal for that message: goes to the dead-letter queue
    │   ├── PayloadTooLarge         fatal for that message: rejected before publishing
    │   └── InvalidPayload          fatal for that message: not encodable as JSON
    └── InvocationError
        ├── UnknownAction           fatal: no such action registered
        ├── Throttled               retryable: "429 too many requests"
        │   └── NoCapacity          retryable: "429 no capacity": no container can be made
        ├── NoInvokers              retryable: no invoker has sent a heartbeat lately
        └── InvocationTimeout       retryable: no result before the deadline
"""

from __future__ import annotations

from typing import ClassVar


class BrokerSchedError(Exception):
    retryable: ClassVar[bool] = False


class ConfigError(BrokerSchedError):
    pass


class ExtraNotInstalled(BrokerSchedError):
    """The README's first install is the scheduler alone; benchmarks and the simulator
    plot with libraries of their own, named by an extra."""

    def __init__(self, command: str, extra: str) -> None:
        super().__init__(f"{command} needs its libraries: pip install 'broker-sched[{extra}]'")
        self.extra = extra


class InvalidAction(BrokerSchedError):
    """An action put through the API that cannot be deployed: what is wrong, in one line."""


class TransportError(BrokerSchedError):
    pass


class UnknownTransport(TransportError):
    def __init__(self, name: str, known: list[str], suggestion: str | None) -> None:
        hint = f"; did you mean {suggestion!r}?" if suggestion else ""
        super().__init__(f"unknown transport {name!r} (known: {', '.join(known)}){hint}")
        self.name = name


class TransportNotInstalled(TransportError):
    def __init__(self, name: str, extra: str) -> None:
        super().__init__(
            f"transport {name!r} needs its client library: pip install 'broker-sched[{extra}]'"
        )
        self.name = name


class BrokerUnavailable(TransportError):
    retryable = True


class MessageError(BrokerSchedError):
    pass


class MalformedMessage(MessageError):
    pass


class PayloadTooLarge(MessageError):
    def __init__(self, size_bytes: int, limit_bytes: int) -> None:
        super().__init__(f"message of {size_bytes} bytes exceeds the limit of {limit_bytes} bytes")
        self.size_bytes = size_bytes
        self.limit_bytes = limit_bytes


class InvalidPayload(MessageError):
    """A payload JSON cannot carry (a lone surrogate in a string) or nested deeper than
    the encoder follows: refused before anything is published."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the payload cannot be encoded as JSON: {reason}")


class InvocationError(BrokerSchedError):
    pass


class UnknownAction(InvocationError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown action {name!r}")
        self.name = name


class Throttled(InvocationError):
    retryable = True

    def __init__(self, action: str, wait_s: float, limit_s: float) -> None:
        super().__init__(
            f"429 too many requests: {action!r} would queue {wait_s:.2f} s (limit {limit_s:.2f} s)"
        )
        self.action = action


class NoCapacity(Throttled):
    """The action has no container and the cluster has no room that could be made for
    one: rejected at once instead of waiting in its queue until the timeout."""

    def __init__(self, action: str) -> None:
        InvocationError.__init__(
            self,
            f"429 no capacity: {action!r} has no container and every slot is busy "
            "(nothing idle to evict); retry later",
        )
        self.action = action


class NoInvokers(InvocationError):
    retryable = True


class InvocationTimeout(InvocationError):
    """No result within the caller's wait; ``activation_id`` names the activation when
    one was published (its record may still come), so an API can answer with it."""

    retryable = True

    def __init__(self, message: str, activation_id: str = "") -> None:
        super().__init__(message)
        self.activation_id = activation_id
