"""``GET /metrics``: the OpenMetrics text Prometheus scrapes (balancer.metrics says what is in
it). The gate lets it through with an API key, or from a network in the node setting
``metrics_allow`` without one."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST

from balancer import metrics
from balancer.controller import Controller
from balancer.front.gate import METRICS
from balancer.pair.cluster import Cluster
from balancer.system import System


def router(controller: Controller, cluster: Cluster) -> APIRouter:
    api = APIRouter(tags=["system"])
    # A reader of its own: System Overview's rates are since its own last reading, not a scrape's.
    system = System()

    @api.get(METRICS, response_class=Response, include_in_schema=False)
    async def scrape() -> Response:
        overview = await controller.overview()
        found = metrics.Scrape(
            engine=overview.engine,
            engine_error=overview.engine_error,
            figures=system.figures(),
            pair=cluster.view(),
            commits=controller.commits,
        )
        return Response(metrics.exposition(found), media_type=CONTENT_TYPE_LATEST)

    return api
