"""Routes for virtual services, their persistence tables and the CyberArk PSM preset."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body
from pydantic import BaseModel, Field

from balancer import configuration
from balancer.api.edits import Base, Edits, Saved
from balancer.controller import Controller
from balancer.front.gate import Author
from balancer.model import VirtualService
from balancer.presets.psm import add_psm


class PsmPreset(BaseModel):
    rdp_vip: str = Field(description="address of VIP 1, CyberArk-PSM (RDP)")
    web_vip: str = Field(description="address of VIP 2, CyberArk-PSM-Web (HTML5 gateway)")
    servers: list[tuple[str, str]] = Field(description="PSM servers as [label, ip] pairs")
    recommended: bool = Field(False, description="CyberArk's least connections + RDP check")
    rdp_port: int = 3389
    web_port: int = 443
    check_port: int | None = Field(None, description="health check port; default web_port")


def router(edits: Edits, controller: Controller) -> APIRouter:
    api = APIRouter(prefix="/api/v1", tags=["virtual services"])

    @api.get("/virtual-services", response_model=list[VirtualService])
    def list_services() -> tuple[VirtualService, ...]:
        return edits.head().virtual_services

    @api.post("/virtual-services", response_model=Saved, status_code=201)
    def add_service(
        body: Annotated[dict[str, Any], Body()], user: Author, base: Base = None
    ) -> Saved:
        config = configuration.add_virtual_service(edits.head(), body)
        label = str(body.get("label"))
        return edits.save(config, base, user, f"add virtual service {label}", "add", label)

    @api.get("/virtual-services/{label}", response_model=VirtualService)
    def show_service(label: str) -> VirtualService:
        return edits.service(label)

    @api.patch("/virtual-services/{label}", response_model=Saved)
    def modify_service(
        label: str, body: Annotated[dict[str, Any], Body()], user: Author, base: Base = None
    ) -> Saved:
        config = configuration.modify_virtual_service(edits.head(), label, body)
        return edits.save(config, base, user, f"modify virtual service {label}", "modify", label)

    @api.delete("/virtual-services/{label}", response_model=Saved)
    def remove_service(label: str, user: Author, base: Base = None) -> Saved:
        config = configuration.remove_virtual_service(edits.head(), label)
        return edits.save(config, base, user, f"remove virtual service {label}", "remove", label)

    @api.get("/virtual-services/{label}/persistence")
    async def persistence(label: str) -> list[dict[str, Any]]:
        edits.service(label)
        return await controller.persistence(label)

    @api.delete("/virtual-services/{label}/persistence")
    async def clear_persistence(label: str, user: Author) -> dict[str, int]:
        edits.service(label)
        cleared = await controller.clear_persistence(label)
        edits.store.audit(
            author=user, action="clear_persistence", target=label, detail={"cleared": cleared}
        )
        return {"cleared": cleared}

    @api.post(
        "/presets/psm",
        response_model=Saved,
        status_code=201,
        summary="The CyberArk PSM preset: both VIPs of the guide",
    )
    def psm(body: PsmPreset, user: Author, base: Base = None) -> Saved:
        config = add_psm(edits.head(), **body.model_dump())
        return edits.save(config, base, user, "add CyberArk PSM preset", "preset", "psm")

    return api
