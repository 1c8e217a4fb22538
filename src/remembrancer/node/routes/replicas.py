"""Replicas of the witnessed logs (anti-entropy, docs/anti-entropy.md): their
status, and each mirrored log's checkpoint, tiles and anchor claims."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Response

from remembrancer.core.errors import NotFoundError
from remembrancer.node.routes.common import (
    IMMUTABLE,
    MUTABLE,
    TEXT,
    errors,
    in_thread,
    replicas_of,
)
from remembrancer.node.runtime import Node


def create_router(node: Node) -> APIRouter:
    router = APIRouter()

    @router.get("/v1/federation/replicas", responses=errors(404),
                summary="Replicas of the witnessed logs: size, root, lag, anchors, receipts, errors")  # fmt: skip
    async def federation_replicas() -> dict[str, Any]:
        return await in_thread(replicas_of(node).status)

    @router.get("/v1/replicas/{origin:path}/checkpoint",
                responses={200: {"content": {"text/plain": {}}}, **errors(404)})  # fmt: skip
    async def replica_checkpoint(origin: str) -> Response:
        """A mirrored log's checkpoint (the one its mirrored tiles are complete for)."""
        note = await in_thread(replicas_of(node).engine.mirror_checkpoint, origin)
        return Response(note, media_type=TEXT, headers={"Cache-Control": MUTABLE})

    @router.get("/v1/replicas/{origin:path}/tile/{tile_path:path}",
                responses={200: {"content": {"application/octet-stream": {}}}, **errors(400, 404)})  # fmt: skip
    async def replica_tile(origin: str, tile_path: str) -> Response:
        """A mirrored log's tlog-tiles, read-only (``tile/<L>/<N>``, ``tile/entries/<N>``)."""
        engine = replicas_of(node).engine
        data, full = await in_thread(engine.mirror_tile, origin, "tile/" + tile_path)
        return Response(data, media_type="application/octet-stream",
                        headers={"Cache-Control": IMMUTABLE if full else MUTABLE})  # fmt: skip

    @router.get("/v1/replicas/{origin:path}/anchors", responses=errors(404))
    async def replica_anchors(origin: str, after: int = Query(-1, ge=-1),
                              limit: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:  # fmt: skip
        """The anchor claims this node holds on the log's checkpoints, in the conflict
        order, with the anchors re-verified here (``reverified_here``): a page of
        at most ``limit`` checkpoints of sizes > ``after``; ``next`` is the
        ``after`` of the next page (null on the last)."""
        engine = replicas_of(node).engine

        def read() -> list[dict[str, Any]]:
            receipts: list[dict[str, Any]] = engine.anchor_view(origin, after=after, limit=limit)
            if (not receipts and after < 0 and engine.head(origin) is None
                    and origin not in engine.own_origins()):  # fmt: skip
                raise NotFoundError(f"no replica of {origin!r} here", code="replica_unknown")
            return receipts

        receipts = await in_thread(read)
        more = len(receipts) == limit
        return {"origin": origin, "receipts": receipts,
                "next": receipts[-1]["size"] if more else None}  # fmt: skip

    return router
