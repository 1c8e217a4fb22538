"""What every router of the node shares: the error answer and its OpenAPI
documentation, body reading under the size limit, the admin check, and the
worker thread every store read runs on."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from remembrancer.core.errors import FormatError, NotFoundError, PolicyError, RemembrancerError
from remembrancer.core.identifiers import NAMESPACE_RE
from remembrancer.node.runtime import Node
from remembrancer.node.statuses import retry_after, status_for

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
TEXT = "text/plain; charset=utf-8"


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict[str, Any]


class ErrorResponse(BaseModel):
    error: ErrorBody


_DESCRIBED = {504: "A quorum of peers did not answer in time", 400: "Malformed request", 401: "Missing or wrong admin token", 403: "Refused by policy",
              404: "Not found", 409: "Conflict with recorded state", 413: "Body too large",
              422: "Did not verify", 429: "Rate limited (see Retry-After)",
              503: "Overloaded or storage unavailable (see Retry-After)",
              507: "The disk holding the store is full (code storage_full)"}  # fmt: skip


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` entry of these error statuses."""
    return {c: {"model": ErrorResponse, "description": _DESCRIBED[c]} for c in codes}


def error_response(e: RemembrancerError) -> JSONResponse:
    """``{"error": {code, message, details}}`` with the status of
    :func:`~remembrancer.node.statuses.status_for` (and ``Retry-After`` for pushback)."""
    return JSONResponse({"error": e.to_dict()}, status_code=status_for(e), headers=retry_after(e))


def check_ns(namespace: str) -> None:
    if not NAMESPACE_RE.match(namespace):
        raise FormatError(f"{namespace!r} is not a namespace name", code="namespace_invalid")


async def read_body(node: Node, request: Request) -> bytes:
    """The request body, refused (``body_too_large``) once over the node's limit."""
    limit = node.limits.max_body_bytes
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise FormatError(f"request body over {limit} bytes", code="body_too_large")
    return bytes(body)


def require_admin(node: Node, request: Request) -> None:
    supplied = request.headers.get("authorization", "")
    token = supplied[7:] if supplied.startswith("Bearer ") else ""
    if not node.admin_token or not hmac.compare_digest(token.encode(), node.admin_token.encode()):
        raise PolicyError(
            "an admin token is required (Authorization: Bearer ...)", code="unauthorized"
        )


def federation_of(node: Node) -> Any:
    if node.federation is None:
        raise NotFoundError("this node is not in a federation", code="federation_not_configured")
    return node.federation


def replicas_of(node: Node) -> Any:
    federation_of(node)
    if node.replicator is None:
        raise NotFoundError("this node keeps no replicas", code="replicas_not_configured")
    return node.replicator


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn`` (a store read, or anything else that may wait) on a worker thread."""
    return await asyncio.to_thread(fn, *args)
