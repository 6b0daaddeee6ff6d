"""Rendering WebUI pages: the layout every page shares (the guide's menu, the signed-in user,
the HA pair's status bar, the "Commit changes" box) around each page's own part.

On the Secondary of an HA pair the pages of what the pair shares (the cluster configuration,
users and API keys) say that it is read-only here, link to the same page on the Primary, and
have their forms disabled; the server refuses such an edit anyway.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import Response

from balancer import words
from balancer.controller import Controller
from balancer.front.access import Access, Caller
from balancer.front.gate import CALLER, STATIC
from balancer.pair.cluster import Cluster
from balancer.roles import Role, needed
from balancer.store import Store
from balancer.web import pair
from balancer.web.units import moment


@dataclass(frozen=True)
class MenuEntry:
    title: str
    href: str
    children: tuple[MenuEntry, ...] = field(default=())
    # Its page edits what an HA pair shares: read-only on the Secondary.
    shared: bool = False


# The guide's main menu (8.3.1), in its order and words. A page's ``title`` is its entry's.
MENU = (
    MenuEntry("System Overview", "/lbadmin/"),
    MenuEntry(
        "Local Configuration",
        "/lbadmin/local-configuration",
        children=(
            MenuEntry("Alerts", "/lbadmin/local-configuration/alerts"),
            MenuEntry(
                "Remote Authentication", "/lbadmin/local-configuration/remote-authentication"
            ),
        ),
    ),
    MenuEntry(
        "Cluster Configuration",
        "/lbadmin/virtual-services",
        children=(
            MenuEntry(
                "Layer 7 \N{EN DASH} Virtual Services", "/lbadmin/virtual-services", shared=True
            ),
            MenuEntry("Layer 7 \N{EN DASH} Real Servers", "/lbadmin/real-servers", shared=True),
            MenuEntry("High-Availability Configuration", "/lbadmin/high-availability"),
        ),
    ),
    MenuEntry(
        "Maintenance",
        "/lbadmin/maintenance/backup",
        children=(
            MenuEntry("Backup & Restore", "/lbadmin/maintenance/backup", shared=True),
            MenuEntry("Restart Services", "/lbadmin/maintenance/restart"),
            MenuEntry("Passwords", "/lbadmin/maintenance/passwords", shared=True),
            MenuEntry("Software Update", "/lbadmin/maintenance/software"),
        ),
    ),
    MenuEntry("View Configuration", "/lbadmin/view-configuration"),
    MenuEntry("Reports", "/lbadmin/reports"),
    MenuEntry("Logs", "/lbadmin/logs"),
    MenuEntry("Support", "/lbadmin/support"),
)
SHARED = frozenset(entry.title for top in MENU for entry in (top, *top.children) if entry.shared)


@cache
def menu_for(role: Role) -> tuple[MenuEntry, ...]:
    """The entries whose pages ``role`` may open; the server refuses the others anyway."""
    found = []
    for top in MENU:
        if role >= (needed("GET", top.href) or role):
            children = tuple(c for c in top.children if role >= (needed("GET", c.href) or role))
            found.append(replace(top, children=children))
    return tuple(found)


def is_htmx(request: Request) -> bool:
    return "hx-request" in request.headers


class Renderer:
    def __init__(
        self, store: Store, controller: Controller, cluster: Cluster, access: Access
    ) -> None:
        self.store = store
        self.controller = controller
        self.cluster = cluster
        self.access = access
        self.templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
        self.templates.env.filters["said"] = words.said  # a pending change in the guide's words

    def __call__(
        self, request: Request, template: str, *, status: int = 200, **context: Any
    ) -> Response:
        """``template`` with what every page shows, then ``context``."""
        caller: Caller | None = request.scope.get(CALLER)
        part = self.cluster.pair
        # The Primary's WebUI, the same page, when this node is the Secondary.
        primary = None if part is None else pair.primary_url(part, request.url.path)
        shared = {
            "static": STATIC.rstrip("/"),
            "hostname": self.store.node_settings().hostname,
            "menu": menu_for(caller.role) if caller else MENU,
            "user": caller.user if caller else None,
            "role": caller.role if caller else None,
            # Whether the caller may use an action (a form's POST) or open a page: the WebUI
            # shows only those; the gate refuses the others anyway.
            "may": lambda path, method="POST": (
                caller is not None and caller.role >= (needed(method, path) or caller.role)
            ),
            "csrf": self.access.sessions.csrf_token(caller.session)
            if caller and caller.session
            else None,
            "pending": self.controller.pending(),
            "now": moment(time.time()),
            "pair_status": pair.status_bar(self.cluster.view()),
            # Why this node's part in the pair could not start (its state says Fault).
            "pair_fault": self.cluster.fault,
            "primary": primary,
            "read_only": primary is not None and context.get("title") in SHARED,
        }
        return self.templates.TemplateResponse(
            request, template, {**shared, **context}, status_code=status
        )
