"""Operations: liveness (``/healthz``, answers even while the store is
unreachable), readiness (``/readyz``) and Prometheus metrics (``/metrics``)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from remembrancer.core.errors import PushbackError, RemembrancerError, StorageError
from remembrancer.node.routes.common import ErrorResponse, error_response, in_thread
from remembrancer.node.runtime import Node


def create_router(node: Node) -> APIRouter:
    router = APIRouter()

    @router.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Liveness: answers even while the store is unreachable (``storage`` says so)."""
        error = getattr(node.namespaces, "last_error", None)
        try:
            anchoring = {
                ns: h["status"] for ns, h in (await in_thread(node.scheduler.health_all)).items()
            }
        except StorageError as e:  # the anchoring state lives in the store
            node.storage_failed(e)
            anchoring = {ns: "unknown" for ns in node.namespaces.current()}
        storage = dict(node.storage_health)
        return {"status": "ok" if storage["status"] == "ok" else "degraded",
                "uptime_s": round(time.time() - node.started, 1),
                "config_error": error.to_dict() if error else None, "anchoring": anchoring,
                "storage": storage, "ha": node.ha.view() if node.ha else None}  # fmt: skip

    @router.get("/readyz", responses={200: {"description": "Ready"}, 503: {"model": ErrorResponse}})
    async def readyz() -> Response:
        if not node.ready:
            return error_response(
                PushbackError("starting or stopping", code="not_ready", retry_after=1)
            )
        try:
            await in_thread(node.store.log_state, "ready:check")
        except RemembrancerError as e:
            error = StorageError(f"storage unavailable: {e.message}", code="storage_unavailable")
            node.storage_failed(error)
            return error_response(error)
        node.storage_ok(reads_only=True)
        return JSONResponse({"status": "ready"})

    @router.get("/metrics", responses={200: {"content": {"text/plain": {}}}})
    async def metrics() -> Response:
        await node.store_metrics.refresh()
        return Response(generate_latest(node.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router
