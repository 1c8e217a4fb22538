"""The explorer's pages and JSON in process (ASGI) over real storage (every test
runs on SQLite and on PostgreSQL: the ``store_urls`` fixture of tests/conftest.py):
hostile record content is escaped, pages are bounded index ranges, bad input
gets clear 4xx errors, every HTML page carries a strict CSP, and the live
endpoint moves when the log does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from remembrancer.core.keys import SigningKey
from remembrancer.core.namespace import parse_namespaces
from remembrancer.demo.keys import demo_key
from remembrancer.demo.records import make_record
from remembrancer.explorer.routes import CSP
from remembrancer.explorer.views import Explorer
from remembrancer.log.namespaces import StaticNamespaces
from remembrancer.node.app import create_app
from remembrancer.node.runtime import Node
from remembrancer.storage import open_store

EXAMPLE = (
    Path(__file__).resolve().parents[2] / "src" / "remembrancer" / "examples" / "namespaces.yaml"
)
NS = "dao:vaultmesh"
ACTOR = demo_key("did:vm:actor:demo")
W = [demo_key("did:vm:arbiter:prod-us-east-1"), demo_key("did:vm:arbiter:prod-eu-west-1")]
HOSTILE = '"><script>alert("x")</script><img src=x onerror=alert(1)>'

Body = Callable[[httpx.AsyncClient, Node], Awaitable[None]]


def run(store_urls: Any, body: Body, records: int = 0) -> None:
    async def go() -> None:
        node = Node(
            store=open_store(store_urls.new("node")),
            node_key=SigningKey.generate(),
            origin_prefix="alpha.test",
            namespaces=StaticNamespaces(parse_namespaces(yaml.safe_load(EXAMPLE.read_text()))),
            scheduler_enabled=False,
        )
        app = create_app(node)
        await node.start()
        try:
            for i in range(records):
                await node.submit(record(i))
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                await body(client, node)
        finally:
            await node.stop()

    asyncio.run(go())


def record(i: int, **fields: Any):  # type: ignore[no-untyped-def]
    payload = {"stream": "ops", "data": {"i": i, "note": fields.pop("note", "plain")}}
    return make_record(NS, "ledger.append@1.0.0", payload, ACTOR, W, timestamp=int(time.time()),
                       **fields)  # fmt: skip


def test_hostile_record_content_is_escaped_everywhere(store_urls: Any) -> None:
    async def body(client: httpx.AsyncClient, node: Node) -> None:
        receipt = await node.submit(record(0, event_id=HOSTILE, note=HOSTILE))
        for url in (f"/explorer/namespaces/{NS}", f"/explorer/namespaces/{NS}/records/0"):
            r = await client.get(url)
            assert r.status_code == 200
            assert "<script>alert" not in r.text and "<img src=x" not in r.text
            assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in r.text
            assert r.headers["content-security-policy"] == CSP
            assert r.headers["x-content-type-options"] == "nosniff"
            assert "<script>" not in r.text.replace('<script type="module" src=', "")
        # A search for the hostile event:id finds it (and the redirect is a plain URL).
        r = await client.get(f"/explorer/namespaces/{NS}/search", params={"q": HOSTILE})
        assert (
            r.status_code == 303 and r.headers["location"] == f"/explorer/namespaces/{NS}/records/0"
        )
        # A query echoed in an error is escaped too.
        r = await client.get(f"/explorer/namespaces/{NS}/search", params={"q": HOSTILE + "x"})
        assert r.status_code == 404 and "<script>" not in r.text.replace(
            '<script type="module" src=', ""
        )
        data = (await client.get(f"/v1/explorer/namespaces/{NS}/records/0")).json()
        assert data["event:id"] == HOSTILE and data["eventHash"] == receipt.event_hash

    run(store_urls, body)


def test_log_pages_are_bounded_ranges(store_urls: Any) -> None:
    async def body(client: httpx.AsyncClient, node: Node) -> None:
        first = (await client.get(f"/v1/explorer/namespaces/{NS}", params={"limit": 10})).json()[
            "log"
        ]
        assert [e["index"] for e in first["entries"]] == list(range(34, 24, -1))
        assert first["newer"] is None and first["older"] == 25 and first["oldest"] == 10
        older = (
            await client.get(f"/v1/explorer/namespaces/{NS}", params={"before": 25, "limit": 10})
        ).json()["log"]
        assert [e["index"] for e in older["entries"]] == list(range(24, 14, -1))
        assert older["newer"] == 35
        oldest = (await client.get(f"/v1/explorer/namespaces/{NS}", params={"before": 3})).json()[
            "log"
        ]
        assert [e["index"] for e in oldest["entries"]] == [2, 1, 0] and oldest["older"] is None
        empty = (await client.get(f"/v1/explorer/namespaces/{NS}", params={"before": 0})).json()[
            "log"
        ]
        assert empty["entries"] == []
        assert first["entries"][0]["kind"] == "record" and first["entries"][0]["event:type"]
        # Raw (non-record) entries are listed by hash.
        node.sequencer.append_raw(NS, [b"not a record"])
        raw = (await client.get(f"/v1/explorer/namespaces/{NS}", params={"limit": 1})).json()[
            "log"
        ]["entries"][0]
        assert raw["kind"] == "entry" and raw["entryHash"].startswith("sha256:")
        page = await client.get(f"/explorer/namespaces/{NS}", params={"before": "20", "limit": "5"})
        assert page.status_code == 200 and page.text.count("<tr data-index=") == 5
        assert 'data-index="19"' in page.text and 'data-index="14"' not in page.text

    run(store_urls, body, records=35)


def test_bad_input_gets_clear_4xx_errors(store_urls: Any) -> None:
    async def body(client: httpx.AsyncClient, node: Node) -> None:
        cases = [
            (f"/v1/explorer/namespaces/{NS}?before=6", 404, "index_out_of_range"),
            (f"/v1/explorer/namespaces/{NS}?limit=0", 400, "request_invalid"),
            (f"/v1/explorer/namespaces/{NS}?limit=101", 400, "request_invalid"),
            (f"/v1/explorer/namespaces/{NS}?before=-1", 400, "request_invalid"),
            (f"/v1/explorer/namespaces/{NS}?before=99999999999999999999", 400, "request_invalid"),
            ("/v1/explorer/namespaces/Not-A-Namespace", 400, "request_invalid"),
            ("/v1/explorer/namespaces/dao:elsewhere", 404, "namespace_unknown"),
            (f"/v1/explorer/namespaces/{NS}/records/5", 404, "index_out_of_range"),
            (f"/v1/explorer/namespaces/{NS}/records/x", 400, "request_invalid"),
            (f"/v1/explorer/namespaces/{NS}/records/0/tree?size=9", 404, "index_out_of_range"),
            (f"/v1/explorer/namespaces/{NS}/search?q=", 400, "query_empty"),
            (f"/v1/explorer/namespaces/{NS}/search?q=sha256:12", 400, "query_invalid"),
            (f"/v1/explorer/namespaces/{NS}/search?q=sha256:{'0' * 64}", 404, "record_not_found"),
            (f"/v1/explorer/namespaces/{NS}/search?q=no-such-id", 404, "record_not_found"),
            (f"/v1/explorer/namespaces/{NS}/search?q=5", 404, "index_out_of_range"),
            ("/v1/explorer/anchors?namespace=nope", 400, "namespace_invalid"),
            ("/v1/explorer/anchors?limit=1000", 400, "request_invalid"),
        ]
        for url, status, code in cases:
            r = await client.get(url)
            assert (r.status_code, r.json()["error"]["code"]) == (status, code), url
            assert r.json()["error"]["message"]
        # HTML pages answer with an HTML error page and the same status.
        for url, status, code in [
            (f"/explorer/namespaces/{NS}?before=abc", 400, "before_out_of_range"),
            (f"/explorer/namespaces/{NS}?limit=500", 400, "limit_out_of_range"),
            (f"/explorer/namespaces/{NS}/records/99", 404, "index_out_of_range"),
            (f"/explorer/namespaces/{NS}/records/-1", 400, "index_invalid"),
            ("/explorer/namespaces/dao:elsewhere", 404, "namespace_unknown"),
            ("/explorer/namespaces/%3Cb%3E", 400, "namespace_invalid"),
            ("/explorer/anchors?before=x", 400, "before_out_of_range"),
        ]:
            r = await client.get(url)
            assert r.status_code == status, url
            assert r.headers["content-type"].startswith("text/html") and code in r.text
            assert 'role="alert"' in r.text and "<b>" not in r.text
        r = await client.get("/explorer/static/nope.js")
        assert r.status_code == 404

    run(store_urls, body, records=5)


def test_record_material_and_static_files(store_urls: Any) -> None:
    async def body(client: httpx.AsyncClient, node: Node) -> None:
        m = (await client.get(f"/v1/explorer/namespaces/{NS}/records/4")).json()
        proof = (
            await client.get(f"/v1/namespaces/{NS}/proofs/inclusion", params={"index": 4})
        ).json()
        assert (
            m["receipt"]["proof"] == proof["proof"]
            and m["receipt"]["checkpoint"] == proof["checkpoint"]
        )
        assert m["keys"]["log"] == (await client.get("/v1/node")).json()["vkeys"][NS]
        assert [s["kind"] for s in m["checkpoint"]["signatures"]] == ["log"]
        assert m["checkpoint"]["signatures"][0]["checked_by_node"] is True
        assert [s["sibling"] for s in m["tree"]["path"]] == [[5, 6], [6, 8], [0, 4], [8, 9]]
        assert m["anchored"] is None and m["federation_receipts"] == []
        tree = (
            await client.get(f"/v1/explorer/namespaces/{NS}/records/4/tree", params={"size": 6})
        ).json()
        assert tree["treeSize"] == 6 and len(tree["path"]) == 2 and tree["root"]
        js = await client.get("/explorer/static/verify.js")
        assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
        page = await client.get(f"/explorer/namespaces/{NS}/records/4")
        assert 'data-record-json="/v1/explorer/namespaces/dao:vaultmesh/records/4"' in page.text
        fragment = await client.get(
            f"/explorer/namespaces/{NS}", headers={"X-Explorer-Fragment": "1"}
        )
        assert (
            fragment.status_code == 200
            and "<html" not in fragment.text
            and 'id="log"' in fragment.text
        )
        schema = (await client.get("/openapi.json")).json()["paths"]
        assert "/v1/explorer/namespaces/{namespace}/records/{index}" in schema
        assert not any(p.startswith("/explorer") for p in schema)

    run(store_urls, body, records=9)


def test_the_live_endpoint_moves_with_the_log(store_urls: Any) -> None:
    async def body(client: httpx.AsyncClient, node: Node) -> None:
        first = (await client.get("/v1/explorer/live")).json()
        assert first["sizes"][NS] == 2
        await node.submit(record(2))
        # The answer is cached across clients for a moment: poll until it moves.
        deadline = time.monotonic() + 10
        while (second := (await client.get("/v1/explorer/live")).json())["sizes"][NS] != 3:
            assert second["sizes"][NS] == 2 and time.monotonic() < deadline, second
            await asyncio.sleep(0.05)
        assert second["topics"]["logs"] != first["topics"]["logs"]
        assert second["topics"]["anchors"] == first["topics"]["anchors"]

    run(store_urls, body, records=2)


def test_recent_checkpoints_are_the_newest_whatever_their_spacing(store_urls: Any) -> None:
    async def body(client: httpx.AsyncClient, node: Node) -> None:
        for chunk in [1, 1, 2, 700, 3, 5000, 1, 1, 1, 64, 9000, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2]:
            node.sequencer.append_raw(NS, [b"e"] * chunk)
        every = node.store.checkpoints(NS, limit=10_000)
        explorer = Explorer(node)
        for n in (1, 3, 5, 10, 16, 22, 40):
            assert [c.size for c in explorer.recent_checkpoints(NS, n)] == [
                c.size for c in every[-n:]
            ], n

    run(store_urls, body)
