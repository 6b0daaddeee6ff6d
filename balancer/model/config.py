"""The load-balancing configuration: what a revision holds and an HA pair replicates."""

from __future__ import annotations

from pydantic import Field

from balancer.model.types import Frozen
from balancer.model.virtual_service import VirtualService

SCHEMA_VERSION = 1


class Config(Frozen):
    virtual_services: tuple[VirtualService, ...] = Field(default=())

    def virtual_service(self, label: str) -> VirtualService | None:
        return next((vs for vs in self.virtual_services if vs.label == label), None)
