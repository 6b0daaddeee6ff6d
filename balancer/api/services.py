"""Routes for virtual services, their persistence tables and the CyberArk PSM preset."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body
from pydantic import Field

from balancer.api.edits import Base, Edits, Saved
from balancer.controller import Controller
from balancer.edits import Edit
from balancer.front.bodies import RequestBody
from balancer.front.gate import Author
from balancer.model import VirtualService
from balancer.pair.cluster import Cluster


class PsmPreset(RequestBody):
    rdp_vip: str = Field(description="address of VIP 1, CyberArk-PSM (RDP)")
    web_vip: str = Field(description="address of VIP 2, CyberArk-PSM-Web (HTML5 gateway)")
    servers: list[tuple[str, str]] = Field(description="PSM servers as [label, ip] pairs")
    recommended: bool = Field(False, description="CyberArk's least connections + RDP check")
    rdp_port: int = 3389
    web_port: int = 443
    check_port: int | None = Field(None, description="health check port; default web_port")


def router(edits: Edits, controller: Controller, cluster: Cluster) -> APIRouter:
    api = APIRouter(prefix="/api/v1", tags=["virtual services"])

    @api.get("/virtual-services", response_model=list[VirtualService])
    def list_services() -> tuple[VirtualService, ...]:
        return edits.head().virtual_services

    @api.post("/virtual-services", response_model=Saved, status_code=201)
    def add_service(
        body: Annotated[dict[str, Any], Body()], user: Author, base: Base = None
    ) -> Saved:
        return edits.save(Edit.add_virtual_service(body), base, user)

    @api.get("/virtual-services/{label}", response_model=VirtualService)
    def show_service(label: str) -> VirtualService:
        return edits.service(label)

    @api.patch("/virtual-services/{label}", response_model=Saved)
    def modify_service(
        label: str, body: Annotated[dict[str, Any], Body()], user: Author, base: Base = None
    ) -> Saved:
        return edits.save(Edit.modify_virtual_service(label, body), base, user)

    @api.delete("/virtual-services/{label}", response_model=Saved)
    def remove_service(label: str, user: Author, base: Base = None) -> Saved:
        return edits.save(Edit.remove_virtual_service(label), base, user)

    @api.get("/virtual-services/{label}/persistence")
    async def persistence(label: str) -> list[dict[str, Any]]:
        edits.service(label)
        return await controller.persistence(label)

    @api.delete("/virtual-services/{label}/persistence")
    async def clear_persistence(label: str, user: Author) -> dict[str, Any]:
        """Paired, the peer's table is cleared too: ``peer`` says how many, or why not."""
        edits.service(label)
        cleared = await controller.clear_persistence(label)
        edits.store.audit(
            author=user, action="clear_persistence", target=label, detail={"cleared": cleared}
        )
        peer = await cluster.clear_on_peer(label)
        return {"cleared": cleared} if peer is None else {"cleared": cleared, "peer": peer}

    @api.post(
        "/presets/psm",
        response_model=Saved,
        status_code=201,
        summary="The CyberArk PSM preset: both VIPs of the guide",
    )
    def psm(body: PsmPreset, user: Author, base: Base = None) -> Saved:
        return edits.save(Edit.psm_preset(**body.model_dump()), base, user)

    return api
