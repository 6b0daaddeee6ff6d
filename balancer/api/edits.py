"""What every route that changes the configuration shares: the saved configuration it edits,
the revision it was based on (``If-Match``), and saving the edit (``balancer.edits.Edit``) as a
new revision through the controller, which audits it and tells the event stream."""

from __future__ import annotations

from typing import Annotated

from fastapi import Header, Query
from pydantic import BaseModel

from balancer import configuration
from balancer.controller import Controller
from balancer.edits import Edit
from balancer.model import Config, VirtualService

Base = Annotated[
    int | None,
    Header(alias="If-Match", description="the revision this change was based on; 409 if stale"),
]

# How many entries one answer lists: enough for any screen, bounded for the database's sake.
Limit = Annotated[int, Query(ge=1, le=10_000)]


class Saved(BaseModel):
    revision: int
    pending: bool = True


class Edits:
    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.store = controller.store

    def head(self) -> Config:
        return self.store.head().config

    def service(self, label: str) -> VirtualService:
        vs = self.head().virtual_service(label)
        if vs is None:
            raise configuration.Missing("label", f"there is no virtual service {label!r}")
        return vs

    def save(self, edit: Edit, base: int | None, user: str) -> Saved:
        revision = self.controller.save(edit, base=base, author=user or "local")
        return Saved(revision=revision.id)
