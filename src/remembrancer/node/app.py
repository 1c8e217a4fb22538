"""The node's ASGI application: the ``/v1`` API, tlog-tiles, the witness API,
the federation, replicas, admin, health and metrics, and the explorer.

:func:`create_app` builds the FastAPI app from one router per concern
(:mod:`remembrancer.node.routes`), puts :class:`GuardMiddleware` in front
of everything (outside the framework's own middleware, so that the two hot
paths it answers itself skip that stack) and installs the error handlers.  Every error answer is ``{"error": {"code",
"message", "details"}}`` with the status of
:func:`~remembrancer.node.statuses.status_for` (only :mod:`remembrancer.node`
knows HTTP statuses), and every route documents its error answers in the
OpenAPI document.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute

from remembrancer.core.errors import FormatError, RemembrancerError
from remembrancer.explorer.routes import create_router as create_explorer_router
from remembrancer.node.middleware import GuardMiddleware
from remembrancer.node.routes import admin, federation, ops, records, replicas, tiles, witness
from remembrancer.node.routes.common import error_response, errors
from remembrancer.node.runtime import Node
from remembrancer.node.statuses import status_for

__all__ = ["GuardMiddleware", "create_app", "error_response", "status_for"]

_NOT_ROUTED = {404: "not_found", 405: "method_not_allowed"}
_CONCERNS = (records, tiles, witness, federation, replicas, admin, ops)


class NodeApp(FastAPI):
    """The FastAPI app with :class:`GuardMiddleware` as its outermost layer.

    ``add_middleware`` would put the guard inside the framework's stack (its
    server-error, body-limit and telemetry layers); a record submission or an
    inclusion proof answered by the guard does not need them, and they cost
    about 15 µs per request.  Every other request goes through the guard
    into the whole stack as before."""

    def guard(self, node: Node) -> None:
        self._guard = GuardMiddleware(super().__call__, node)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._guard(scope, receive, send)


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

    app = NodeApp(
        title="Remembrancer node",
        version=node.info()["version"],
        description="Verifiable, namespaced, append-only logs with C2SP checkpoints and witnessing.",
        lifespan=lifespan,
        responses=errors(400),
    )
    app.state.node = node
    routes: list[BaseRoute] = []  # every route of every router, for the Allow header

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
        # The framework's own answers (no route, wrong method), in the error format.
        code = _NOT_ROUTED.get(e.status_code, "http_error")
        headers = dict(e.headers or {})
        if code == "method_not_allowed":
            # Starlette names only the first matching route's methods; a path
            # served by several routes (GET and POST) allows all of theirs.
            allowed: set[str] = set()
            for route in routes:
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

    app.guard(node)
    routers = [concern.create_router(node) for concern in _CONCERNS]
    # The explorer (docs/explorer.md) gets the node's error-to-status mapping.
    routers.append(create_explorer_router(node, status_for=status_for, responses=errors(400, 404)))
    for router in routers:
        app.include_router(router)
        routes.extend(router.routes)
    return app
