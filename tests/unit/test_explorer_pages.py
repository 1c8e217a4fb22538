"""The explorer's pure parts: the audit path it draws, query parsing, and
structural HTML escaping."""

from __future__ import annotations

from typing import Any

import pytest

from remembrancer.core.errors import FormatError, NotFoundError
from remembrancer.core.rfc6962 import hash_children
from remembrancer.explorer.pages import Html, esc, h, table
from remembrancer.explorer.views import MAX_INDEX, inclusion_path, parse_query
from remembrancer.testing.naive_merkle import NaiveTree


def test_inclusion_path_pairs_each_proof_hash_with_the_range_it_covers() -> None:
    tree = NaiveTree.from_entries([b"entry %d" % i for i in range(70)])
    for size in range(1, 71):
        for index in range(size):
            proof = tree.inclusion_proof(index, size)
            steps = inclusion_path(index, size)
            assert len(steps) == len(proof)
            node = tree.mth(index, index + 1)
            for (parent, (s0, s1), side), p in zip(steps, proof, strict=True):
                assert tree.mth(s0, s1) == p
                node = hash_children(p, node) if side == "left" else hash_children(node, p)
                assert tree.mth(*parent) == node
            assert node == tree.root(size)


def test_inclusion_path_refuses_an_index_outside_the_tree() -> None:
    with pytest.raises(NotFoundError) as e:
        inclusion_path(5, 5)
    assert e.value.code == "index_out_of_range"


@pytest.mark.parametrize(
    ("query", "kind"),
    [
        ("42", "index"),
        (" 7 ", "index"),
        ("sha256:" + "ab" * 32, "eventHash"),
        ("AB" * 32, "eventHash"),
        ("evt-1", "event:id"),
        ("<script>alert(1)</script>", "event:id"),
        ("١٢", "event:id"),  # not ASCII digits: an event:id, not an index
    ],
)
def test_a_query_is_an_index_an_event_hash_or_an_event_id(query: str, kind: str) -> None:
    assert parse_query(query)[0] == kind


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("", "query_empty"),
        ("   ", "query_empty"),
        ("x" * 201, "query_too_long"),
        ("sha256:1234", "query_invalid"),
        (str(MAX_INDEX + 1), "index_out_of_range"),
    ],
)
def test_bad_queries_are_refused_with_a_code(query: str, code: str) -> None:
    with pytest.raises(FormatError) as e:
        parse_query(query)
    assert e.value.code == code


def test_every_value_is_escaped_and_markup_is_not_escaped_twice() -> None:
    hostile = '"><script>alert(1)</script>'
    out = h('<a title="{}">{}</a>', hostile, hostile)
    assert "<script>" not in out and "&quot;&gt;&lt;script&gt;" in out
    assert h("<p>{}</p>", out).count("&amp;") == 0  # already markup: kept as it is
    assert esc(None) == "" and isinstance(esc(1), Html)
    cell = table("caption <b>", ["head <i>"], [[hostile]])
    assert "<b>" not in cell and "<i>" not in cell and "<script>" not in cell


def test_a_template_must_use_every_value() -> None:
    with pytest.raises(TypeError):
        h("<p>{}</p>", "one", "two")
    with pytest.raises(TypeError):
        h("<p>{} {}</p>", "one")


# --- every branch of every page renders, escaped -------------------------------------

NOW = 1_764_100_000
EVIL = '<x>&"'
ANCHOR = {
    "target": "rfc3161:tsa", "root": "sha256:" + "11" * 32, "chain": "TSA", "network": "tsa",
    "txRef": EVIL, "blockNumber": None, "anchorTs": NOW - 5, "observedAt": NOW, "status": "failed",
    "verifier": "v", "finality": {"observedDepth": 1, "requiredDepth": 6, "state": "pending"},
    "evidence": {}, "error": EVIL, "superseded_by": "btc:mainnet/" + EVIL,
    "aggregation": {"leafIndex": 1, "treeSize": 2, "path": ["sha256:" + "22" * 32]},
}  # fmt: skip
LEVEL = {
    "level": "cold", "target": "rfc3161:tsa", "every": "1h", "period": 3600, "confirmations": None,
    "last_anchor_at": NOW - 10, "last_size": 4, "next_due": NOW + 50,
    "last_anchor": {"status": "verified", "txRef": "t", "anchorTs": NOW, "observedAt": NOW,
                    "finality": {"observedDepth": 0, "requiredDepth": 0, "state": "final"},
                    "superseded_by": None, "error": None, "size": 4},
    "backoff": {"failures": 4, "retry_at": NOW + 30, "active": True, "last_error": EVIL},
}  # fmt: skip
CHECKPOINT = {
    "origin": "a/dao:x", "size": 4, "root": "AAAA", "body": "a\n", "note": EVIL, "time": NOW,
    "signatures": [{"name": "a/dao:x", "key_id": "00000001", "kind": "log", "checked_by_node": True},
                   {"name": EVIL, "key_id": "00000002", "kind": "cosignature", "timestamp": NOW,
                    "peer": None, "checked_by_node": False},
                   {"name": "z", "key_id": "00000003", "kind": "unknown", "checked_by_node": None}],
}  # fmt: skip


def _views() -> dict[str, Any]:
    ns_summary = {"namespace": "dao:x", "origin": "a/dao:x", "size": 4, "checkpoint": CHECKPOINT,
                  "configured": True, "at": NOW, "description": EVIL,
                  "anchoring": {"status": "backing_off", "levels": [LEVEL]}}  # fmt: skip
    log = {"namespace": "dao:x", "size": 4, "before": 3, "limit": 2, "first": 1, "newer": 4, "older": 1,
           "oldest": 2, "entries": [
               {"index": 2, "kind": "record", "eventHash": "sha256:" + "33" * 32, "event:id": EVIL,
                "event:type": EVIL, "schema": "s@1.0.0", "actor": "did:key:z", "timestamp": NOW,
                "leafHash": "L", "bytes": 3},
               {"index": 1, "kind": "entry", "entryHash": "sha256:" + "44" * 32, "leafHash": "L", "bytes": 3}]}  # fmt: skip
    path = [{"level": 0, "node": [0, 2], "sibling": [0, 1], "side": "left", "hash": "SGFzaA=="},
            {"level": 1, "node": [0, 4], "sibling": [2, 4], "side": "right", "hash": "SGFzaA=="}]  # fmt: skip
    receipt = {"type": "remembrancer.federation-receipt/v1", "anchor": {"target": "rfc3161:tsa", "tx_hash": EVIL},
               "signatures": [{"node": "n"}], "quorum_met": True, "finalized_at": NOW}  # fmt: skip
    fed = {"federation_id": EVIL, "quorum": 2, "anchor_strategy": "hybrid", "self": "did:a",
           "registry_digest": "sha256:00", "receipts_final": 1,
           "peers": [{"did": "did:a", "endpoint": EVIL, "roles": ["witness"], "status": "active", "score": 1.0,
                      "last_heartbeat": None, "heartbeat_age_s": None, "self": True, "cosign_lag": None},
                     {"did": EVIL, "endpoint": "e", "roles": [], "status": "probation", "score": 2.5,
                      "last_heartbeat": NOW - 3, "heartbeat_age_s": 3, "self": False,
                      "cosign_lag": {"entries": 0, "complete": False, "logs": {}}}],
           "history": [{"peer": EVIL, "old": "active", "new": "probation", "reason": EVIL, "at": NOW}]}  # fmt: skip
    return {
        "overview": {"at": NOW, "node": {}, "namespaces": [{"namespace": "dao:x", "size": 4, "anchoring": "stale"}],
                     "totals": {"namespaces": 1, "entries": 4, "peers": 2, "active_peers": 1,
                                "federation_receipts": 1, "evidence": 1},
                     "witnessing": {"peers": [EVIL], "quorum": 1, "median_ms": 3.5, "split_views": 1},
                     "federation": fed},
        "namespaces": {"namespaces": [ns_summary, {**{k: x for k, x in ns_summary.items() if k != "anchoring"}, "checkpoint": None, "configured": False}], "at": NOW},
        "namespace": {**ns_summary, "log": log},
        "record": {**ns_summary, "index": 2, "kind": "record", "entry": "e30=", "leafHash": "L",
                   "eventHash": "sha256:" + "33" * 32, "event:id": EVIL, "event:type": EVIL, "schema": "s",
                   "actor": "did:key:z", "timestamp": NOW, "bytes": 2, "envelope": {"k": EVIL},
                   "signatures": [{"alg": "Ed25519", "kid": EVIL, "role": "actor"}],
                   "receipt": {"eventHash": "h", "index": 2, "treeSize": 4, "proof": ["SGFzaA=="], "checkpoint": EVIL},
                   "tree": {"treeSize": 4, "root": "Um9vdA==", "path": path},
                   "anchored": {"treeSize": 4, "checkpoint": EVIL, "root": "sha256:00", "proof": [], "anchors": [ANCHOR]},
                   "federation_receipts": [receipt],
                   "keys": {"log": EVIL, "cosigners": [EVIL], "federation": {"quorum": 2, "peers": [
                       {"did": EVIL, "pubkey": "did:key:z", "status": "active", "endpoint": "e"}]}}},
        "witness": {"at": NOW, "window": {"checkpoints": 3, "from": NOW - 60, "to": NOW, "buckets": 12, "per_namespace": 40},
                    "peers": [{"name": EVIL, "vkey": EVIL, "did": None, "url": "u", "cosignatures": 2, "last": NOW,
                               "recent": [{"namespace": "dao:x", "size": 4, "time": NOW, "signed_at": NOW}],
                               "series": [0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]}],
                    "cosigned_by_this_node": [{"origin": EVIL, "size": 3, "time": NOW}],
                    "evidence": [{"evidence_ref": "sha256:" + "55" * 32, "file": EVIL, "kind": "equivocation"}],
                    "split_views": [{"peer": EVIL, "origin": "o", "size": 4, "checkpoint": "", "detail": EVIL}],
                    "stats": {}},
        "anchors": {"at": NOW, "limit": 20, "namespaces": [
            {"namespace": "dao:x", "total": 30, "older": 7,
             "rails": [{"target": "rfc3161:tsa", "chain": "TSA", "statuses": {"failed": 1, "verified": 2},
                        "conflicts": 1, "latest": NOW}],
             "receipts": [{"size": 8, "root": "sha256:" + "11" * 32, "checkpoint": EVIL,
                           "anchors": [{**ANCHOR, "extra": {"future": EVIL}}],
                           "conflicts": [{"superseded": EVIL, "by": EVIL}]}]}]},
    }  # fmt: skip


def test_every_page_renders_every_branch_escaped() -> None:
    from remembrancer.explorer import pages

    v = _views()
    out = {
        "overview": pages.overview(v["overview"]),
        "namespaces": pages.namespaces(v["namespaces"]),
        "namespace": pages.namespace(v["namespace"], q=EVIL, error={"code": "c", "message": EVIL}),
        "record": pages.record(v["record"]),
        "raw record": pages.record(
            {**v["record"], "kind": "entry", "entryHash": "sha256:00", "anchored": None}
        ),
        "tree": pages.tree_page(
            {**v["record"]["tree"], "namespace": "dao:x", "index": 2, "leafHash": "L"}
        ),
        "witness": pages.witness(v["witness"]),
        "anchors": pages.anchors(v["anchors"], EVIL),
        "error": pages.error_main({"code": "x", "message": EVIL}, 404),
    }
    for name, html_text in out.items():
        assert "<x>" not in html_text, name
        assert name == "tree" or "&lt;x&gt;&amp;&quot;" in html_text, name
    assert "aggregation" in out["anchors"] and "future" in out["anchors"]  # unknown fields shown
    assert "superseded by" in out["anchors"] and "Older receipts" in out["anchors"]
    assert "equivocation" in out["witness"] and "Split views" in out["witness"]
    assert "due now" not in out["namespaces"] and "4 failures; retry" in out["namespaces"]
    assert 'data-region="log"' in out["namespace"] and 'aria-invalid="true"' in out["namespace"]
    page = pages.layout(
        title=EVIL, active="overview", main=out["overview"], json_url="/j", node={"did": EVIL}
    )
    assert page.startswith("<!doctype html>") and "<x>" not in page
