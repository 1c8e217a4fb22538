"""The node's HTTP API in process (ASGI), against real storage: every test runs
on SQLite and on PostgreSQL (the ``store_urls`` fixture of tests/conftest.py)."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from remembrancer.core.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from remembrancer.core.cosignature import CosignatureVerifier
from remembrancer.core.keys import SigningKey
from remembrancer.core.namespace import parse_namespaces
from remembrancer.core.note import Note, Verifier, open_note
from remembrancer.core.rfc6962 import (
    hash_leaf,
    inclusion_proof,
    verify_consistency,
    verify_inclusion,
)
from remembrancer.core.tiles import Tile, TileNodeReader, decode_entry_bundle
from remembrancer.core.tlogproof import TlogProof, verify_tlog_proof
from remembrancer.core.witness import AddCheckpointRequest
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
NAMESPACES = parse_namespaces(yaml.safe_load(EXAMPLE.read_text()))
ACTOR = demo_key("did:vm:actor:demo")
W = [demo_key("did:vm:arbiter:prod-us-east-1"), demo_key("did:vm:arbiter:prod-eu-west-1")]
LOG_KEY = SigningKey.generate()  # a foreign log this node witnesses
FOREIGN = "other.test/dao:vaultmesh"


def rec(i: int):  # type: ignore[no-untyped-def]
    return make_record(
        "dao:vaultmesh",
        "ledger.append@1.0.0",
        ledger_payload(i),
        ACTOR,
        W,
        timestamp=int(time.time()),
    )


def make_node(store_urls: Any, **limits: float) -> Node:
    from remembrancer.core.note import format_vkey

    return Node(
        store=open_store(store_urls.new("node")),
        node_key=SigningKey.generate(),
        origin_prefix="alpha.test",
        namespaces=StaticNamespaces(NAMESPACES),
        limits=Limits(**limits),  # type: ignore[arg-type]
        admin_token="s3cret-admin-token-123",
        witnessed=(WitnessedLog(FOREIGN, (format_vkey(FOREIGN, LOG_KEY.public),)),),
    )


def run(store_urls: Any, body, **limits):  # type: ignore[no-untyped-def]
    async def go() -> None:
        node = make_node(store_urls, **limits)
        app = create_app(node)
        await node.start()
        try:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t"
            ) as client:
                await body(client, node)
        finally:
            await node.stop()

    asyncio.run(go())


def test_submit_prove_and_read_back(store_urls: Any) -> None:
    async def body(c: httpx.AsyncClient, node: Node) -> None:
        records = [rec(i) for i in range(20)]
        answers = await asyncio.gather(
            *(c.post("/v1/namespaces/dao:vaultmesh/records", content=r.leaf) for r in records)
        )
        assert all(a.status_code == 200 for a in answers), answers[0].text
        info = (await c.get("/v1/node")).json()
        verifier = Verifier("alpha.test/dao:vaultmesh", node.node_key.public)
        assert info["vkeys"]["dao:vaultmesh"].startswith("alpha.test/dao:vaultmesh+")
        for a, r in zip(answers, records, strict=True):
            receipt = a.json()
            cp = open_checkpoint(receipt["checkpoint"].encode(), verifier).checkpoint
            proof = [base64.b64decode(h) for h in receipt["proof"]]
            verify_inclusion(receipt["index"], cp.size, hash_leaf(r.leaf), proof, cp.root_hash)
        # Idempotent: byte-identical resubmission returns the same index.
        again = await c.post("/v1/namespaces/dao:vaultmesh/records", content=records[3].leaf)
        assert again.status_code == 200 and again.json()["index"] == answers[3].json()["index"]
        # Reads.
        one = (await c.get("/v1/namespaces/dao:vaultmesh/records/5")).json()
        assert one["index"] == 5 and "record" in one
        by_hash = (
            await c.get(f"/v1/namespaces/dao:vaultmesh/events/{records[7].event_hash_hex}")
        ).json()
        assert by_hash["index"] == answers[7].json()["index"]
        ns = (await c.get("/v1/namespaces/dao:vaultmesh")).json()
        assert ns["size"] == 20 and ns["policy"]["witnesses"]["min_required"] == 2
        assert [n["namespace"] for n in (await c.get("/v1/namespaces")).json()["namespaces"]] == [
            "dao:vaultmesh",
            "fin:clearing",
        ]
        # Proofs as a tlog-proof file, verified offline.
        tp = await c.get(
            "/v1/namespaces/dao:vaultmesh/proofs/inclusion",
            params={"index": 4, "format": "tlog-proof"},
        )
        assert tp.headers["content-type"].startswith("text/x.tlog-proof")
        leaf = node.store.read_entries("dao:vaultmesh", 4, 5)[0]
        verify_tlog_proof(TlogProof.parse(tp.content), leaf, verifier)
        # Consistency between two signed sizes.
        sizes = sorted({a.json()["treeSize"] for a in answers})
        cons = (
            await c.get(
                "/v1/namespaces/dao:vaultmesh/proofs/consistency",
                params={"old": sizes[0], "new": 20},
            )
        ).json()
        old_cp = Checkpoint.parse(Note.from_bytes(cons["checkpoints"][str(sizes[0])].encode()).text)
        new_cp = Checkpoint.parse(Note.from_bytes(cons["checkpoints"]["20"].encode()).text)
        verify_consistency(
            sizes[0],
            20,
            old_cp.root_hash,
            new_cp.root_hash,
            [base64.b64decode(h) for h in cons["proof"]],
        )

    run(store_urls, body)


def test_tiles_are_served_as_tlog_tiles(store_urls: Any) -> None:
    async def body(c: httpx.AsyncClient, node: Node) -> None:
        leaves = [f"entry {i}".encode() for i in range(300)]
        await asyncio.to_thread(node.sequencer.append_raw, "dao:vaultmesh", leaves)
        cp_resp = await c.get("/logs/dao:vaultmesh/checkpoint")
        assert cp_resp.headers["content-type"].startswith("text/plain")
        cp = Checkpoint.parse(Note.from_bytes(cp_resp.content).text)
        assert cp.size == 300
        full = await c.get("/logs/dao:vaultmesh/tile/0/000")
        assert full.status_code == 200 and len(full.content) == 256 * 32
        assert "immutable" in full.headers["cache-control"]
        part = await c.get("/logs/dao:vaultmesh/tile/0/001.p/44")
        assert (
            part.status_code == 200
            and len(part.content) == 44 * 32
            and "immutable" not in part.headers["cache-control"]
        )
        assert (await c.get("/logs/dao:vaultmesh/tile/0/001.p/45")).status_code == 404
        assert (await c.get("/logs/dao:vaultmesh/tile/0/002")).status_code == 404
        assert (await c.get("/logs/dao:vaultmesh/tile/0/x001")).status_code == 400
        bundle = await c.get("/logs/dao:vaultmesh/tile/entries/000")
        assert decode_entry_bundle(bundle.content) == leaves[:256]

        # A tlog-tiles client can rebuild proofs from the served tiles alone.
        async def fetch_one(t: Tile) -> bytes:
            r = await c.get(f"/logs/dao:vaultmesh/{t.path()}")
            assert r.status_code == 200, t.path()
            return r.content

        tiles_needed: list[Tile] = []
        reader = TileNodeReader(lambda ts: (tiles_needed.extend(ts), [b"" for _ in ts])[1], 300)
        try:
            inclusion_proof(270, 300, reader)
        except Exception:
            pass
        fetched = {t: await fetch_one(t) for t in tiles_needed}
        reader = TileNodeReader(lambda ts: [fetched[t] for t in ts], 300)
        proof = inclusion_proof(270, 300, reader)
        verify_inclusion(270, 300, hash_leaf(leaves[270]), proof, cp.root_hash)

    run(store_urls, body)


def test_errors_are_json_with_the_right_status(store_urls: Any) -> None:
    async def body(c: httpx.AsyncClient, node: Node) -> None:
        r = await c.post("/v1/namespaces/dao:vaultmesh/records", content=b"{not json")
        assert r.status_code == 400 and r.json()["error"]["code"] == "json_malformed"
        r = await c.post("/v1/namespaces/fin:clearing/records", content=rec(1).leaf)
        assert r.status_code == 400 and r.json()["error"]["code"] == "namespace_mismatch"
        r = await c.post("/v1/namespaces/dao:nothere/records", content=rec(1).leaf)
        assert r.status_code == 400  # mismatch comes first: the record says dao:vaultmesh
        bad = make_record(
            "dao:vaultmesh",
            "ledger.append@1.0.0",
            ledger_payload(1),
            ACTOR,
            [W[0]],
            timestamp=int(time.time()),
        )
        r = await c.post("/v1/namespaces/dao:vaultmesh/records", content=bad.leaf)
        assert r.status_code == 422 and r.json()["error"]["code"] == "witness_quorum_not_met"
        first = rec(2)
        await c.post("/v1/namespaces/dao:vaultmesh/records", content=first.leaf)
        dup = make_record(
            "dao:vaultmesh",
            "ledger.append@1.0.0",
            ledger_payload(3),
            ACTOR,
            W,
            timestamp=int(time.time()),
            event_id=first.event_id,
        )
        r = await c.post("/v1/namespaces/dao:vaultmesh/records", content=dup.leaf)
        assert r.status_code == 409 and r.json()["error"]["code"] == "event_id_conflict"
        r = await c.post("/v1/namespaces/dao:vaultmesh/records", content=b"x" * 300_000)
        assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
        r = await c.get("/v1/namespaces/dao:vaultmesh/records/99999")
        assert r.status_code == 404
        r = await c.get("/v1/namespaces/NOPE/records/1")
        assert r.status_code == 400
        r = await c.get("/v1/namespaces/dao:vaultmesh/proofs/inclusion", params={"index": "x"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "request_invalid"
        r = await c.get("/nowhere")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        metrics = (await c.get("/metrics")).text
        assert (
            'remembrancer_records_rejected_total{code="witness_quorum_not_met",namespace="dao:vaultmesh"} 1.0'
            in metrics
        )
        assert "remembrancer_log_size" in metrics

    run(store_urls, body)


def test_async_submission_and_receipt_url(store_urls: Any) -> None:
    async def body(c: httpx.AsyncClient, node: Node) -> None:
        r0 = rec(9)
        r = await c.post(
            "/v1/namespaces/dao:vaultmesh/records", params={"wait": "false"}, content=r0.leaf
        )
        assert r.status_code == 202
        url = r.json()["receipt"]
        deadline = time.monotonic() + 10
        while (got := await c.get(url)).status_code != 200:  # poll until integrated
            assert got.status_code == 202 and time.monotonic() < deadline, got.text
            await asyncio.sleep(0.01)
        assert got.json()["eventHash"] == r0.event_hash_hex

    run(store_urls, body)


def test_rate_limit_and_overload(store_urls: Any) -> None:
    async def limited(c: httpx.AsyncClient, node: Node) -> None:
        codes = [(await c.get("/healthz")).status_code for _ in range(8)]
        assert codes.count(429) >= 1
        r = next(x for x in [await c.get("/healthz") for _ in range(3)] if x.status_code == 429)
        assert int(r.headers["retry-after"]) >= 1 and r.json()["error"]["code"] == "rate_limited"

    run(store_urls, limited, client_rate=1, client_burst=5)

    async def overloaded(c: httpx.AsyncClient, node: Node) -> None:
        rs = await asyncio.gather(
            *(
                c.post("/v1/namespaces/dao:vaultmesh/records", content=rec(i).leaf)
                for i in range(50)
            )
        )
        codes = [x.status_code for x in rs]
        assert 503 in codes and 200 in codes, codes
        refused = next(x for x in rs if x.status_code == 503)
        assert refused.headers["retry-after"] and refused.json()["error"]["code"] == "overloaded"
        # Nothing refused is in the log; everything acknowledged is.
        size = node.store.log_state("dao:vaultmesh").size
        assert size == codes.count(200)

    run(store_urls, overloaded, max_pending=5, batch_wait_ms=50)


def test_signatures_checked_in_worker_processes_when_configured(store_urls: Any) -> None:
    """``limits.verify_processes``: a batch of 32 or more records has its
    signatures checked by worker processes, with the verdicts of threads."""

    async def body(c: httpx.AsyncClient, node: Node) -> None:
        bad = rec(99).leaf.replace(b'"treasury"', b'"treasurx"')  # the signatures no longer fit
        leaves = [rec(i).leaf for i in range(40)] + [bad]
        rs = await asyncio.gather(
            *(c.post("/v1/namespaces/dao:vaultmesh/records", content=x) for x in leaves)
        )
        assert [x.status_code for x in rs[:-1]] == [200] * 40
        assert rs[-1].json()["error"]["code"] == "actor_signature_invalid"
        assert node.store.log_state("dao:vaultmesh").size == 40
        assert node.sequencer.stage_cpu.get("worker", 0.0) > 0  # the workers did verify

    run(store_urls, body, verify_processes=True, batch_wait_ms=300)


def test_admin_routes_need_the_token(store_urls: Any) -> None:
    async def body(c: httpx.AsyncClient, node: Node) -> None:
        assert (await c.post("/v1/admin/namespaces/reload")).status_code == 401
        bad = await c.post("/v1/admin/namespaces/reload", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401 and "s3cret" not in bad.text
        ok = await c.post(
            "/v1/admin/namespaces/reload",
            headers={"Authorization": "Bearer s3cret-admin-token-123"},
        )
        assert ok.status_code == 200

    run(store_urls, body)


def test_c2sp_witness_client_flow(store_urls: Any) -> None:
    from remembrancer.core.tiles import TileTree

    leaves = [b"leaf %d" % i for i in range(40)]
    tree = TileTree()
    tree.append_many(leaves)

    def note(size: int, root: bytes | None = None) -> bytes:
        return sign_checkpoint(Checkpoint(FOREIGN, size, root or tree.root(size)), LOG_KEY)

    async def post(c: httpx.AsyncClient, old: int, proof: list[bytes], n: bytes) -> httpx.Response:
        return await c.post(
            "/witness/add-checkpoint", content=AddCheckpointRequest(old, tuple(proof), n).to_bytes()
        )

    async def body(c: httpx.AsyncClient, node: Node) -> None:
        wv = CosignatureVerifier(node.witness_name, node.node_key.public)
        # Bootstrap: old 0 on a fresh witness cosigns.
        r = await post(c, 0, [], note(10))
        assert r.status_code == 200, r.text
        opened = open_note(note(10) + r.content, [wv])
        assert len(opened.verified) == 1
        # A client that does not know the witness's state: old 0 -> 409 with the size.
        r = await post(c, 0, [], note(20))
        assert (
            r.status_code == 409
            and r.headers["content-type"].startswith("text/x.tlog.size")
            and r.text == "10\n"
        )
        # Consistent update.
        r = await post(c, 10, tree.consistency_proof(10, 20), note(20))
        assert r.status_code == 200
        # A forked checkpoint: same size, other root -> 409; inconsistent growth -> 422.
        forked = note(20, root=bytes(32))
        r = await post(c, 20, [], forked)
        assert r.status_code == 409
        fork_tree = TileTree()
        fork_tree.append_many([*leaves[:15], b"evil", *leaves[16:]])
        r = await post(
            c, 20, fork_tree.consistency_proof(20, 30), note(30, root=fork_tree.root(30))
        )
        assert r.status_code == 422 and r.json()["error"]["code"] == "witness_proof_invalid"
        # Unknown origin 404, bad signature 403, old > new 400, garbage 400.
        stranger = sign_checkpoint(Checkpoint("nobody.test/x", 5, bytes(32)), LOG_KEY)
        assert (await post(c, 0, [], stranger)).status_code == 404
        forged = sign_checkpoint(Checkpoint(FOREIGN, 30, tree.root(30)), SigningKey.generate())
        assert (await post(c, 20, tree.consistency_proof(20, 30), forged)).status_code == 403
        assert (await post(c, 40, [], note(30))).status_code == 400
        assert (
            await c.post("/witness/add-checkpoint", content=b"old 01\n\n" + note(30))
        ).status_code == 400
        # The state did not move on any refusal; the latest cosigned is 20.
        got = await c.get(f"/witness/checkpoints/{FOREIGN}")
        assert (
            got.status_code == 200
            and Checkpoint.parse(Note.from_bytes(got.content).text).size == 20
        )
        # Concurrent submissions of the same update: exactly one wins, the other sees 409.
        proof = tree.consistency_proof(20, 40)
        both = await asyncio.gather(post(c, 20, proof, note(40)), post(c, 20, proof, note(40)))
        assert sorted(x.status_code for x in both) == [200, 409]
        metrics = (await c.get("/metrics")).text
        assert 'remembrancer_witness_requests_total{outcome="cosigned"} 3.0' in metrics

    run(store_urls, body)


def test_a_submission_without_waiting_is_prechecked_once(store_urls: Any) -> None:
    """``wait=false`` answers 202 after rules 1 to 4 and queues the record; the
    queued submission does not run them again (one pre-check per record)."""

    async def body(c: httpx.AsyncClient, node: Node) -> None:
        calls: list[str] = []
        precheck = node.sequencer.precheck

        def counted(data: Any) -> Any:
            calls.append("precheck")
            return precheck(data)

        node.sequencer.precheck = counted  # type: ignore[method-assign]
        r = rec(0)
        answer = await c.post("/v1/namespaces/dao:vaultmesh/records?wait=false", content=r.leaf)
        assert answer.status_code == 202, answer.text
        url = answer.json()["receipt"]
        deadline = time.monotonic() + 60
        while (await c.get(url)).status_code != 200:  # 202 while it is being integrated
            assert time.monotonic() < deadline, "no receipt within 60 s"
            await asyncio.sleep(0.01)
        assert calls == ["precheck"]
        # A refusal by rules 1 to 4 still comes back at once.
        stale = make_record("dao:vaultmesh", "ledger.append@1.0.0", ledger_payload(1), ACTOR, W,
                            timestamp=int(time.time()) - 10**6)  # fmt: skip
        refused = await c.post(
            "/v1/namespaces/dao:vaultmesh/records?wait=false", content=stale.leaf
        )
        assert refused.status_code >= 400
        assert refused.json()["error"]["code"] == "timestamp_out_of_window"
        assert calls == ["precheck", "precheck"]

    run(store_urls, body)
