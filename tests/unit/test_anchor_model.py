"""Anchor model: status machine, the single conflict order, round trips."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from remembrancer.core.anchor import (
    MAX_ANCHORS,
    Anchor,
    AnchorReceipt,
    allowed_transition,
    bound_anchors,
    checkpoint_digest,
    conflict_key,
    resolve_conflicts,
)
from remembrancer.core.errors import FormatError

ROOT = checkpoint_digest(b"example.org/log\n10\nAAAA\n")


def a(target: str, status: str = "verified", ts: int | None = 100, tx: str = "x") -> Anchor:
    return Anchor(target=target, root=ROOT, status=status, anchor_ts=ts, tx_ref=tx)  # type: ignore[arg-type]


def test_conflict_order_is_verified_then_rail_then_time_then_txref() -> None:
    anchors = [
        a("rfc3161:tsa", ts=1),
        a("eip155:1", ts=50),
        a("btc:mainnet", status="submitted", ts=0),
        a("btc:mainnet", ts=200, tx="b"),
        a("btc:mainnet", ts=200, tx="a"),
        a("eip155:1", ts=10),
    ]
    here = {x.key for x in anchors if x.status == "verified"}
    for _ in range(20):
        random.shuffle(anchors)
        ordered = resolve_conflicts(anchors, verified=here)
        assert [(x.target, x.anchor_ts, x.tx_ref, x.status) for x in ordered] == [
            ("btc:mainnet", 200, "a", "verified"),
            ("btc:mainnet", 200, "b", "verified"),
            ("eip155:1", 10, "x", "verified"),
            ("eip155:1", 50, "x", "verified"),
            ("rfc3161:tsa", 1, "x", "verified"),
            ("btc:mainnet", 0, "x", "submitted"),
        ]
        assert ordered[0].superseded_by is None
        assert all(x.superseded_by == "btc:mainnet/a" for x in ordered[1:])


def test_a_failed_claim_never_beats_a_verified_one() -> None:
    forged = a("btc:mainnet", status="failed", ts=0, tx="0")
    real = a("rfc3161:tsa", ts=999)
    assert resolve_conflicts([forged, real], verified={real.key})[0] == real
    assert conflict_key(real, verified=True) < conflict_key(forged, verified=False)


def test_a_claim_of_verified_that_this_node_did_not_verify_ranks_as_unverified() -> None:
    """Issue 14 rule 1: a fake BTC anchor that merely *says* verified never
    supersedes a TSA anchor this node verified itself; the order reads the
    caller's own verdicts, never ``status``."""
    fake_btc = a("btc:mainnet", status="verified", ts=0, tx="0")
    tsa = a("rfc3161:tsa", status="submitted", ts=999)  # whatever its field says
    ordered = resolve_conflicts([fake_btc, tsa], verified={tsa.key})
    assert ordered[0] == tsa and ordered[1].superseded_by == tsa.key
    # Verified by nobody: the design's order among unverified claims applies.
    assert resolve_conflicts([tsa, fake_btc], verified=set())[0].key == fake_btc.key
    # And once this node verified the BTC anchor too, it wins (btc > rfc3161).
    assert (
        resolve_conflicts([tsa, fake_btc], verified={tsa.key, fake_btc.key})[0].key == fake_btc.key
    )


@pytest.mark.parametrize(
    ("old", "new", "ok"),
    [("pending", "submitted", True), ("submitted", "verified", True), ("verified", "reorged", True),
     ("verified", "failed", True), ("failed", "verified", False), ("reorged", "verified", False),
     ("verified", "submitted", False), ("submitted", "pending", False)],
)  # fmt: skip
def test_status_machine(old: str, new: str, ok: bool) -> None:
    assert allowed_transition(old, new) is ok
    anchor = a("rfc3161:tsa", status=old)
    if ok:
        assert anchor.moved(new).status == new  # type: ignore[arg-type]
    else:
        with pytest.raises(FormatError):
            anchor.moved(new)  # type: ignore[arg-type]


@given(
    st.sampled_from(["rfc3161:tsa", "eip155:31337", "btc:regtest"]),
    st.sampled_from(["pending", "submitted", "verified", "failed", "reorged"]),
    st.one_of(st.none(), st.integers(0, 2**40)),
    st.text(max_size=20),
)
def test_anchor_and_receipt_round_trip(target: str, status: str, ts: int | None, tx: str) -> None:
    anchor = Anchor(target, ROOT, status, tx_ref=tx, anchor_ts=ts, evidence={"k": [1, "v"]})  # type: ignore[arg-type]
    assert Anchor.from_dict(anchor.to_dict()) == anchor
    receipt = AnchorReceipt("o/x", 10, b"o/x\n10\nAAAA\n\n- sig\n", ROOT, (anchor,))
    assert AnchorReceipt.from_dict(receipt.to_dict()) == receipt


@pytest.mark.parametrize(
    "bad",
    [{}, {"target": "ftp:x", "root": "sha256:" + "00" * 32}, {"target": "btc:x", "root": "sha256:00"},
     {"target": "btc:x", "root": "sha1:" + "00" * 32}, {"target": "btc:x", "root": "sha256:" + "00" * 32, "status": "won"}],
)  # fmt: skip
def test_malformed_anchors_are_refused(bad: dict) -> None:
    with pytest.raises(FormatError):
        Anchor.from_dict(bad)


def test_receipts_are_bounded() -> None:
    many = tuple(
        a("rfc3161:tsa", status="failed" if i % 2 else "verified", tx=str(i))
        for i in range(MAX_ANCHORS + 5)
    )
    kept = bound_anchors(many)
    assert (
        len(kept) == MAX_ANCHORS
        and sum(x.status == "verified" for x in kept) == (MAX_ANCHORS + 5 + 1) // 2
    )
    receipt = AnchorReceipt("o/x", 1, b"o/x\n1\nAAAA\n\n- s\n", ROOT, many).to_dict()
    with pytest.raises(FormatError):
        AnchorReceipt.from_dict(receipt)


def _full_receipt_and_one_more() -> tuple[list[Anchor], Anchor]:
    """MAX_ANCHORS verified anchors (anchor times 1000..), and an anchor just
    submitted (no anchor time yet, observed now)."""
    held = [a("rfc3161:tsa", ts=1000 + i, tx=f"{i:03d}") for i in range(MAX_ANCHORS)]
    fresh = Anchor("btc:mainnet", ROOT, status="submitted", tx_ref="ots:new", observed_at=5000)
    return held, fresh


def test_the_anchor_bound_is_one_rule_for_the_scheduler_and_the_merge() -> None:
    """Regression (issue 16): the scheduler and anti-entropy bounded a receipt's
    anchors by two rules that disagreed.  The scheduler dropped by position in
    the stored list (which is the conflict order, so it could drop the best
    anchor, and the result depended on the order); the merge counted an
    anchor without an anchor time as the oldest, so an anchor just submitted
    was dropped at once.  Now one rule, :func:`bound_anchors`, serves both."""
    held, fresh = _full_receipt_and_one_more()
    kept = {x.key for x in bound_anchors([*held, fresh])}
    assert fresh.key in kept and held[0].key not in kept and len(kept) == MAX_ANCHORS
    for _ in range(10):  # the same anchors in any order: the same ones stay
        shuffled = [*held, fresh]
        random.shuffle(shuffled)
        assert {x.key for x in bound_anchors(shuffled)} == kept
    # The merge every node applies keeps exactly the same anchors.
    from remembrancer.federation.antientropy.claims import merge_anchors

    merged = merge_anchors(held, [fresh], verified={x.key for x in held})
    assert {x.key for x in merged} == kept


def test_the_scheduler_keeps_an_anchor_added_to_a_full_receipt() -> None:
    """The scheduler side of the regression above, through Scheduler.add_anchor."""
    import asyncio

    from remembrancer.anchoring.base import RailRegistry, Verdict
    from remembrancer.anchoring.scheduler import Scheduler
    from remembrancer.core.checkpoint import Checkpoint, sign_checkpoint
    from remembrancer.core.keys import SigningKey
    from remembrancer.core.note import Note
    from remembrancer.storage.memory import MemoryStore

    note = sign_checkpoint(
        Checkpoint("example.org/dao:x", 10, bytes(32)), SigningKey.generate(bytes(32))
    )
    digest = checkpoint_digest(Note.from_bytes(note).text.encode())

    class Logs:
        namespaces = None

        def origin(self, namespace: str) -> str:
            return "example.org/" + namespace

    held, fresh = _full_receipt_and_one_more()
    held = [Anchor(x.target, digest, "verified", x.tx_ref, anchor_ts=x.anchor_ts) for x in held]
    # The best anchor (first in the conflict order, where the stored list keeps
    # them) is also the newest: the position rule dropped it.
    best = held[-1] = Anchor("btc:mainnet", digest, "verified", "best", anchor_ts=4000)
    fresh = Anchor(fresh.target, digest, "pending", fresh.tx_ref)
    scheduler = Scheduler(MemoryStore(), Logs(), RailRegistry(), clock=lambda: 5000.0)  # type: ignore[arg-type]
    scheduler._save_receipt(
        "dao:x", AnchorReceipt("example.org/dao:x", 10, note, digest, tuple(held))
    )
    pending = Verdict("pending", "ots_pending_only")
    added = asyncio.run(scheduler.add_anchor("dao:x", 10, note, fresh, pending))
    receipt = scheduler.receipt("dao:x", 10)
    assert receipt is not None and len(receipt.anchors) == MAX_ANCHORS
    assert added.key in {x.key for x in receipt.anchors}
    assert best.key in {x.key for x in receipt.anchors}
    assert held[0].key not in {x.key for x in receipt.anchors}
    assert {x.key for x in receipt.anchors} == {x.key for x in bound_anchors([*held, added])}
