"""The explorer's routes: HTML pages under ``/explorer``, their JSON under
``/v1/explorer``, and the static scripts and style sheet.

The node mounts :func:`create_router` and hands it its own error-to-status
mapping (only the node knows HTTP status codes).  JSON errors go through the
node's error handler; HTML pages render errors as pages with that status.
Every HTML answer carries a strict Content-Security-Policy: scripts and
styles from this origin only, nothing inline, no framing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any, TypeVar
from urllib.parse import quote

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.status import HTTP_303_SEE_OTHER

from remembrancer.core.errors import FormatError, NotFoundError, RemembrancerError
from remembrancer.core.identifiers import NAMESPACE_PATTERN
from remembrancer.explorer import pages
from remembrancer.explorer.source import ExplorerSource
from remembrancer.explorer.views import DEFAULT_PAGE, MAX_INDEX, MAX_PAGE, Explorer

T = TypeVar("T")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")  # fmt: skip
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
FRAGMENT_HEADER = "x-explorer-fragment"
_TYPES = {"css": "text/css; charset=utf-8", "js": "text/javascript; charset=utf-8"}
NS_PATH = Path(pattern=NAMESPACE_PATTERN, max_length=127)


def create_router(
    source: ExplorerSource,
    *,
    status_for: Callable[[RemembrancerError], int],
    responses: Mapping[int | str, dict[str, Any]],
) -> APIRouter:
    """The explorer's routes over ``source``; ``status_for`` maps an error to its
    HTTP status, ``responses`` documents the JSON routes' error answers."""
    explorer = Explorer(source)
    router = APIRouter()
    errs = dict(responses)

    async def run(fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    async def render(request: Request, *, title: str, active: str, json_url: str,
                     build: Callable[[], Any], body: Callable[[Any], pages.Html], live: str = "",
                     page: str = "") -> Response:  # fmt: skip
        try:
            value = await run(build)
            main = body(value)
            status = 200
        except RemembrancerError as e:
            status = status_for(e)
            main = pages.error_main(e.to_dict(), status)
            title, live = "Not available" if status == 404 else "Error", ""
        return html_response(request, title=title, active=active, json_url=json_url, main=main,
                             status=status, live=live, page=page)  # fmt: skip

    def html_response(request: Request, *, title: str, active: str, json_url: str, main: pages.Html,
                      status: int, live: str = "", page: str = "") -> Response:  # fmt: skip
        text: str = main
        if not request.headers.get(FRAGMENT_HEADER):
            text = pages.layout(title=title, active=active, main=main, json_url=json_url,
                                node=source.info(), live=live, page=page)  # fmt: skip
        return HTMLResponse(text, status_code=status, headers=SECURITY_HEADERS)

    def int_param(request: Request, name: str, default: int | None, lo: int, hi: int) -> int | None:
        raw = request.query_params.get(name)
        if raw is None or raw == "":
            return default
        if not (raw.isascii() and raw.isdigit()) or not lo <= int(raw) <= hi:
            raise FormatError(f"{name} must be a whole number from {lo} to {hi}",
                              code=f"{name}_out_of_range")  # fmt: skip
        return int(raw)

    # --- JSON ------------------------------------------------------------------------
    tags: list[str | Enum] = ["explorer"]

    @router.get("/v1/explorer/overview", tags=tags, responses=errs,
                summary="Explorer: node, federation peers and totals")  # fmt: skip
    async def overview_json() -> dict[str, Any]:
        return await run(explorer.overview)

    @router.get("/v1/explorer/namespaces", tags=tags, responses=errs,
                summary="Explorer: every namespace with its checkpoint, cosigners and cadence")  # fmt: skip
    async def namespaces_json() -> dict[str, Any]:
        return await run(explorer.namespaces_view)

    @router.get("/v1/explorer/namespaces/{namespace}", tags=tags, responses=errs,
                summary="Explorer: one namespace and a page of its log (newest first)")  # fmt: skip
    async def namespace_json(namespace: str = NS_PATH,
                             before: int | None = Query(default=None, ge=0, le=MAX_INDEX),
                             limit: int = Query(default=DEFAULT_PAGE, ge=1, le=MAX_PAGE)) -> dict[str, Any]:  # fmt: skip
        return await run(explorer.namespace, namespace, before, limit)

    @router.get("/v1/explorer/namespaces/{namespace}/search", tags=tags, responses=errs,
                summary="Explorer: find a record by index, eventHash or event:id")  # fmt: skip
    async def search_json(
        namespace: str = NS_PATH, q: str = Query(max_length=1000)
    ) -> dict[str, Any]:
        return await run(explorer.search, namespace, q)

    @router.get("/v1/explorer/namespaces/{namespace}/records/{index}", tags=tags, responses=errs,
                summary="Explorer: a record with its proof, checkpoint, anchors, receipts and keys")  # fmt: skip
    async def record_json(
        namespace: str = NS_PATH, index: int = Path(ge=0, le=MAX_INDEX)
    ) -> dict[str, Any]:
        return await run(explorer.record, namespace, index)

    @router.get("/v1/explorer/namespaces/{namespace}/records/{index}/tree", tags=tags, responses=errs,
                summary="Explorer: a record's inclusion path up to the root")  # fmt: skip
    async def tree_json(namespace: str = NS_PATH, index: int = Path(ge=0, le=MAX_INDEX),
                        size: int | None = Query(default=None, ge=1, le=MAX_INDEX)) -> dict[str, Any]:  # fmt: skip
        return await run(explorer.tree, namespace, index, size)

    @router.get("/v1/explorer/witness", tags=tags, responses=errs,
                summary="Explorer: cosignatures per witness over time, evidence")  # fmt: skip
    async def witness_json() -> dict[str, Any]:
        return await run(explorer.witness)

    @router.get("/v1/explorer/anchors", tags=tags, responses=errs,
                summary="Explorer: anchor receipts per namespace and rail, conflicts")  # fmt: skip
    async def anchors_json(namespace: str | None = Query(default=None, max_length=127),
                           before: int | None = Query(default=None, ge=0, le=MAX_INDEX),
                           limit: int = Query(default=20, ge=1, le=MAX_PAGE)) -> dict[str, Any]:  # fmt: skip
        return await run(explorer.anchors, namespace or None, before, limit)

    @router.get("/v1/explorer/live", tags=tags, responses=errs,
                summary="Explorer: one version per topic (logs, anchors, peers) for live pages")  # fmt: skip
    async def live_json() -> JSONResponse:
        value = await run(explorer.live)
        return JSONResponse(value, headers={"Cache-Control": "no-store"})

    # --- HTML ------------------------------------------------------------------------
    @router.get("/explorer", include_in_schema=False)
    @router.get("/explorer/", include_in_schema=False)
    async def overview_page(request: Request) -> Response:
        return await render(request, title="Overview", active="overview", json_url="/v1/explorer/overview",
                            build=explorer.overview, body=pages.overview, live="logs anchors peers",
                            page="overview")  # fmt: skip

    @router.get("/explorer/namespaces", include_in_schema=False)
    async def namespaces_page(request: Request) -> Response:
        return await render(request, title="Namespaces", active="namespaces", json_url="/v1/explorer/namespaces",
                            build=explorer.namespaces_view, body=pages.namespaces, live="logs anchors",
                            page="namespaces")  # fmt: skip

    @router.get("/explorer/namespaces/{namespace}", include_in_schema=False)
    async def namespace_page(request: Request, namespace: str) -> Response:
        q = quote(namespace, safe=":")

        def build() -> Any:
            before = int_param(request, "before", None, 0, MAX_INDEX)
            limit = int_param(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
            return explorer.namespace(namespace, before, limit or DEFAULT_PAGE)

        suffix = "?" + request.url.query if request.url.query else ""
        return await render(request, title=namespace, active="namespaces",
                            json_url=f"/v1/explorer/namespaces/{q}{suffix}", build=build,
                            body=pages.namespace, live="logs anchors", page="namespace")  # fmt: skip

    @router.get("/explorer/namespaces/{namespace}/search", include_in_schema=False)
    async def search_page(request: Request, namespace: str) -> Response:
        query = request.query_params.get("q", "")
        try:
            found = await run(explorer.search, namespace, query)
        except RemembrancerError as e:
            status = status_for(e)
            if e.code in ("namespace_invalid", "namespace_unknown"):
                return html_response(request, title="Not available", active="namespaces",
                                     json_url="/v1/explorer/namespaces", status=status,
                                     main=pages.error_main(e.to_dict(), status))  # fmt: skip
            view = await run(explorer.namespace, namespace, None, DEFAULT_PAGE)
            main = pages.namespace(view, q=query, error=e.to_dict())
            return html_response(request, title=namespace, active="namespaces",
                                 json_url=f"/v1/explorer/namespaces/{quote(namespace, safe=':')}",
                                 main=main, status=status, page="namespace")  # fmt: skip
        return RedirectResponse(found["url"], status_code=HTTP_303_SEE_OTHER)

    @router.get("/explorer/namespaces/{namespace}/records/{index}", include_in_schema=False)
    async def record_page(request: Request, namespace: str, index: str) -> Response:
        q = quote(namespace, safe=":")
        return await render(request, title=f"{namespace} #{index}", active="namespaces",
                            json_url=f"/v1/explorer/namespaces/{q}/records/{quote(index)}",
                            build=lambda: explorer.record(namespace, _index(index)), body=pages.record,
                            live="anchors", page="record")  # fmt: skip

    @router.get("/explorer/namespaces/{namespace}/records/{index}/tree", include_in_schema=False)
    async def tree_page(request: Request, namespace: str, index: str) -> Response:
        q = quote(namespace, safe=":")

        def build() -> Any:
            size = int_param(request, "size", None, 1, MAX_INDEX)
            return explorer.tree(namespace, _index(index), size)

        return await render(request, title=f"Tree of {namespace} #{index}", active="namespaces",
                            json_url=f"/v1/explorer/namespaces/{q}/records/{quote(index)}/tree",
                            build=build, body=pages.tree_page, page="tree")  # fmt: skip

    @router.get("/explorer/witness", include_in_schema=False)
    async def witness_page(request: Request) -> Response:
        return await render(request, title="Witness activity", active="witness", json_url="/v1/explorer/witness",
                            build=explorer.witness, body=pages.witness, live="logs peers", page="witness")  # fmt: skip

    @router.get("/explorer/anchors", include_in_schema=False)
    async def anchors_page(request: Request) -> Response:
        selected = request.query_params.get("namespace") or None

        def build() -> Any:
            before = int_param(request, "before", None, 0, MAX_INDEX)
            return explorer.anchors(selected, before, 20)

        suffix = "?" + request.url.query if request.url.query else ""
        return await render(request, title="Anchors", active="anchors", json_url=f"/v1/explorer/anchors{suffix}",
                            build=build, body=lambda v: pages.anchors(v, selected), live="anchors",
                            page="anchors")  # fmt: skip

    @router.get("/explorer/static/{name}", include_in_schema=False)
    async def static(request: Request, name: str) -> Response:
        if name not in pages.STATIC_FILES:
            raise NotFoundError("no such explorer file", code="not_found")
        versioned = request.query_params.get("v") == pages.STATIC_VERSION
        headers = {"Cache-Control": "public, max-age=31536000, immutable" if versioned else "no-cache",
                   "X-Content-Type-Options": "nosniff"}  # fmt: skip
        return Response(pages.static_file(name), media_type=_TYPES[name.rsplit(".", 1)[1]],
                        headers=headers)  # fmt: skip

    return router


def _index(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_INDEX:
        raise FormatError("an index is a whole number", code="index_invalid")
    return int(text)


__all__ = ["CSP", "create_router"]
