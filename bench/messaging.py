"""Cross-namespace messages (docs/messaging.md).

Run ``python -m bench.messaging`` (``--quick`` for fewer messages).

- **verify**: the rate of :func:`remembrancer.core.xns.verify_message` on one
  core (schema and policy checks, actor signature, the source namespace's
  record-witness quorum, strict proof parsing, the checkpoint's log
  signature and one witness cosignature, the inclusion proof) against what
  an offline verifier must do at least with the same inputs, measured in the
  same run: the actor's and the record witnesses' signatures, then parsing
  and verifying the proof file (:func:`verify_tlog_proof`, as ``remembrancer
  verify`` does).  Goal 0.7: the policy checks around it cost little.
- **deliver**: deliveries per second through a node in process (verify,
  replay and freshness checks, sign, and admission through the sequencer to
  durable SQLite), with many deliveries in flight, against plain records
  admitted per second by the same node in the same run.  A delivery verifies
  the message's actor and the checkpoint's log signature, then the sequencer
  verifies the node's signature on the delivery and re-reads the embedded
  proof (admission rule 6), where a plain record costs three signature
  checks; and a delivery makes two trips to worker threads.  Shown for
  information (about 0.4 on a shared two-core machine).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import yaml

from bench.common import Row, suite_main
from bench.common import row as _row
from remembrancer.core.checkpoint import Checkpoint, sign_checkpoint
from remembrancer.core.cosignature import cosign, format_cosigner_vkey, parse_cosigner_vkey
from remembrancer.core.keys import SigningKey
from remembrancer.core.namespace import parse_namespaces
from remembrancer.core.note import Note, Verifier
from remembrancer.core.record import Record
from remembrancer.core.tlogproof import TlogProof, verify_tlog_proof
from remembrancer.core.xns import verify_message
from remembrancer.demo.keys import demo_key
from remembrancer.demo.records import ledger_payload, make_record
from remembrancer.log.namespaces import StaticNamespaces
from remembrancer.log.schemas import bundled_schemas
from remembrancer.node.runtime import Node
from remembrancer.storage import open_store
from remembrancer.testing.naive_merkle import NaiveTree

EXAMPLE = (
    Path(__file__).resolve().parents[1] / "src" / "remembrancer" / "examples" / "namespaces.yaml"
)
ACTOR = demo_key("did:vm:actor:demo")
DAO_W = [demo_key("did:vm:arbiter:prod-us-east-1"), demo_key("did:vm:arbiter:prod-eu-west-1")]
DAO_W_KEYS = {k.did: k.public for k in DAO_W}
FIN_W = [demo_key(f"did:vm:arbiter:prod-clearing-{x}") for x in "abc"]


def _message(i: int, now: int) -> Record:
    payload = {"source": "dao:vaultmesh", "target": "fin:clearing", "action": "notify",
               "payload": {"operation": "status.update", "parameters": {"status": "done", "n": i}}}  # fmt: skip
    return make_record(
        "dao:vaultmesh", "namespace.message@1.0.0", payload, ACTOR, DAO_W, timestamp=now
    )


def bench_verify(n: int, repeats: int) -> Row:
    now = int(time.time())
    log_key, witness = SigningKey.generate(b"\x01" * 32), SigningKey.generate(b"\x02" * 32)
    origin = "alpha.test/dao:vaultmesh"
    witness_vkey = format_cosigner_vkey("beta.test/witness", witness.public)
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["namespaces"]["fin:clearing"]["trusted_sources"] = [
        {"namespace": "dao:vaultmesh", "witnesses": [witness_vkey]}
    ]
    hosted = parse_namespaces(doc)
    fin = hosted["fin:clearing"]
    schemas = bundled_schemas()
    records = [_message(i, now) for i in range(n)]
    tree = NaiveTree.from_entries([r.leaf for r in records])
    note = Note.from_bytes(sign_checkpoint(Checkpoint(origin, n, tree.root(n)), log_key))
    note = note.with_signatures([cosign(note.text, witness, "beta.test/witness", now)])
    proofs = [TlogProof(i, tuple(tree.inclusion_proof(i, n)), note.to_bytes()).to_bytes()
              for i in range(n)]  # fmt: skip
    known = {origin: [Verifier(origin, log_key.public)]}
    log_verifier = Verifier(origin, log_key.public)
    cosigner = parse_cosigner_vkey(witness_vkey)
    actor_key = ACTOR.public

    def ours() -> float:
        t = time.perf_counter()
        for r, p in zip(records, proofs, strict=True):
            verify_message(r, p, fin, schemas, known, hosted=hosted)
        return n / (time.perf_counter() - t)

    sigs = [r.signatures[0].sig for r in records]
    witness_sigs = [[(DAO_W_KEYS[s.kid], s.sig) for s in r.signatures[1:]] for r in records]

    def reference() -> float:
        t = time.perf_counter()
        for r, p, s, ws in zip(records, proofs, sigs, witness_sigs, strict=True):
            actor_key.verify(r.signing_input, s)
            for key, sig in ws:
                key.verify(r.signing_input, sig)
            verify_tlog_proof(TlogProof.parse(p), r.leaf, log_verifier, [cosigner], 1)
        return n / (time.perf_counter() - t)

    best_ours = best_ref = 0.0
    for _ in range(repeats):
        best_ref = max(best_ref, reference())
        best_ours = max(best_ours, ours())
    return _row("verify_message vs its bare cryptography", best_ours, best_ref, 0.7, "msg/s")


def bench_deliver(n: int) -> Row:
    async def go(directory: Path) -> tuple[float, float]:
        spaces = parse_namespaces(yaml.safe_load(EXAMPLE.read_text()))
        node = Node(store=open_store(f"sqlite:///{directory / 'node.db'}"), node_key=SigningKey.generate(),
                    origin_prefix="alpha.test", namespaces=StaticNamespaces(spaces),
                    scheduler_enabled=False)  # fmt: skip
        await node.start()
        try:
            now = int(time.time())
            messages = [_message(i, now) for i in range(n)]
            receipts = await asyncio.gather(*(node.submit(m) for m in messages))
            proofs = []
            for r in receipts:
                hashes, state = node.sequencer.proof_inclusion("dao:vaultmesh", r.index)
                proofs.append(TlogProof(r.index, tuple(hashes), state.checkpoint).to_bytes())
            fin = spaces["fin:clearing"]
            t = time.perf_counter()
            await asyncio.gather(*(node.messaging.deliver(fin, m, p)
                                   for m, p in zip(messages, proofs, strict=True)))  # fmt: skip
            deliveries = n / (time.perf_counter() - t)
            plain = [make_record("fin:clearing", "ledger.append@1.0.0", ledger_payload(i), ACTOR, FIN_W,
                                 timestamp=now) for i in range(n)]  # fmt: skip
            t = time.perf_counter()
            await asyncio.gather(*(node.submit(r) for r in plain))
            records = n / (time.perf_counter() - t)
            return deliveries, records
        finally:
            await node.stop()

    with tempfile.TemporaryDirectory() as d:
        deliveries, records = asyncio.run(go(Path(d)))
    return _row(f"deliveries vs plain records through one node ({n} in flight)", deliveries,
                records, None, "rec/s")  # fmt: skip


def run(quick: bool) -> list[Row]:
    """Rows of ``{name, ours, reference, ratio, goal, unit}``."""
    n, repeats, m = (300, 3, 200) if quick else (3_000, 5, 2_000)
    return [bench_verify(n, repeats), bench_deliver(m)]


def main(argv: list[str] | None = None) -> int:
    return suite_main(
        run, "python -m bench.messaging", __doc__, argv, quick_help="fewer messages (seconds)"
    )


if __name__ == "__main__":
    raise SystemExit(main())
