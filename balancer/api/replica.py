"""The routes the Primary's sync calls on its Secondary, and the one the Secondary calls back.

On the Secondary: ``heads`` (what it holds and runs), ``revisions`` (keep a revision of the
Primary's under its number and digest, and run it if asked) and ``users`` (the Primary's users
and API keys, replacing its own). Each answers with ``balancer.ha.sync``'s acknowledgement or
refusal, the refusal's reason in one line. On the Primary: ``actions``, drain, halt or online
asked on the Secondary, done here and answered once the Secondary applied it too. On both:
``two-factor``, the second factors that signed users in on the other node.

They sit under /api/v1/peer/, where only the peer gets in (balancer.api.peer); the messages are
checked field by field all the same (``sync.from_json``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from balancer import backup, validate
from balancer.api import peer
from balancer.controller import CommitFailed, Controller
from balancer.engines import EngineError
from balancer.front import bodies
from balancer.front.errors import from_message
from balancer.front.gate import Author
from balancer.ha import sync
from balancer.ha.sync import (
    Acknowledgement,
    Action,
    Answer,
    Heads,
    Kind,
    Mark,
    MessageError,
    Refusal,
    RevisionCopy,
    SecondFactorsUsed,
    UsersCopy,
    Verdict,
)
from balancer.model import Config
from balancer.pair.syncer import ANSWER_WAIT, Syncer, answer_json
from balancer.store import Conflict, Mismatch, NotFound
from balancer.validate import Invalid, Problem

M = TypeVar("M", bound=sync.Message)


def router(controller: Controller, syncer: Callable[[], Syncer | None]) -> APIRouter:
    """``syncer``: the Primary's running sync, if any, which says when its Secondary applied
    what an action made."""
    api = peer.router()
    store = controller.store

    def role(wanted: str) -> None:
        pair = store.node_settings().pair
        if pair is None:
            raise HTTPException(409, "this node is not in an HA pair")
        if pair.role != wanted:
            raise HTTPException(409, f"this node is the {pair.role.title()} of the pair")

    @api.get("/heads")
    def heads() -> dict[str, Any]:
        role("secondary")
        head, applied = store.head(), store.applied()
        running = applied.revision if applied is not None else None
        held = Heads(Mark(head.id, head.digest), running, store.received_users())
        return sync.to_json(held)

    @api.post("/revisions")
    async def revisions(request: Request, user: Author) -> dict[str, Any]:
        copy = await _message(request, RevisionCopy)
        role("secondary")
        return sync.to_json(await _keep(controller, copy, user))

    @api.post("/users")
    async def users(request: Request, user: Author) -> dict[str, Any]:
        copy = await _message(request, UsersCopy)
        role("secondary")
        number, held = copy.mark.number, store.received_users()
        same = held.digest if held is not None and held.number == number else None
        verdict, reason = sync.judge(Kind.USERS, copy.mark, held, same)
        if verdict is Verdict.ACCEPT:
            try:
                await run_in_threadpool(store.receive_users, copy.users, author=user)
            except Invalid as error:
                verdict, reason = Verdict.REFUSE, str(error)
        if verdict is Verdict.REFUSE:
            return sync.to_json(Refusal(Kind.USERS, number, reason, time.time()))
        return sync.to_json(Acknowledgement(Kind.USERS, copy.mark, True, time.time()))

    @api.post("/actions")
    async def actions(request: Request) -> dict[str, Any]:
        action = await _message(request, Action)
        role("primary")
        await controller.set_state(action.service, action.server, action.action, action.author)
        applied = store.applied()
        assert applied is not None  # the action was just applied
        running = syncer()
        answer = (
            await running.answer(applied.revision, ANSWER_WAIT)
            if running is not None
            else Answer(applied.revision, False, reason="the Primary's sync is not running")
        )
        return {"revision": applied.revision, "secondary": answer_json(answer)}

    @api.post("/two-factor")
    async def two_factor(request: Request) -> dict[str, int]:
        """What second factors the peer used (balancer.pair.two_factor), taken here; how many
        were new. Recovery codes come only to the Primary, which keeps the users."""
        told = await _message(request, SecondFactorsUsed)
        if told.recovery:
            role("primary")
        elif store.node_settings().pair is None:
            raise HTTPException(409, "this node is not in an HA pair")
        return {"new": await run_in_threadpool(store.learn_second_factors, told)}

    return api


async def _message(request: Request, kind: type[M]) -> M:
    """The body as the message ``kind``, or Invalid naming the field. Only the peer gets here,
    sending what ``sync.to_json`` wrote: read as plain JSON, without the scan a backup file
    gets (half a second for 1,000 services), within a backup's size."""
    body = await bodies.read(request, backup.MAX_SIZE, "body")
    try:
        document = json.loads(body)
    except ValueError as error:
        raise Invalid([Problem("body", f"is not JSON: {error}")]) from None
    try:
        message = sync.from_json(document)
    except MessageError as error:
        raise Invalid([from_message(str(error))]) from None
    if not isinstance(message, kind):
        expected = next(name for name, cls in sync.TYPES.items() if cls is kind)
        raise Invalid([from_message(f"type: {expected!r} is expected here")])
    return message


async def _keep(
    controller: Controller, copy: RevisionCopy, author: str
) -> Acknowledgement | Refusal:
    """Keep the Primary's revision under its number and digest, and run it if asked."""
    store, number = controller.store, copy.mark.number
    head = store.head()
    held = None
    if number <= head.id:
        try:
            held = store.revision(number).digest
        except NotFound:  # a gap: the Secondary was sent only the newest of a long history
            held = None
    verdict, reason = sync.judge(Kind.CONFIGURATION, copy.mark, Mark(head.id, head.digest), held)
    if verdict is Verdict.REFUSE:
        return Refusal(Kind.CONFIGURATION, number, reason, time.time())
    if verdict is Verdict.ACCEPT:

        def received() -> None:
            controller.receive(
                validate.parse_as(Config, copy.config, "config"),
                revision=number,
                digest=copy.mark.digest,
                author=copy.author,
                message=copy.message,
                created=copy.created,
            )

        try:
            await run_in_threadpool(received)
        except (Invalid, Mismatch, Conflict) as error:
            return Refusal(Kind.CONFIGURATION, number, str(error), time.time())
    at = time.time()
    if copy.apply:
        try:
            at = (await controller.run_received(number, author)).at
        except (CommitFailed, EngineError) as error:
            reason = f"it keeps revision {number} but its engine did not run it: {error}"
            return Refusal(Kind.CONFIGURATION, number, reason, time.time())
    return Acknowledgement(Kind.CONFIGURATION, copy.mark, copy.apply, at)
