"""Cluster Configuration > High-Availability Configuration: the guide's 14.1.2.

Standalone, the guide's form "Create a Clustered Pair": this node's address (one of its own),
the peer's address (and the port its WebUI answers on), the password of the peer's
``loadbalancer`` user, **Add new node**. Before the password is sent the page shows the
fingerprint of the certificate the peer's WebUI presents (fetched as soon as the peer's address
is given, or on the first Add new node without script), and the operator confirms it is the one
the peer's ``balancer serve`` printed. Pairing (``balancer.pair.pairing.add_node``) then runs in
the background while the page shows its steps as they happen ("Attempting to pair…", each
check, each stage, the pair). A peer with services of its own is asked about, on a page of its
own, before they are replaced. Each refusal is one line next to the field it concerns, with
everything typed kept but the password.

Paired, the page is "High Availability Configuration - primary" (or secondary) with both nodes'
addresses, the pair's HA settings (the advert interval, 0.2 s or the conservative profile's 1 s,
and preemption: changed on the Primary, both nodes' keepalived reload with them), and **Break
Clustered Pair**, which asks first, on a page of its own. Below them, "Node settings compared":
each setting the guide has an operator set by hand on both nodes that Balancer can see, both
nodes' values, those that differ marked (balancer.ha.drift).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from balancer import defaults, tool
from balancer.front.gate import WEBUI, Author
from balancer.ha import pairing, trust
from balancer.ha.keepalived import PROFILES
from balancer.ha.pairing import Problem, Progress, Step
from balancer.model import Pair
from balancer.pair import facts
from balancer.pair.cluster import PairError
from balancer.pair.pairing import Outcome, PairingError, add_node, break_pair, version
from balancer.validate import Invalid
from balancer.web.cluster_configuration import Form, read_form
from balancer.web.render import Renderer

TITLE = "High-Availability Configuration"
PAGE = f"{WEBUI}high-availability"
# The form's fields in the order of the page: the keyboard starts at the first one refused.
FIELDS = ("local_address", "peer_address", "peer_port", "password", "fingerprint")
# What the form shows again after a refusal: everything but the password.
KEPT = ("local_address", "peer_address", "peer_port", "fingerprint", "confirmed")
# The field a refusal of pairing is shown next to; any other is said above the form.
BLAME = {
    Problem.UNREACHABLE: "peer_address",
    Problem.VERSION: "peer_address",
    Problem.NOT_EMPTY: "peer_address",
    Problem.FINGERPRINT: "fingerprint",
    Problem.PASSWORD: "password",
}
# How long the page waits for the peer's certificate before saying it cannot be reached.
FINGERPRINT_TIMEOUT = 5.0  # s
log = logging.getLogger("balancer.web")


@dataclass
class Attempt:
    """One Add new node from this WebUI: what was asked (never the password), the steps so far
    and, once it has ended, how."""

    asked: pairing.Request
    steps: tuple[Step, ...]
    outcome: Outcome | None = None
    task: asyncio.Task[None] | None = None


@dataclass
class Pairings:
    """The one pairing this WebUI may be making at a time, until its end has been shown; and
    what the last Break Clustered Pair said of each node, until it has been shown."""

    current: Attempt | None = None
    broken: list[str] = field(default_factory=list)


def router(render: Renderer) -> APIRouter:
    web = APIRouter(include_in_schema=False)
    cluster = render.cluster
    pairings = Pairings()

    async def form_page(
        request: Request,
        form: Form,
        *,
        status: int = 200,
        errors: dict[str, str] | None = None,
        general: list[str] | None = None,
        **context: Any,
    ) -> Response:
        errors = errors or {}
        return render(
            request,
            "high_availability.html",
            status=status,
            title=TITLE,
            form=form,
            errors=errors,
            general=general or [],
            focus=next((name for name in FIELDS if name in errors), None),
            addresses=await node_addresses(),
            **context,
        )

    def under_way() -> Attempt | None:
        attempt = pairings.current
        return attempt if attempt is not None and attempt.outcome is None else None

    @web.get(PAGE)
    async def page(request: Request) -> Response:
        attempt = pairings.current
        if attempt is not None and attempt.outcome is None:
            return render(request, "high_availability_steps.html", title=TITLE, attempt=attempt)
        if attempt is not None and attempt.outcome is not None:
            pairings.current = None  # its end is shown once
            ended = attempt.outcome
            if ended.question is not None:
                return render(
                    request,
                    "high_availability_replace.html",
                    title=TITLE,
                    form=_kept(attempt.asked),
                    question=ended.question,
                )
            if not ended.paired:
                return await refused(request, _kept(attempt.asked), ended.problem, ended.message)
        broken, pairings.broken = pairings.broken, []
        if cluster.pair is not None:
            return await pair_page(request)
        return await form_page(request, {"peer_port": str(defaults.HTTPS_PORT)}, broken=broken)

    async def pair_page(
        request: Request,
        *,
        status: int = 200,
        settings: Form | None = None,
        errors: dict[str, str] | None = None,
        error: str | None = None,
        done: str | None = None,
    ) -> Response:
        pair = cluster.pair
        assert pair is not None
        return render(
            request,
            "high_availability_pair.html",
            status=status,
            title=TITLE,
            pair=pair,
            settings=settings or _settings(pair),
            profiles=PROFILES,
            errors=errors or {},
            error=error,
            done=done,
            focus=next(iter(errors or {}), None),
            drift=await facts.drift(cluster.facts, cluster.view(), cluster.link),
        )

    async def refused(
        request: Request, form: Form, problem: Problem | None, message: str
    ) -> Response:
        name = BLAME.get(problem) if problem is not None else None
        if name == "fingerprint":  # shown as the peer shows it now, to be confirmed or not
            form = {**form, "fingerprint": "", "confirmed": ""}
            with contextlib.suppress(ValueError):
                form["fingerprint"] = await _fingerprint(form)
        return await form_page(
            request,
            form,
            status=422,
            errors={name: message} if name else {},
            general=[] if name else [message],
        )

    @web.get(f"{PAGE}/fingerprint")
    async def fingerprint(
        request: Request, peer_address: str = "", peer_port: str = ""
    ) -> Response:
        """The peer's certificate for the operator to compare (htmx, once the peer's address is
        given): nothing is sent to the peer but a TLS handshake."""
        form = {"peer_address": peer_address.strip(), "peer_port": peer_port.strip()}
        errors: dict[str, str] = {}
        if form["peer_address"]:
            try:
                form["fingerprint"] = await _fingerprint(form)
            except ValueError as error:
                errors["fingerprint"] = str(error)
        return render(request, "high_availability_fingerprint.html", form=form, errors=errors)

    @web.post(f"{PAGE}/pair")
    async def pair(request: Request, user: Author) -> Response:
        form = await read_form(request)
        password = form.get("password", "")
        replace = form.get("replace") == "yes"
        kept = {name: form.get(name, "").strip() for name in KEPT}
        if under_way() is not None:
            return RedirectResponse(PAGE, status_code=303)  # its steps are shown there
        if cluster.pair is not None:
            return await refused(
                request, kept, None, "this node is in a pair already: break it first"
            )
        errors = _checked(kept, await node_addresses())
        if not errors and not kept["fingerprint"]:
            # Without script the certificate is first seen here; the password is not sent.
            try:
                kept["fingerprint"] = await _fingerprint(kept)
                errors["fingerprint"] = (
                    "compare it with the fingerprint the peer's balancer serve printed and "
                    "confirm it, then give the password again"
                )
            except ValueError as error:
                errors["peer_address"] = str(error)
        elif not errors and form.get("confirmed") != "yes":
            errors["fingerprint"] = (
                "confirm that it is the fingerprint the peer's balancer serve printed: the "
                "password is sent only to that peer"
            )
        if not errors and not password:
            errors["password"] = f"give the password of the peer's {defaults.USER} user"
        if errors:
            return await form_page(request, kept, status=422, errors=errors)
        try:
            asked = pairing.Request(
                local=kept["local_address"],
                peer=kept["peer_address"],
                fingerprint=kept["fingerprint"],
                version=version(),
                port=int(kept["peer_port"]),
            )
        except ValueError as error:  # checked above; the model has the last word
            return await refused(request, kept, None, str(error))
        attempt = Attempt(asked, (Step(pairing.ATTEMPTING, Progress.RUNNING),))
        pairings.current = attempt

        def progress(steps: tuple[Step, ...]) -> None:
            attempt.steps = steps

        async def run() -> None:
            try:
                ended = await add_node(
                    cluster, asked, password, replace or None, progress, author=user
                )
            except PairingError as error:
                ended = _failed(attempt, str(error).partition(": ")[2] or str(error))
            except Exception as error:  # said in one line; the log keeps the traceback
                log.exception("pairing with %s failed", asked.peer)
                ended = _failed(attempt, f"pairing failed: {error}")
            attempt.steps, attempt.outcome = ended.steps, ended

        attempt.task = asyncio.create_task(run())
        return RedirectResponse(PAGE, status_code=303)

    @web.get(f"{PAGE}/steps")
    def steps(request: Request) -> Response:
        """The steps so far (htmx, every second); once pairing has ended, the page again."""
        attempt = under_way()
        if attempt is None:
            return Response(headers={"HX-Redirect": PAGE})
        return render(request, "high_availability_progress.html", attempt=attempt)

    @web.post(f"{PAGE}/break")
    async def break_asked(request: Request, user: Author) -> Response:
        form = await read_form(request)
        pair = cluster.pair
        if pair is None:
            return RedirectResponse(PAGE, status_code=303)
        if form.get("confirm") != "yes":
            return render(request, "high_availability_break.html", title=TITLE, pair=pair)
        try:
            plan = await break_pair(cluster, author=user)
        except PairingError as error:
            said = str(error).partition(": ")[2] or str(error)
            return await pair_page(request, status=422, error=f"The pair was not broken: {said}")
        pairings.broken = [str(leave) for leave in plan]
        return RedirectResponse(PAGE, status_code=303)

    @web.post(f"{PAGE}/settings")
    async def settings(request: Request, user: Author) -> Response:
        """The pair's HA settings, on the Primary: both nodes' keepalived reload with them."""
        form = await read_form(request)
        if cluster.pair is None:
            return RedirectResponse(PAGE, status_code=303)
        sent = {
            "advert_interval": form.get("advert_interval", "").strip(),
            "preempt": "on" if form.get("preempt") else "",
            "replication_port": form.get("replication_port", "").strip(),
        }
        errors: dict[str, str] = {}
        try:
            advert = float(sent["advert_interval"])
        except ValueError:
            errors["advert_interval"] = f"{sent['advert_interval']!r} is not a number of seconds"
        port = sent["replication_port"]
        if not port.isascii() or not port.isdigit():
            errors["replication_port"] = f"{port!r} is not a TCP port number"
        if errors:
            return await pair_page(request, status=422, settings=sent, errors=errors)
        try:
            said = await cluster.configure(
                advert, bool(sent["preempt"]), author=user, replication_port=int(port)
            )
        except Invalid as error:
            # Preemption is on or off: the interval or the port is what can be wrong.
            errors = {
                p.field if p.field in sent else "advert_interval": p.reason for p in error.problems
            }
            return await pair_page(request, status=422, settings=sent, errors=errors)
        except PairError as error:
            said = f"Not changed: {error}"
            return await pair_page(request, status=409, settings=sent, error=said)
        # Shown at once (sent again, the same settings change nothing).
        return await pair_page(request, done=f"Saved: {said}.")

    return web


def _settings(pair: Pair) -> Form:
    return {
        "advert_interval": f"{pair.advert_interval:g}",
        "preempt": "on" if pair.preempt else "",
        "replication_port": str(pair.replication_port),
    }


def _kept(asked: pairing.Request) -> Form:
    return {
        "local_address": asked.local,
        "peer_address": asked.peer,
        "peer_port": str(asked.port),
        "fingerprint": asked.fingerprint,
        "confirmed": "yes",
    }


def _failed(attempt: Attempt, reason: str) -> Outcome:
    steps = (*attempt.steps, Step(reason, Progress.FAILED))
    return Outcome(steps, failure=reason)


def _checked(form: Form, addresses: tuple[str, ...]) -> dict[str, str]:
    """The form's own mistakes, by field, before the peer is asked anything."""
    errors: dict[str, str] = {}
    if form["local_address"] not in addresses:
        errors["local_address"] = "choose one of this node's own addresses"
    try:
        peer, _ = _peer(form)
    except _Wrong as wrong:
        errors[wrong.field] = wrong.reason
        return errors
    if "local_address" not in errors:
        local = ipaddress.ip_address(form["local_address"])
        if peer == local:
            errors["peer_address"] = f"{peer} is this node's own address"
        elif peer.version != local.version:
            errors["peer_address"] = f"{peer} is not of the same family as {local}"
    return errors


class _Wrong(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field, self.reason = field, reason


def _peer(form: Form) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    text = form.get("peer_address", "")
    if not text:
        raise _Wrong("peer_address", "give the peer's IP address")
    try:
        peer = ipaddress.ip_address(text)
    except ValueError:
        raise _Wrong("peer_address", f"{text} is not an IP address") from None
    port = form.get("peer_port", "") or str(defaults.HTTPS_PORT)
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise _Wrong("peer_port", f"{port} is not a port: a whole number from 1 to 65535")
    return peer, int(port)


async def _fingerprint(form: Form) -> str:
    """The SHA-256 fingerprint of the certificate the peer's WebUI presents; ValueError with
    one line when there is none to show."""
    peer, port = _peer(form)
    try:
        return await asyncio.to_thread(
            trust.peer_fingerprint, peer, port, timeout=FINGERPRINT_TIMEOUT
        )
    except trust.TrustError as error:
        raise ValueError(str(error)) from None


async def node_addresses() -> tuple[str, ...]:
    """This node's own addresses, for the guide's "Local IP address"."""
    with contextlib.suppress(OSError, TimeoutError):
        status, output = await tool.run(("ip", "-json", "address", "show"), timeout=2.0)
        if status == 0:
            return own_addresses(output)
    return ()


def own_addresses(ip_json: str) -> tuple[str, ...]:
    """The addresses in ``ip -json address show``'s output that a pair's node can be reached
    by: every interface's but loopback and link-local ones, each once, in its order."""
    try:
        interfaces = json.loads(ip_json)
    except ValueError:
        return ()
    found: dict[str, None] = {}
    for interface in interfaces:
        for info in interface.get("addr_info", ()):
            with contextlib.suppress(ValueError):
                address = ipaddress.ip_address(info.get("local", ""))
                if not (address.is_loopback or address.is_link_local):
                    found[str(address)] = None
    return tuple(found)
