"""Configuration and user sync in an HA pair: the pure machine, the messages, two real stores."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from balancer import model
from balancer.configuration import add_virtual_service, modify_real_server
from balancer.ha import sync
from balancer.ha.sync import (
    Acknowledgement,
    Action,
    Ask,
    Committed,
    Heads,
    Heard,
    KeyRecord,
    Kind,
    Mark,
    MessageError,
    RecoveryUsed,
    Refusal,
    RevisionCopy,
    Role,
    Route,
    Scope,
    SecondFactorsUsed,
    Send,
    State,
    StepUsed,
    Tick,
    Unreachable,
    UserRecord,
    Users,
    UsersCopy,
    Verdict,
)
from balancer.model import Config, RealServerState
from balancer.store import Conflict, Mismatch, Store
from balancer.validate import Invalid

CONFIGURATION, USERS = Kind.CONFIGURATION, Kind.USERS


def mark(number: int, content: str = "primary") -> Mark:
    return Mark(number, hashlib.sha256(f"{content} {number}".encode()).hexdigest())


def in_sync(number: int = 2, kind: Kind = CONFIGURATION) -> sync.Sync:
    state, _ = sync.start(kind, mark(number), 0.0)
    state, action = sync.apply(state, Heard(mark(number), True), 1.0)
    assert action is None
    return state


def ack(number: int, at: float = 50.0, applied: bool = True, **content: str) -> Acknowledgement:
    return Acknowledgement(CONFIGURATION, mark(number, **content), applied, at)


# The Primary's side.


def test_it_starts_by_asking_the_secondary_where_it_stands() -> None:
    state, action = sync.start(CONFIGURATION, mark(4), 10.0)
    assert action == Ask()
    assert str(sync.status(state)) == "unknown: the Secondary has not answered yet"
    assert sync.status(state).since == 10.0


def test_a_secondary_that_holds_the_applied_revision_is_in_sync() -> None:
    state = in_sync(2)
    status = sync.status(state)
    assert (status.state, str(status), status.since) == (State.IN_SYNC, "in sync", 1.0)


def test_a_commit_is_sent_to_run_and_its_acknowledgement_answers_the_commit() -> None:
    state = in_sync(2)
    state, action = sync.apply(state, Committed(mark(3)), 5.0)
    assert action == Send(CONFIGURATION, 3, apply=True)
    assert str(sync.status(state)) == "behind by 1"
    assert str(sync.answer(state, 3)) == (
        "the Secondary has not applied revision 3: it has not answered yet"
    )
    state, action = sync.apply(state, ack(3, at=5.4), 5.5)
    assert action is None
    assert str(sync.status(state)) == "in sync"
    assert sync.status(state).since == 5.5
    assert sync.answer(state, 3) == sync.Answer(3, True, mark(3).digest, 5.4)
    assert str(sync.answer(state, 3)) == f"the Secondary applied revision 3 ({mark(3).digest})"


def test_a_secondary_away_for_several_commits_catches_up_in_order_and_runs_the_last() -> None:
    state = in_sync(2)
    state, action = sync.apply(state, Unreachable("connection refused"), 10.0)
    assert action is None
    assert str(sync.status(state)) == "failed: cannot reach the Secondary: connection refused"
    for number, now in ((3, 11.0), (4, 12.0), (5, 13.0)):
        state, action = sync.apply(state, Committed(mark(number)), now)
        assert action is None  # nobody to send to until the Secondary is heard again
    assert sync.status(state).since == 10.0
    assert sync.deadline(state) == 10.0 + sync.RETRY
    state, action = sync.apply(state, Tick(), 11.9)
    assert action is None
    state, action = sync.apply(state, Tick(), 12.0)
    assert action == Ask()

    state, action = sync.apply(state, Heard(mark(2), True), 20.0)
    assert str(sync.status(state)) == "behind by 3"
    sent = []
    for now in (21.0, 22.0, 23.0):
        assert isinstance(action, Send)
        sent.append((action.number, action.apply))
        assert sync.status(state).since == 20.0  # still behind, by fewer: the same spell
        state, action = sync.apply(state, ack(action.number, applied=action.apply), now)
    assert sent == [(3, False), (4, False), (5, True)]
    assert action is None
    assert (str(sync.status(state)), sync.status(state).since) == ("in sync", 23.0)


def test_a_secondary_far_behind_is_sent_only_the_newest_revisions() -> None:
    state, _ = sync.start(CONFIGURATION, mark(30), 0.0)
    state, action = sync.apply(state, Heard(mark(3), True), 1.0)
    assert action == Send(CONFIGURATION, 30 - sync.HISTORY + 1, apply=False)
    assert str(sync.status(state)) == "behind by 27"


def test_a_secondary_that_holds_the_revision_but_does_not_run_it_is_sent_it_to_run() -> None:
    state, _ = sync.start(CONFIGURATION, mark(2), 0.0)
    state, action = sync.apply(state, Heard(mark(2), False), 1.0)
    assert action == Send(CONFIGURATION, 2, apply=True)
    assert str(sync.status(state)) == "behind by 0"


def test_an_acknowledgement_with_another_digest_is_a_failure_and_nothing_more_is_sent() -> None:
    state = in_sync(2)
    state, _ = sync.apply(state, Committed(mark(3)), 5.0)
    state, action = sync.apply(state, ack(3, content="other"), 6.0)
    assert action is None
    assert str(sync.status(state)) == (
        f"failed: the Secondary's revision 3 has digest {mark(3, 'other').digest[:12]}, "
        f"not the Primary's {mark(3).digest[:12]}"
    )
    assert not sync.answer(state, 3).applied
    state, action = sync.apply(state, Tick(), 100.0)
    assert action is None


def test_a_secondary_that_holds_the_same_number_with_other_content_is_not_overwritten() -> None:
    state, _ = sync.start(CONFIGURATION, mark(4), 0.0)
    state, action = sync.apply(state, Heard(mark(4, "secondary"), True), 1.0)
    assert action is None
    assert sync.status(state).state is State.FAILED
    assert "revision 4 has digest" in str(sync.status(state))


def test_a_secondary_newer_than_the_primary_is_a_failure_until_the_primary_passes_it() -> None:
    state, _ = sync.start(CONFIGURATION, mark(4), 0.0)
    state, action = sync.apply(state, Heard(mark(6, "secondary"), True), 1.0)
    assert action is None
    assert str(sync.status(state)) == (
        "failed: the Secondary holds revision 6, newer than the Primary's 4: "
        "it was changed apart from the pair"
    )
    state, action = sync.apply(state, Committed(mark(5)), 2.0)
    assert action is None
    state, action = sync.apply(state, Committed(mark(7)), 3.0)
    assert action == Send(CONFIGURATION, 7, apply=True)


def test_a_secondary_with_its_own_older_revisions_is_sent_the_primarys_from_its_next() -> None:
    state, _ = sync.start(CONFIGURATION, mark(5), 0.0)
    state, action = sync.apply(state, Heard(mark(2, "secondary"), True), 1.0)
    assert action == Send(CONFIGURATION, 3, apply=False)


def test_a_refusal_says_the_secondarys_reason_and_is_not_repeated_until_a_new_commit() -> None:
    state = in_sync(2)
    state, _ = sync.apply(state, Committed(mark(3)), 5.0)
    refusal = Refusal(CONFIGURATION, 3, "its engine refused it: port 80 is in use", 5.2)
    state, action = sync.apply(state, refusal, 5.3)
    assert action is None
    assert str(sync.status(state)) == (
        "failed: the Secondary refused revision 3: its engine refused it: port 80 is in use"
    )
    assert str(sync.answer(state, 3)) == (
        "the Secondary has not applied revision 3: the Secondary refused revision 3: "
        "its engine refused it: port 80 is in use"
    )
    assert sync.deadline(state) is None
    state, action = sync.apply(state, Tick(), 500.0)
    assert action is None
    state, action = sync.apply(state, Committed(mark(4)), 600.0)
    assert action == Send(CONFIGURATION, 3, apply=False)
    assert str(sync.status(state)) == "behind by 2"


def test_silence_is_a_timeout_then_the_secondary_is_asked_again() -> None:
    state = in_sync(2)
    state, action = sync.apply(state, Committed(mark(3)), 5.0)
    assert action == Send(CONFIGURATION, 3, apply=True)
    assert sync.deadline(state) == 5.0 + sync.TIMEOUT
    state, action = sync.apply(state, Tick(), 5.0 + sync.TIMEOUT - 0.1)
    assert (action, sync.status(state).state) == (None, State.BEHIND)
    state, action = sync.apply(state, Tick(), 15.0)
    assert action is None
    assert str(sync.status(state)) == "failed: the Secondary did not answer revision 3 in 10 s"
    assert sync.status(state).since == 15.0
    state, action = sync.apply(state, Tick(), 15.0 + sync.RETRY)
    assert action == Ask()
    state, action = sync.apply(state, Tick(), 17.0 + sync.TIMEOUT)
    assert str(sync.status(state)) == (
        "failed: the Secondary did not answer where it stands in 10 s"
    )
    # A late answer to the send given up on changes nothing: Heads will say.
    state, action = sync.apply(state, ack(3), 28.0)
    assert sync.status(state).state is State.FAILED
    state, action = sync.apply(state, Tick(), 27.0 + 2 * sync.RETRY)
    assert action == Ask()
    state, action = sync.apply(state, Heard(mark(3), True), 32.0)
    assert (action, str(sync.status(state))) == (None, "in sync")


def test_an_acknowledgement_of_a_revision_it_did_not_apply_is_a_failure() -> None:
    state = in_sync(2)
    state, _ = sync.apply(state, Committed(mark(3)), 5.0)
    state, action = sync.apply(state, ack(3, applied=False), 6.0)
    assert action is None
    assert str(sync.status(state)) == (
        "failed: the Secondary keeps revision 3 but did not apply it"
    )


def test_answers_that_are_not_for_the_send_on_its_way_are_ignored() -> None:
    state = in_sync(2)
    state, _ = sync.apply(state, Committed(mark(3)), 5.0)
    for stray in (ack(7), Refusal(CONFIGURATION, 9, "no", 5.0)):
        after, action = sync.apply(state, stray, 6.0)
        assert (after, action) == (state, None)


def test_events_that_cannot_happen_raise() -> None:
    state = in_sync(3)
    with pytest.raises(ValueError, match="does not follow"):
        sync.apply(state, Committed(mark(2)), 5.0)
    with pytest.raises(ValueError, match="does not follow"):
        sync.apply(state, Committed(mark(3, "other")), 5.0)
    users_ack = Acknowledgement(USERS, mark(3), True, 1.0)
    with pytest.raises(ValueError, match="an answer about users given to the configuration sync"):
        sync.apply(state, users_ack, 5.0)


def test_a_commit_answer_when_the_secondary_runs_a_newer_revision_or_was_not_sent_it() -> None:
    state = in_sync(5)
    assert str(sync.answer(state, 4)) == (
        "the Secondary has not applied revision 4: it runs revision 5, made since"
    )
    assert sync.answer(state, 6).reason == "it has not been sent it yet"


# Users.


def users(version: int, *names: str, revoked: float | None = None) -> Users:
    records = tuple(UserRecord(name, f"$argon2id$v=19${name}", 1.0, 2.0) for name in names)
    keys = tuple(
        KeyRecord(n, f"key-{name}", name, hashlib.sha256(name.encode()).hexdigest(), 3.0, revoked)
        for n, name in enumerate(names, 1)
    )
    return Users(version, records, keys)


def test_the_users_digest_names_their_content_and_not_their_version() -> None:
    assert users(1, "alice").digest == users(9, "alice").digest
    assert users(1, "alice").digest != users(1, "alice", "bob").digest
    assert users(1, "alice").digest != users(1, "alice", revoked=4.0).digest
    assert users(3, "alice").mark == Mark(3, users(1, "alice").digest)


def test_a_secondary_without_users_is_sent_the_snapshot_and_an_old_one_only_the_newest() -> None:
    state, _ = sync.start(USERS, users(4, "alice").mark, 0.0)
    state, action = sync.apply(state, Heard(None, True), 1.0)
    assert action == Send(USERS, 4, apply=True)
    assert str(sync.status(state)) == "behind"
    state, action = sync.apply(state, Acknowledgement(USERS, users(4, "alice").mark, True, 2), 2)
    assert str(sync.status(state)) == "in sync"
    state, action = sync.apply(state, Unreachable("reset by peer"), 3.0)
    state, _ = sync.apply(state, Committed(users(6, "alice", "bob").mark), 4.0)
    state, _ = sync.apply(state, Committed(users(9, "bob").mark), 5.0)
    state, action = sync.apply(state, Tick(), 3.0 + sync.RETRY)
    state, action = sync.apply(state, Heard(users(4, "alice").mark, True), 6.0)
    assert action == Send(USERS, 9, apply=True)  # 6 is history nobody needs
    assert str(sync.status(state)) == "behind"
    state, action = sync.apply(state, Refusal(USERS, 9, "the store is read-only", 6.5), 7.0)
    assert str(sync.status(state)) == (
        "failed: the Secondary refused users version 9: the store is read-only"
    )


# The Secondary's side.


@pytest.mark.parametrize(
    ("sent", "head", "held", "verdict", "reason"),
    [
        (mark(5), mark(4), None, Verdict.ACCEPT, ""),
        (mark(7), mark(4), None, Verdict.ACCEPT, ""),  # a gap: its own history is older
        (mark(5), None, None, Verdict.ACCEPT, ""),
        (mark(4), mark(4), mark(4).digest, Verdict.ALREADY, ""),
        (mark(3), mark(4), mark(3).digest, Verdict.ALREADY, ""),
        (
            mark(4),
            mark(4, "x"),
            mark(4, "x").digest,
            Verdict.REFUSE,
            f"revision 4 here has digest {mark(4, 'x').digest[:12]}, not {mark(4).digest[:12]} "
            "as sent",
        ),
        (mark(3), mark(4), None, Verdict.REFUSE, "revision 3 is not newer than 4, the newest here"),
    ],
)
def test_the_secondary_keeps_what_is_newer_and_refuses_another_content_under_a_number(
    sent: Mark, head: Mark | None, held: str | None, verdict: Verdict, reason: str
) -> None:
    assert sync.judge(CONFIGURATION, sent, head, held) == (verdict, reason)


def test_on_a_secondary_cluster_edits_are_refused_and_point_to_the_primary() -> None:
    primary = "https://198.18.0.1:9443"
    refused = sync.refuse_edit(Role.SECONDARY, Scope.CLUSTER, primary)
    assert refused == (
        "this node is the Secondary of an HA pair: its cluster configuration is read-only; "
        "make the change on the Primary at https://198.18.0.1:9443"
    )
    assert "\n" not in refused
    assert sync.refuse_edit(Role.SECONDARY, Scope.NODE, primary) is None
    for role in (Role.PRIMARY, None):
        assert sync.refuse_edit(role, Scope.CLUSTER, primary) is None


def test_the_role_and_the_primarys_address_come_from_the_pair_settings() -> None:
    v6 = model.Pair(
        role="secondary", local_address="fd00::2", peer_address="fd00::1", peer_port=8443
    )
    assert (sync.role_of(v6), sync.peer_at(v6)) == (Role.SECONDARY, "https://[fd00::1]:8443")
    v4 = model.Pair(role="primary", local_address="198.18.0.1", peer_address="198.18.0.2")
    assert (sync.role_of(v4), sync.peer_at(v4)) == (Role.PRIMARY, "https://198.18.0.2:9443")
    assert sync.role_of(None) is None


def test_drain_halt_and_online_on_a_secondary_go_to_the_primary() -> None:
    assert sync.act(Role.SECONDARY) is Route.PRIMARY
    assert sync.act(Role.PRIMARY) is Route.HERE
    assert sync.act(None) is Route.HERE


# Messages.

MESSAGES: list[sync.Message] = [
    Heads(mark(4), 4, users(2, "alice").mark),
    Heads(mark(0), None, None),
    RevisionCopy(mark(3), "alice", "add PSM", 1_700_000_000.5, {"virtual_services": []}, True),
    UsersCopy(users(2, "alice", "bob").mark, users(2, "alice", "bob")),
    UsersCopy(users(1, "alice", revoked=9.0).mark, users(1, "alice", revoked=9.0)),
    Acknowledgement(USERS, mark(2), True, 12.25),
    Refusal(CONFIGURATION, 3, "revision 3 is not newer than 4, the newest here", 12),
    Action(RealServerState.DRAIN, "CyberArk-PSM", "PSM1", "alice"),
    SecondFactorsUsed(
        (StepUsed("alice", 59_000_000), StepUsed("bob", 59_000_001)),
        (RecoveryUsed("alice", "ab" * 32),),
    ),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_survives_json(message: sync.Message) -> None:
    data = json.loads(json.dumps(sync.to_json(message)))
    assert sync.from_json(data) == message
    assert data["type"] in sync.TYPES


def good(index: int) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(json.dumps(sync.to_json(MESSAGES[index])))
    return data


def changed(index: int, path: str, value: Any) -> dict[str, Any]:
    """Message ``index`` as JSON, with the field at ``path`` (dots and list indexes) set, or
    removed when ``value`` is DROP."""
    data = good(index)
    *parents, last = path.split(".")
    where: Any = data
    for part in parents:
        where = where[int(part)] if isinstance(where, list) else where[part]
    if value is DROP:
        del where[last]
    else:
        where[int(last) if isinstance(where, list) else last] = value
    return data


DROP = object()


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ([], "message: must be a JSON object"),
        ({"type": "hello"}, "type: 'hello' is no message between the nodes"),
        ({}, "type: None is no message between the nodes"),
        (changed(0, "running", DROP), "heads.running: is missing"),
        (changed(0, "extra", 1), "heads.extra: is no field of this message"),
        (changed(0, "running", True), "heads.running: must be a whole number"),
        (changed(0, "running", "4"), "heads.running: must be a whole number"),
        (changed(0, "configuration", [4]), "heads.configuration: must be a JSON object"),
        (changed(0, "configuration.number", -1), "heads.configuration.number: -1 must be 0 or"),
        (changed(0, "configuration.digest", "AB"), "heads.configuration.digest: must be a SHA"),
        (changed(0, "users.digest", 7), "heads.users.digest: must be a string"),
        (changed(2, "apply", 1), "revision.apply: must be true or false"),
        (changed(2, "created", "noon"), "revision.created: must be a number"),
        (changed(2, "created", float("inf")), "revision.created: must be a number"),
        (changed(2, "config", "{}"), "revision.config: must be a JSON object"),
        (changed(2, "author", None), "revision.author: must be a string"),
        (changed(3, "users.users", {}), "users.users.users: must be a list"),
        (changed(3, "users.users.1.hash", 5), "users.users.users[1].hash: must be a string"),
        (changed(4, "users.keys.0.revoked", "x"), "users.users.keys[0].revoked: must be a number"),
        (changed(3, "users.users.1.name", "mallory"), "users.mark: the snapshot is 2 ("),
        (changed(5, "kind", "routes"), "acknowledgement.kind: 'routes' is not one of"),
        (changed(6, "reason", DROP), "refusal.reason: is missing"),
        (changed(7, "action", "reboot"), "action.action: 'reboot' is not one of online, drain"),
        (changed(8, "steps.1.step", -3), "second_factors_used.steps[1].step: -3 must be 0 or"),
        (changed(8, "steps.0.step", 1.5), "second_factors_used.steps[0].step: must be a whole"),
        (changed(8, "recovery.0.digest", "AB"), "second_factors_used.recovery[0].digest: must be"),
        (changed(8, "recovery.0.user", None), "second_factors_used.recovery[0].user: must be a"),
    ],
)
def test_a_malformed_message_is_one_line_naming_the_field(data: Any, error: str) -> None:
    with pytest.raises(MessageError) as raised:
        sync.from_json(data)
    assert str(raised.value).startswith(error)
    assert "\n" not in str(raised.value)


# Two real stores: the Primary's revisions carried into the Secondary's by the sync core.


def psm(*servers: str) -> Config:
    return add_virtual_service(
        Config(),
        {
            "label": "CyberArk-PSM",
            "ip": "192.168.85.100",
            "ports": "3389",
            "real_servers": [{"label": f"PSM{n}", "ip": ip} for n, ip in enumerate(servers, 1)],
        },
    )


def wire(data: dict[str, Any]) -> sync.Message:
    """What crosses between the nodes: JSON text, read back and checked."""
    return sync.from_json(json.loads(json.dumps(data)))


class Secondary:
    """The Secondary's end of a fake transport, doing with each message what its wiring will."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.away = False
        self.tamper = False  # change a revision on its way, after its digest was taken

    def heads(self) -> sync.Message:
        self._reachable()
        head, applied = self.store.head(), self.store.applied()
        running = applied.revision if applied else None
        return wire(sync.to_json(Heads(Mark(head.id, head.digest), running, None)))

    def send(self, data: dict[str, Any]) -> sync.Message:
        self._reachable()
        copy = wire(data)
        assert isinstance(copy, RevisionCopy)
        if self.tamper:
            copy = replace(copy, config=psm("192.168.85.66").model_dump(mode="json"))
        return wire(sync.to_json(self._receive(copy)))

    def _reachable(self) -> None:
        if self.away:
            raise ConnectionRefusedError("connection refused")

    def _receive(self, copy: RevisionCopy) -> Acknowledgement | Refusal:
        number, now, head = copy.mark.number, time.time(), self.store.head()
        held = next((r.digest for r in self.store.revisions(1000) if r.id == number), None)
        verdict, reason = sync.judge(CONFIGURATION, copy.mark, Mark(head.id, head.digest), held)
        if verdict is Verdict.REFUSE:
            return Refusal(CONFIGURATION, number, reason, now)
        if verdict is Verdict.ACCEPT:
            try:
                self.store.receive(
                    Config.model_validate(copy.config),
                    revision=number,
                    digest=copy.mark.digest,
                    author=copy.author,
                    message=copy.message,
                    created=copy.created,
                )
            except (Mismatch, Conflict, Invalid) as error:
                return Refusal(CONFIGURATION, number, str(error), now)
        if copy.apply:
            now = self.store.mark_applied(number, author="sync").at
        return Acknowledgement(CONFIGURATION, copy.mark, copy.apply, now)


class Pair:
    """The Primary's store and sync, driven as its wiring will, with time passed by hand."""

    def __init__(self, primary: Store, secondary: Secondary) -> None:
        self.primary, self.secondary, self.now = primary, secondary, 0.0
        self.state, action = sync.start(CONFIGURATION, self._applied(), self.now)
        self.run(action)

    def _applied(self) -> Mark:
        applied = self.primary.applied()
        revision = self.primary.revision(applied.revision if applied else 0)
        return Mark(revision.id, revision.digest)

    def commit(self, config: Config) -> None:
        head = self.primary.head()
        saved = self.primary.save(config, base=head.id, author="alice", message="edit")
        self.primary.mark_applied(saved.id, author="alice")
        self.event(Committed(self._applied()))

    def event(self, event: sync.Event) -> None:
        self.now += 1.0
        self.state, action = sync.apply(self.state, event, self.now)
        self.run(action)

    def run(self, action: Ask | Send | None) -> None:
        for _ in range(100):  # more than any catch-up here needs
            if action is None:
                return
            self.now += 0.1
            try:
                event = self._carry(action)
            except ConnectionError as error:
                event = Unreachable(str(error))
            self.state, action = sync.apply(self.state, event, self.now)
        raise AssertionError("the sync never settled")

    def _carry(self, action: Ask | Send) -> sync.Event:
        if isinstance(action, Ask):
            heads = self.secondary.heads()
            assert isinstance(heads, Heads)
            return Heard(heads.configuration, heads.running == heads.configuration.number)
        revision = self.primary.revision(action.number)
        copy = RevisionCopy(
            Mark(revision.id, revision.digest),
            revision.author,
            revision.message,
            revision.created,
            revision.config.model_dump(mode="json"),
            action.apply,
        )
        answer = self.secondary.send(sync.to_json(copy))
        assert isinstance(answer, Acknowledgement | Refusal)
        return answer


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[Store, Store]]:
    (tmp_path / "primary").mkdir()
    (tmp_path / "secondary").mkdir()
    with (
        Store(tmp_path / "primary" / "balancer.db") as primary,
        Store(tmp_path / "secondary" / "balancer.db") as secondary,
    ):
        yield primary, secondary


def history(store: Store) -> list[tuple[int, str, str]]:
    return [(r.id, r.digest, r.author) for r in reversed(store.revisions(1000))]


def test_the_primarys_revisions_reach_the_secondarys_store_with_their_numbers_and_digests(
    stores: tuple[Store, Store],
) -> None:
    primary, secondary_store = stores
    secondary = Secondary(secondary_store)
    pair = Pair(primary, secondary)
    # Both hold revision 0 and the Secondary runs nothing yet: it is told to run it.
    assert str(sync.status(pair.state)) == "in sync"
    assert secondary_store.applied().revision == 0  # type: ignore[union-attr]
    pair.commit(psm("192.168.85.10"))
    assert str(sync.status(pair.state)) == "in sync"
    assert str(sync.answer(pair.state, 1)).startswith("the Secondary applied revision 1 (")

    secondary.away = True
    pair.commit(psm("192.168.85.10", "192.168.85.11"))
    assert str(sync.status(pair.state)) == "failed: cannot reach the Secondary: connection refused"
    # Saved and not committed, then a drain that is: all of it is the Primary's history.
    primary.save(psm("192.168.85.12"), base=2, author="bob", message="pending")
    drained = modify_real_server(
        psm("192.168.85.10", "192.168.85.11"), "CyberArk-PSM", "PSM1", {"state": "drain"}
    )
    pair.commit(drained)
    assert secondary_store.head().id == 1

    secondary.away = False
    pair.now += sync.RETRY
    pair.event(Tick())  # the pause after silence is over: where does it stand?
    assert str(sync.status(pair.state)) == "in sync"
    assert history(secondary_store) == history(primary)
    assert primary.head().id == 4
    assert secondary_store.applied().revision == 4  # type: ignore[union-attr]
    assert secondary_store.revision(4).config == drained
    assert secondary_store.revision(3).config == psm("192.168.85.12")  # history, never run


def test_a_revision_changed_on_its_way_is_refused_by_the_secondarys_store(
    stores: tuple[Store, Store],
) -> None:
    primary, secondary_store = stores
    secondary = Secondary(secondary_store)
    pair = Pair(primary, secondary)
    secondary.tamper = True
    pair.commit(psm("192.168.85.10"))
    status = sync.status(pair.state)
    assert status.state is State.FAILED
    assert str(status).startswith(
        "failed: the Secondary refused revision 1: revision 1: the configuration received has "
        "digest "
    )
    assert secondary_store.head().id == 0
    assert not sync.answer(pair.state, 1).applied
