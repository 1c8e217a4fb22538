"""Cross-namespace messages, the pure part (remembrancer.core.xns): verification of a
message and its proof under the target's trust policy, each refusal with its own code;
freshness; the delivery and answer records and the admission rule that lets them in;
the trusted_sources and handlers configuration."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from remembrancer.core.admission import check_signatures
from remembrancer.core.checkpoint import Checkpoint, sign_checkpoint
from remembrancer.core.cosignature import cosign, format_cosigner_vkey
from remembrancer.core.errors import ConfigError, RemembrancerError, VerificationError
from remembrancer.core.keys import SigningKey
from remembrancer.core.namespace import NamespaceConfig, parse_namespaces
from remembrancer.core.note import Note, Verifier, format_vkey
from remembrancer.core.record import Record, sign_envelope
from remembrancer.core.tlogproof import TlogProof, verify_tlog_proof
from remembrancer.core.xns import (
    KnownHead,
    answer_envelope,
    check_fresh,
    count_cosigners,
    delivery_envelope,
    node_message_kind,
    verify_message,
)
from remembrancer.demo.keys import demo_key
from remembrancer.demo.records import ledger_payload, make_record
from remembrancer.log.schemas import bundled_schemas
from remembrancer.testing.naive_merkle import NaiveTree

EXAMPLE = Path(__file__).resolve().parents[2] / "src" / "remembrancer" / "examples"
SCHEMAS = bundled_schemas()
NOW = 1_764_100_000
ACTOR = demo_key("did:vm:actor:demo")
DAO_W = [demo_key("did:vm:arbiter:prod-us-east-1"), demo_key("did:vm:arbiter:prod-eu-west-1")]
LOG_KEY = SigningKey.generate(b"\x11" * 32)  # the source log's node key
ORIGIN = "alpha.test/dao:vaultmesh"
WITNESS = SigningKey.generate(b"\x22" * 32)
WITNESS_NAME = "beta.test/witness"
WITNESS_VKEY = format_cosigner_vkey(WITNESS_NAME, WITNESS.public)
NODE = SigningKey.generate(b"\x33" * 32)  # the target's node key
KNOWN = {ORIGIN: [Verifier(ORIGIN, LOG_KEY.public)]}


def namespaces(fin_trust: Any = None, **fin: Any) -> dict[str, NamespaceConfig]:
    doc = yaml.safe_load((EXAMPLE / "namespaces.yaml").read_text())
    spaces = doc["namespaces"]
    spaces["ops:audit"] = copy.deepcopy(spaces["dao:vaultmesh"])
    spaces["ops:audit"]["trusted_sources"] = []
    del spaces["ops:audit"]["governance"]
    if fin_trust is not None:
        spaces["fin:clearing"]["trusted_sources"] = fin_trust
    spaces["fin:clearing"].update(fin)
    return parse_namespaces(doc, known_schemas=frozenset(SCHEMAS.names()))


STRICT = [{"namespace": "dao:vaultmesh", "witnesses": [WITNESS_VKEY], "max_lag": 2}]
HOSTED = namespaces(STRICT)  # where the target learns dao:vaultmesh's admission policy
FIN = HOSTED["fin:clearing"]


def message(
    source: str = "dao:vaultmesh",
    target: str = "fin:clearing",
    action: str = "notify",
    operation: str = "status.update",
    parameters: dict[str, Any] | None = None,
    **payload: Any,
) -> Record:
    body = {"source": source, "target": target, "action": action,
            "payload": {"operation": operation, "parameters": parameters or {"status": "done"},
                        **payload}}  # fmt: skip
    return make_record(source, "namespace.message@1.0.0", body, ACTOR, DAO_W, timestamp=NOW)


class SourceLog:
    """A log of the source namespace: leaves, and tlog-proofs with a signed,
    optionally cosigned checkpoint."""

    def __init__(self, records: list[Record], origin: str = ORIGIN, key: SigningKey = LOG_KEY):
        others = [make_record("dao:vaultmesh", "ledger.append@1.0.0", ledger_payload(i), ACTOR,
                              DAO_W, timestamp=NOW).leaf for i in range(3)]  # fmt: skip
        self.leaves = [*others, *(r.leaf for r in records)]
        self.tree = NaiveTree.from_entries(self.leaves)
        self.origin, self.key = origin, key

    def index(self, record: Record) -> int:
        return self.leaves.index(record.leaf)

    def note(self, size: int, cosigned: bool = True) -> bytes:
        note = sign_checkpoint(Checkpoint(self.origin, size, self.tree.root(size)), self.key)
        if not cosigned:
            return note
        body = Note.from_bytes(note)
        line = cosign(body.text, WITNESS, WITNESS_NAME, NOW)
        return body.with_signatures([line]).to_bytes()

    def proof(self, record: Record, size: int | None = None, cosigned: bool = True) -> bytes:
        size = len(self.leaves) if size is None else size
        i = self.index(record)
        hashes = tuple(self.tree.inclusion_proof(i, size))
        return TlogProof(i, hashes, self.note(size, cosigned)).to_bytes()


MSG = message()
OTHER = message(parameters={"status": "other"})
LOG = SourceLog([MSG, OTHER])


def verify(record: Record = MSG, proof: bytes | None = None, ns: NamespaceConfig = FIN) -> Any:
    if proof is None:  # its own proof, or (for records not in the log) the message's
        proof = LOG.proof(record if record.leaf in LOG.leaves else MSG)
    return verify_message(record, proof, ns, SCHEMAS, KNOWN, hosted=HOSTED, node_did=NODE.did)


def refused(code: str, **kw: Any) -> RemembrancerError:
    with pytest.raises(RemembrancerError) as e:
        verify(**kw)
    assert e.value.code == code, e.value.explain()
    return e.value


def test_a_message_with_its_proof_verifies_under_the_targets_policy() -> None:
    v = verify()
    assert v.origin == ORIGIN and v.checkpoint.size == len(LOG.leaves)
    assert v.cosigners == (WITNESS_NAME,)
    assert (v.message.source, v.message.target, v.message.action) == (
        "dao:vaultmesh",
        "fin:clearing",
        "notify",
    )
    # The delivery's proof carries the source record: it verifies offline on its own.
    proof = TlogProof.parse(v.delivery_proof().encode())
    assert proof.extra == MSG.leaf
    verify_tlog_proof(proof, proof.extra, Verifier(ORIGIN, LOG_KEY.public))


def test_the_plain_trusted_sources_form_needs_no_cosignatures() -> None:
    plain = namespaces()["fin:clearing"]
    assert verify(proof=LOG.proof(MSG, cosigned=False), ns=plain).cosigners == ()


def _resign(record: Record, **changes: Any) -> Record:
    env = {k: v for k, v in record.envelope().items() if k != "signatures"}
    env.update(changes)
    return sign_envelope(env, ACTOR, DAO_W)


def _bad_sig(record: Record) -> Record:
    env = record.envelope()
    sig = env["signatures"][0]
    sig["sig"] = ("A" if sig["sig"][0] != "A" else "B") + sig["sig"][1:]
    return Record.from_value(env)


def _tampered_root(proof: bytes) -> bytes:
    p = TlogProof.parse(proof)
    note = Note.from_bytes(p.checkpoint_note)
    cp = Checkpoint.parse(note.text)
    body = Checkpoint(cp.origin, cp.size, bytes(32)).to_body()
    return TlogProof(p.index, p.proof_hashes, Note(body, note.signatures).to_bytes()).to_bytes()


@pytest.mark.parametrize(
    ("code", "kwargs"),
    [
        ("xns_not_a_message", {"record": make_record("dao:vaultmesh", "ledger.append@1.0.0",
                                                     ledger_payload(1), ACTOR, DAO_W, timestamp=NOW)}),
        ("xns_record_invalid", {"record": message(proof="c2sp.org/tlog-proof@v1\n")}),
        ("xns_record_invalid", {"record": message(action="shout")}),
        ("xns_source_mismatch", {"record": _resign(MSG, namespace="ops:audit")}),
        ("xns_target_mismatch", {"record": message(target="ops:audit")}),
        ("xns_message_too_large", {"record": message(parameters={"blob": "x" * 17_000})}),
        ("xns_source_untrusted", {"record": message(source="ops:audit")}),
        ("xns_signature_invalid", {"record": _bad_sig(MSG)}),
        ("xns_proof_truncated", {"proof": LOG.proof(MSG)[:120]}),
        ("xns_proof_malformed", {"proof": LOG.proof(MSG).replace(b"index ", b"index  ", 1)}),
        ("xns_proof_signature_invalid", {"proof": _tampered_root(LOG.proof(MSG))}),
        ("xns_proof_signature_invalid",
         {"proof": SourceLog([MSG], key=SigningKey.generate(b"\x44" * 32)).proof(MSG)}),
        ("xns_proof_origin_mismatch", {"proof": SourceLog([MSG], "alpha.test/ops:audit").proof(MSG)}),
        ("xns_source_log_unknown", {"proof": SourceLog([MSG], "gamma.test/dao:vaultmesh").proof(MSG)}),
        ("xns_cosignatures_missing", {"proof": LOG.proof(MSG, cosigned=False)}),
        ("xns_proof_foreign", {"proof": LOG.proof(OTHER)}),
        ("xns_schema_not_allowed", {"ns": namespaces(schema_policy={"allow": ["ledger.append@1.0.x"]})["fin:clearing"]}),
    ],
)  # fmt: skip
def test_each_refusal_has_its_own_code(code: str, kwargs: dict[str, Any]) -> None:
    refused(code, **kwargs)


def test_a_proof_missing_hashes_is_truncated_and_one_with_extra_hashes_malformed() -> None:
    p = TlogProof.parse(LOG.proof(MSG))
    short = TlogProof(p.index, p.proof_hashes[:-1], p.checkpoint_note).to_bytes()
    long = TlogProof(p.index, (*p.proof_hashes, bytes(32)), p.checkpoint_note).to_bytes()
    refused("xns_proof_truncated", proof=short)
    refused("xns_proof_malformed", proof=long)


def test_no_prefix_of_a_proof_is_accepted_and_each_is_refused_as_incomplete() -> None:
    proof = LOG.proof(MSG)
    codes: dict[str, list[int]] = {}
    for cut in range(len(proof)):
        with pytest.raises(RemembrancerError) as e:
            verify(proof=proof[:cut])
        codes.setdefault(e.value.code, []).append(cut)
    # Only a cut at the start of the cosignature line leaves a complete proof (the
    # witness's cosignature is then missing); every other cut is a truncation.
    assert set(codes) == {"xns_proof_truncated", "xns_cosignatures_missing"}
    assert codes["xns_cosignatures_missing"] == [proof.rindex("\n\u2014".encode()) + 1]


def test_a_pinned_source_log_replaces_the_known_ones() -> None:
    other_key = SigningKey.generate(b"\x55" * 32)
    pinned = namespaces([{"namespace": "dao:vaultmesh",
                          "log_vkeys": [format_vkey("gamma.test/dao:vaultmesh", other_key.public)]}])  # fmt: skip
    gamma = SourceLog([MSG], "gamma.test/dao:vaultmesh", other_key)
    assert verify(proof=gamma.proof(MSG), ns=pinned["fin:clearing"]).origin.startswith("gamma")
    with pytest.raises(RemembrancerError) as e:
        verify(ns=pinned["fin:clearing"])  # a log this node knows, but not the pinned one
    assert e.value.code == "xns_source_log_unknown"


def test_the_log_key_cosigning_its_own_checkpoint_does_not_count() -> None:
    ns = namespaces([{"namespace": "dao:vaultmesh",
                      "witnesses": [format_cosigner_vkey("alpha.test/witness", LOG_KEY.public)]}])  # fmt: skip
    note = Note.from_bytes(LOG.note(len(LOG.leaves), cosigned=False))
    line = cosign(note.text, LOG_KEY, "alpha.test/witness", NOW)
    p = TlogProof.parse(LOG.proof(MSG))
    proof = TlogProof(p.index, p.proof_hashes, note.with_signatures([line]).to_bytes()).to_bytes()
    with pytest.raises(VerificationError) as e:
        verify(proof=proof, ns=ns["fin:clearing"])
    assert e.value.code == "xns_cosignatures_missing"


def test_freshness() -> None:
    v = verify()
    size, root = v.checkpoint.size, v.checkpoint.root_hash
    check_fresh(v.checkpoint, v.trust, [])
    check_fresh(v.checkpoint, v.trust, [KnownHead("accepted", size + 2, bytes(32))])  # max_lag 2
    check_fresh(v.checkpoint, v.trust, [KnownHead("hosted", size, root)])
    with pytest.raises(RemembrancerError) as e:
        check_fresh(v.checkpoint, v.trust, [KnownHead("accepted", size + 3, bytes(32))])
    assert e.value.code == "xns_proof_stale" and e.value.details["accepted"] == size + 3
    for head in (
        KnownHead("accepted", size, bytes(32)),
        KnownHead("witnessed", size, bytes(32)),
        KnownHead("stored", size, bytes(32)),
        KnownHead("hosted", size - 1, LOG.tree.root(size - 1)),  # beyond the hosted log
    ):
        with pytest.raises(RemembrancerError) as e:
            check_fresh(v.checkpoint, v.trust, [head])
        assert e.value.code == "xns_proof_inconsistent", head


def test_count_cosigners_for_waiting() -> None:
    note = LOG.note(5)
    verifier = Verifier(ORIGIN, LOG_KEY.public)
    assert count_cosigners(note, verifier, [WITNESS_VKEY]) == 1
    assert count_cosigners(LOG.note(5, cosigned=False), verifier, [WITNESS_VKEY]) == 0
    assert count_cosigners(note, Verifier(ORIGIN, NODE.public), [WITNESS_VKEY]) == 0


# --- the delivery and answer records, and admission rule 6 for them -------------------


def _delivery(v: Any = None, key: SigningKey = NODE) -> Record:
    v = v or verify()
    return sign_envelope(
        delivery_envelope(v, actor=key.did, timestamp=NOW, nonce="n0nce-abcdef"), key
    )


def test_a_delivery_by_the_node_key_needs_no_record_witnesses() -> None:
    delivery = _delivery()
    assert (
        delivery.namespace == "fin:clearing" and delivery.event_id == "xns:" + MSG.event_hash.hex()
    )
    assert delivery.payload["payload"]["parameters"] == {"status": "done"}
    SCHEMAS.validate(delivery.schema, delivery.payload)
    assert node_message_kind(delivery, FIN) == "delivery"
    check_signatures(delivery, FIN, node_did=NODE.did)  # admitted without witnesses
    with pytest.raises(VerificationError) as e:  # any other node's key: the usual quorum
        check_signatures(delivery, FIN, node_did=SigningKey.generate().did)
    assert e.value.code == "witness_quorum_not_met"
    with pytest.raises(VerificationError):
        check_signatures(delivery, FIN)


@pytest.mark.parametrize(
    "change",
    [
        lambda env: env["payload"]["payload"]["parameters"].update(status="forged"),
        lambda env: env["payload"].update(action="invoke"),
        lambda env: env.update({"event:id": "xns:" + "0" * 64}),
        lambda env: env["payload"]["payload"].update(
            proof=TlogProof.parse(env["payload"]["payload"]["proof"].encode())
            .__class__(0, (), LOG.note(4))
            .to_bytes()
            .decode()
        ),
    ],
)
def test_a_delivery_that_does_not_repeat_its_embedded_message_is_not_exempt(change: Any) -> None:
    env = delivery_envelope(verify(), actor=NODE.did, timestamp=NOW, nonce="n0nce-abcdef")
    change(env)
    forged = sign_envelope(env, NODE)
    assert node_message_kind(forged, FIN) is None
    with pytest.raises(VerificationError) as e:
        check_signatures(forged, FIN, node_did=NODE.did)
    assert e.value.code == "witness_quorum_not_met"


def test_a_delivery_from_a_source_no_longer_trusted_is_not_exempt() -> None:
    untrusting = namespaces([])["fin:clearing"]
    assert node_message_kind(_delivery(), untrusting) is None


def test_the_answer_is_a_notify_back_to_the_source_and_is_exempt() -> None:
    q = message(action="query", operation="log.head", parameters={})
    log = SourceLog([q])
    v = verify_message(q, log.proof(q), FIN, SCHEMAS, KNOWN, hosted=HOSTED)
    delivery = _delivery(v)
    env = answer_envelope(
        v, delivery, {"size": 7}, actor=NODE.did, timestamp=NOW, nonce="n0nce-xyz123"
    )
    answer = sign_envelope(env, NODE)
    SCHEMAS.validate(answer.schema, answer.payload)
    assert (answer.payload["source"], answer.payload["target"], answer.payload["action"]) == (
        "fin:clearing", "dao:vaultmesh", "notify")  # fmt: skip
    params = answer.payload["payload"]["parameters"]
    assert params["inReplyTo"] == delivery.event_hash_hex and params["result"] == {"size": 7}
    assert node_message_kind(answer, FIN) == "answer"
    check_signatures(answer, FIN, node_did=NODE.did)
    env["payload"]["payload"]["parameters"]["message"] = "sha256:" + "0" * 64
    assert node_message_kind(sign_envelope(env, NODE), FIN) is None
    with pytest.raises(RemembrancerError) as e:
        answer_envelope(v, delivery, {"blob": "x" * 17_000}, actor=NODE.did, timestamp=NOW,
                        nonce="n0nce-xyz123")  # fmt: skip
    assert e.value.code == "xns_result_too_large"


# --- configuration ------------------------------------------------------------------


def test_trusted_sources_plain_and_full_forms() -> None:
    fin = namespaces([
        "dao:vaultmesh",
        {"namespace": "ops:audit", "witnesses": [WITNESS_VKEY], "min_cosigners": 0, "max_lag": 5},
    ])["fin:clearing"]  # fmt: skip
    assert fin.trusted("dao:vaultmesh") is not None
    assert fin.trusted("dao:vaultmesh").min_cosigners == 0  # type: ignore[union-attr]
    audit = fin.trusted("ops:audit")
    assert audit is not None and (audit.witnesses, audit.min_cosigners, audit.max_lag) == (
        (WITNESS_VKEY,), 0, 5)  # fmt: skip
    assert FIN.trusted("dao:vaultmesh").min_cosigners == 1  # type: ignore[union-attr]  # default: all
    assert fin.trusted("nobody:here") is None
    assert fin.to_dict()["trusted_sources"][1]["witnesses"] == [WITNESS_VKEY]
    assert fin.to_dict()["handlers"] == {"ping": "echo"}


@pytest.mark.parametrize(
    ("trust", "fin", "code"),
    [
        (["fin:clearing"], {}, "trusted_source_invalid"),  # itself
        (["dao:vaultmesh", "dao:vaultmesh"], {}, "trusted_source_duplicate"),
        ([{"namespace": "dao:vaultmesh", "quorum": 1}], {}, "config_key_unknown"),
        ([{"namespace": "dao:vaultmesh", "witnesses": ["nope"]}], {}, "vkey_invalid"),
        ([{"namespace": "dao:vaultmesh", "witnesses": [WITNESS_VKEY], "min_cosigners": 2}], {},
         "trusted_source_quorum_impossible"),
        ([{"namespace": "dao:vaultmesh", "witnesses": [WITNESS_VKEY, WITNESS_VKEY]}], {},
         "witness_duplicate"),
        ([{"namespace": "dao:vaultmesh", "log_vkeys": [format_vkey("a.test/ops:audit", LOG_KEY.public)]}],
         {}, "trusted_source_vkey_invalid"),
        ([{"namespace": "dao:vaultmesh", "max_lag": -1}], {}, "config_invalid"),
        ([42], {}, "trusted_source_invalid"),
        (None, {"handlers": {"ping": "os.system"}}, "handler_invalid"),
        (None, {"handlers": {"bad op!": "echo"}}, "handler_invalid"),
        (["ext:elsewhere"], {}, "trusted_source_policy_unknown"),  # not hosted, no policy
        ([{"namespace": "dao:vaultmesh", "record_witnesses": [1]}], {}, "config_invalid"),
        ([{"namespace": "dao:vaultmesh", "record_witnesses": {"min_required": 2, "allowlist": [ACTOR.did]}}],
         {}, "witness_quorum_impossible"),
        ([{"namespace": "dao:vaultmesh", "record_witnesses": {"allowlist": ["did:vm:nobody"]}}], {},
         "alias_unknown"),
    ],
)  # fmt: skip
def test_bad_trust_and_handler_configuration_is_refused(trust: Any, fin: Any, code: str) -> None:
    with pytest.raises(ConfigError) as e:
        namespaces(trust, **fin)
    assert e.value.code == code


# --- the source's admission policy (check 3, issue 14 rule 4) ---------------------------

THROWAWAY = SigningKey.generate(b"\x66" * 32)


def _by(actor: SigningKey, witnesses: list[SigningKey], **kw: Any) -> Record:
    """A message of dao:vaultmesh signed by ``actor`` and ``witnesses``, in its own log."""
    body = {"source": "dao:vaultmesh", "target": "fin:clearing", "action": "invoke",
            "payload": {"operation": "ping", "parameters": kw or {"n": 1}}}  # fmt: skip
    return make_record("dao:vaultmesh", "namespace.message@1.0.0", body, actor, witnesses,
                       timestamp=NOW)  # fmt: skip


@pytest.mark.parametrize(
    ("witnesses", "counted", "reasons"),
    [
        ([], [], []),  # the attack of issue 14: a throwaway actor, no witnesses
        ([DAO_W[0]], [DAO_W[0].did], []),  # one short of min_required 2
        ([DAO_W[0], DAO_W[0]], [DAO_W[0].did], ["duplicate"]),
        ([DAO_W[0], THROWAWAY], [DAO_W[0].did], ["actor"]),  # the actor witnessing itself
        ([DAO_W[0], SigningKey.generate(b"\x77" * 32)], [DAO_W[0].did], ["not_allowlisted"]),
    ],
)
def test_a_message_its_source_namespace_would_not_admit_is_refused(
    witnesses: list[SigningKey], counted: list[str], reasons: list[str]
) -> None:
    """The record is in a log the target knows, with a valid proof and a valid actor
    signature, but lacks the record witnesses dao:vaultmesh requires (2 of its
    allowlist): whoever keeps that log admitted it, dao:vaultmesh did not."""
    rec = _by(THROWAWAY, witnesses)
    e = refused("xns_source_policy_unmet", record=rec, proof=SourceLog([rec]).proof(rec))
    assert e.details["required"] == 2 and e.details["counted"] == counted
    assert [i["reason"] for i in e.details["ignored"]] == reasons
    assert e.details["policy"] == "namespaces"


def test_the_source_policy_comes_from_the_trust_entry_when_the_source_is_not_hosted() -> None:
    pinned = [{"namespace": "dao:vaultmesh", "record_witnesses": {
        "min_required": 1, "allowlist": ["did:vm:arbiter:prod-eu-west-1"]}}]  # fmt: skip
    fin = namespaces(pinned)["fin:clearing"]
    only_fin = {"fin:clearing": fin}  # dao:vaultmesh is not hosted here
    one = _by(THROWAWAY, [DAO_W[1]])
    v = verify_message(one, SourceLog([one]).proof(one), fin, SCHEMAS, KNOWN, hosted=only_fin)
    assert v.message.record == one
    # The hosted namespace's rule (2 witnesses) does not apply: the entry's does.
    assert verify_message(one, SourceLog([one]).proof(one), fin, SCHEMAS, KNOWN,
                          hosted=namespaces(pinned)).message.record == one  # fmt: skip
    other = _by(THROWAWAY, [DAO_W[0]])  # allowlisted by dao:vaultmesh, not by the entry
    with pytest.raises(VerificationError) as e:
        verify_message(other, SourceLog([other]).proof(other), fin, SCHEMAS, KNOWN, hosted=only_fin)
    assert e.value.code == "xns_source_policy_unmet"
    assert e.value.details["policy"] == "trusted_sources"
    assert fin.to_dict()["trusted_sources"][0]["record_witnesses"] == {
        "min_required": 1,
        "allowlist": [{"alias": "did:vm:arbiter:prod-eu-west-1", "did": DAO_W[1].did}],
    }


def test_without_a_known_policy_for_the_source_nothing_is_delivered() -> None:
    """Configuration refuses such an entry (trusted_source_policy_unknown); verify_message
    refuses too, for a configuration built by hand, or an empty ``hosted``."""
    e = refused_with(hosted={})
    assert e.code == "xns_source_policy_unknown"


def refused_with(**kw: Any) -> RemembrancerError:
    with pytest.raises(RemembrancerError) as e:
        verify_message(MSG, LOG.proof(MSG), FIN, SCHEMAS, KNOWN, **kw)
    return e.value


def test_an_answer_by_this_nodes_key_from_a_hosted_source_is_admissions_own_exception() -> None:
    """An answer (fin:clearing -> dao:vaultmesh, signed by the node key only) of a namespace
    this node hosts meets fin:clearing's policy as its own admission did: the same
    exception, under the same conditions; signed by another key it does not."""
    q = message(action="query", operation="log.head", parameters={})
    v = verify_message(q, SourceLog([q]).proof(q), FIN, SCHEMAS, KNOWN, hosted=HOSTED)
    delivery = _delivery(v)
    env = answer_envelope(v, delivery, {"size": 7}, actor=NODE.did, timestamp=NOW,
                          nonce="n0nce-xyz123")  # fmt: skip
    answer = sign_envelope(env, NODE)
    dao = HOSTED["dao:vaultmesh"]
    fin_origin = "alpha.test/fin:clearing"
    log = SourceLog([answer], fin_origin, NODE)
    known = {fin_origin: [Verifier(fin_origin, NODE.public)]}
    got = verify_message(answer, log.proof(answer), dao, SCHEMAS, known, hosted=HOSTED,
                         node_did=NODE.did)  # fmt: skip
    assert got.message.action == "notify"
    for did in (None, SigningKey.generate().did):
        with pytest.raises(VerificationError) as e:
            verify_message(answer, log.proof(answer), dao, SCHEMAS, known, hosted=HOSTED,
                           node_did=did)  # fmt: skip
        assert e.value.code == "xns_source_policy_unmet"


def test_a_delivery_view_waits_for_the_answer_being_committed() -> None:
    # The delivery of a query is committed before its answer.  A client polling
    # the delivery view in between must get the answer, not the delivery alone.
    from remembrancer.federation.xns import Messaging
    from remembrancer.log.namespaces import StaticNamespaces
    from remembrancer.log.sequencer import Sequencer
    from remembrancer.storage.memory import MemoryStore

    body = {"source": "dao:vaultmesh", "target": "fin:clearing", "action": "query",
            "payload": {"operation": "log.head", "parameters": {}}}  # fmt: skip
    query = make_record("dao:vaultmesh", "namespace.message@1.0.0", body, ACTOR, DAO_W,
                        timestamp=NOW)  # fmt: skip
    log = SourceLog([query])

    async def go() -> tuple[dict[str, Any], dict[str, Any]]:
        seq = Sequencer(MemoryStore(), NODE, "beta.test", StaticNamespaces(HOSTED),
                        clock=lambda: NOW)  # fmt: skip
        answering, release = asyncio.Event(), asyncio.Event()

        async def submit(record: Record) -> Any:
            if record.event_id.startswith("xns-answer:"):  # held between the two commits
                answering.set()
                await release.wait()
            return await seq.submit(record)

        messaging = Messaging(seq, submit=submit, witnessed=KNOWN, clock=lambda: NOW)
        delivering = asyncio.create_task(messaging.deliver(FIN, query, log.proof(query)))
        await asyncio.wait_for(answering.wait(), 10)
        view = asyncio.create_task(messaging.delivery_view("fin:clearing", query.event_hash))
        # An absence check, bounded: without the wait, the view answers at once
        # (with the delivery alone); with it, it is still waiting for the answer.
        answered, _ = await asyncio.wait({view}, timeout=1)
        assert not answered, "the view answered while the answer was being committed"
        release.set()
        done = await delivering
        seen = await view
        await seq.close()
        return done, seen

    done, seen = asyncio.run(go())
    assert seen["answer"] is not None and seen["answer"] == done["answer"]
    assert seen["answer"]["result"]["origin"] == "beta.test/fin:clearing"
