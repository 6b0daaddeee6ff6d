"""Pairing's checks in order, each refusal's one line, the steps the page shows, and the plan
for breaking the pair."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from balancer.ha import pairing, trust
from balancer.ha.pairing import (
    Answers,
    Ask,
    Check,
    Confirm,
    Node,
    Port,
    Problem,
    Proceed,
    Progress,
    Refuse,
    Request,
    Stage,
    Step,
    Throttled,
    Unreachable,
)
from balancer.ha.role import State
from balancer.ha.sync import Role

FINGERPRINT = ":".join(["AB"] * 32)
REQUEST = Request("198.18.0.1", "198.18.0.2", FINGERPRINT.lower().replace(":", ""), "0.1.0")
PORTS = (Port(9443, "sync, from this node to the peer"), Port(9443, "sync, from the peer"))
GOOD = Answers(FINGERPRINT, True, "0.1.0", PORTS, ())


def test_each_check_is_asked_in_turn_the_certificate_before_the_password() -> None:
    answers = Answers()
    asked = []
    given: tuple[Any, ...] = (FINGERPRINT, True, "0.1.0", PORTS, ())
    for value in given:
        decision = pairing.decide(REQUEST, answers)
        assert isinstance(decision, Ask)
        asked.append(decision.check)
        answers = replace(answers, **{decision.check.value: value})
    assert asked == list(pairing.CHECKS)
    assert asked[:2] == [Check.FINGERPRINT, Check.PASSWORD]
    assert pairing.decide(REQUEST, answers) == Proceed()


@pytest.mark.parametrize(
    ("answers", "problem", "message"),
    [
        (
            Answers(Unreachable("connection refused")),
            Problem.UNREACHABLE,
            "cannot reach the peer at 198.18.0.2:9443 (connection refused): is Balancer serving "
            "there, and is the port open between the nodes?",
        ),
        (
            Answers(":".join(["CD"] * 32)),
            Problem.FINGERPRINT,
            f"the peer at 198.18.0.2:9443 showed a certificate with SHA-256 fingerprint "
            f"{':'.join(['CD'] * 32)}, not the one confirmed ({FINGERPRINT}): refused, its "
            "password was not sent",
        ),
        (
            Answers(FINGERPRINT, False),
            Problem.PASSWORD,
            "the peer at 198.18.0.2:9443 refused the password of its loadbalancer user: nothing "
            "was changed",
        ),
        (
            Answers(FINGERPRINT, Unreachable("timed out")),
            Problem.UNREACHABLE,
            "cannot reach the peer at 198.18.0.2:9443 (timed out): is Balancer serving there, "
            "and is the port open between the nodes?",
        ),
        (
            Answers(FINGERPRINT, True, "0.2.0"),
            Problem.VERSION,
            "the peer at 198.18.0.2:9443 runs Balancer 0.2.0 and this node 0.1.0: both nodes of "
            "a pair run the same version; update one and pair again",
        ),
        (
            replace(GOOD, ports=(PORTS[0], Port(9443, "sync, from the peer", "timed out"))),
            Problem.UNREACHABLE,
            "port 9443 (sync, from the peer) did not answer (timed out): open it between the "
            "nodes and pair again",
        ),
        (
            replace(GOOD, services=("CyberArk-PSM",), replace=False),
            Problem.NOT_EMPTY,
            "the peer at 198.18.0.2:9443 has 1 service of its own (CyberArk-PSM) and they were "
            "kept: nothing was changed",
        ),
        (
            Answers(FINGERPRINT, Throttled(4.2)),
            Problem.PASSWORD,
            "the peer at 198.18.0.2:9443 checks no password for 5 s after failed ones: try "
            "again then; nothing was changed",
        ),
        (
            # Even with the operator's yes: replacing its services would not make it fit.
            replace(GOOD, replace=True, unfit="is already paired with 198.18.0.9"),
            Problem.NOT_EMPTY,
            "the peer at 198.18.0.2:9443 is already paired with 198.18.0.9: nothing was changed",
        ),
    ],
    ids=lambda value: value.name if isinstance(value, Problem) else None,
)
def test_each_refusal_is_one_line(answers: Answers, problem: Problem, message: str) -> None:
    decision = pairing.decide(REQUEST, answers)
    # The problem first, in the words: "wrong password: ...", "peer unreachable: ...".
    message = f"{problem}: {message}"
    assert decision == Refuse(problem, message)
    assert "\n" not in message
    shown = pairing.steps(REQUEST, answers)
    assert shown[0] == Step(pairing.ATTEMPTING, Progress.FAILED)
    assert shown[-1] == Step(message, Progress.FAILED)


def test_a_refusal_stops_the_checks_that_follow() -> None:
    # A wrong password: the version and services the peer might give are never looked at.
    answers = replace(GOOD, password=False, version="9.9", services=("A",))
    decision = pairing.decide(REQUEST, answers)
    assert isinstance(decision, Refuse)
    assert decision.problem is Problem.PASSWORD


def test_the_operator_is_asked_before_the_peers_services_are_replaced() -> None:
    labels = tuple(f"PSM-{n}" for n in range(7))
    answers = replace(GOOD, services=labels)
    decision = pairing.decide(REQUEST, answers)
    assert decision == Confirm(
        "the peer at 198.18.0.2:9443 has 7 services of its own (PSM-0, PSM-1, PSM-2, PSM-3, "
        "PSM-4 and 2 more): pairing replaces them with this node's configuration. Replace them?"
    )
    assert pairing.steps(REQUEST, answers)[-1].progress is Progress.WAITING
    assert pairing.decide(REQUEST, replace(answers, replace=True)) == Proceed()
    after = pairing.steps(REQUEST, replace(answers, replace=True), done=tuple(Stage))
    assert Step("The peer's 7 services will be replaced by this node's", Progress.DONE) in after


def test_the_steps_as_they_happen_from_attempting_to_the_pair() -> None:
    assert pairing.steps(REQUEST, Answers()) == (
        Step("Attempting to pair…", Progress.RUNNING),
        Step("Checking the peer's certificate…", Progress.RUNNING),
    )
    assert pairing.steps(REQUEST, Answers(FINGERPRINT, True)) == (
        Step("Attempting to pair…", Progress.RUNNING),
        Step("Reached 198.18.0.2:9443: its certificate is the one confirmed", Progress.DONE),
        Step("Signed in to the peer as loadbalancer", Progress.DONE),
        Step("Comparing Balancer's versions…", Progress.RUNNING),
    )
    checked = (
        Step("Reached 198.18.0.2:9443: its certificate is the one confirmed", Progress.DONE),
        Step("Signed in to the peer as loadbalancer", Progress.DONE),
        Step("Both nodes run Balancer 0.1.0", Progress.DONE),
        Step(
            "Ports open between the nodes: 9443 (sync, from this node to the peer), "
            "9443 (sync, from the peer)",
            Progress.DONE,
        ),
        Step("The peer has no services of its own", Progress.DONE),
    )
    assert pairing.steps(REQUEST, GOOD, done=(Stage.AUTHORITY,)) == (
        Step("Attempting to pair…", Progress.RUNNING),
        *checked,
        Step("Making the pair's certificate authority", Progress.DONE),
        Step("Signing each node's certificate…", Progress.RUNNING),
    )
    assert pairing.steps(REQUEST, GOOD, done=tuple(Stage)) == (
        Step("Attempting to pair…", Progress.DONE),
        *checked,
        *(Step(stage, Progress.DONE) for stage in Stage),
        Step("Paired: Primary 198.18.0.1, Secondary 198.18.0.2", Progress.DONE),
    )


def test_a_stage_that_fails_says_which_and_why() -> None:
    shown = pairing.steps(REQUEST, GOOD, done=tuple(Stage)[:3], failure="the peer went away")
    assert shown[0] == Step("Attempting to pair…", Progress.FAILED)
    assert shown[-1] == Step(
        "Sending the configuration and users to the Secondary: the peer went away",
        Progress.FAILED,
    )


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"peer": "peer.example"}, "peer: 'peer.example' is not an IP address"),
        ({"local": "300.1.1.1"}, "local: '300.1.1.1' is not an IP address"),
        ({"peer": "198.18.0.1"}, "peer: 198.18.0.1 is this node's own address"),
        ({"fingerprint": "AB:CD"}, "fingerprint: must be a SHA-256 fingerprint"),
    ],
)
def test_a_request_that_cannot_be_asked_is_refused_before_anything(
    fields: dict[str, Any], error: str
) -> None:
    with pytest.raises(ValueError, match=f"^{error}"):
        replace(REQUEST, **fields)


def test_an_ipv6_peer_is_written_with_brackets() -> None:
    request = Request("2001:db8::1", "2001:db8::2", FINGERPRINT, "0.1.0")
    assert request.where == "[2001:db8::2]:9443"


# Break Clustered Pair.


def test_breaking_leaves_the_floating_ips_on_the_active_node_alone() -> None:
    primary, secondary = pairing.break_pair(
        Node("198.18.0.1", Role.PRIMARY, State.PASSIVE),
        Node("198.18.0.2", Role.SECONDARY, State.ACTIVE),
    )
    assert (primary.keeps_floating_ips, secondary.keeps_floating_ips) == (False, True)
    assert str(secondary) == (
        "198.18.0.2 (Secondary) keeps its configuration and users and the floating IPs; it "
        "gives up the pair's certificates and its peer, and stands alone"
    )
    assert str(primary) == (
        "198.18.0.1 (Primary) keeps its configuration and users; it gives up the floating IPs, "
        "the pair's certificates and its peer, and stands alone"
    )


@pytest.mark.parametrize(
    ("states", "keeper"),
    [
        ((State.ACTIVE, State.PASSIVE), 0),
        ((State.FAULT, State.ACTIVE), 1),
        ((State.PASSIVE, State.PASSIVE), 0),  # nobody holds them: the Primary will
        ((State.ACTIVE, State.ACTIVE), 0),  # a split brain: one owner, the Primary
        ((State.FAULT, None), 0),
        ((None, State.ACTIVE), 1),
    ],
)
def test_exactly_one_node_keeps_the_floating_ips(
    states: tuple[State | None, State | None], keeper: int
) -> None:
    plan = pairing.break_pair(
        Node("198.18.0.1", Role.PRIMARY, states[0]),
        Node("198.18.0.2", Role.SECONDARY, states[1]),
    )
    assert [leave.keeps_floating_ips for leave in plan] == [n == keeper for n in range(2)]


def test_both_forget_the_pairs_certificates_and_only_the_primary_had_the_authoritys_key() -> None:
    primary, secondary = pairing.break_pair(
        Node("198.18.0.1", Role.PRIMARY, State.ACTIVE),
        Node("198.18.0.2", Role.SECONDARY, None),
    )
    mine = {trust.NODE_FILE, trust.NODE_KEY_FILE, trust.CA_FILE}
    assert set(primary.removes) == mine | {trust.CA_KEY_FILE}
    assert set(secondary.removes) == mine
    assert (primary.reachable, secondary.reachable) == (True, False)
    assert str(secondary).endswith(
        "stands alone: it cannot be reached now, so break the pair on it too when it can"
    )
