"""The node's ASGI application: the ``/v1`` API, tlog-tiles, the witness API,
health and metrics.  Only this package knows HTTP status codes.

Every error answer is ``{"error": {"code", "message", "details"}}`` with the
status of :func:`status_for`, and every route documents its error answers in
the OpenAPI document.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from fastapi import FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from remembrancer.core.cadence import TARGET_PATTERN
from remembrancer.core.errors import (
    ConflictError,
    FormatError,
    NotFoundError,
    PolicyError,
    PushbackError,
    RemembrancerError,
    StorageError,
    VerificationError,
)
from remembrancer.core.identifiers import NAMESPACE_RE
from remembrancer.core.jcs import parse_sha256_hex
from remembrancer.core.record import Record
from remembrancer.core.tiles import (
    TILE_WIDTH,
    encode_entry_bundle,
    parse_entries_path,
    parse_tile_path,
)
from remembrancer.core.tlogproof import TlogProof
from remembrancer.core.witness import WITNESS_STATUS
from remembrancer.explorer.routes import create_router as create_explorer_router
from remembrancer.node.runtime import Node

log = logging.getLogger("remembrancer.http")
T = TypeVar("T")

TLOG_PROOF_TYPE = "text/x.tlog-proof"
# Paged lists (/v1/federation/receipts, /v1/federation/evidence).
PAGE_DEFAULT = 100
PAGE_MAX = 1000
MAX_CURSOR = 1024
CURSOR_DOC = "Start after this item: the `next` of the previous page (absent: from the start)."
LIMIT_DOC = f"Items per page, 1 to {PAGE_MAX}."
IMMUTABLE = "public, max-age=31536000, immutable"
MUTABLE = "no-cache"

# Codes whose status differs from their error class's default.
_STATUS_BY_CODE = {
    "namespace_unknown": 404,
    "event_id_conflict": 409,
    "nonce_replayed": 409,
    "namespace_mismatch": 400,
    "body_too_large": 413,
    "rate_limited": 429,
    **WITNESS_STATUS,
    "unauthorized": 401,
    "quorum_not_reached": 504,
    "federation_not_configured": 404,
    "rail_unavailable": 503,
    "storage_full": 507,
    "xns_relay_failed": 502,
    "xns_handler_timeout": 504,
    "request_body_timeout": 408,
    "request_timeout": 503,
}


def status_for(e: RemembrancerError) -> int:
    if e.code in _STATUS_BY_CODE:
        return _STATUS_BY_CODE[e.code]
    if isinstance(e, PushbackError):
        return 503 if e.code in ("overloaded", "shutting_down") else 429
    if isinstance(e, NotFoundError):
        return 404
    if isinstance(e, ConflictError):
        return 409
    if isinstance(e, FormatError):
        return 400
    if isinstance(e, VerificationError):
        return 422
    if isinstance(e, PolicyError):
        return 403
    if isinstance(e, StorageError):
        return 503
    return 500


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict[str, Any]


class ErrorResponse(BaseModel):
    error: ErrorBody


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    described = {504: "A quorum of peers did not answer in time", 400: "Malformed request", 401: "Missing or wrong admin token", 403: "Refused by policy",
                 404: "Not found", 409: "Conflict with recorded state", 413: "Body too large",
                 422: "Did not verify", 429: "Rate limited (see Retry-After)",
                 503: "Overloaded or storage unavailable (see Retry-After)",
                 507: "The disk holding the store is full (code storage_full)"}  # fmt: skip
    return {c: {"model": ErrorResponse, "description": described[c]} for c in codes}


def error_response(e: RemembrancerError) -> JSONResponse:
    status = status_for(e)
    headers = {}
    if isinstance(e, PushbackError):
        headers["Retry-After"] = str(max(1, round(e.retry_after)))
    return JSONResponse({"error": e.to_dict()}, status_code=status, headers=headers)


def _check_ns(namespace: str) -> None:
    if not NAMESPACE_RE.match(namespace):
        raise FormatError(f"{namespace!r} is not a namespace name", code="namespace_invalid")


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def create_app(node: Node, *, manage_node: bool = True) -> FastAPI:
    """The ASGI app serving ``node``.  With ``manage_node`` (the default) the
    ASGI lifespan starts the node and, on shutdown, drains and closes it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        if manage_node:
            await node.start()
        yield
        if manage_node:
            await node.stop()

    app = FastAPI(
        title="Remembrancer node",
        version=node.info()["version"],
        description="Verifiable, namespaced, append-only logs with C2SP checkpoints and witnessing.",
        lifespan=lifespan,
        responses=_errors(400),
    )
    app.state.node = node
    limits = node.limits

    @app.exception_handler(RemembrancerError)
    async def on_error(request: Request, e: RemembrancerError) -> JSONResponse:
        return error_response(e)

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, e: RequestValidationError) -> JSONResponse:
        errs = [
            {"loc": [str(x) for x in err.get("loc", ())], "msg": str(err.get("msg"))}
            for err in e.errors()
        ]
        return error_response(
            FormatError(
                "invalid request parameters", code="request_invalid", details={"errors": errs}
            )
        )

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, e: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
        headers = dict(e.headers or {})
        if e.status_code == 405:
            # Starlette names only the first matching route's methods; a path
            # served by several routes (GET and POST) allows all of theirs.
            allowed: set[str] = set()
            for route in app.router.routes:
                regex = getattr(route, "path_regex", None)
                if regex is not None and regex.match(request.url.path):
                    allowed |= set(getattr(route, "methods", None) or ())
            if allowed:
                headers["Allow"] = ", ".join(sorted(allowed))
        return JSONResponse(
            {"error": {"code": code, "message": str(e.detail), "details": {}}},
            status_code=e.status_code,
            headers=headers,
        )

    app.add_middleware(GuardMiddleware, node=node)

    async def read_body(request: Request) -> bytes:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limits.max_body_bytes:
                raise FormatError(
                    f"request body over {limits.max_body_bytes} bytes", code="body_too_large"
                )
        return bytes(body)

    # --- records -------------------------------------------------------------------
    @app.post(
        "/v1/namespaces/{namespace}/records",
        responses={
            200: {"description": "The receipt: the record is durably in the log"},
            202: {"description": "Accepted; poll the receipt URL"},
            **_errors(400, 403, 404, 409, 413, 422, 429, 503, 507),
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
        summary="Submit a signed record",
    )
    async def submit_record(request: Request, namespace: str, wait: bool = True) -> Response:
        """Admit a record; answers with its receipt once integrated (``wait=false``: 202).

        (Served by :func:`submit_record_response`; the guard middleware takes
        the common ``wait=true`` case straight there, skipping the framework.)"""
        return await submit_record_response(node, namespace, await read_body(request), wait)

    @app.get("/v1/namespaces/{namespace}/receipts/{event_hash}",
             responses={200: {"description": "The receipt"}, 202: {"description": "Still pending"},
                        **_errors(400, 404)})  # fmt: skip
    async def get_receipt(namespace: str, event_hash: str, anchored: bool = False) -> Response:
        """The receipt of a record submitted with ``wait=false`` (or any admitted
        record); ``anchored=true``: at the earliest anchored checkpoint covering it,
        with that checkpoint's anchors."""
        _check_ns(namespace)
        digest = parse_sha256_hex(event_hash)
        task = node.pending.get(f"{namespace}/{event_hash}")
        if task is not None and not task.done():
            return JSONResponse({"status": "pending", "eventHash": event_hash}, status_code=202)
        if task is not None and task.exception() is not None:
            exc = task.exception()
            if isinstance(exc, RemembrancerError):
                raise exc
        return JSONResponse(node.receipt_for(namespace, digest, anchored=anchored).to_dict())

    # --- node and namespaces ----------------------------------------------------
    @app.get("/v1/node", summary="This node's identity and keys")
    async def node_info() -> dict[str, Any]:
        return node.info()

    @app.get("/v1/namespaces", summary="Namespaces hosted here")
    async def namespaces() -> dict[str, Any]:
        out = []
        for ns in sorted(node.namespaces.current()):
            state = node.store.log_state(ns)
            out.append(
                {
                    "namespace": ns,
                    "origin": node.sequencer.origin(ns),
                    "size": state.size if state else 0,
                }
            )
        return {"namespaces": out}

    @app.get("/v1/namespaces/{namespace}", responses=_errors(400, 404))
    async def namespace(namespace: str) -> dict[str, Any]:
        """Policy (effective, after governance), size, latest checkpoint, cadence."""
        _check_ns(namespace)
        return node.namespace_view(namespace)

    @app.get("/v1/namespaces/{namespace}/governance", responses=_errors(400, 404))
    async def namespace_governance(namespace: str) -> dict[str, Any]:
        """Governance of a namespace: its rule (admins, voters, threshold), proposals
        waiting for votes, approved changes (in effect or scheduled), the cadence now."""
        _check_ns(namespace)
        return await _in_thread(node.sequencer.governance_view, namespace)

    @app.get("/v1/namespaces/{namespace}/records/{index}", responses=_errors(400, 404))
    async def record_at(namespace: str, index: int) -> dict[str, Any]:
        _check_ns(namespace)
        if not 0 <= index < 2**63:
            raise FormatError("index out of range", code="index_out_of_range")
        return await _in_thread(node.record_at, namespace, index)

    @app.get("/v1/namespaces/{namespace}/events/{event_hash}", responses=_errors(400, 404))
    async def record_by_hash(namespace: str, event_hash: str) -> dict[str, Any]:
        """Look a record up by its ``eventHash`` (``sha256:<hex>``)."""
        _check_ns(namespace)
        found = node.store.find_event_hash(namespace, parse_sha256_hex(event_hash))
        if found is None:
            raise NotFoundError("no record with that eventHash", code="record_not_found")
        return await _in_thread(node.record_at, namespace, found.index)

    # --- cross-namespace messages (docs/messaging.md) ---------------------------------
    @app.post(
        "/v1/namespaces/{namespace}/messages",
        responses={
            200: {"description": "Delivered: the delivery (and the answer of a query or"
                                 " invoke), each with its receipt and tlog-proof"},
            202: {"description": "Relayed to the target's home node; poll the delivery URL"},
            **_errors(400, 403, 404, 409, 413, 422, 429, 503),
            500: {"model": ErrorResponse, "description": "An invoke handler failed or is unavailable"},
            502: {"model": ErrorResponse, "description": "The target's home node did not take the relay"},
            504: {"model": ErrorResponse, "description": "An invoke handler did not answer in time"},
        },
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["record"], "additionalProperties": False,
            "properties": {"record": {"type": "object"}, "proof": {"type": "string"}}}}}}},
        summary="Deliver a cross-namespace message (namespace.message@1.0.0) into NAMESPACE",
    )  # fmt: skip
    async def deliver_message(
        request: Request, namespace: str, wait: float = Query(default=10.0, ge=0, le=60)
    ) -> JSONResponse:
        """``{"record": <message record>, "proof": <tlog-proof text>}``.  The target
        verifies the proof under its ``trusted_sources`` policy and records the
        delivery; a refusal changes nothing.  Without ``proof`` the message must be
        in a log hosted here, and this node attaches the proof (waiting up to
        ``wait`` seconds for cosignatures).  A target hosted elsewhere in the
        federation gets the message relayed (``202``)."""
        _check_ns(namespace)
        if node.namespace_limits.take(namespace) > 0:  # a delivery writes records there
            raise PushbackError(
                f"{namespace} is over its record rate", code="rate_limited", retry_after=1
            )
        status, view = await node.messaging.post(namespace, await read_body(request), wait)
        return JSONResponse(view, status_code=status)

    @app.get("/v1/namespaces/{namespace}/messages/{event_hash}", responses=_errors(400, 404))
    async def message_delivery(namespace: str, event_hash: str) -> dict[str, Any]:
        """The delivery into NAMESPACE of the message with this ``eventHash`` (and
        its answer), with receipts and tlog-proofs at the latest checkpoint."""
        _check_ns(namespace)
        return await node.messaging.delivery_view(namespace, parse_sha256_hex(event_hash))

    # --- proofs ------------------------------------------------------------------
    @app.get("/v1/namespaces/{namespace}/proofs/inclusion",
             responses={200: {"description": "JSON, or a c2sp.org/tlog-proof@v1 file with format=tlog-proof",
                              "content": {"application/json": {}, TLOG_PROOF_TYPE: {}}},
                        **_errors(400, 404)})  # fmt: skip
    async def proof_inclusion(namespace: str, index: int = Query(ge=0, lt=2**63),
                              size: int | None = Query(default=None, ge=1, lt=2**63),
                              format: str = Query(default="json", pattern="^(json|tlog-proof)$")) -> Response:  # fmt: skip
        return await inclusion_response(node, namespace, index, size, format)

    @app.get("/v1/namespaces/{namespace}/proofs/consistency", responses=_errors(400, 404))
    async def proof_consistency(namespace: str, old: int = Query(ge=1, lt=2**63),
                                new: int = Query(ge=1, lt=2**63)) -> dict[str, Any]:  # fmt: skip
        _check_ns(namespace)
        node.require_namespace(namespace)
        if old > new:
            raise FormatError("old must not exceed new", code="size_out_of_range")
        proof = await _in_thread(node.sequencer.proof_consistency, namespace, old, new)
        notes = {s: node.store.checkpoint_at(namespace, s) for s in (old, new)}
        return {"namespace": namespace, "old": old, "new": new,
                "proof": [base64.b64encode(h).decode() for h in proof],
                "checkpoints": {str(s): (c.note.decode() if c else None) for s, c in notes.items()}}  # fmt: skip

    # --- anchoring -------------------------------------------------------------------
    @app.get("/v1/anchoring", summary="Anchoring health of every namespace")
    async def anchoring() -> dict[str, Any]:
        return {"namespaces": await _in_thread(node.scheduler.health_all)}

    @app.get("/v1/namespaces/{namespace}/anchors", responses=_errors(400, 404))
    async def anchors(namespace: str, after: int = Query(default=-1, ge=-1, lt=2**63),
                      limit: int = Query(default=50, ge=1, le=500)) -> dict[str, Any]:  # fmt: skip
        """Anchor receipts of a log, by checkpoint size."""
        _check_ns(namespace)
        node.require_namespace(namespace)
        receipts = await _in_thread(node.scheduler.receipts, namespace)
        page = [r for r in receipts if r.size > after][:limit]
        return {"namespace": namespace, "receipts": [r.to_dict() for r in page]}

    @app.get("/v1/namespaces/{namespace}/anchors/{size}", responses=_errors(400, 404))
    async def anchor_receipt(namespace: str, size: int) -> dict[str, Any]:
        """The anchor receipt of the checkpoint at ``size``."""
        _check_ns(namespace)
        if not 0 < size < 2**63:
            raise FormatError("size out of range", code="size_out_of_range")
        receipt = await _in_thread(node.scheduler.receipt, namespace, size)
        if receipt is None:
            raise NotFoundError(
                f"no anchors for {namespace} at size {size}", code="anchor_receipt_not_found"
            )
        return receipt.to_dict()

    @app.post("/v1/admin/anchor/{namespace}", responses=_errors(400, 401, 404))
    async def anchor_now(request: Request, namespace: str, level: str | None = Query(default=None,
                         pattern="^(fast|strong|cold)$")) -> dict[str, Any]:  # fmt: skip
        """Anchor a namespace now, at one level or all (needs the admin token)."""
        _require_admin(node, request)
        _check_ns(namespace)
        results = await node.scheduler.anchor_now(namespace, level)
        return {
            "namespace": namespace,
            "results": dict(results),
            "anchoring": node.scheduler.health(namespace),
        }

    # --- tlog-tiles ------------------------------------------------------------------
    @app.get(
        "/logs/{namespace}/checkpoint",
        responses={200: {"content": {"text/plain": {}}}, **_errors(400, 404)},
    )
    async def checkpoint(namespace: str) -> Response:
        _check_ns(namespace)
        state = node.store.log_state(namespace)
        if state is None:
            raise NotFoundError(f"log {namespace} has no checkpoint yet", code="log_unknown")
        return Response(state.checkpoint, media_type="text/plain; charset=utf-8",
                        headers={"Cache-Control": MUTABLE})  # fmt: skip

    @app.get("/logs/{namespace}/tile/{tile_path:path}",
             responses={200: {"content": {"application/octet-stream": {}}}, **_errors(400, 404)})  # fmt: skip
    async def tile(namespace: str, tile_path: str) -> Response:
        _check_ns(namespace)
        state = node.store.log_state(namespace)
        if state is None:
            raise NotFoundError(f"log {namespace} is empty", code="log_unknown")
        if tile_path.startswith("entries/"):
            t = parse_entries_path("tile/" + tile_path)
            first = t.index * TILE_WIDTH
            if first + t.width > state.size:
                raise NotFoundError(
                    "no such entry bundle at the current size", code="tile_not_found"
                )
            entries = await _in_thread(node.store.read_entries, namespace, first, first + t.width)
            data = encode_entry_bundle(entries)
        else:
            t = parse_tile_path("tile/" + tile_path)
            count = state.size >> (8 * t.level)  # hashes stored at this tile level
            if (t.index + 1) * TILE_WIDTH > count and not (t.index * TILE_WIDTH + t.width <= count):
                raise NotFoundError("no such tile at the current size", code="tile_not_found")
            if t.index * TILE_WIDTH + t.width > count:
                raise NotFoundError("no such tile at the current size", code="tile_not_found")
            found = await _in_thread(node.store.read_tiles, namespace, [(t.level, t.index)])
            stored = found.get((t.level, t.index), b"")
            if len(stored) < t.width * 32:
                raise NotFoundError("tile not stored", code="tile_not_found")
            data = stored[: t.width * 32]
        return Response(data, media_type="application/octet-stream",
                        headers={"Cache-Control": IMMUTABLE if t.width == TILE_WIDTH else MUTABLE})  # fmt: skip

    @app.get("/v1/witnessing", summary="Peers that cosign this node's checkpoints, and how fast")
    async def witnessing() -> dict[str, Any]:
        return node.witnessing.stats()

    # --- federation ------------------------------------------------------------------
    def _federation() -> Any:
        if node.federation is None:
            raise NotFoundError(
                "this node is not in a federation", code="federation_not_configured"
            )
        return node.federation

    @app.post("/federation/v1/messages", responses={202: {"description": "Accepted"},
              **_errors(400, 403, 404, 409, 413, 429, 503)},
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}})  # fmt: skip
    async def federation_message(request: Request) -> Response:
        """A signed federation message (docs/spec/federation.md)."""
        service = _federation()
        body = await read_body(request)
        reply = await service.handle(body, request.headers.get("content-type"))
        return Response(reply.body, status_code=reply.status, headers=reply.headers)

    @app.get(
        "/v1/federation", responses=_errors(404), summary="Federation peers, statuses, scores, lag"
    )
    async def federation_status() -> dict[str, Any]:
        return await _in_thread(_federation().status)

    @app.get(
        "/v1/federation/anchoring",
        responses=_errors(404),
        summary="Collaborative anchoring: epoch, coordinators, pending delegations, aggregates",
    )
    async def federation_anchoring() -> dict[str, Any]:
        _federation()
        assert node.collaborative is not None
        return node.collaborative.status()

    @app.get("/v1/federation/receipts", responses=_errors(400, 404),
             summary="Final federation receipts, a page at a time")  # fmt: skip
    async def federation_receipts(
        namespace: str | None = Query(None, description="Only the receipts of this namespace."),
        after: str | None = Query(None, max_length=MAX_CURSOR, description=CURSOR_DOC),
        limit: int = Query(PAGE_DEFAULT, ge=1, le=PAGE_MAX, description=LIMIT_DOC),
    ) -> dict[str, Any]:
        """``receipts`` (of ``namespace`` when given) in ``<namespace>/<receipt id>``
        order and ``next``, the cursor of the next page (``null`` on the last)."""
        service = _federation()
        return await _in_thread(lambda: service.receipts_page(namespace, after=after, limit=limit))

    # --- replicas (anti-entropy, docs/anti-entropy.md) ---------------------------------
    def _replicas() -> Any:
        _federation()
        if node.replicator is None:
            raise NotFoundError("this node keeps no replicas", code="replicas_not_configured")
        return node.replicator

    @app.get("/v1/federation/replicas", responses=_errors(404),
             summary="Replicas of the witnessed logs: size, root, lag, anchors, receipts, errors")  # fmt: skip
    async def federation_replicas() -> dict[str, Any]:
        return await _in_thread(_replicas().status)

    @app.get("/v1/replicas/{origin:path}/checkpoint",
             responses={200: {"content": {"text/plain": {}}}, **_errors(404)})  # fmt: skip
    async def replica_checkpoint(origin: str) -> Response:
        """A mirrored log's checkpoint (the one its mirrored tiles are complete for)."""
        note = await _in_thread(_replicas().engine.mirror_checkpoint, origin)
        return Response(note, media_type="text/plain; charset=utf-8",
                        headers={"Cache-Control": MUTABLE})  # fmt: skip

    @app.get("/v1/replicas/{origin:path}/tile/{tile_path:path}",
             responses={200: {"content": {"application/octet-stream": {}}}, **_errors(400, 404)})  # fmt: skip
    async def replica_tile(origin: str, tile_path: str) -> Response:
        """A mirrored log's tlog-tiles, read-only (``tile/<L>/<N>``, ``tile/entries/<N>``)."""
        data, full = await _in_thread(_replicas().engine.mirror_tile, origin, "tile/" + tile_path)
        return Response(data, media_type="application/octet-stream",
                        headers={"Cache-Control": IMMUTABLE if full else MUTABLE})  # fmt: skip

    @app.get("/v1/replicas/{origin:path}/anchors", responses=_errors(404))
    async def replica_anchors(origin: str) -> dict[str, Any]:
        """Every anchor claim this node holds on the log's checkpoints, in the conflict
        order, with the anchors re-verified here (``reverified_here``)."""
        engine = _replicas().engine
        receipts = await _in_thread(engine.anchor_view, origin)
        if not receipts and engine.head(origin) is None and origin not in engine.own_origins():
            raise NotFoundError(f"no replica of {origin!r} here", code="replica_unknown")
        return {"origin": origin, "receipts": receipts}

    @app.post("/v1/admin/replicas/anchor", responses=_errors(400, 401, 404, 422, 503))
    async def replica_anchor(request: Request, origin: str,
                             target: str = Query(pattern=TARGET_PATTERN)) -> dict[str, Any]:  # fmt: skip
        """Anchor the replica's latest checkpoint of ``origin`` on this node's rail
        ``target`` (needs the admin token); the claim spreads to the peers."""
        _require_admin(node, request)
        return await _replicas().engine.anchor_head(origin, target)  # type: ignore[no-any-return]

    @app.get(
        "/v1/federation/evidence",
        responses=_errors(400, 404),
        summary="Misbehaviour evidence files kept, a page at a time",
    )
    async def federation_evidence(
        after: str | None = Query(None, max_length=MAX_CURSOR, description=CURSOR_DOC),
        limit: int = Query(PAGE_DEFAULT, ge=1, le=PAGE_MAX, description=LIMIT_DOC),
    ) -> dict[str, Any]:
        """``evidence`` in ``evidence_ref`` order and ``next``, the cursor of the
        next page (``null`` on the last)."""
        service = _federation()
        return await _in_thread(lambda: service.evidence_page(after=after, limit=limit))

    @app.get(
        "/v1/federation/registry",
        responses=_errors(404),
        summary="The federation registry in force (federation.yaml form)",
    )
    async def federation_registry() -> dict[str, Any]:
        return _federation().registry_document()  # type: ignore[no-any-return]

    @app.get(
        "/v1/federation/proposals",
        responses=_errors(404),
        summary="Pending and applied registry changes",
    )
    async def federation_proposals() -> dict[str, Any]:
        return await _in_thread(_federation().proposals)

    @app.post("/v1/federation/proposals", responses={200: {"description": "The proposal's state"},
              **_errors(400, 403, 404, 409, 413, 422)},
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}},
              summary="Submit a federation.registry.set proposal (with approvals)")  # fmt: skip
    async def submit_proposal(request: Request) -> dict[str, Any]:
        """A signed ``federation.registry.set@1.0.0`` record in ``fed:<federation_id>``;
        witness signatures by active peers are approvals.  Applied at quorum."""
        service = _federation()
        body = await read_body(request)
        return await service.submit_proposal(body)  # type: ignore[no-any-return]

    @app.post(
        "/v1/admin/federation/proposals/{proposal_id}/approve",
        responses=_errors(400, 401, 403, 404, 409, 422),
    )
    async def approve_proposal(request: Request, proposal_id: str) -> dict[str, Any]:
        """Approve a pending registry change with this node's key and forward it to
        every peer (needs the admin token)."""
        _require_admin(node, request)
        service = _federation()
        return await service.approve_proposal(proposal_id)  # type: ignore[no-any-return]

    @app.post(
        "/v1/admin/federation/proposals/{proposal_id}/drop",
        responses=_errors(401, 404),
    )
    async def drop_proposal(request: Request, proposal_id: str) -> dict[str, Any]:
        """Drop a pending registry change on this node (needs the admin token): it
        frees its slot, and the same proposal is refused here if it comes again
        (409 ``proposal_dropped``).  404 ``proposal_unknown`` if it is not pending."""
        _require_admin(node, request)
        service = _federation()
        return await service.drop_proposal(proposal_id)  # type: ignore[no-any-return]

    @app.post(
        "/v1/admin/federation/propagate/{namespace}", responses=_errors(400, 401, 404, 503, 504)
    )
    async def propagate_anchor(request: Request, namespace: str) -> dict[str, Any]:
        """Ask the peers to countersign this namespace's newest verified anchor (admin)."""
        _require_admin(node, request)
        _check_ns(namespace)
        service = _federation()
        receipts = await _in_thread(node.scheduler.receipts, namespace)
        for r in reversed(receipts):
            verified = [a for a in r.anchors if a.status == "verified"]
            if verified:
                final = await service.propagate(namespace, verified[0], r.checkpoint)
                return final.to_dict(quorum=service.registry.quorum)  # type: ignore[no-any-return]
        raise NotFoundError(f"{namespace} has no verified anchor yet", code="no_verified_anchor")

    # --- witness ---------------------------------------------------------------------
    @app.post("/witness/add-checkpoint",
              responses={200: {"description": "Cosignature lines", "content": {"text/plain": {}}},
                         409: {"description": "Old size mismatch (text/x.tlog.size) or root mismatch",
                               "content": {"text/x.tlog.size": {}, "application/json": {}}},
                         **_errors(400, 403, 404, 413, 422)},
              openapi_extra={"requestBody": {"required": True, "content": {"text/plain": {"schema": {"type": "string"}}}}})  # fmt: skip
    async def add_checkpoint(request: Request) -> Response:
        """C2SP tlog-witness add-checkpoint."""
        body = await read_body(request)
        try:
            lines = await node.add_checkpoint(body)
        except RemembrancerError as e:
            if e.code == "witness_old_size_mismatch":
                # The spec's body for this refusal; its status comes from the one table.
                return Response(f"{e.details['size']}\n", status_code=status_for(e),
                                media_type="text/x.tlog.size")  # fmt: skip
            raise
        return Response(lines, media_type="text/plain; charset=utf-8")

    @app.get(
        "/witness/checkpoints/{origin:path}",
        responses={200: {"content": {"text/plain": {}}}, **_errors(404)},
    )
    async def witnessed(origin: str) -> Response:
        """The latest checkpoint this witness cosigned for ``origin``, with its cosignature."""
        return Response(node.witnessed_checkpoint(origin), media_type="text/plain; charset=utf-8")

    # --- admin -----------------------------------------------------------------------
    @app.post("/v1/admin/namespaces/reload", responses=_errors(401))
    async def reload_namespaces(request: Request) -> dict[str, Any]:
        """Re-read the namespaces file now (needs the admin token)."""
        _require_admin(node, request)
        source = node.namespaces
        changed = bool(getattr(source, "reload_if_changed", lambda: False)())
        error = getattr(source, "last_error", None)
        return {"reloaded": changed, "error": error.to_dict() if error else None,
                "namespaces": sorted(source.current())}  # fmt: skip

    # --- operations --------------------------------------------------------------------
    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Liveness: answers even while the store is unreachable (``storage`` says so)."""
        error = getattr(node.namespaces, "last_error", None)
        try:
            anchoring = {
                ns: h["status"] for ns, h in (await _in_thread(node.scheduler.health_all)).items()
            }
        except StorageError as e:  # the anchoring state lives in the store
            node.storage_failed(e)
            anchoring = {ns: "unknown" for ns in node.namespaces.current()}
        storage = dict(node.storage_health)
        return {"status": "ok" if storage["status"] == "ok" else "degraded",
                "uptime_s": round(time.time() - node.started, 1),
                "config_error": error.to_dict() if error else None, "anchoring": anchoring,
                "storage": storage}  # fmt: skip

    @app.get("/readyz", responses={200: {"description": "Ready"}, 503: {"model": ErrorResponse}})
    async def readyz() -> Response:
        if not node.ready:
            return error_response(
                PushbackError("starting or stopping", code="not_ready", retry_after=1)
            )
        try:
            await _in_thread(node.store.log_state, "ready:check")
        except RemembrancerError as e:
            error = StorageError(f"storage unavailable: {e.message}", code="storage_unavailable")
            node.storage_failed(error)
            return error_response(error)
        node.storage_ok(reads_only=True)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", responses={200: {"content": {"text/plain": {}}}})
    async def metrics() -> Response:
        await node.store_metrics.refresh()
        return Response(generate_latest(node.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # --- explorer (docs/explorer.md) -------------------------------------------------
    app.include_router(
        create_explorer_router(node, status_for=status_for, responses=_errors(400, 404))
    )

    return app


async def submit_record_response(node: Node, namespace: str, body: bytes, wait: bool) -> Response:
    _check_ns(namespace)
    if node.namespace_limits.take(namespace) > 0:
        raise PushbackError(
            f"{namespace} is over its record rate", code="rate_limited", retry_after=1
        )
    try:
        record = Record.from_bytes(body)
        if record.namespace != namespace:
            raise FormatError(
                f"the record's namespace is {record.namespace}, the URL's is {namespace}",
                code="namespace_mismatch",
            )
        if not wait:
            node.submit_later(*node.sequencer.precheck(record))
            url = f"/v1/namespaces/{namespace}/receipts/{record.event_hash_hex}"
            return JSONResponse({"status": "accepted", "eventHash": record.event_hash_hex, "receipt": url},
                                status_code=202, headers={"Location": url})  # fmt: skip
        receipt = await node.submit(record)
    except RemembrancerError as e:
        node.metrics.rejected.labels(
            namespace if NAMESPACE_RE.match(namespace) else "-", e.code
        ).inc()
        raise
    return Response(json.dumps(receipt.to_dict()).encode(), media_type="application/json")


async def inclusion_response(
    node: Node, namespace: str, index: int, size: int | None, fmt: str
) -> Response:
    _check_ns(namespace)
    node.require_namespace(namespace)
    proof, state = node.sequencer.proof_inclusion(namespace, index, size)
    note: bytes | None
    if size is None or size == state.size:
        size, note = state.size, state.checkpoint
    else:
        stored = await _in_thread(node.store.checkpoint_at, namespace, size)
        note = stored.note if stored else None
    if fmt == "tlog-proof":
        if note is None:
            raise NotFoundError(f"no signed checkpoint at size {size}", code="checkpoint_not_found")
        return Response(TlogProof(index, tuple(proof), note).to_bytes(), media_type=TLOG_PROOF_TYPE)
    body = {"namespace": namespace, "index": index, "treeSize": size,
            "proof": [base64.b64encode(h).decode() for h in proof],
            "checkpoint": note.decode() if note else None}  # fmt: skip
    return Response(json.dumps(body).encode(), media_type="application/json")


_ADMIN_PREFIX = "/v1/admin/"
_PROOF_SUFFIX = "/proofs/inclusion"
_RECORDS_PREFIX = "/v1/namespaces/"
_RECORDS_SUFFIX = "/records"


class GuardMiddleware:
    """Pure ASGI middleware (no per-request task or stream plumbing): per-client
    rate limit (429), declared body size (413), the per-request deadline
    (``limits.request_timeout_s``: 408 ``request_body_timeout`` while the
    body is still arriving, else 503 ``request_timeout``; not for
    ``/v1/admin/*``, whose rail calls have their own timeouts and must not be
    cut off after a paid submission), request metrics, 5xx logging."""

    def __init__(self, app: Any, node: Node) -> None:
        self.app = app
        self.node = node
        self.max_body = node.limits.max_body_bytes
        self.request_timeout = node.limits.request_timeout_s

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        node = self.node
        client = scope.get("client")
        error: RemembrancerError | None = None
        expects_body = False
        wait = node.client_limits.take(client[0] if client else "unknown")
        if wait > 0:
            error = PushbackError(
                "too many requests from this client", code="rate_limited", retry_after=wait
            )
        else:
            for name, value in scope["headers"]:
                if name == b"content-length" and (
                    not value.isdigit() or int(value) > self.max_body
                ):
                    error = FormatError(
                        f"request body over {self.max_body} bytes", code="body_too_large"
                    )
                expects_body |= (name == b"content-length" and value != b"0") or (
                    name == b"transfer-encoding"
                )
        status = [500]
        responded = [False]
        body_done = [not expects_body]

        async def send_wrapper(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                responded[0] = True
            await send(message)

        async def receive_wrapper() -> Any:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body"):
                body_done[0] = True
            return message

        started = time.perf_counter()
        path = scope["path"]
        deadline = asyncio.timeout(None if path.startswith(_ADMIN_PREFIX) else self.request_timeout)
        try:
            async with deadline:
                path = await self._dispatch(scope, receive_wrapper, send_wrapper, error)
        except TimeoutError:
            if not deadline.expired():
                raise
            if responded[0]:  # too late for an answer: the server closes the connection
                log.warning("%s %s: over its %s s deadline while answering", scope["method"],
                            scope["path"], self.request_timeout)  # fmt: skip
                return
            late: RemembrancerError = (
                FormatError(f"the request body did not arrive within {self.request_timeout} s",
                            code="request_body_timeout")
                if not body_done[0]
                else PushbackError(f"no answer within {self.request_timeout} s",
                                   code="request_timeout", retry_after=1)
            )  # fmt: skip
            await error_response(late)(scope, receive, send_wrapper)
            route = scope.get("route")
            path = getattr(route, "path", "other") if route is not None else "other"
        node.metrics.requests.labels(path, scope["method"], str(status[0])).inc()
        if status[0] >= 500:
            log.warning("%s %s -> %d in %.1f ms", scope["method"], scope["path"], status[0],
                        (time.perf_counter() - started) * 1000)  # fmt: skip

    async def _dispatch(
        self, scope: dict[str, Any], receive: Any, send: Any, error: RemembrancerError | None
    ) -> str:
        """Answer the request; returns the route label of the metrics."""
        path: str = scope["path"]
        if error is not None:
            await error_response(error)(scope, receive, send)
            return "other"
        if (
            scope["method"] == "POST"
            and path.startswith(_RECORDS_PREFIX)
            and path.endswith(_RECORDS_SUFFIX)
            and path.count("/") == 4
            and scope.get("query_string", b"") in (b"", b"wait=true")
        ):
            # The hot path: record submission without the framework's routing.
            namespace = path[len(_RECORDS_PREFIX) : -len(_RECORDS_SUFFIX)]
            try:
                body = await self._read_body(receive)
                response = await submit_record_response(self.node, namespace, body, True)
            except RemembrancerError as e:
                response = error_response(e)
            await response(scope, receive, send)
            return "/v1/namespaces/{namespace}/records"
        if (
            scope["method"] == "GET"
            and path.startswith(_RECORDS_PREFIX)
            and path.endswith(_PROOF_SUFFIX)
            and path.count("/") == 5
            and (query := scope.get("query_string", b"")).startswith(b"index=")
            and query[6:].isdigit()
            and len(query) < 26
        ):
            # The hot read path: ?index=N, JSON, at the latest size.
            namespace = path[len(_RECORDS_PREFIX) : -len(_PROOF_SUFFIX)]
            try:
                response = await inclusion_response(
                    self.node, namespace, int(query[6:]), None, "json"
                )
            except RemembrancerError as e:
                response = error_response(e)
            await response(scope, receive, send)
            return "/v1/namespaces/{namespace}/proofs/inclusion"
        await self.app(scope, receive, send)
        route = scope.get("route")
        return getattr(route, "path", "other") if route is not None else "other"

    async def _read_body(self, receive: Any) -> bytes:
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise FormatError("the client went away", code="client_disconnected")
            body += message.get("body", b"")
            if len(body) > self.max_body:
                raise FormatError(f"request body over {self.max_body} bytes", code="body_too_large")
            if not message.get("more_body"):
                return bytes(body)


def _require_admin(node: Node, request: Request) -> None:
    import hmac

    supplied = request.headers.get("authorization", "")
    token = supplied[7:] if supplied.startswith("Bearer ") else ""
    if not node.admin_token or not hmac.compare_digest(token.encode(), node.admin_token.encode()):
        raise PolicyError(
            "an admin token is required (Authorization: Bearer ...)", code="unauthorized"
        )


async def _in_thread(fn: Callable[..., T], *args: Any) -> T:
    import asyncio

    return await asyncio.to_thread(fn, *args)
