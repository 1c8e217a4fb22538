"""``/v1/admin/*``: operations that need the admin token (``Authorization:
Bearer``): reload namespaces, anchor now, anchor a replica, approve or drop a
registry proposal, propagate an anchor for countersigning."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request

from remembrancer.core.cadence import TARGET_PATTERN
from remembrancer.core.errors import NotFoundError
from remembrancer.node.routes.common import (
    check_ns,
    errors,
    federation_of,
    in_thread,
    replicas_of,
    require_admin,
)
from remembrancer.node.runtime import Node


def create_router(node: Node) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/admin/anchor/{namespace}", responses=errors(400, 401, 404))
    async def anchor_now(request: Request, namespace: str, level: str | None = Query(default=None,
                         pattern="^(fast|strong|cold)$")) -> dict[str, Any]:  # fmt: skip
        """Anchor a namespace now, at one level or all (needs the admin token)."""
        require_admin(node, request)
        check_ns(namespace)
        results = await node.scheduler.anchor_now(namespace, level)
        return {
            "namespace": namespace,
            "results": dict(results),
            "anchoring": await in_thread(node.scheduler.health, namespace),
        }

    @router.post("/v1/admin/replicas/anchor", responses=errors(400, 401, 404, 422, 503))
    async def replica_anchor(request: Request, origin: str,
                             target: str = Query(pattern=TARGET_PATTERN)) -> dict[str, Any]:  # fmt: skip
        """Anchor the replica's latest checkpoint of ``origin`` on this node's rail
        ``target`` (needs the admin token); the claim spreads to the peers."""
        require_admin(node, request)
        return await replicas_of(node).engine.anchor_head(origin, target)  # type: ignore[no-any-return]

    @router.post(
        "/v1/admin/federation/proposals/{proposal_id}/approve",
        responses=errors(400, 401, 403, 404, 409, 422),
    )
    async def approve_proposal(request: Request, proposal_id: str) -> dict[str, Any]:
        """Approve a pending registry change with this node's key and forward it to
        every peer (needs the admin token)."""
        require_admin(node, request)
        service = federation_of(node)
        return await service.approve_proposal(proposal_id)  # type: ignore[no-any-return]

    @router.post(
        "/v1/admin/federation/proposals/{proposal_id}/drop",
        responses=errors(401, 404),
    )
    async def drop_proposal(request: Request, proposal_id: str) -> dict[str, Any]:
        """Drop a pending registry change on this node (needs the admin token): it
        frees its slot, and the same proposal is refused here if it comes again
        (409 ``proposal_dropped``).  404 ``proposal_unknown`` if it is not pending."""
        require_admin(node, request)
        service = federation_of(node)
        return await service.drop_proposal(proposal_id)  # type: ignore[no-any-return]

    @router.post(
        "/v1/admin/federation/propagate/{namespace}", responses=errors(400, 401, 404, 503, 504)
    )
    async def propagate_anchor(request: Request, namespace: str) -> dict[str, Any]:
        """Ask the peers to countersign this namespace's newest verified anchor (admin)."""
        require_admin(node, request)
        check_ns(namespace)
        service = federation_of(node)
        receipts = await in_thread(node.scheduler.receipts, namespace)
        for r in reversed(receipts):
            verified = [a for a in r.anchors if a.status == "verified"]
            if verified:
                final = await service.propagate(namespace, verified[0], r.checkpoint)
                return final.to_dict(quorum=service.registry.quorum)  # type: ignore[no-any-return]
        raise NotFoundError(f"{namespace} has no verified anchor yet", code="no_verified_anchor")

    @router.post("/v1/admin/namespaces/reload", responses=errors(401))
    async def reload_namespaces(request: Request) -> dict[str, Any]:
        """Re-read the namespaces file now (needs the admin token)."""
        require_admin(node, request)
        source = node.namespaces
        changed = bool(getattr(source, "reload_if_changed", lambda: False)())
        error = getattr(source, "last_error", None)
        return {"reloaded": changed, "error": error.to_dict() if error else None,
                "namespaces": sorted(source.current())}  # fmt: skip

    return router
