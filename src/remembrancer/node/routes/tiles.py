"""tlog-tiles (c2sp.org/tlog-tiles): the checkpoint, hash tiles and entry bundles
of each hosted log, with the cache headers the spec asks for."""

from __future__ import annotations

from fastapi import APIRouter, Response

from remembrancer.core.errors import NotFoundError
from remembrancer.core.tiles import (
    TILE_WIDTH,
    encode_entry_bundle,
    parse_entries_path,
    parse_tile_path,
)
from remembrancer.node.routes.common import IMMUTABLE, MUTABLE, TEXT, check_ns, errors, in_thread
from remembrancer.node.runtime import Node


def create_router(node: Node) -> APIRouter:
    router = APIRouter()

    @router.get(
        "/logs/{namespace}/checkpoint",
        responses={200: {"content": {"text/plain": {}}}, **errors(400, 404)},
    )
    async def checkpoint(namespace: str) -> Response:
        check_ns(namespace)
        state = await in_thread(node.store.log_state, namespace)
        if state is None:
            raise NotFoundError(f"log {namespace} has no checkpoint yet", code="log_unknown")
        return Response(state.checkpoint, media_type=TEXT, headers={"Cache-Control": MUTABLE})

    @router.get("/logs/{namespace}/tile/{tile_path:path}",
                responses={200: {"content": {"application/octet-stream": {}}}, **errors(400, 404)})  # fmt: skip
    async def tile(namespace: str, tile_path: str) -> Response:
        check_ns(namespace)
        state = await in_thread(node.store.log_state, namespace)
        if state is None:
            raise NotFoundError(f"log {namespace} is empty", code="log_unknown")
        if tile_path.startswith("entries/"):
            t = parse_entries_path("tile/" + tile_path)
            first = t.index * TILE_WIDTH
            if first + t.width > state.size:
                raise NotFoundError(
                    "no such entry bundle at the current size", code="tile_not_found"
                )
            entries = await in_thread(node.store.read_entries, namespace, first, first + t.width)
            data = encode_entry_bundle(entries)
        else:
            t = parse_tile_path("tile/" + tile_path)
            count = state.size >> (8 * t.level)  # hashes stored at this tile level
            if (t.index + 1) * TILE_WIDTH > count and not (t.index * TILE_WIDTH + t.width <= count):
                raise NotFoundError("no such tile at the current size", code="tile_not_found")
            if t.index * TILE_WIDTH + t.width > count:
                raise NotFoundError("no such tile at the current size", code="tile_not_found")
            found = await in_thread(node.store.read_tiles, namespace, [(t.level, t.index)])
            stored = found.get((t.level, t.index), b"")
            if len(stored) < t.width * 32:
                raise NotFoundError("tile not stored", code="tile_not_found")
            data = stored[: t.width * 32]
        return Response(data, media_type="application/octet-stream",
                        headers={"Cache-Control": IMMUTABLE if t.width == TILE_WIDTH else MUTABLE})  # fmt: skip

    return router
