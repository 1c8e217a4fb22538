"""The C2SP tlog-witness API this node serves (``/witness/*``) and the stats of
the peers that cosign this node's own checkpoints (``/v1/witnessing``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from remembrancer.core.errors import RemembrancerError
from remembrancer.node.routes.common import TEXT, errors, in_thread, read_body
from remembrancer.node.runtime import Node
from remembrancer.node.statuses import status_for


def create_router(node: Node) -> APIRouter:
    router = APIRouter()

    @router.get("/v1/witnessing", summary="Peers that cosign this node's checkpoints, and how fast")
    async def witnessing() -> dict[str, Any]:
        return node.witnessing.stats()

    @router.post("/witness/add-checkpoint",
                 responses={200: {"description": "Cosignature lines", "content": {"text/plain": {}}},
                            409: {"description": "Old size mismatch (text/x.tlog.size) or root mismatch",
                                  "content": {"text/x.tlog.size": {}, "application/json": {}}},
                            **errors(400, 403, 404, 413, 422)},
                 openapi_extra={"requestBody": {"required": True, "content": {"text/plain": {"schema": {"type": "string"}}}}})  # fmt: skip
    async def add_checkpoint(request: Request) -> Response:
        """C2SP tlog-witness add-checkpoint."""
        body = await read_body(node, request)
        try:
            lines = await node.add_checkpoint(body)
        except RemembrancerError as e:
            if e.code == "witness_old_size_mismatch":
                # The spec's body for this refusal; its status comes from the one table.
                return Response(f"{e.details['size']}\n", status_code=status_for(e),
                                media_type="text/x.tlog.size")  # fmt: skip
            raise
        return Response(lines, media_type=TEXT)

    @router.get(
        "/witness/checkpoints/{origin:path}",
        responses={200: {"content": {"text/plain": {}}}, **errors(404)},
    )
    async def witnessed(origin: str) -> Response:
        """The latest checkpoint this witness cosigned for ``origin``, with its cosignature."""
        return Response(await in_thread(node.witnessed_checkpoint, origin), media_type=TEXT)

    return router
