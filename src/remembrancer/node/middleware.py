"""The guard in front of every route: per-client rate limit, declared body
size, the per-request deadline, request metrics, 5xx logging, and the two hot
paths (record submission, ``?index=N`` inclusion proofs) served without the
framework's routing."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import MutableMapping
from typing import Any

from starlette.responses import Response

from remembrancer.core.errors import FormatError, PushbackError, RemembrancerError
from remembrancer.node.ha import forward
from remembrancer.node.routes.common import error_response
from remembrancer.node.routes.records import inclusion_response, submit_record_response
from remembrancer.node.runtime import Node

log = logging.getLogger("remembrancer.http")

_ADMIN_PREFIX = "/v1/admin/"
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FORWARDED_ANSWER = 64 << 20  # bytes of the leader's answer to a forwarded write
_PROOF_SUFFIX = "/proofs/inclusion"
_RECORDS_PREFIX = "/v1/namespaces/"
_RECORDS_SUFFIX = "/records"
_COUNTERS_KEPT = 4096  # (route, method, status) children of the request counter kept at hand


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
        self._counters: dict[
            tuple[str, str, int], Any
        ] = {}  # the metric's children, looked up once

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
        key = (path, scope["method"], status[0])
        counter = self._counters.get(key)
        if counter is None:
            counter = node.metrics.requests.labels(path, scope["method"], str(status[0]))
            if len(self._counters) < _COUNTERS_KEPT:
                self._counters[key] = counter
        counter.inc()
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
        ha = self.node.ha
        if ha is not None and scope["method"] not in _READ_METHODS and not ha.leading():
            # Several processes: a write reaching a follower goes to the leader.
            try:
                body = await self._read_body(receive)
                query = scope.get("query_string", b"").decode("latin-1")
                status, headers, content = await forward(
                    ha, scope["method"], path + (f"?{query}" if query else ""), body,
                    {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]},
                    self.request_timeout, FORWARDED_ANSWER,
                )  # fmt: skip
                response: Response = Response(content, status_code=status, headers=headers)
            except RemembrancerError as e:
                response = error_response(e)
            await response(scope, receive, send)
            return "forwarded"
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
