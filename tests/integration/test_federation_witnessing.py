"""Witnessing between peers with real node processes on loopback: every
checkpoint of every node is cosigned by its peers (C2SP tlog-witness), and the
cosigned checkpoint is what the node then serves and puts in tlog-proofs.
Three nodes on SQLite and on PostgreSQL, five on SQLite."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from remembrancer.core.checkpoint import open_checkpoint
from remembrancer.core.cosignature import parse_cosigner_vkey
from remembrancer.core.note import parse_vkey
from remembrancer.core.tlogproof import TlogProof, verify_tlog_proof
from remembrancer.demo.keys import demo_key
from remembrancer.demo.procs import init_node, wire_witnessing
from remembrancer.demo.records import ledger_payload, make_record
from remembrancer.storage import open_store


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read()  # type: ignore[no-any-return]


def _submit(url: str, body: bytes) -> dict:  # type: ignore[type-arg]
    req = urllib.request.Request(f"{url}/v1/namespaces/dao:vaultmesh/records", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("count", "store_urls"),
    [(3, "sqlite"), (5, "sqlite"), pytest.param(3, "postgres", marks=pytest.mark.postgres)],
    indirect=["store_urls"],
)
def test_checkpoints_are_cosigned_by_a_quorum_of_peers(
    tmp_path: Path, count: int, store_urls: Any
) -> None:
    nodes = [init_node(tmp_path / f"n{i}", origin_prefix=f"n{i}.test") for i in range(count)]
    urls = [store_urls.new(f"n{i}") for i in range(count)]
    for n, url in zip(nodes, urls, strict=True):
        n.edit_config(scheduler={"enabled": False})
        if store_urls.backend == "postgres":  # else the SQLite file in the node's directory
            n.edit_config(storage=url)
    quorum = count - 1
    wire_witnessing(nodes, quorum=quorum)
    for n in nodes:
        n.start()
    try:
        actor = demo_key("did:vm:actor:demo")
        w = [demo_key("did:vm:arbiter:prod-us-east-1"), demo_key("did:vm:arbiter:prod-eu-west-1")]
        for round_ in range(3):
            for i, n in enumerate(nodes):
                rec = make_record("dao:vaultmesh", "ledger.append@1.0.0", ledger_payload(round_ * 10 + i), actor, w,
                                  timestamp=int(time.time()))  # fmt: skip
                _submit(n.url, rec.leaf)
        witness_vkeys = [parse_cosigner_vkey(n.info["witness"]["vkey"]) for n in nodes]
        for i, n in enumerate(nodes):
            vkey = parse_vkey(n.info["vkeys"]["dao:vaultmesh"])
            others = [v for j, v in enumerate(witness_vkeys) if j != i]
            deadline = time.monotonic() + 20
            while True:
                note = _get(f"{n.url}/logs/dao:vaultmesh/checkpoint")
                signed = open_checkpoint(note, vkey, others)
                if signed.checkpoint.size == 3 and len(signed.cosignatures) >= quorum:
                    break
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"node {i}: {len(signed.cosignatures)} cosignatures at size {signed.checkpoint.size}\n{n.log_tail()}"
                    )
                time.sleep(0.05)
            # The served tlog-proof carries the cosignatures: a policy of quorum witnesses verifies offline.
            proof = TlogProof.parse(
                _get(
                    f"{n.url}/v1/namespaces/dao:vaultmesh/proofs/inclusion?index=1&format=tlog-proof"
                )
            )
            leaf = json.loads(_get(f"{n.url}/v1/namespaces/dao:vaultmesh/records/1"))["record"]
            from remembrancer.core.jcs import canonicalize

            verified = verify_tlog_proof(
                proof, canonicalize(leaf), vkey, others, min_cosigners=quorum
            )
            assert len(verified.cosigners) >= quorum
            stats = json.loads(_get(f"{n.url}/v1/witnessing"))
            assert stats["rounds"] >= 1 and stats["split_views"] == 0
            if store_urls.backend == "postgres":  # the node's log is in its schema
                store = open_store(urls[i])
                try:
                    assert store.log_state("dao:vaultmesh").checkpoint == note  # type: ignore[union-attr]
                finally:
                    store.close()
    finally:
        for n in nodes:
            n.stop()
