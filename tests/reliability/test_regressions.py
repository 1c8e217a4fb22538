"""Regression tests for the bugs the reliability suite found (docs/reliability.md),
each named after the bug it pins.  The fault and security modules hold the
ones that need processes or a filesystem (/healthz failing while the store is
down, a full disk reported as a generic storage failure, extracting a backup
through a symlink)."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from remembrancer.core.anchor import AnchorReceipt
from remembrancer.core.errors import FormatError

# Requests that the development TSA could not answer properly (found by fuzzing).
NEGATIVE_NONCE = bytes.fromhex(
    "303c0201013031300d06096086480165030402010500042066687aadf862bd776c8fc18b8e9f8e20"
    "089714856ee233b3902a591d0d5f29250201850101ff"
)
BROKEN_OID = bytes.fromhex(
    "303c0201013031300d06096025020165030402010500042066687aadf862bd776c8fc18b8e9f8e20"
    "089714856ee233b3902a591d0d5f29864801050101ff"
)


def test_a_federation_message_with_a_non_string_role_or_kind_is_malformed_not_a_500(
    rel: Any, tmp_path: Path
) -> None:
    """``Message.parse`` tested membership of an unhashable value in a frozenset and
    raised TypeError: the route answered 500 to any peer sending ``"role": []``."""

    async def go() -> None:
        w = await rel.make_world(tmp_path, records=1)
        try:
            signature = {
                "node": rel.PEER.did,
                "role": [],
                "timestamp": int(time.time()),
                "sig": "A" * 86,
            }
            countersign = {"namespace": "dao:vaultmesh", "receipt_id": "ab" * 32 + "/rfc3161:tsa/x",
                           "signature": signature}  # fmt: skip
            evidence = {"kind": {"equivocation": 1}, "subject": rel.FOREIGN, "file": "x\n"}
            for kind, content in (("countersign", countersign), ("evidence", evidence)):
                answer = await w.post("/federation/v1/messages", w.message(kind, content))
                assert answer.status == 400, answer.body
                assert answer.json()["error"]["code"] == "malformed"
        finally:
            await rel.close_world(w)

    asyncio.run(go())


def test_claim_evidence_with_a_non_string_kind_or_finding_is_malformed() -> None:
    """``ClaimEvidence`` looked a dict ``kind`` up in a dict: TypeError."""
    from remembrancer.federation.evidence.claims import ClaimEvidence

    for kind, finding in (({"a": 1}, "signature_invalid"), ("forged_countersignature", ["x"])):
        with pytest.raises(FormatError) as e:
            ClaimEvidence(
                kind, "f", "did:key:z", b"m", "/r", "did:key:z", finding, "did:key:z", 1, bytes(64)
            )  # type: ignore[arg-type]
        assert e.value.code == "evidence_malformed"


def test_an_anchor_receipt_with_an_infinite_size_is_malformed_not_an_overflow() -> None:
    """``int(float('inf'))`` raised OverflowError out of ``AnchorReceipt.from_dict``."""
    doc = {"type": "remembrancer.anchor-receipt/v1", "origin": "o", "size": float("inf"),
           "checkpoint": "c", "root": "sha256:" + "00" * 32, "anchors": []}  # fmt: skip
    with pytest.raises(FormatError) as e:
        AnchorReceipt.from_dict(doc)
    assert e.value.code == "anchor_receipt_malformed"
    anchor = {"target": "rfc3161:tsa", "root": "sha256:" + "00" * 32, "observedAt": float("-inf")}
    with pytest.raises(FormatError):
        AnchorReceipt.from_dict({**doc, "size": 1, "anchors": [anchor]})


@pytest.mark.parametrize(
    ("request_der", "why"),
    [(NEGATIVE_NONCE, "negative"), (BROKEN_OID, "DER TimeStampReq")],
    ids=["negative nonce", "malformed nesting"],
)
def test_the_dev_tsa_rejects_what_it_cannot_timestamp(request_der: bytes, why: str) -> None:
    """The development TSA signed tokens with a negative nonce, which verifiers
    cannot parse, and raised AttributeError on a malformed request."""
    from remembrancer.anchoring.rfc3161.devtsa import DevTsa
    from remembrancer.anchoring.rfc3161.parse import parse_response
    from remembrancer.core.errors import VerificationError

    tsa = DevTsa(tempfile.mkdtemp(prefix="remembrancer-tsa-"))
    with pytest.raises(VerificationError) as e:
        parse_response(tsa.respond(request_der))
    assert e.value.code == "tsa_status_rejected" and why in e.value.message


def test_a_commit_whose_answer_was_lost_does_not_wedge_the_log(rel: Any, tmp_path: Path) -> None:
    """Regression: when the store committed a batch but the answer never arrived
    (a PostgreSQL connection dropped during COMMIT), the sequencer kept its
    pre-batch tree and every later append failed with ``log_size_moved`` until a
    restart.  Now it re-reads the durable state: the next record goes in after
    the committed ones, and resubmitting the unacknowledged record returns the
    receipt of the copy that was committed."""
    from remembrancer.core.errors import StorageError
    from remembrancer.storage.sqlite import SqliteStore

    class LosesOneAnswer(SqliteStore):
        lose = False

        def append(self, batch: Any) -> None:
            super().append(batch)
            if self.lose and batch.entries:
                self.lose = False
                raise StorageError("server closed the connection unexpectedly", code="unavailable")

    async def go() -> None:
        w = await rel.make_world(tmp_path, records=0)  # dao:vaultmesh untouched so far
        store = LosesOneAnswer(tmp_path / "lost.db")
        w.node.sequencer.store = store  # its log goes to a store of its own
        try:
            first = w.record("dao:vaultmesh", 1)
            store.lose = True
            answer = await w.post("/v1/namespaces/dao:vaultmesh/records", first.leaf)
            assert answer.status == 503 and answer.json()["error"]["code"] == "unavailable"
            assert store.log_state("dao:vaultmesh").size == 1  # it was committed all the same
            second = await w.post(
                "/v1/namespaces/dao:vaultmesh/records", w.record("dao:vaultmesh", 2).leaf
            )
            assert second.status == 200, second.body
            assert second.json()["index"] == 1
            again = await w.post("/v1/namespaces/dao:vaultmesh/records", first.leaf)
            assert again.status == 200 and again.json()["index"] == 0
        finally:
            w.node.sequencer.store = w.node.store
            store.close()
            await rel.close_world(w)

    asyncio.run(go())
