"""Local Configuration: service socket addresses, WebUI sessions, the WebUI's certificate and
Prometheus's networks.

All are this node's own, never part of a backup (the guide's 14.1.1). New socket addresses are
checked (valid, and free to bind) and saved; the listeners are opened again with them when the
management service restarts (Restart Services), since this page is served by the very listener
that would move. New session timeouts hold at once, for sessions already open too. A new
certificate is served from the next TLS handshake on. The networks whose Prometheus may read
/metrics without an API key hold at once, and so do the networks that may manage the node
(``balancer.front.lockdown``), which refuse a list that would shut out this very browser.
"""

from __future__ import annotations

import errno
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from starlette.responses import RedirectResponse, Response

from balancer import certificates, management, validate
from balancer.certificates import CertificateInfo
from balancer.front import lockdown
from balancer.front.gate import Author
from balancer.front.listeners import network_socket
from balancer.model import NodeSettings
from balancer.validate import Invalid, Problem
from balancer.web import uploads
from balancer.web.render import Renderer

PAGE = "/lbadmin/local-configuration"
Field = Annotated[str, Form()]


def router(render: Renderer) -> APIRouter:
    web = APIRouter(include_in_schema=False)
    store = render.store

    def page(request: Request, *, status: int = 200, **context: Any) -> Response:
        service = management.of(request)
        saved = store.node_settings()
        running = service.running if service else None
        return render(
            request,
            "local_configuration.html",
            status=status,
            title="Local Configuration",
            saved=_addresses(saved),
            sessions=_sessions(saved),
            running=_addresses(running) if running else None,
            restart_needed=running is not None and _addresses(running) != _addresses(saved),
            certificate=_shown(service.certificate.info()) if service else None,
            networks="\n".join(str(network) for network in saved.metrics_allow),
            management_allow="\n".join(str(network) for network in saved.management_allow),
            address=lockdown.address_of(request),
            **context,
        )

    @web.get(PAGE)
    def shown(request: Request, done: str = "") -> Response:
        return page(request, done=done)

    @web.post(f"{PAGE}/sockets")
    def sockets(
        request: Request,
        user: Author,
        listen_address: Field = "",
        https_port: Field = "",
        http_port: Field = "",
    ) -> Response:
        service = management.of(request)
        node = store.node_settings()
        changes = {
            "listen_address": listen_address.strip() or None,
            "https_port": https_port.strip(),
            "http_port": http_port.strip() or None,
        }
        try:
            changed = validate.parse_as(NodeSettings, {**node.model_dump(), **changes})
            _bindable(changed, service.running if service else node)
        except Invalid as error:
            return page(request, status=422, problems=error.problems, form=changes)
        if changed != node:
            store.save_node_settings(changed, author=user)
        return RedirectResponse(f"{PAGE}?done=sockets", status_code=303)

    @web.post(f"{PAGE}/sessions")
    def sessions(
        request: Request, user: Author, idle_minutes: Field = "", lifetime_hours: Field = ""
    ) -> Response:
        node = store.node_settings()
        sent = {"idle_minutes": idle_minutes.strip(), "lifetime_hours": lifetime_hours.strip()}
        try:
            changes = {
                "session_idle_timeout": _number(sent, "idle_minutes") * 60,
                "session_max_lifetime": _number(sent, "lifetime_hours") * 3600,
            }
            changed = validate.parse_as(NodeSettings, {**node.model_dump(), **changes})
        except Invalid as error:
            return page(request, status=422, session_problems=error.problems, session_form=sent)
        if changed != node:
            store.save_node_settings(changed, author=user)
            render.access.sessions.idle_timeout = changed.session_idle_timeout
            render.access.sessions.max_lifetime = changed.session_max_lifetime
        return RedirectResponse(f"{PAGE}?done=sessions", status_code=303)

    @web.post(f"{PAGE}/metrics")
    def metrics(request: Request, user: Author, metrics_allow: Field = "") -> Response:
        node = store.node_settings()
        networks = metrics_allow.split()
        try:
            changed = validate.parse_as(
                NodeSettings, {**node.model_dump(), "metrics_allow": networks}
            )
        except Invalid as error:
            return page(
                request, status=422, metrics_problems=error.problems, metrics_form=metrics_allow
            )
        if changed != node:
            store.save_node_settings(changed, author=user)
        return RedirectResponse(f"{PAGE}?done=metrics", status_code=303)

    @web.post(f"{PAGE}/lockdown")
    def lockdown_networks(request: Request, user: Author, management_allow: Field = "") -> Response:
        address = lockdown.address_of(request)
        try:
            lockdown.save(store, management_allow.split(), address, author=user)
        except Invalid as error:
            return page(
                request,
                status=422,
                lockdown_problems=error.problems,
                lockdown_form=management_allow,
            )
        return RedirectResponse(f"{PAGE}?done=lockdown", status_code=303)

    @web.post(f"{PAGE}/certificate")
    async def certificate(request: Request, user: Author) -> Response:
        service = management.of(request)
        try:
            if service is None:
                raise Invalid([Problem("certificate", "this WebUI runs without its daemon")])
            sent = await uploads.files(request, 2 * certificates.MAX_PEM_SIZE, "certificate", "key")
            cert, key = sent["certificate"], sent["key"]
            if not cert.strip():
                raise Invalid([Problem("certificate", "choose the certificate's PEM file")])
            pem = certificates.checked_pair(cert, key, now=datetime.now(UTC))
            info = service.certificate.replace(pem)
        except Invalid as error:
            return page(request, status=422, certificate_problems=error.problems)
        except OSError as error:
            reason = f"could not be installed, the old one is kept: {error}"
            problem = Problem("certificate", reason)
            return page(request, status=422, certificate_problems=[problem])
        store.audit(
            author=user,
            action="webui_certificate",
            target=info.subject,
            detail={"fingerprint": info.fingerprint, "not_after": info.not_after.isoformat()},
        )
        return RedirectResponse(f"{PAGE}?done=certificate", status_code=303)

    return web


def _addresses(node: NodeSettings) -> dict[str, Any]:
    return {
        "listen_address": str(node.listen_address) if node.listen_address else "",
        "https_port": node.https_port,
        "http_port": node.http_port or "",
    }


def _sessions(node: NodeSettings) -> dict[str, str]:
    return {
        "idle_minutes": f"{node.session_idle_timeout / 60:g}",
        "lifetime_hours": f"{node.session_max_lifetime / 3600:g}",
    }


def _number(sent: dict[str, str], field: str) -> float:
    try:
        value = float(sent[field])
    except ValueError:
        raise Invalid([Problem(field, f"{sent[field]!r} is not a number")]) from None
    if not 0 < value < 1e6:
        raise Invalid([Problem(field, "must be more than 0 and less than 1,000,000")])
    return value


def _bindable(node: NodeSettings, running: NodeSettings) -> None:
    """Refuse an address or port that cannot be listened on now. A port the listeners hold
    is in use by this very service: that one is left for the restart to take over."""
    held = {running.https_port, running.http_port}
    for field, port in (("https_port", node.https_port), ("http_port", node.http_port)):
        if port is None:
            continue
        try:
            network_socket(node.listen_address, port).close()
        except OSError as error:
            if error.errno == errno.EADDRINUSE and port in held:
                continue
            blamed = "listen_address" if error.errno == errno.EADDRNOTAVAIL else field
            raise Invalid([Problem(blamed, str(error))]) from None


def _shown(info: CertificateInfo) -> dict[str, Any]:
    when = "%Y-%m-%d %H:%M UTC"
    return {
        "subject": info.subject,
        "issuer": "self-signed" if info.self_signed else info.issuer,
        "names": ", ".join(info.names) or "none",
        "valid": f"{info.not_before:{when}} to {info.not_after:{when}}",
        "fingerprint": info.fingerprint,
    }
