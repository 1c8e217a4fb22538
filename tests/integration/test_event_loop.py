"""The event loop never waits for the store (issue 16, item 6).

Every store read a route makes runs on a worker thread, so a slow store (a
long query, a lock the writer holds) delays that request only: ``/healthz``
and every other request keep being answered.  Two proofs:

* a store whose reads of one kind block on a gate: while a request is stuck
  in such a read, ``/healthz`` answers (on the old code the read ran on the
  loop, and nothing answered until the gate opened);
* a store that notes every call made on the event loop's thread while a
  request is being served: after a walk over the read routes, the list is
  empty.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from remembrancer.core.keys import SigningKey
from remembrancer.core.namespace import parse_namespaces
from remembrancer.core.note import format_vkey
from remembrancer.demo.keys import demo_key
from remembrancer.demo.records import ledger_payload, make_record
from remembrancer.log.namespaces import StaticNamespaces
from remembrancer.node.app import create_app
from remembrancer.node.config import Limits, WitnessedLog
from remembrancer.node.runtime import Node
from remembrancer.storage import open_store

EXAMPLE = (
    Path(__file__).resolve().parents[2] / "src" / "remembrancer" / "examples" / "namespaces.yaml"
)
NS = "dao:vaultmesh"
ACTOR = demo_key("did:vm:actor:demo")
W = [demo_key("did:vm:arbiter:prod-us-east-1"), demo_key("did:vm:arbiter:prod-eu-west-1")]
LOG_KEY = SigningKey.generate()
FOREIGN = "other.test/dao:vaultmesh"
SAFETY_S = 20.0  # the gate opens by itself after this, so old code fails instead of hanging

IN_REQUEST: contextvars.ContextVar[str | None] = contextvars.ContextVar("in_request", default=None)


class WatchedStore:
    """A real store, wrapped: calls to the methods in ``gated`` made while
    serving ``gated_path`` block while ``gate`` is closed; calls made on
    ``loop_thread`` during a request are noted."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.gate = threading.Event()
        self.gate.set()
        self.gated: set[str] = set()
        self.gated_path = ""
        self.entered = threading.Event()
        self.loop_thread: int | None = None
        self.on_loop: list[str] = []

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            request = IN_REQUEST.get()
            if request is not None and threading.get_ident() == self.loop_thread:
                self.on_loop.append(f"{request}: store.{name}")
            blocks = name in self.gated and request is not None and self.gated_path in request
            if blocks and not self.gate.is_set():
                self.entered.set()
                self.gate.wait(SAFETY_S)
            return value(*args, **kwargs)

        return call


def marking(app: Any) -> Callable[..., Any]:
    """The app, with IN_REQUEST set to ``METHOD path`` while it serves a request."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        token = IN_REQUEST.set(f"{scope['method']} {scope['path']}")
        try:
            await app(scope, receive, send)
        finally:
            IN_REQUEST.reset(token)

    return wrapped


def rec(i: int) -> Any:
    return make_record(NS, "ledger.append@1.0.0", ledger_payload(i), ACTOR, W,
                       timestamp=int(time.time()))  # fmt: skip


def run(store_urls: Any, body: Callable[[httpx.AsyncClient, Node, WatchedStore], Any]) -> None:
    async def go() -> None:
        store = WatchedStore(open_store(store_urls.new("node")))
        node = Node(
            store=store,  # type: ignore[arg-type]
            node_key=SigningKey.generate(),
            origin_prefix="loop.test",
            namespaces=StaticNamespaces(parse_namespaces(yaml.safe_load(EXAMPLE.read_text()))),
            limits=Limits(client_rate=1e6, client_burst=10**6),
            admin_token="loop-admin-token-0123456789",
            witnessed=(WitnessedLog(FOREIGN, (format_vkey(FOREIGN, LOG_KEY.public),)),),
        )
        store.loop_thread = threading.get_ident()
        app = marking(create_app(node, manage_node=False))
        await node.start()
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                await body(client, node, store)
        finally:
            store.gate.set()
            await node.stop()

    asyncio.run(go())


async def _fill(c: httpx.AsyncClient) -> list[Any]:
    records = [rec(i) for i in range(5)]
    for r in records:
        answer = await c.post(f"/v1/namespaces/{NS}/records", content=r.leaf)
        assert answer.status_code == 200, answer.text
    return records


# Each read route, and the store method its read blocks in.
BLOCKED_READS = {
    "inclusion proof (fast path)": ("read_tiles", "/v1/namespaces/{ns}/proofs/inclusion?index=1"),
    "inclusion proof (tlog-proof)": (
        "read_tiles", "/v1/namespaces/{ns}/proofs/inclusion?index=2&format=tlog-proof"),
    "consistency proof": ("read_tiles", "/v1/namespaces/{ns}/proofs/consistency?old=2&new=5"),
    "receipt": ("find_event_hash", "/v1/namespaces/{ns}/receipts/{hash}"),
    "record by hash": ("find_event_hash", "/v1/namespaces/{ns}/events/{hash}"),
    "checkpoint": ("log_state", "/logs/{ns}/checkpoint"),
    "tile": ("log_state", "/logs/{ns}/tile/0/000.p/5"),
    "namespaces": ("log_state", "/v1/namespaces"),
}  # fmt: skip


@pytest.mark.parametrize("route", sorted(BLOCKED_READS))
def test_healthz_answers_while_a_route_waits_for_the_store(store_urls: Any, route: str) -> None:
    method, template = BLOCKED_READS[route]

    async def body(c: httpx.AsyncClient, node: Node, store: WatchedStore) -> None:
        records = await _fill(c)
        url = template.format(ns=NS, hash=records[3].event_hash_hex)
        assert (await c.get("/healthz")).status_code == 200
        store.gated.add(method)
        store.gated_path = url.split("?")[0]
        store.gate.clear()
        # The gate opens by itself after SAFETY_S, so a blocked loop makes the
        # test fail instead of hanging.
        threading.Timer(SAFETY_S, store.gate.set).start()
        slow = asyncio.ensure_future(c.get(url))
        assert await asyncio.to_thread(store.entered.wait, SAFETY_S), "the route read nothing"
        health = await c.get("/healthz")
        answered_while_blocked = not store.gate.is_set()
        store.gate.set()
        assert health.status_code == 200
        assert answered_while_blocked, f"/healthz waited for the store read of {route}"
        answer = await slow
        assert answer.status_code == 200, answer.text

    run(store_urls, body)


def test_no_route_reads_the_store_on_the_event_loop(store_urls: Any) -> None:
    async def body(c: httpx.AsyncClient, node: Node, store: WatchedStore) -> None:
        records = await _fill(c)
        digest = records[2].event_hash_hex
        later = rec(99)
        accepted = await c.post(f"/v1/namespaces/{NS}/records?wait=false", content=later.leaf)
        assert accepted.status_code == 202
        urls = [template.format(ns=NS, hash=digest) for _, template in BLOCKED_READS.values()]
        urls += [
            f"/v1/namespaces/{NS}",
            f"/v1/namespaces/{NS}/governance",
            f"/v1/namespaces/{NS}/records/1",
            f"/v1/namespaces/{NS}/receipts/{digest}?anchored=true",
            f"/v1/namespaces/{NS}/receipts/{later.event_hash_hex}",
            f"/v1/namespaces/{NS}/anchors",
            f"/v1/namespaces/{NS}/anchors/5",
            f"/v1/namespaces/{NS}/messages/{digest}",
            "/v1/namespaces/dao:unknown/proofs/inclusion?index=0",
            f"/logs/{NS}/tile/entries/000.p/5",
            f"/witness/checkpoints/{FOREIGN}",
            "/v1/node",
            "/v1/anchoring",
            "/v1/witnessing",
            "/healthz",
            "/readyz",
            "/metrics",
            "/v1/explorer/overview",
            f"/v1/explorer/namespaces/{NS}",
            f"/explorer/namespaces/{NS}",
        ]
        answered = {}
        for url in urls:
            answered[url] = (await c.get(url)).status_code
        assert all(status < 500 for status in answered.values()), answered
        assert sum(status == 200 for status in answered.values()) >= len(urls) - 8, answered
        assert store.on_loop == [], sorted(set(store.on_loop))

    run(store_urls, body)
