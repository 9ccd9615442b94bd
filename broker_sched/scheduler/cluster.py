"""What one controller knows about the invokers: their heartbeats and its own requests.

Heartbeats arrive once a second, so on their own they lag behind: a container created
a moment ago is not in the last beat yet. The view therefore adds the containers whose
creation this controller saw confirmed *after* each invoker's last beat was sent, and
counts requests still awaiting a reply as "creating" — otherwise every tick in that gap
would ask for the same container again. Removals mirror it: a container asked to leave no
longer counts as running, and its slot counts as "being freed" until the invoker's next
beat reports it free, so no tick evicts twice for the same need.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import anyio

from broker_sched.model import ContainerReply, Heartbeat
from broker_sched.scheduler.placement import InvokerView
from broker_sched.scheduler.reclaim import IdleContainers


@dataclass(slots=True)
class _Request:
    action: str
    invoker_id: str
    sent_s: float


@dataclass(slots=True)
class _Beat:
    heartbeat: Heartbeat
    received_s: float
    created_ms: list[tuple[int, str]] = field(default_factory=list)
    removed_ms: list[tuple[int, str]] = field(default_factory=list)


class ClusterView:
    def __init__(self, *, heartbeat_interval_s: float, expiry_beats: int) -> None:
        self.expiry_s = heartbeat_interval_s * expiry_beats
        self._beats: dict[str, _Beat] = {}
        self._requests: dict[str, _Request] = {}
        self._removals: dict[str, _Request] = {}
        self._beat_arrived = anyio.Event()
        self.departed: dict[str, float] = {}
        """Invokers no longer heard from -> when last heard (monotonic); one heard again
        leaves it."""

    async def wait_for_invokers(self, invoker_ids: set[str]) -> None:
        """Return once every one of ``invoker_ids`` has been heard from."""
        while not invoker_ids <= {beat.invoker_id for beat in self.live()}:
            self._beat_arrived = anyio.Event()
            await self._beat_arrived.wait()

    def on_heartbeat(self, heartbeat: Heartbeat) -> None:
        previous = self._beats.get(heartbeat.invoker_id)
        self.departed.pop(heartbeat.invoker_id, None)
        beat = _Beat(heartbeat, time.monotonic())
        if previous is not None:
            beat.created_ms = [c for c in previous.created_ms if c[0] >= heartbeat.sent_ms]
            beat.removed_ms = [r for r in previous.removed_ms if r[0] >= heartbeat.sent_ms]
        self._beats[heartbeat.invoker_id] = beat
        self._beat_arrived.set()

    def on_request(self, request_id: str, action: str, invoker_id: str) -> None:
        self._requests[request_id] = _Request(action, invoker_id, time.monotonic())

    def on_removal(self, request_id: str, action: str, invoker_id: str) -> None:
        self._removals[request_id] = _Request(action, invoker_id, time.monotonic())

    def on_reply(self, reply: ContainerReply) -> _Request | None:
        """Account for a create's or a removal's outcome; the create request it answers."""
        removal = self._removals.pop(reply.request_id, None)
        request = None if removal is not None else self._requests.pop(reply.request_id, None)
        beat = self._beats.get(reply.invoker_id)
        # Stamped with the invoker's clock, as its heartbeats are, and kept only while
        # its last beat predates the answer: a beat sent after it (heard before it, or
        # later) counts the change already, and counting it twice would make a busy
        # controller see two containers where one runs, and remove the one.
        if reply.ok and beat is not None and beat.heartbeat.sent_ms < reply.sent_ms:
            if removal is not None:
                beat.removed_ms.append((reply.sent_ms, removal.action))
            elif request is not None:
                beat.created_ms.append((reply.sent_ms, request.action))
        return request

    def expire_requests(self, timeout_s: float) -> list[str]:
        """Forget requests with no reply after ``timeout_s`` (the invoker likely died)."""
        now_s = time.monotonic()
        stale: list[str] = []
        for requests in (self._requests, self._removals):
            expired = [rid for rid, r in requests.items() if now_s - r.sent_s > timeout_s]
            for request_id in expired:
                del requests[request_id]
            stale += expired
        return stale

    def live(self) -> list[Heartbeat]:
        now_s = time.monotonic()
        for invoker_id, beat in list(self._beats.items()):
            if now_s - beat.received_s > self.expiry_s:
                del self._beats[invoker_id]
                self.departed[invoker_id] = beat.received_s
        return [beat.heartbeat for beat in self._beats.values()]

    def creating(self, action: str) -> int:
        return sum(1 for r in self._requests.values() if r.action == action)

    def removing(self, action: str) -> int:
        return sum(1 for r in self._removals.values() if r.action == action)

    def running(self, action: str) -> int:
        """Containers of ``action`` in the last beats plus those confirmed since, less
        those asked to leave."""
        total = -self.removing(action)
        for beat in self._beats.values():
            total += beat.heartbeat.containers.get(action, 0)
            total += sum(1 for _, created in beat.created_ms if created == action)
            total -= sum(1 for _, removed in beat.removed_ms if removed == action)
        return max(0, total)

    def free_slots(self) -> int:
        """Free slots in the last beats, less what this controller has asked for since,
        plus what removals confirmed since have freed."""
        free = 0
        for beat in self._beats.values():
            free += max(0, beat.heartbeat.free_slots) - len(beat.created_ms)
            free += len(beat.removed_ms)
        return max(0, free - len(self._requests))

    def views(self) -> dict[str, InvokerView]:
        """Each live invoker as placement should see it: its last beat, less the
        containers this controller asked it for since, plus those it removed since."""
        pending = Counter(request.invoker_id for request in self._requests.values())
        views: dict[str, InvokerView] = {}
        for heartbeat in self.live():
            beat = self._beats[heartbeat.invoker_id]
            change = len(beat.removed_ms) - len(beat.created_ms) - pending[heartbeat.invoker_id]
            views[heartbeat.invoker_id] = InvokerView(
                heartbeat.invoker_id, heartbeat.free_slots + change, heartbeat.free_memory_mb
            )
        return views

    def freeing_slots(self) -> int:
        """Slots that removals asked for and not yet confirmed will free."""
        return len(self._removals)

    def idle(self) -> list[IdleContainers]:
        """Idle containers per action and invoker from the last beats, aged to now, less
        those already asked to leave."""
        now_s = time.monotonic()
        groups: list[IdleContainers] = []
        for invoker_id, beat in self._beats.items():
            age_s = now_s - beat.received_s
            for action, idle_s in beat.heartbeat.idle_s.items():
                leaving = sum(
                    1
                    for r in self._removals.values()
                    if r.action == action and r.invoker_id == invoker_id
                )
                leaving += sum(1 for _, removed in beat.removed_ms if removed == action)
                count = len(idle_s) - leaving
                if count > 0 and idle_s:
                    groups.append(IdleContainers(action, invoker_id, count, max(idle_s) + age_s))
        return groups

    def hosts(self, action: str) -> list[tuple[str, int]]:
        """Invokers with containers of ``action`` and how many, most first."""
        counts = [
            (invoker_id, beat.heartbeat.containers.get(action, 0))
            for invoker_id, beat in self._beats.items()
        ]
        return sorted((c for c in counts if c[1] > 0), key=lambda c: (-c[1], c[0]))
