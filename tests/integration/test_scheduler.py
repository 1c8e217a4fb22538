"""The cadence scheduler against a real sequencer and store, with a scripted
rail (the rails themselves are tested against real TSAs, anvil and real
Bitcoin data elsewhere).  The clock is a parameter, so time is exact."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from remembrancer.anchoring.base import (
    DEPTH_INSUFFICIENT,
    RailError,
    RailRegistry,
    Verdict,
    VerifyContext,
)
from remembrancer.anchoring.scheduler import Scheduler
from remembrancer.core.anchor import Anchor
from remembrancer.core.keys import SigningKey
from remembrancer.core.namespace import parse_namespaces
from remembrancer.demo.keys import demo_key
from remembrancer.demo.records import ledger_payload, make_record
from remembrancer.log.namespaces import StaticNamespaces
from remembrancer.log.sequencer import Sequencer
from remembrancer.storage import open_store

EXAMPLE = (
    Path(__file__).resolve().parents[2] / "src" / "remembrancer" / "examples" / "namespaces.yaml"
)
T0 = 1_764_100_000


class Clock:
    def __init__(self) -> None:
        self.now = float(T0)

    def __call__(self) -> float:
        return self.now


class ScriptedRail:
    def __init__(self, target: str) -> None:
        self.target = target
        self.submitted: list[bytes] = []
        self.fail_with: list[str] = []  # error classes to raise on the next submits
        self.reorg = False
        self.asked: list[int] = []  # the required depth of every verification

    def submit(self, digest: bytes, *, now: int) -> Anchor:
        if self.fail_with:
            raise RailError("scripted failure", code="scripted", error_class=self.fail_with.pop(0))  # type: ignore[arg-type]
        self.submitted.append(digest)
        return Anchor(self.target, digest, "submitted", tx_ref=f"tx{len(self.submitted)}", anchor_ts=now,
                      observed_at=now, evidence={"n": len(self.submitted)})  # fmt: skip

    def verify(self, anchor: Anchor, ctx: VerifyContext) -> Verdict:
        # Depth grows by one every 10 s after the anchor; never reads anchor.status.
        self.asked.append(ctx.required_depth)
        if self.reorg:
            return Verdict.failed("scripted_reorg", "the block is gone", lost=True)
        depth = 1 + (ctx.now - (anchor.anchor_ts or ctx.now)) // 10
        facts = {"observed_depth": depth, "required_depth": ctx.required_depth,
                 "anchor_ts": anchor.anchor_ts}  # fmt: skip
        if depth >= ctx.required_depth:
            return Verdict.ok("scripted", **facts)
        return Verdict.pending(DEPTH_INSUFFICIENT, f"{depth} < {ctx.required_depth}", **facts)


def setup(tmp_path: Path, doc_edit=None):  # type: ignore[no-untyped-def]
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["namespaces"]["dao:vaultmesh"]["cadence"] = {
        "fast": {"target": "eip155:31337", "every": "60s", "confirmations": 2},
        "cold": {"target": "rfc3161:tsa", "every": "5*fast"},
    }
    doc["namespaces"]["fin:clearing"]["cadence"] = {}
    if doc_edit:
        doc_edit(doc)
    clock = Clock()
    store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    seq = Sequencer(
        store,
        SigningKey.generate(),
        "alpha.test",
        StaticNamespaces(parse_namespaces(doc)),
        clock=clock,
    )
    rails = RailRegistry()
    evm, tsa = ScriptedRail("eip155:31337"), ScriptedRail("rfc3161:tsa")
    rails.register(evm)
    rails.register(tsa)
    return clock, store, seq, Scheduler(store, seq, rails, clock=clock), evm, tsa


async def add(seq: Sequencer, clock: Clock, n: int = 3) -> None:
    actor = demo_key("did:vm:actor:demo")
    w = [demo_key("did:vm:arbiter:prod-us-east-1"), demo_key("did:vm:arbiter:prod-eu-west-1")]
    await asyncio.gather(*(seq.submit(make_record("dao:vaultmesh", "ledger.append@1.0.0", ledger_payload(i), actor,
                                                  w, timestamp=int(clock.now)).leaf) for i in range(n)))  # fmt: skip


def test_cadence_unchanged_logs_and_reverification(tmp_path: Path) -> None:
    async def go() -> None:
        clock, store, seq, sched, evm, tsa = setup(tmp_path)
        assert (
            dict(((ns, lv), o) for ns, lv, o in await sched.tick())[("dao:vaultmesh", "fast")]
            == "empty"
        )
        await add(seq, clock)
        out = dict(((ns, lv), o) for ns, lv, o in await sched.tick())
        assert (
            out[("dao:vaultmesh", "fast")] == "submitted"
            and out[("dao:vaultmesh", "cold")] == "submitted"
        )
        assert len(evm.submitted) == 1 and len(tsa.submitted) == 1
        clock.now += 30
        assert (
            dict(((ns, lv), o) for ns, lv, o in await sched.tick())[("dao:vaultmesh", "fast")]
            == "not_due"
        )
        clock.now += 60
        # Due, but the log has not grown: no new anchor.
        assert (
            dict(((ns, lv), o) for ns, lv, o in await sched.tick())[("dao:vaultmesh", "fast")]
            == "unchanged"
        )
        assert len(evm.submitted) == 1
        await add(seq, clock)
        await sched.tick()
        assert len(evm.submitted) == 2 and len(tsa.submitted) == 1  # cold is every 5*fast = 300 s
        # Re-verification drives the anchors to verified/final as depth grows.
        clock.now += 100
        assert await sched.reverify() >= 1
        receipts = sched.receipts("dao:vaultmesh")
        fast = [a for r in receipts for a in r.anchors if a.target == "eip155:31337"]
        assert all(a.status == "verified" and a.finality.state == "final" for a in fast)
        # The anchored digest is the checkpoint body's SHA-256.
        from remembrancer.core.anchor import checkpoint_digest
        from remembrancer.core.note import Note

        r0 = receipts[0]
        assert r0.root == checkpoint_digest(Note.from_bytes(r0.checkpoint).text.encode())
        await seq.close()
        store.close()

    asyncio.run(go())


def test_backoff_is_enforced_and_scaled_by_error_class(tmp_path: Path) -> None:
    async def go() -> None:
        clock, store, seq, sched, evm, _tsa = setup(tmp_path)
        await add(seq, clock)
        evm.fail_with = ["transient", "transient", "auth", "validation", "transient"]
        delays = []
        for _ in range(5):
            await sched.tick()
            st = sched.level_state("dao:vaultmesh", "fast")
            delays.append(st.retry_at - int(clock.now))
            # Not a second earlier than the delay.
            clock.now = st.retry_at - 1
            assert (
                dict(((ns, lv), o) for ns, lv, o in await sched.tick())[("dao:vaultmesh", "fast")]
                == "backing_off"
            )
            clock.now = st.retry_at
        assert delays == [5, 8, 26, 11, 34]  # 5*phi^k, x2 for auth, x0.5 for validation
        assert sched.health("dao:vaultmesh")["status"] == "backing_off"
        assert sched.health("dao:vaultmesh")["levels"]["fast"]["last_error"].startswith("scripted")
        await sched.tick()
        assert len(evm.submitted) == 1 and sched.level_state("dao:vaultmesh", "fast").failures == 0
        assert sched.health("dao:vaultmesh")["status"] == "ok"
        await seq.close()
        store.close()

    asyncio.run(go())


def test_state_survives_restart_and_reorg_reanchors(tmp_path: Path) -> None:
    async def go() -> None:
        clock, store, seq, sched, _evm, _tsa = setup(tmp_path)
        await add(seq, clock)
        await sched.tick()
        clock.now += 30  # depth 4: final for 2 confirmations, still within reorg reach
        await sched.reverify()
        await seq.close()
        store.close()
        # A new process: same state, nothing re-anchored for an unchanged log.
        clock2, store2, seq2, sched2, evm2, tsa2 = setup(tmp_path)
        clock2.now = clock.now + 1
        await sched2.tick()
        assert evm2.submitted == [] and tsa2.submitted == []
        # The verified fast anchor is reorged: the level anchors the same checkpoint again.
        evm2.reorg = True
        changed = await sched2.reverify()
        assert changed == 1
        statuses = [
            a.status
            for r in sched2.receipts("dao:vaultmesh")
            for a in r.anchors
            if a.target == "eip155:31337"
        ]
        assert statuses == ["reorged"]
        evm2.reorg = False
        await sched2.tick()
        assert len(evm2.submitted) == 1
        await seq2.close()
        store2.close()

    asyncio.run(go())


def test_governance_change_is_picked_up_on_the_next_tick(tmp_path: Path) -> None:
    async def go() -> None:
        clock, store, seq, sched, evm, _tsa = setup(tmp_path)
        await add(seq, clock)
        await sched.tick()
        admin = demo_key("did:vm:admin:dao-council")
        w = [demo_key("did:vm:arbiter:prod-us-east-1"), demo_key("did:vm:arbiter:prod-eu-west-1")]
        change = make_record("dao:vaultmesh", "governance.cadence.set@1.0.0",
                             {"namespace": "dao:vaultmesh", "cadence": {"fast": {"every": "20s"}}}, admin, w,
                             timestamp=int(clock.now))  # fmt: skip
        await seq.submit(change.leaf)
        assert sched.health("dao:vaultmesh")["levels"]["fast"]["period"] == 20
        clock.now += 21
        await sched.tick()
        assert len(evm.submitted) == 2  # would not be due yet with the old 60 s
        await seq.close()
        store.close()

    asyncio.run(go())


def test_reverify_judges_depth_with_the_governed_cadence(tmp_path: Path) -> None:
    """Issue 16 item 7 (regression): after ``governance.cadence.set`` raises a
    level's confirmations, re-verification judges depth with the new value,
    not the configured one."""

    async def go() -> None:
        clock, store, seq, sched, evm, _tsa = setup(tmp_path)
        await add(seq, clock)
        await sched.tick()
        admin = demo_key("did:vm:admin:dao-council")
        w = [demo_key("did:vm:arbiter:prod-us-east-1"), demo_key("did:vm:arbiter:prod-eu-west-1")]
        change = make_record("dao:vaultmesh", "governance.cadence.set@1.0.0",
                             {"namespace": "dao:vaultmesh", "cadence": {"fast": {"confirmations": 6}}},
                             admin, w, timestamp=int(clock.now))  # fmt: skip
        await seq.submit(change.leaf)
        assert sched.required_depth("dao:vaultmesh", "eip155:31337", int(clock.now)) == 6
        clock.now += 30  # depth 4: final for the configured 2, not for the governed 6
        await sched.reverify()
        assert evm.asked[-1] == 6
        (fast,) = [a for r in sched.receipts("dao:vaultmesh") for a in r.anchors
                   if a.target == "eip155:31337"]  # fmt: skip
        assert fast.status == "submitted" and fast.finality.required_depth == 6
        clock.now += 20  # depth 6
        await sched.reverify()
        (fast,) = [a for r in sched.receipts("dao:vaultmesh") for a in r.anchors
                   if a.target == "eip155:31337"]  # fmt: skip
        assert fast.status == "verified" and fast.finality.state == "final"
        await seq.close()
        store.close()

    asyncio.run(go())


def test_anchor_now_and_unknown_targets(tmp_path: Path) -> None:
    def edit(doc: dict) -> None:  # type: ignore[type-arg]
        doc["namespaces"]["dao:vaultmesh"]["cadence"]["strong"] = {
            "target": "btc:mainnet",
            "every": "1h",
        }

    async def go() -> None:
        clock, store, seq, sched, _evm, _tsa = setup(tmp_path, edit)
        await add(seq, clock)
        results = dict(await sched.anchor_now("dao:vaultmesh"))
        # A target without a rail is a state of the configuration, not a failure.
        assert results["fast"] == "submitted" and results["strong"] == "not_configured"
        health = sched.health("dao:vaultmesh")
        assert health["status"] == "ok"
        assert health["levels"]["strong"]["state"] == "not_configured"
        assert health["levels"]["strong"]["failures"] == 0
        assert health["levels"]["fast"]["state"] == "ok"
        for _ in range(6):  # never backs off, however often it comes round
            clock.now += 3600
            await add(seq, clock, 1)
            await sched.tick()
        assert sched.health("dao:vaultmesh")["levels"]["strong"]["failures"] == 0
        assert sched.health("dao:vaultmesh")["status"] != "backing_off"
        from remembrancer.core.errors import NotFoundError

        with pytest.raises(NotFoundError):
            await sched.anchor_now("dao:vaultmesh", "warm")
        await seq.close()
        store.close()

    asyncio.run(go())
