"""What a controller believes about the invokers between heartbeats."""

from __future__ import annotations

import time

from broker_sched.model import ContainerReply, Heartbeat, now_ms
from broker_sched.scheduler.cluster import ClusterView


def beat(**kw: object) -> Heartbeat:
    fields: dict[str, object] = {
        "invoker_id": "inv0",
        "free_slots": 2,
        "free_memory_mb": 1024,
        "containers": {"guest/a": 3},
        "idle_s": {"guest/a": [0.5, 4.0]},
        "sent_ms": now_ms() - 10,
    }
    fields.update(kw)
    return Heartbeat.model_validate(fields)


def reply(request_id: str, ok: bool = True) -> ContainerReply:
    return ContainerReply(
        request_id=request_id, namespace="guest", action="a", invoker_id="inv0", ok=ok
    )


def view() -> ClusterView:
    cluster = ClusterView(heartbeat_interval_s=1.0, expiry_beats=3)
    cluster.on_heartbeat(beat())
    return cluster


def test_idle_containers_come_from_the_beat_longest_idle_first() -> None:
    (group,) = view().idle()
    assert (group.action, group.invoker_id, group.count) == ("guest/a", "inv0", 2)
    assert group.idle_s >= 4.0


def test_a_container_asked_to_leave_is_no_longer_running_idle_or_free_yet() -> None:
    cluster = view()
    cluster.on_removal("r1", "guest/a", "inv0")
    assert cluster.running("guest/a") == 2
    assert cluster.removing("guest/a") == 1
    assert cluster.freeing_slots() == 1
    assert cluster.free_slots() == 2
    assert cluster.idle()[0].count == 1


def test_a_confirmed_removal_frees_its_slot_until_the_next_beat() -> None:
    cluster = view()
    cluster.on_removal("r1", "guest/a", "inv0")
    assert cluster.on_reply(reply("r1")) is None
    assert (cluster.running("guest/a"), cluster.freeing_slots(), cluster.free_slots()) == (
        2,
        0,
        3,
    )
    later = now_ms() + 1
    cluster.on_heartbeat(beat(free_slots=3, containers={"guest/a": 2}, idle_s={}, sent_ms=later))
    assert (cluster.running("guest/a"), cluster.free_slots()) == (2, 3)


def test_placement_views_count_requests_not_yet_in_a_beat() -> None:
    cluster = view()
    cluster.on_request("c1", "guest/b", "inv0")
    assert cluster.views()["inv0"].free_slots == 1
    assert cluster.on_reply(reply("c1")) is not None
    assert cluster.views()["inv0"].free_slots == 1
    assert cluster.hosts("guest/a") == [("inv0", 3)]


def test_unanswered_removals_expire_like_requests() -> None:
    cluster = view()
    cluster.on_removal("r1", "guest/a", "inv0")
    assert cluster.expire_requests(timeout_s=-1.0) == ["r1"]
    assert cluster.freeing_slots() == 0


def test_an_expired_invoker_is_departed_until_heard_again() -> None:
    view = ClusterView(heartbeat_interval_s=0.01, expiry_beats=1)
    view.on_heartbeat(Heartbeat(invoker_id="inv0", free_slots=1, free_memory_mb=256))
    time.sleep(0.05)
    assert view.live() == []
    assert set(view.departed) == {"inv0"}
    view.on_heartbeat(Heartbeat(invoker_id="inv0", free_slots=1, free_memory_mb=256))
    assert view.departed == {}


def test_a_beat_sent_after_a_create_was_answered_counts_it_once_whichever_is_heard_first() -> None:
    answered = reply("c1")
    later = beat(containers={"guest/a": 4}, sent_ms=answered.sent_ms + 5)

    reply_first = view()
    reply_first.on_request("c1", "guest/a", "inv0")
    reply_first.on_reply(answered)
    assert reply_first.running("guest/a") == 4
    reply_first.on_heartbeat(later)
    assert reply_first.running("guest/a") == 4

    beat_first = view()
    beat_first.on_request("c1", "guest/a", "inv0")
    beat_first.on_heartbeat(later)
    beat_first.on_reply(answered)
    assert beat_first.running("guest/a") == 4
