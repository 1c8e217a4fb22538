"""The federation: the message endpoint peers post to (docs/spec/federation.md)
and the read-only views of peers, collaborative anchoring, receipts,
evidence, the registry and its proposals."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, Response

from remembrancer.node.routes.common import (
    CURSOR_DOC,
    LIMIT_DOC,
    MAX_CURSOR,
    PAGE_DEFAULT,
    PAGE_MAX,
    errors,
    federation_of,
    in_thread,
    read_body,
)
from remembrancer.node.runtime import Node
from remembrancer.node.statuses import federation_answer


def create_router(node: Node) -> APIRouter:
    router = APIRouter()

    @router.post("/federation/v1/messages", responses={202: {"description": "Accepted"},
                 **errors(400, 403, 404, 409, 413, 429, 503)},
                 openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}})  # fmt: skip
    async def federation_message(request: Request) -> Response:
        """A signed federation message (docs/spec/federation.md)."""
        service = federation_of(node)
        body = await read_body(node, request)
        status, headers, answer = federation_answer(
            await service.handle(body, request.headers.get("content-type"))
        )
        return Response(answer, status_code=status, headers=headers)

    @router.get(
        "/v1/federation", responses=errors(404), summary="Federation peers, statuses, scores, lag"
    )
    async def federation_status() -> dict[str, Any]:
        return await in_thread(federation_of(node).status)

    @router.get(
        "/v1/federation/anchoring",
        responses=errors(404),
        summary="Collaborative anchoring: epoch, coordinators, pending delegations, aggregates",
    )
    async def federation_anchoring() -> dict[str, Any]:
        federation_of(node)
        assert node.collaborative is not None
        return await in_thread(node.collaborative.status)

    @router.get("/v1/federation/receipts", responses=errors(400, 404),
                summary="Final federation receipts, a page at a time")  # fmt: skip
    async def federation_receipts(
        namespace: str | None = Query(None, description="Only the receipts of this namespace."),
        after: str | None = Query(None, max_length=MAX_CURSOR, description=CURSOR_DOC),
        limit: int = Query(PAGE_DEFAULT, ge=1, le=PAGE_MAX, description=LIMIT_DOC),
    ) -> dict[str, Any]:
        """``receipts`` (of ``namespace`` when given) in ``<namespace>/<receipt id>``
        order and ``next``, the cursor of the next page (``null`` on the last)."""
        service = federation_of(node)
        return await in_thread(lambda: service.receipts_page(namespace, after=after, limit=limit))

    @router.get(
        "/v1/federation/evidence",
        responses=errors(400, 404),
        summary="Misbehaviour evidence files kept, a page at a time",
    )
    async def federation_evidence(
        after: str | None = Query(None, max_length=MAX_CURSOR, description=CURSOR_DOC),
        limit: int = Query(PAGE_DEFAULT, ge=1, le=PAGE_MAX, description=LIMIT_DOC),
    ) -> dict[str, Any]:
        """``evidence`` in ``evidence_ref`` order and ``next``, the cursor of the
        next page (``null`` on the last)."""
        service = federation_of(node)
        return await in_thread(lambda: service.evidence_page(after=after, limit=limit))

    @router.get(
        "/v1/federation/registry",
        responses=errors(404),
        summary="The federation registry in force (federation.yaml form)",
    )
    async def federation_registry() -> dict[str, Any]:
        return await in_thread(federation_of(node).registry_document)

    @router.get(
        "/v1/federation/registry/changes",
        responses=errors(404),
        summary="The applied registry changes, signed, for a peer that catches up",
    )
    async def federation_registry_changes() -> dict[str, Any]:
        return await in_thread(federation_of(node).changes.changes_document)

    @router.get(
        "/v1/federation/proposals",
        responses=errors(404),
        summary="Pending and applied registry changes",
    )
    async def federation_proposals() -> dict[str, Any]:
        return await in_thread(federation_of(node).proposals)

    @router.post("/v1/federation/proposals", responses={200: {"description": "The proposal's state"},
                 **errors(400, 403, 404, 409, 413, 422)},
                 openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}},
                 summary="Submit a federation.registry.set proposal (with approvals)")  # fmt: skip
    async def submit_proposal(request: Request) -> dict[str, Any]:
        """A signed ``federation.registry.set@1.0.0`` record in ``fed:<federation_id>``;
        witness signatures by active peers are approvals.  Applied at quorum."""
        service = federation_of(node)
        body = await read_body(node, request)
        return await service.submit_proposal(body)  # type: ignore[no-any-return]

    return router
