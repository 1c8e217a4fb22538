"""The sequencer against real storage: receipts, idempotency, refusals that
change nothing, governance through the log, restart.  Every test runs on
SQLite and PostgreSQL (fixtures ``store_urls``/``any_store_urls`` of
tests/conftest.py; the first ones on the in-memory store too)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml

from remembrancer.core.checkpoint import open_checkpoint
from remembrancer.core.encoding import b64url_encode
from remembrancer.core.errors import PolicyError, RemembrancerError
from remembrancer.core.governance import GovernanceState
from remembrancer.core.keys import SigningKey
from remembrancer.core.namespace import parse_namespaces
from remembrancer.core.note import Verifier
from remembrancer.core.record import Record
from remembrancer.core.rfc6962 import hash_leaf, verify_consistency, verify_inclusion
from remembrancer.demo.keys import demo_key
from remembrancer.demo.records import ledger_payload, make_record
from remembrancer.log.namespaces import StaticNamespaces
from remembrancer.log.sequencer import GOVERNANCE_SCOPE, Sequencer
from remembrancer.storage import open_store

EXAMPLE = (
    Path(__file__).resolve().parents[2] / "src" / "remembrancer" / "examples" / "namespaces.yaml"
)
NAMESPACES = parse_namespaces(yaml.safe_load(EXAMPLE.read_text()))
ACTOR = demo_key("did:vm:actor:demo")
W = [demo_key("did:vm:arbiter:prod-us-east-1"), demo_key("did:vm:arbiter:prod-eu-west-1")]
NOW = 1_764_100_000
NODE_KEY = SigningKey.generate()


def seq_for(store, clock=lambda: NOW):  # type: ignore[no-untyped-def]
    return Sequencer(
        store, NODE_KEY, "alpha.example.org", StaticNamespaces(NAMESPACES), clock=clock
    )


def rec(i: int = 0, **kw):  # type: ignore[no-untyped-def]
    return make_record(
        "dao:vaultmesh", "ledger.append@1.0.0", ledger_payload(i), ACTOR, W, timestamp=NOW, **kw
    )


@pytest.fixture
def store(any_store_urls):  # type: ignore[no-untyped-def]
    """A fresh store on each backend: memory, SQLite, PostgreSQL (tests/conftest.py)."""
    s = open_store(any_store_urls.new("seq"))
    yield s
    s.close()


def snapshot(store) -> tuple:  # type: ignore[no-untyped-def]
    state = store.log_state("dao:vaultmesh")
    size = state.size if state else 0
    return (
        size,
        state.root_hash if state else None,
        store.read_entries("dao:vaultmesh", 0, size + 5),
    )


def test_receipts_prove_inclusion_under_a_signed_checkpoint(store) -> None:  # type: ignore[no-untyped-def]
    async def go() -> None:
        seq = seq_for(store)
        records = [rec(i) for i in range(300)]
        receipts = await asyncio.gather(*(seq.submit(r.leaf) for r in records))
        await seq.close()
        assert sorted(r.index for r in receipts) == list(range(300))
        verifier = Verifier("alpha.example.org/dao:vaultmesh", NODE_KEY.public)
        for r, record in zip(receipts, records, strict=True):
            cp = open_checkpoint(r.checkpoint, verifier).checkpoint
            assert cp.size == r.size and cp.origin == "alpha.example.org/dao:vaultmesh"
            verify_inclusion(r.index, r.size, hash_leaf(record.leaf), r.proof, cp.root_hash)
            assert r.to_dict()["eventHash"] == record.event_hash_hex
        # Consistency between any two signed sizes.
        sizes = sorted({r.size for r in receipts})
        final = store.log_state("dao:vaultmesh")
        for size in sizes:
            note = store.checkpoint_at("dao:vaultmesh", size).note
            old = open_checkpoint(note, verifier).checkpoint
            proof = seq.proof_consistency("dao:vaultmesh", size, final.size)
            verify_consistency(size, final.size, old.root_hash, final.root_hash, proof)

    asyncio.run(go())


def test_idempotent_resubmission_and_conflicts(store) -> None:  # type: ignore[no-untyped-def]
    async def go() -> None:
        seq = seq_for(store)
        first = rec(1)
        r1 = await seq.submit(first.leaf)
        # Same bytes again (even reformatted JSON): same index, nothing appended.
        pretty = json.dumps(json.loads(first.leaf), indent=1).encode()
        r2 = await seq.submit(pretty)
        assert (r2.index, r2.duplicate) == (r1.index, True)
        before = snapshot(store)
        with pytest.raises(PolicyError) as e:
            await seq.submit(rec(2, event_id=first.event_id).leaf)
        assert e.value.code == "event_id_conflict"
        with pytest.raises(PolicyError) as e:
            await seq.submit(rec(3, nonce=first.nonce).leaf)
        assert e.value.code == "nonce_replayed"
        # Same content, a different witness set: a different record, a conflict.
        env = first.envelope()
        env["signatures"] = env["signatures"][:1] + [
            {
                "alg": "Ed25519",
                "kid": w.did,
                "role": "witness",
                "sig": b64url_encode(w.sign(first.signing_input)),
            }
            for w in (W[1], demo_key("did:vm:arbiter:prod-dao-suite"))
        ]
        with pytest.raises(PolicyError) as e:
            await seq.submit(Record.from_value(env).leaf)
        assert e.value.code == "event_id_conflict"
        # Duplicates inside one batch resolve to one entry.
        twin = rec(4)
        a, b = await asyncio.gather(seq.submit(twin.leaf), seq.submit(twin.leaf))
        assert a.index == b.index
        assert snapshot(store)[0] == before[0] + 1
        # A key reused inside one batch by a different record: the first admitted, the
        # second refused (neither key is stored yet when the batch is integrated).
        for code in ("event_id_conflict", "nonce_replayed"):
            lead = rec(5)
            clash = rec(6, event_id=lead.event_id) if code == "event_id_conflict" \
                else rec(6, nonce=lead.nonce)  # fmt: skip
            got = await asyncio.gather(seq.submit(lead.leaf), seq.submit(clash.leaf),
                                       return_exceptions=True)  # fmt: skip
            assert not isinstance(got[0], BaseException), got
            assert isinstance(got[1], PolicyError) and got[1].code == code, got
        assert snapshot(store)[0] == before[0] + 3
        await seq.close()

    asyncio.run(go())


BAD = {
    "json_malformed": lambda: b"{nope",
    "record_too_large": lambda: rec(0, ).leaf.replace(b'"stream":"treasury"', b'"stream":"' + b"x" * 70000 + b'"'),
    "namespace_unknown": lambda: make_record("dao:nothere", "ledger.append@1.0.0", ledger_payload(0), ACTOR, W, timestamp=NOW).leaf,
    "timestamp_out_of_window": lambda: make_record("dao:vaultmesh", "ledger.append@1.0.0", ledger_payload(0), ACTOR, W, timestamp=NOW - 1000).leaf,
    "schema_not_allowed": lambda: make_record("dao:vaultmesh", "asset.issue@1.0.0", {"assetId": "a", "class": "c", "owner": "o", "amount": "1"}, ACTOR, W, timestamp=NOW).leaf,
    "payload_invalid": lambda: make_record("dao:vaultmesh", "ledger.append@1.0.0", {"stream": 5, "data": 1}, ACTOR, W, timestamp=NOW).leaf,
    "actor_signature_invalid": lambda: rec(0).leaf.replace(b'"treasury"', b'"treasurx"'),
    "witness_quorum_not_met": lambda: make_record("dao:vaultmesh", "ledger.append@1.0.0", ledger_payload(0), ACTOR, [W[0], W[0]], timestamp=NOW).leaf,
}  # fmt: skip


@pytest.mark.parametrize("code", sorted(BAD))
def test_every_refusal_leaves_storage_untouched(store, code: str) -> None:  # type: ignore[no-untyped-def]
    async def go() -> None:
        seq = seq_for(store)
        await seq.submit(rec(100).leaf)
        before = snapshot(store)
        with pytest.raises(RemembrancerError) as e:
            await seq.submit(BAD[code]())
        assert e.value.code == code
        await seq.submit(rec(101).leaf)  # still serving
        after = snapshot(store)
        assert after[0] == before[0] + 1 and after[2][: before[0]] == before[2]
        await seq.close()

    asyncio.run(go())


def test_governance_change_through_the_log_and_after_restart(store_urls) -> None:  # type: ignore[no-untyped-def]
    url = store_urls.new("gov")

    async def go() -> None:
        store = open_store(url)
        seq = seq_for(store)
        arbiters = [
            demo_key(f"did:vm:arbiter:{n}")
            for n in ("prod-us-east-1", "prod-eu-west-1", "prod-dao-suite")
        ]
        proposal = make_record("dao:vaultmesh", "governance.cadence.set@1.0.0",
                               {"namespace": "dao:vaultmesh", "cadence": {"fast": {"every": "45s"}}, "memo": "seed example"},
                               ACTOR, W, timestamp=NOW)  # fmt: skip
        await seq.submit(proposal.leaf)
        assert seq.effective_config("dao:vaultmesh")["cadence"]["fast"]["every"] == "89s"
        for voter in arbiters[:2]:
            v = make_record("dao:vaultmesh", "vote.cast@1.0.0", {"proposalId": proposal.event_id, "choice": "approve"},
                            voter, [w for w in arbiters if w is not voter][:2], timestamp=NOW)  # fmt: skip
            await seq.submit(v.leaf)
        assert seq.effective_config("dao:vaultmesh")["cadence"]["fast"]["every"] == "45s"
        await seq.close()
        store.close()
        # A new process sees the same effective config.
        store = open_store(url)
        seq = seq_for(store)
        cfg = seq.effective_config("dao:vaultmesh")
        assert cfg["cadence"]["fast"]["every"] == "45s"
        assert cfg["governance_state"]["applied"][0]["proposal"] == proposal.event_id
        await seq.close()
        store.close()

    asyncio.run(go())


def test_governance_rebuilt_from_the_log_parses_only_the_records_fold_reads(  # type: ignore[no-untyped-def]
    store_urls, monkeypatch
) -> None:
    """A saved governance state that lags the log (a crash between a commit and
    the save) is completed from the log's entries: the proposal and votes
    count, while ledger records and raw entries are not even parsed, and a
    non-canonical copy of a vote (never admitted as such) does not count."""
    url = store_urls.new("gov-rebuild")
    arbiters = [demo_key(f"did:vm:arbiter:{n}")
                for n in ("prod-us-east-1", "prod-eu-west-1", "prod-dao-suite")]  # fmt: skip

    async def go() -> None:
        store = open_store(url)
        seq = seq_for(store)
        await asyncio.gather(*(seq.submit(rec(i).leaf) for i in range(20)))
        proposal = make_record("dao:vaultmesh", "governance.cadence.set@1.0.0",
                               {"namespace": "dao:vaultmesh", "cadence": {"fast": {"every": "45s"}}, "memo": "m"},
                               ACTOR, W, timestamp=NOW)  # fmt: skip
        await seq.submit(proposal.leaf)
        votes = [make_record("dao:vaultmesh", "vote.cast@1.0.0",
                             {"proposalId": proposal.event_id, "choice": "approve"},
                             voter, [w for w in arbiters if w is not voter][:2], timestamp=NOW)
                 for voter in arbiters]  # fmt: skip
        await seq.submit(votes[0].leaf)
        # The second vote, appended raw and not canonical (a trailing space): never
        # admitted as such.
        spaced = votes[1].leaf + b" "
        seq.append_raw("dao:vaultmesh", [spaced, *(b"raw entry %d" % i for i in range(30))])
        assert seq.effective_config("dao:vaultmesh")["cadence"]["fast"]["every"] == "89s"
        await seq.close()
        # The saved state covers nothing: the next process folds the whole log.
        store.put_state(GOVERNANCE_SCOPE, "dao:vaultmesh",
                        json.dumps({"size": 0, "state": GovernanceState().to_dict()}).encode())  # fmt: skip
        store.close()

        parsed: list[bytes] = []
        original = Record.from_bytes.__func__  # type: ignore[attr-defined]

        def counting(cls, data):  # type: ignore[no-untyped-def]
            parsed.append(data)
            return original(cls, data)

        monkeypatch.setattr(Record, "from_bytes", classmethod(counting))
        store = open_store(url)
        seq = seq_for(store)
        state = seq.governance_state("dao:vaultmesh")
        assert list(state.pending) == [proposal.event_id] and not state.applied
        assert state.pending[proposal.event_id].votes == (arbiters[0].did,)  # not the spaced copy
        # Parsed: the proposal, the admitted vote and the spaced copy (it names its
        # type with the exact text); not one of the 20 ledger records or 30 raw entries.
        assert parsed == [proposal.leaf, votes[0].leaf, spaced]
        await seq.close()
        store.close()

    asyncio.run(go())


def test_restart_resumes_the_same_tree(store_urls) -> None:  # type: ignore[no-untyped-def]
    url = store_urls.new("resume")

    async def go() -> None:
        for round_ in range(3):
            store = open_store(url)
            seq = seq_for(store)
            rs = await asyncio.gather(
                *(seq.submit(rec(round_ * 1000 + i).leaf) for i in range(333))
            )
            assert min(r.index for r in rs) == round_ * 333
            await seq.close()
            store.close()
        store = open_store(url)
        state = store.log_state("dao:vaultmesh")
        assert state.size == 999
        # Root from the stored tiles equals a fresh in-memory computation.
        from remembrancer.core.rfc6962 import CompactRange

        cr = CompactRange()
        cr.extend(hash_leaf(x) for x in store.read_entries("dao:vaultmesh", 0, 999))
        assert cr.root() == state.root_hash
        store.close()

    asyncio.run(go())


def _signed_by(keys: list, i: int, *, actor=ACTOR, tamper: str = "") -> bytes:  # type: ignore[no-untyped-def, type-arg]
    """A record signed by ``actor`` and ``keys`` as witnesses; ``tamper`` spoils
    the actor's or the first witness's signature."""
    record = make_record("dao:vaultmesh", "ledger.append@1.0.0", ledger_payload(i), actor, keys,
                         timestamp=NOW)  # fmt: skip
    env = record.envelope()
    if tamper:
        at = 0 if tamper == "actor" else 1
        env["signatures"][at]["sig"] = b64url_encode(SigningKey.generate().sign(b"other"))
    return Record.from_value(env).leaf


def test_worker_processes_give_the_verdicts_of_threads(store_urls) -> None:  # type: ignore[no-untyped-def]
    """Signatures verified by worker processes (``verify_processes``) decide
    every record as thread verification does: same receipts, same codes."""
    outsider = SigningKey(b"\x07" * 32)
    cases = [
        _signed_by(W, 1),
        _signed_by(W, 2, tamper="actor"),
        _signed_by(W, 3, tamper="witness"),
        _signed_by([W[0], W[0]], 4),
        _signed_by([W[0], outsider], 5),
        _signed_by([W[1], W[0], demo_key("did:vm:arbiter:prod-dao-suite")], 6),
        _signed_by([*W, W[0]], 7, tamper="witness"),
    ]

    async def verdicts(processes: bool) -> list[object]:
        store = open_store(store_urls.new(f"proc-{processes}"))
        seq = Sequencer(store, NODE_KEY, "alpha.example.org", StaticNamespaces(NAMESPACES),
                        clock=lambda: NOW, verify_processes=processes, process_min_batch=1)  # fmt: skip
        out = await asyncio.gather(*(seq.submit(c) for c in cases), return_exceptions=True)
        workers = seq.stage_cpu.get("worker", 0.0)
        await seq.close()
        store.close()
        if processes:
            assert workers > 0  # the workers did verify
        return [r.index if not isinstance(r, BaseException) else getattr(r, "code", r) for r in out]

    threads = asyncio.run(verdicts(False))
    assert threads.count("actor_signature_invalid") == 1
    assert "witness_quorum_not_met" in threads
    assert asyncio.run(verdicts(True)) == threads


class _GatedSequencer(Sequencer):
    """A sequencer whose signature checks wait on the test: ``gate(i)`` is the
    coroutine batch ``i``'s verification runs first (``None``: straight on)."""

    def __init__(self, store, gate) -> None:  # type: ignore[no-untyped-def]
        super().__init__(store, NODE_KEY, "alpha.example.org", StaticNamespaces(NAMESPACES),
                         clock=lambda: NOW, max_batch=2)  # fmt: skip
        self.gate = gate
        self.started: list[int] = []
        self.finished: list[int] = []

    async def _verify(self, batch) -> None:  # type: ignore[no-untyped-def]
        i = len(self.started)
        self.started.append(i)
        await self.gate(i)
        await super()._verify(batch)
        self.finished.append(i)


def test_the_next_batch_is_verified_before_the_previous_one_is_decided(store) -> None:  # type: ignore[no-untyped-def]
    """Batch 1's signatures are checked while batch 0's are still being
    checked (the workers are never left waiting for a decision), and batch 1,
    verified first, is still integrated after batch 0."""
    second_done = asyncio.Event()

    async def gate(i: int) -> None:
        if i == 0:  # batch 0 finishes only after batch 1 has been verified
            await asyncio.wait_for(second_done.wait(), 10)

    async def go() -> list[int]:
        seq = _GatedSequencer(store, gate)
        original = seq._verify

        async def verify(batch):  # type: ignore[no-untyped-def]
            await original(batch)
            if seq.finished == [1]:
                second_done.set()

        seq._verify = verify  # type: ignore[method-assign]
        receipts = await asyncio.gather(*(seq.submit(rec(i).leaf) for i in range(4)))
        assert seq.finished == [1, 0]
        await seq.close()
        return [r.index for r in receipts]

    assert asyncio.run(go()) == [0, 1, 2, 3]  # the order the records came in


def test_no_more_than_two_batches_are_verified_at_once(store) -> None:  # type: ignore[no-untyped-def]
    release = asyncio.Event()

    async def gate(i: int) -> None:
        await release.wait()

    async def go() -> None:
        seq = _GatedSequencer(store, gate)
        submitted = [asyncio.ensure_future(seq.submit(rec(i).leaf)) for i in range(6)]
        for _ in range(200):  # many turns of the loop: the third batch must not start
            await asyncio.sleep(0)
        assert seq.started == [0, 1]
        assert len(seq._logs["dao:vaultmesh"].queue) == 2  # still waiting, not verified
        release.set()
        receipts = await asyncio.gather(*submitted)
        assert [r.index for r in receipts] == list(range(6)) and seq.started == [0, 1, 2]
        await seq.close()

    asyncio.run(go())


def test_a_failed_verification_fails_its_batch_only(store) -> None:  # type: ignore[no-untyped-def]
    async def gate(i: int) -> None:
        if i == 0:
            raise RuntimeError("the verifier broke")

    async def go() -> list[object]:
        seq = _GatedSequencer(store, gate)
        out = await asyncio.gather(*(seq.submit(rec(i).leaf) for i in range(4)),
                                   return_exceptions=True)  # fmt: skip
        await seq.close()
        return [r.index if not isinstance(r, BaseException) else getattr(r, "code", "?")
                for r in out]  # fmt: skip

    assert asyncio.run(go()) == ["storage_failed", "storage_failed", 0, 1]


class _CountingStore:
    """``store`` with its appends and key lookups counted."""

    def __init__(self, store) -> None:  # type: ignore[no-untyped-def]
        self._store = store
        self.appends = self.refused = self.lookups = 0

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._store, name)

    def append(self, batch) -> None:  # type: ignore[no-untyped-def]
        self.appends += 1
        try:
            self._store.append(batch)
        except Exception:
            self.refused += 1
            raise

    def find_keys(self, *args):  # type: ignore[no-untyped-def]
        self.lookups += 1
        return self._store.find_keys(*args)


def test_a_stored_key_in_a_batch_is_decided_record_by_record(store) -> None:  # type: ignore[no-untyped-def]
    """Batches are appended without looking their keys up first.  When one
    holds a stored key, the store refuses it whole; the batch is then decided
    record by record (the resubmission gets its receipt, the replay its
    refusal, the new records are admitted), and the next batches look their
    keys up, so a client replaying in every batch does not make every batch
    pay for two appends."""
    counting = _CountingStore(store)

    async def go() -> None:
        seq = seq_for(counting)
        one = rec(1)
        first = await seq.submit(one.leaf)
        assert (counting.appends, counting.lookups) == (1, 0)  # nothing looked up
        batch = [rec(2).leaf, one.leaf, rec(3, nonce=one.nonce).leaf, rec(4).leaf]
        got = await asyncio.gather(*(seq.submit(x) for x in batch), return_exceptions=True)
        assert not isinstance(got[0], BaseException) and not isinstance(got[3], BaseException)
        assert got[1].index == first.index and got[1].duplicate  # type: ignore[union-attr]
        assert isinstance(got[2], PolicyError) and got[2].code == "nonce_replayed", got[2]
        assert [got[0].index, got[3].index] == [1, 2]  # type: ignore[union-attr]
        assert counting.refused == 1 and counting.lookups == 1
        # The next batches, each with a resubmission: no more refused appends.
        for i in range(5, 15):
            again = await asyncio.gather(seq.submit(rec(i).leaf), seq.submit(one.leaf))
            assert again[1].index == first.index and again[1].duplicate
        assert counting.refused == 1 and counting.lookups == 11
        assert snapshot(store)[0] == 13
        await seq.close()

    asyncio.run(go())
