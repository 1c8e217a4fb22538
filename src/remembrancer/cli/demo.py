"""``remembrancer demo``: the main job, as far as it is built.

Builds (or extends) a local node's logs on the embedded defaults, SQLite in
``--data``, with the example namespaces and their public demo keys: signed
records from an actor and record witnesses, a governance change, then proofs
written as files and checked offline, exactly as a third party would.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import click

from remembrancer.cli.common import errors_as_one_line
from remembrancer.cli.namespace import example_namespaces_path
from remembrancer.core.checkpoint import Checkpoint
from remembrancer.core.keys import SigningKey, read_key_file, write_key_file
from remembrancer.core.note import Note, format_vkey, parse_vkey
from remembrancer.core.record import Record
from remembrancer.core.rfc6962 import verify_consistency
from remembrancer.core.schema import SchemaRegistry
from remembrancer.core.tlogproof import TlogProof, verify_tlog_proof
from remembrancer.log.namespaces import NamespaceSource
from remembrancer.log.sequencer import Receipt, Sequencer
from remembrancer.storage.sqlite import SqliteStore
from remembrancer.testing.demo import demo_key
from remembrancer.testing.records import make_record

ORIGIN_PREFIX = "demo.remembrancer.local"


def _records(count: int, now: int) -> list[Record]:
    actor = demo_key("did:vm:actor:demo")
    dao_w = [demo_key("did:vm:arbiter:prod-us-east-1"), demo_key("did:vm:arbiter:prod-eu-west-1")]
    fin_w = [demo_key(f"did:vm:arbiter:prod-clearing-{c}") for c in "abc"]
    out = []
    for i in range(count):
        kind = i % 4
        if kind == 0:
            payload: dict[str, Any] = {
                "stream": "treasury",
                "data": {"transfer": i, "amount": f"{(i * 37) % 1000}.00"},
                "sequence": i,
            }
            out.append(
                make_record(
                    "dao:vaultmesh", "ledger.append@1.0.0", payload, actor, dao_w, timestamp=now
                )
            )
        elif kind == 1:
            payload = {
                "instanceId": str(uuid.uuid4()),
                "fromState": "proposed",
                "toState": "approved",
                "approvals": [{"actor": dao_w[0].did}],
            }
            out.append(
                make_record(
                    "dao:vaultmesh",
                    "workflow.transition@1.0.0",
                    payload,
                    actor,
                    dao_w,
                    timestamp=now,
                )
            )
        elif kind == 2:
            payload = {
                "batchCid": f"bafy-demo-{i}",
                "transactionCount": 100 + i % 50,
                "sealedAt": now,
            }
            out.append(
                make_record(
                    "fin:clearing", "sequencer.commit@1.0.0", payload, actor, fin_w, timestamp=now
                )
            )
        else:
            payload = {
                "viewId": "mainnet-view",
                "sourceChain": "eip155:1",
                "blockHeight": 21_000_000 + i,
                "coveredStateRoot": f"0x{i:064x}",
            }
            out.append(
                make_record(
                    "fin:clearing", "indexer.checkpoint@1.0.0", payload, actor, fin_w, timestamp=now
                )
            )
    return out  # fmt: skip


async def _run(data: Path, count: int) -> None:
    data.mkdir(parents=True, exist_ok=True)
    key_path = data / "node.key"
    if not key_path.exists():
        write_key_file(key_path, SigningKey.generate())
    node_key = read_key_file(key_path)
    store = SqliteStore(str(data / "remembrancer.db"))
    namespaces = NamespaceSource(example_namespaces_path(), SchemaRegistry.bundled())
    seq = Sequencer(store, node_key, ORIGIN_PREFIX, namespaces)
    try:
        before = {ns: store.log_state(ns) for ns in namespaces.current()}
        now = int(time.time())
        records = _records(count, now)
        started = time.perf_counter()
        receipts: list[Receipt] = []
        with click.progressbar(length=len(records), label="admitting signed records") as bar:
            for i in range(0, len(records), 500):
                chunk = records[i : i + 500]
                receipts += await asyncio.gather(*(seq.submit(r.leaf) for r in chunk))
                bar.update(len(chunk))
        elapsed = time.perf_counter() - started
        click.echo(
            f"admitted {len(receipts)} records in {elapsed:.2f} s ({len(receipts) / elapsed:,.0f}/s)"
        )

        admin = demo_key("did:vm:admin:dao-council")
        witnesses = [
            demo_key("did:vm:arbiter:prod-us-east-1"),
            demo_key("did:vm:arbiter:prod-dao-suite"),
        ]
        change = make_record(
            "dao:vaultmesh", "governance.cadence.set@1.0.0",
            {"namespace": "dao:vaultmesh", "cadence": {"fast": {"every": "45s"}}, "memo": "tighter liveness anchoring"},
            admin, witnesses, timestamp=now,
        )  # fmt: skip
        await seq.submit(change.leaf)
        fast = seq.effective_config("dao:vaultmesh")["cadence"]["fast"]
        click.echo(f"governance: dao:vaultmesh fast cadence is now every {fast['every']} (was 89s)")

        out = data / "proofs"
        out.mkdir(exist_ok=True)
        for ns_name in namespaces.current():
            state = store.log_state(ns_name)
            assert state is not None
            origin = seq.origin(ns_name)
            vkey = format_vkey(origin, node_key.public)
            sample = next(
                r for r, rec in zip(receipts, records, strict=True) if rec.namespace == ns_name
            )
            rec = next(x for x in records if x.event_hash_hex == sample.event_hash)
            proof, _ = seq.proof_inclusion(ns_name, sample.index)
            tlog = TlogProof(sample.index, tuple(proof), state.checkpoint)
            stem = ns_name.replace(":", "_")
            (out / f"{stem}.record.json").write_bytes(rec.leaf + b"\n")
            (out / f"{stem}.tlog-proof").write_bytes(tlog.to_bytes())
            (out / f"{stem}.vkey").write_text(vkey + "\n")
            verified = verify_tlog_proof(
                TlogProof.parse(tlog.to_bytes()), rec.leaf, parse_vkey(vkey)
            )
            old = before[ns_name]
            if old is not None and old.size:
                cons = seq.proof_consistency(ns_name, old.size, state.size)
                verify_consistency(old.size, state.size, old.root_hash, state.root_hash, cons)
                grew = f"consistent with its previous checkpoint at size {old.size}"
            else:
                grew = "a new log"
            cp = Checkpoint.parse(Note.from_bytes(state.checkpoint).text)
            click.echo(f"\n{ns_name}: size {cp.size}, root {cp.root_hash.hex()[:16]}..., {grew}")
            click.echo(
                f"  entry {verified.index} proven in the signed checkpoint (verified offline)"
            )
            click.echo(f"  check it yourself: remembrancer verify {out / (stem + '.record.json')} "
                       f"--proof {out / (stem + '.tlog-proof')} --vkey \"$(cat {out / (stem + '.vkey')})\"")  # fmt: skip
        await _anchor(data, store, seq, namespaces)
        click.echo(f"\ndata kept in {data} (run again to extend the same logs)")
    finally:
        await seq.close()
        store.close()


async def _anchor(data: Path, store: Any, seq: Sequencer, namespaces: NamespaceSource) -> None:
    """Anchor each log's latest checkpoint to the development TSA (the example
    namespaces' cold level, ``rfc3161:tsa``), served over real HTTP."""
    import json

    from remembrancer.anchoring.base import RailRegistry
    from remembrancer.anchoring.devtsa import DevTsa, DevTsaServer
    from remembrancer.anchoring.scheduler import Scheduler

    tsa_dir = data / "dev-tsa"
    with DevTsaServer(DevTsa(tsa_dir)) as server:
        rails = RailRegistry(
            {"rfc3161": {"tsa": {"url": server.url, "trust_bundle": str(tsa_dir / "ca.pem")}}}
        )
        scheduler = Scheduler(store, seq, rails)
        click.echo(
            f"\nanchoring to the development TSA at {server.url} (trust bundle {tsa_dir / 'ca.pem'})"
        )
        for ns_name in namespaces.current():
            results = dict(await scheduler.anchor_now(ns_name, "cold"))
            state = store.log_state(ns_name)
            receipt = scheduler.receipt(ns_name, state.size) if state else None
            if receipt is None or not receipt.anchors:
                click.echo(f"  {ns_name}: {results.get('cold')}")
                continue
            path = data / "proofs" / f"{ns_name.replace(':', '_')}.anchors.json"
            path.write_text(json.dumps(receipt.to_dict(), indent=2) + "\n")
            a = receipt.anchors[-1]
            click.echo(
                f"  {ns_name}: checkpoint {receipt.size} {a.status} by {a.target} at genTime {a.anchor_ts}"
            )
            click.echo(
                f"  check it yourself: remembrancer anchor verify {path} --tsa-trust {tsa_dir / 'ca.pem'}"
            )


@click.command()
@click.option(
    "--data",
    "data_dir",
    default="demo-data",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Data directory (kept between runs).",
)
@click.option(
    "--records",
    default=2000,
    show_default=True,
    type=click.IntRange(1, 1_000_000),
    help="Records to admit in this run.",
)
@errors_as_one_line
def demo(data_dir: str, records: int) -> None:
    """Run the local demonstration: build logs, prove records, verify offline."""
    asyncio.run(_run(Path(data_dir), records))


COMMANDS = [demo]
