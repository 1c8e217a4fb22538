"""Records and proofs: submission and receipts, the node and its namespaces,
records by index or hash, cross-namespace messages, inclusion and consistency
proofs, anchor receipts.

:func:`submit_record_response` and :func:`inclusion_response` also serve the
guard middleware's fast paths (record submission, ``?index=N`` proofs)."""

from __future__ import annotations

import base64
import binascii
from typing import Any, Final

import msgspec
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from remembrancer.core.anchor import AnchorReceipt
from remembrancer.core.errors import FormatError, NotFoundError, PushbackError, RemembrancerError
from remembrancer.core.identifiers import NAMESPACE_RE
from remembrancer.core.jcs import parse_sha256_hex
from remembrancer.core.record import Record
from remembrancer.core.tlogproof import TlogProof
from remembrancer.node.routes.common import (
    TLOG_PROOF_TYPE,
    ErrorResponse,
    check_ns,
    errors,
    in_thread,
    read_body,
)
from remembrancer.node.runtime import Node
from remembrancer.node.statuses import outcome_status
from remembrancer.storage.base import StoredCheckpoint

_encode_json: Final = msgspec.json.Encoder().encode
_b2a: Final = binascii.b2a_base64


def create_router(node: Node) -> APIRouter:
    router = APIRouter()

    @router.post(
        "/v1/namespaces/{namespace}/records",
        responses={
            200: {"description": "The receipt: the record is durably in the log"},
            202: {"description": "Accepted; poll the receipt URL"},
            **errors(400, 403, 404, 409, 413, 422, 429, 503, 507),
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
        return await submit_record_response(node, namespace, await read_body(node, request), wait)

    @router.get("/v1/namespaces/{namespace}/receipts/{event_hash}",
                responses={200: {"description": "The receipt"}, 202: {"description": "Still pending"},
                           **errors(400, 404)})  # fmt: skip
    async def get_receipt(namespace: str, event_hash: str, anchored: bool = False) -> Response:
        """The receipt of a record submitted with ``wait=false`` (or any admitted
        record); ``anchored=true``: at the earliest anchored checkpoint covering it,
        with that checkpoint's anchors."""
        check_ns(namespace)
        digest = parse_sha256_hex(event_hash)
        task = node.pending.get(f"{namespace}/{event_hash}")
        if task is not None and not task.done():
            return JSONResponse({"status": "pending", "eventHash": event_hash},
                                status_code=outcome_status("pending"))  # fmt: skip
        if task is not None and not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if isinstance(exc, RemembrancerError):
                raise exc
        receipt = await in_thread(lambda: node.receipt_for(namespace, digest, anchored=anchored))
        return JSONResponse(receipt.to_dict())

    # --- node and namespaces ----------------------------------------------------
    @router.get("/v1/node", summary="This node's identity and keys")
    async def node_info() -> dict[str, Any]:
        return node.info()

    @router.get("/v1/namespaces", summary="Namespaces hosted here")
    async def namespaces() -> dict[str, Any]:
        def read() -> list[dict[str, Any]]:
            out = []
            for ns in sorted(node.namespaces.current()):
                state = node.store.log_state(ns)
                size = state.size if state else 0
                out.append({"namespace": ns, "origin": node.sequencer.origin(ns), "size": size})
            return out

        return {"namespaces": await in_thread(read)}

    @router.get("/v1/namespaces/{namespace}", responses=errors(400, 404))
    async def namespace(namespace: str) -> dict[str, Any]:
        """Policy (effective, after governance), size, latest checkpoint, cadence."""
        check_ns(namespace)
        return await in_thread(node.namespace_view, namespace)

    @router.get("/v1/namespaces/{namespace}/governance", responses=errors(400, 404))
    async def namespace_governance(namespace: str) -> dict[str, Any]:
        """Governance of a namespace: its rule (admins, voters, threshold), proposals
        waiting for votes, approved changes (in effect or scheduled), the cadence now."""
        check_ns(namespace)
        return await in_thread(node.sequencer.governance_view, namespace)

    @router.get("/v1/namespaces/{namespace}/records/{index}", responses=errors(400, 404))
    async def record_at(namespace: str, index: int) -> dict[str, Any]:
        check_ns(namespace)
        if not 0 <= index < 2**63:
            raise FormatError("index out of range", code="index_out_of_range")
        return await in_thread(node.record_at, namespace, index)

    @router.get("/v1/namespaces/{namespace}/events/{event_hash}", responses=errors(400, 404))
    async def record_by_hash(namespace: str, event_hash: str) -> dict[str, Any]:
        """Look a record up by its ``eventHash`` (``sha256:<hex>``)."""
        check_ns(namespace)
        digest = parse_sha256_hex(event_hash)

        def read() -> dict[str, Any]:
            found = node.store.find_event_hash(namespace, digest)
            if found is None:
                raise NotFoundError("no record with that eventHash", code="record_not_found")
            return node.record_at(namespace, found.index)

        return await in_thread(read)

    # --- cross-namespace messages (docs/messaging.md) ---------------------------------
    @router.post(
        "/v1/namespaces/{namespace}/messages",
        responses={
            200: {"description": "Delivered: the delivery (and the answer of a query or"
                                 " invoke), each with its receipt and tlog-proof"},
            202: {"description": "Relayed to the target's home node; poll the delivery URL"},
            **errors(400, 403, 404, 409, 413, 422, 429, 503),
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
        check_ns(namespace)
        if node.namespace_limits.take(namespace) > 0:  # a delivery writes records there
            raise PushbackError(
                f"{namespace} is over its record rate", code="rate_limited", retry_after=1
            )
        posted = await node.messaging.post(namespace, await read_body(node, request), wait)
        return JSONResponse(posted.view, status_code=outcome_status(posted.outcome))

    @router.get("/v1/namespaces/{namespace}/messages/{event_hash}", responses=errors(400, 404))
    async def message_delivery(namespace: str, event_hash: str) -> dict[str, Any]:
        """The delivery into NAMESPACE of the message with this ``eventHash`` (and
        its answer), with receipts and tlog-proofs at the latest checkpoint."""
        check_ns(namespace)
        return await node.messaging.delivery_view(namespace, parse_sha256_hex(event_hash))

    # --- proofs ------------------------------------------------------------------
    @router.get("/v1/namespaces/{namespace}/proofs/inclusion",
                responses={200: {"description": "JSON, or a c2sp.org/tlog-proof@v1 file with format=tlog-proof",
                                 "content": {"application/json": {}, TLOG_PROOF_TYPE: {}}},
                           **errors(400, 404)})  # fmt: skip
    async def proof_inclusion(namespace: str, index: int = Query(ge=0, lt=2**63),
                              size: int | None = Query(default=None, ge=1, lt=2**63),
                              format: str = Query(default="json", pattern="^(json|tlog-proof)$")) -> Response:  # fmt: skip
        return await inclusion_response(node, namespace, index, size, format)

    @router.get("/v1/namespaces/{namespace}/proofs/consistency", responses=errors(400, 404))
    async def proof_consistency(namespace: str, old: int = Query(ge=1, lt=2**63),
                                new: int = Query(ge=1, lt=2**63)) -> dict[str, Any]:  # fmt: skip
        check_ns(namespace)
        if old > new:
            raise FormatError("old must not exceed new", code="size_out_of_range")

        def read() -> tuple[list[bytes], dict[int, StoredCheckpoint | None]]:
            node.require_namespace(namespace)
            proof = node.sequencer.proof_consistency(namespace, old, new)
            return proof, {s: node.store.checkpoint_at(namespace, s) for s in (old, new)}

        proof, notes = await node.proof_lane.run(read)
        return {"namespace": namespace, "old": old, "new": new,
                "proof": [base64.b64encode(h).decode() for h in proof],
                "checkpoints": {str(s): (c.note.decode() if c else None) for s, c in notes.items()}}  # fmt: skip

    # --- anchoring -------------------------------------------------------------------
    @router.get("/v1/anchoring", summary="Anchoring health of every namespace")
    async def anchoring() -> dict[str, Any]:
        return {"namespaces": await in_thread(node.scheduler.health_all)}

    @router.get("/v1/namespaces/{namespace}/anchors", responses=errors(400, 404))
    async def anchors(namespace: str, after: int = Query(default=-1, ge=-1, lt=2**63),
                      limit: int = Query(default=50, ge=1, le=500)) -> dict[str, Any]:  # fmt: skip
        """Anchor receipts of a log, by checkpoint size."""
        check_ns(namespace)

        def read() -> list[AnchorReceipt]:
            node.require_namespace(namespace)
            return node.scheduler.receipts_page(namespace, after=after, limit=limit)

        page = await in_thread(read)
        return {"namespace": namespace, "receipts": [r.to_dict() for r in page]}

    @router.get("/v1/namespaces/{namespace}/anchors/{size}", responses=errors(400, 404))
    async def anchor_receipt(namespace: str, size: int) -> dict[str, Any]:
        """The anchor receipt of the checkpoint at ``size``."""
        check_ns(namespace)
        if not 0 < size < 2**63:
            raise FormatError("size out of range", code="size_out_of_range")
        receipt = await in_thread(node.scheduler.receipt, namespace, size)
        if receipt is None:
            raise NotFoundError(
                f"no anchors for {namespace} at size {size}", code="anchor_receipt_not_found"
            )
        return receipt.to_dict()

    return router


async def submit_record_response(node: Node, namespace: str, body: bytes, wait: bool) -> Response:
    check_ns(namespace)
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
                                status_code=outcome_status("pending"), headers={"Location": url})  # fmt: skip
        receipt = await node.submit(record)
    except RemembrancerError as e:
        node.metrics.rejected.labels(
            namespace if NAMESPACE_RE.match(namespace) else "-", e.code
        ).inc()
        raise
    # msgspec's encoder: the same JSON value as json.dumps, written in a fifth of
    # the time (non-ASCII text, the notes' em dash, as UTF-8 rather than escaped).
    return Response(_encode_json(receipt.to_dict()), media_type="application/json")


async def inclusion_response(
    node: Node, namespace: str, index: int, size: int | None, fmt: str
) -> Response:
    check_ns(namespace)

    def read() -> tuple[list[bytes], int, bytes | None]:
        node.require_namespace(namespace)
        proof, state = node.sequencer.proof_inclusion(namespace, index, size)
        if size is None or size == state.size:
            return proof, state.size, state.checkpoint
        stored = node.store.checkpoint_at(namespace, size)
        return proof, size, stored.note if stored else None

    proof, size, note = await node.proof_lane.run(read)
    if fmt == "tlog-proof":
        if note is None:
            raise NotFoundError(f"no signed checkpoint at size {size}", code="checkpoint_not_found")
        return Response(TlogProof(index, tuple(proof), note).to_bytes(), media_type=TLOG_PROOF_TYPE)
    body = {"namespace": namespace, "index": index, "treeSize": size,
            "proof": [_b2a(h, newline=False).decode("ascii") for h in proof],
            "checkpoint": note.decode() if note else None}  # fmt: skip
    # Written as the receipt is (msgspec, base64 by binascii): the proof is the
    # node's most requested answer.
    return Response(_encode_json(body), media_type="application/json")
