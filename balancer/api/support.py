"""The Support download: one tar.gz of what whoever helps an operator asks for first, every
secret redacted (``balancer.support``); audited with who downloaded it."""

from __future__ import annotations

from fastapi import APIRouter, Response

from balancer import support
from balancer.controller import Controller
from balancer.front.gate import Author
from balancer.pair.cluster import Cluster
from balancer.store import Store


def router(store: Store, controller: Controller, cluster: Cluster) -> APIRouter:
    api = APIRouter(prefix="/api/v1", tags=["support"])

    @api.get(
        "/support/archive",
        response_class=Response,
        responses={200: {"content": {support.MEDIA_TYPE: {}}, "description": "the archive"}},
        summary="The support archive: configuration, logs, versions and system facts, redacted",
    )
    async def support_archive(user: Author) -> Response:
        name, data = await support.archive(store, controller, cluster, author=user)
        return Response(
            data,
            media_type=support.MEDIA_TYPE,
            headers=support.attachment(name),
        )

    return api
