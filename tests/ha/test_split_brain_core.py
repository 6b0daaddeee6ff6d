"""The split-brain judgement (balancer.ha.split_brain) on looks a second apart, time made up:
raised from the peer's word or the VIP self-probe once it lasts, not for a handover's moment,
and resolved once the evidence is gone."""

from __future__ import annotations

from collections.abc import Iterable

from balancer.ha.split_brain import Alarm, Detector, Look

VIP = "198.18.1.100"
MAC = "02:00:00:00:00:02"
THERE = {VIP: (MAC,)}


def run(detector: Detector, looks: Iterable[Look]) -> list[str | None]:
    return [detector.look(look) for look in looks]


def test_another_mac_for_a_held_vip_raises_on_the_second_look_and_says_so() -> None:
    detector = Detector()
    said = run(
        detector, [Look(10.0, "active", answered={VIP: ()}), Look(11.0, "active", answered=THERE)]
    )
    assert said == [None, None]
    assert detector.alarm == Alarm()
    assert detector.look(Look(12.0, "active", answered=THERE)) == "raised"
    assert detector.alarm == Alarm(True, 11.0, (f"{VIP} answered from {MAC} as well as this node",))
    assert detector.look(Look(13.0, "active", answered=THERE)) is None  # said once
    assert detector.alarm.since == 11.0


def test_the_peer_saying_active_while_this_node_is_raises() -> None:
    detector = Detector()
    looks = [
        Look(10.0, "active", peer="passive", peer_age=0.3),
        Look(11.0, "active", peer="active", peer_age=0.4),
        Look(12.0, "active", peer="active", peer_age=0.4),
    ]
    assert run(detector, looks) == [None, None, "raised"]
    assert detector.alarm.evidence == ("the peer says it is Active too (heard 0.4 s ago)",)
    assert detector.alarm.since == 10.6


def test_a_handover_seen_within_one_look_is_no_split_brain() -> None:
    """The new owner's first look may still see the old owner's MAC and its last answer."""
    detector = Detector()
    looks = [
        Look(10.0, "passive", peer="active", peer_age=0.5),
        Look(11.0, "active", peer="active", peer_age=0.9, answered=THERE),
        Look(12.0, "active", peer="passive", peer_age=0.2, answered={VIP: ()}),
        Look(13.0, "active", peer="passive", peer_age=0.2, answered={VIP: ()}),
    ]
    assert run(detector, looks) == [None, None, None, None]
    assert not detector.alarm.raised


def test_an_answer_from_before_this_node_took_over_is_no_evidence() -> None:
    """A peer whose management service stopped with the node last said Active before this node
    took over; its answer only grows older."""
    detector = Detector()
    looks = [Look(10.0 + n, "active", peer="active", peer_age=0.5 + n) for n in range(3)]
    assert run(detector, looks) == [None, None, None]


def test_one_stale_answer_seen_in_two_looks_is_one_observation() -> None:
    detector = Detector()
    looks = [
        Look(10.0, "active"),
        Look(11.0, "active", peer="active", peer_age=0.5),  # heard at 10.5
        Look(12.0, "active", peer="active", peer_age=1.5),  # the same answer
    ]
    assert run(detector, looks) == [None, None, None]
    # A new one, heard a second later, is a second observation.
    assert detector.look(Look(12.2, "active", peer="active", peer_age=0.7)) == "raised"


def test_an_answer_too_old_is_no_evidence() -> None:
    detector = Detector()
    looks = [Look(10.0, "active")] + [
        Look(10.0 + n, "active", peer="active", peer_age=3.5) for n in (1, 5, 9)
    ]
    assert run(detector, looks) == [None, None, None, None]


def test_a_passive_node_sees_no_split_brain() -> None:
    detector = Detector()
    looks = [
        Look(10.0 + n, "passive", peer="active", peer_age=0.1, answered=THERE) for n in range(4)
    ]
    assert run(detector, looks) == [None] * 4


def test_resolved_once_the_evidence_is_gone_for_a_look_more() -> None:
    detector = Detector()
    run(detector, [Look(10.0 + n, "active", answered=THERE) for n in range(2)])
    assert detector.alarm.raised
    # The loser yielded: no other MAC. One clean look is not enough, a second is.
    assert detector.look(Look(12.0, "active", answered={VIP: ()})) is None
    assert detector.alarm.raised
    assert detector.look(Look(13.0, "active", answered={VIP: ()})) == "resolved"
    assert detector.alarm == Alarm()
    # Evidence again starts over: two looks before it is raised again.
    assert detector.look(Look(14.0, "active", answered=THERE)) is None
    assert detector.look(Look(15.0, "active", answered=THERE)) == "raised"
    assert detector.alarm.since == 14.0


def test_this_node_yielding_resolves_it() -> None:
    detector = Detector()
    run(detector, [Look(10.0 + n, "active", answered=THERE) for n in range(2)])
    assert run(detector, [Look(12.0, "passive"), Look(13.0, "passive")]) == [None, "resolved"]


def test_evidence_that_comes_back_within_a_look_keeps_the_alarm_and_its_start() -> None:
    detector = Detector()
    run(detector, [Look(10.0 + n, "active", answered=THERE) for n in range(2)])
    said = run(detector, [Look(12.0, "active"), Look(12.5, "active", answered=THERE)])
    assert said == [None, None]
    assert detector.alarm == Alarm(True, 10.0, (f"{VIP} answered from {MAC} as well as this node",))
