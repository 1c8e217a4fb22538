"""Cross-namespace messages, ``namespace.message@1.0.0`` (DESIGN.md 3.10): the pure part.

A *message* is a record of schema ``namespace.message@1.0.x`` admitted in the
log of its source namespace (``namespace`` equals ``payload.source``).  It
travels to its target with a ``c2sp.org/tlog-proof@v1`` of its inclusion
beside it: a record cannot carry the proof of its own inclusion.  The node of
the target checks, in this order, each failure with its own code:

1. the record is a message of its source for this target, within the size
   limits, and the target admits message records (``xns_record_invalid``,
   ``xns_not_a_message``, ``xns_source_mismatch``, ``xns_target_mismatch``,
   ``xns_message_too_large``, ``xns_schema_not_allowed``);
2. the target trusts the source and knows its admission policy
   (``xns_source_untrusted``, ``xns_source_policy_unknown``);
3. the actor's signature verifies (``xns_signature_invalid``), and the record
   meets the *source* namespace's admission policy as the target knows it
   from its own configuration (:func:`source_policy`): enough distinct
   allowlisted record witnesses signed it (``xns_source_policy_unmet``).  A
   proof shows only that some log of that name holds the record; the log's
   key holder decides what that log admits, so this is what makes it a
   message *of the source namespace*;
4. the proof is complete and well formed (``xns_proof_truncated``,
   ``xns_proof_malformed``);
5. its checkpoint is of a log of the source namespace whose key the target
   knows (``xns_proof_origin_mismatch``, ``xns_source_log_unknown``) and that
   key signed it (``xns_proof_signature_invalid``);
6. enough of the witnesses the target trusts cosigned it
   (``xns_cosignatures_missing``);
7. it proves this record's leaf (``xns_proof_foreign``).

:func:`verify_message` makes checks 1 to 7.  Two more need the target node's
state and are made by ``remembrancer.federation.xns``: the message was not
delivered before (``xns_replayed``), and the proof is fresh and consistent
with the source checkpoints known there (:func:`check_fresh`:
``xns_proof_stale``, ``xns_proof_inconsistent``).

The target then records the *delivery* in its own log: a
``namespace.message`` record of the target, written by the node's key, that
repeats the message and carries the source proof in ``payload.proof`` with
the source record in the proof's ``extra`` line, so that the delivery is
provable and checkable offline on its own (:func:`delivery_envelope`).  A
``query`` or ``invoke`` also gets an *answer*: a ``notify`` message from the
target back to the source holding the result (:func:`answer_envelope`).
:func:`node_message_kind` is admission rule 6 for these two kinds of record
(docs/messaging.md, "Admission of deliveries").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final, Literal

from remembrancer.core.checkpoint import Checkpoint, open_checkpoint
from remembrancer.core.cosignature import CosignatureVerifier, parse_cosigner_vkey
from remembrancer.core.errors import (
    ConflictError,
    FormatError,
    InconsistencyError,
    PolicyError,
    RemembrancerError,
    VerificationError,
)
from remembrancer.core.jcs import canonicalize
from remembrancer.core.keys import PublicKey, public_from_did_key
from remembrancer.core.namespace import NamespaceConfig, TrustedSource, WitnessPolicy
from remembrancer.core.note import NoteVerifier, Verifier, parse_vkey
from remembrancer.core.quorum import count_witnesses
from remembrancer.core.record import HASH_RE, Record, unsigned_envelope
from remembrancer.core.rfc6962 import hash_leaf, root_from_inclusion_proof
from remembrancer.core.schema import SchemaRegistry
from remembrancer.core.tlogproof import TlogProof

__all__ = [
    "ACTIONS",
    "ANSWER_PREFIX",
    "DELIVERY_PREFIX",
    "MAX_MESSAGE_BYTES",
    "MAX_PARAMETERS_BYTES",
    "MAX_RESULT_BYTES",
    "MESSAGE_SCHEMA",
    "QUERY_OPERATIONS",
    "KnownHead",
    "Message",
    "SourcePolicy",
    "VerifiedMessage",
    "answer_envelope",
    "answer_event_id",
    "check_fresh",
    "check_source_policy",
    "count_cosigners",
    "delivery_envelope",
    "delivery_event_id",
    "node_message_kind",
    "parse_proof",
    "source_policy",
    "verify_message",
]

Action = Literal["invoke", "query", "notify"]
ACTIONS: Final = ("invoke", "query", "notify")
MESSAGE_NAME: Final = "namespace.message"
MESSAGE_SCHEMA: Final = "namespace.message@1.0.0"
MAX_MESSAGE_BYTES: Final = 24_576  # the source record, canonical (it is repeated in the delivery)
MAX_PARAMETERS_BYTES: Final = 16_384  # payload.parameters, canonical
MAX_RESULT_BYTES: Final = 16_384  # an answer's result, canonical
QUERY_OPERATIONS: Final = ("log.head", "record.get")
DELIVERY_PREFIX: Final = "xns:"
ANSWER_PREFIX: Final = "xns-answer:"


def delivery_event_id(message_hash: bytes) -> str:
    """The ``event:id`` of the delivery of a message: one per message and target log,
    so the target's replay rule (admission rule 7) refuses a second delivery."""
    return DELIVERY_PREFIX + message_hash.hex()


def answer_event_id(message_hash: bytes) -> str:
    """The ``event:id`` of the answer to a query or invoke message."""
    return ANSWER_PREFIX + message_hash.hex()


@dataclass(frozen=True, slots=True)
class Message:
    """A well-formed message record, read (check 1 without the target's policy)."""

    record: Record
    source: str
    target: str
    action: Action
    operation: str
    parameters: dict[str, Any]

    @property
    def event_hash(self) -> bytes:
        return self.record.event_hash

    @classmethod
    def from_record(cls, record: Record, schemas: SchemaRegistry) -> Message:
        if record.schema_name != MESSAGE_NAME:
            raise FormatError(
                f"a {record.schema} record is not a cross-namespace message ({MESSAGE_SCHEMA})",
                code="xns_not_a_message",
            )
        try:
            schemas.validate(record.schema, record.payload)
        except RemembrancerError as e:
            raise FormatError(
                f"the message record is invalid: {e.message}",
                code="xns_record_invalid",
                details={"cause": e.code, **e.details},
            ) from e
        p = record.payload
        inner = p["payload"]
        if p["source"] != record.namespace:
            raise FormatError(
                f"the message's source is {p['source']} but the record is in {record.namespace}",
                code="xns_source_mismatch",
            )
        if p["target"] == p["source"]:
            raise FormatError(
                "a message's target differs from its source", code="xns_record_invalid"
            )
        if "proof" in inner:
            raise FormatError(
                "a message record carries no proof: its proof travels beside it",
                code="xns_record_invalid",
            )
        if len(record.leaf) > MAX_MESSAGE_BYTES:
            raise FormatError(
                f"the message record is {len(record.leaf)} bytes; at most {MAX_MESSAGE_BYTES}"
                " can be delivered (the delivery repeats it)",
                code="xns_message_too_large",
                details={"size": len(record.leaf), "limit": MAX_MESSAGE_BYTES},
            )
        size = len(canonicalize(inner["parameters"]))
        if size > MAX_PARAMETERS_BYTES:
            raise FormatError(
                f"parameters are {size} bytes; at most {MAX_PARAMETERS_BYTES}",
                code="xns_message_too_large",
                details={"size": size, "limit": MAX_PARAMETERS_BYTES},
            )
        return cls(
            record, p["source"], p["target"], p["action"], inner["operation"], inner["parameters"]
        )


def parse_proof(data: bytes) -> TlogProof:
    """Parse the proof that travels with a message.

    ``xns_proof_truncated`` when the text ends before a complete proof (no
    blank line before the checkpoint, no final newline, or a checkpoint
    without a signature line); ``xns_proof_malformed`` for any other
    deviation from ``c2sp.org/tlog-proof@v1``.
    """
    split = data.find(b"\n\n")
    note = data[split + 2 :] if split >= 0 else b""
    if split < 0 or not data.endswith(b"\n") or b"\n\n" not in note or note.endswith(b"\n\n"):
        raise FormatError(
            "the proof ends before its checkpoint and signature", code="xns_proof_truncated"
        )
    try:
        return TlogProof.parse(data)
    except FormatError as e:
        raise FormatError(
            f"the proof is not a c2sp.org/tlog-proof@v1 file: {e.message}",
            code="xns_proof_malformed",
            details={"cause": e.code},
        ) from e


@dataclass(frozen=True, slots=True)
class VerifiedMessage:
    """A message whose proof verified under the target's trust policy (checks 1 to 7)."""

    message: Message
    trust: TrustedSource
    proof: TlogProof
    checkpoint: Checkpoint
    cosigners: tuple[str, ...]

    @property
    def origin(self) -> str:
        return self.checkpoint.origin

    def delivery_proof(self) -> str:
        """The proof as the delivery records it: the source record in ``extra``."""
        p = self.proof
        return (
            TlogProof(p.index, p.proof_hashes, p.checkpoint_note, self.message.record.leaf)
            .to_bytes()
            .decode()
        )


@dataclass(frozen=True, slots=True)
class SourcePolicy:
    """The admission policy of a message's source namespace, as the target knows it.

    ``rule`` is the source's record-witness rule; ``learned_from`` says
    where the target's node learned it: the ``trusted_sources`` entry's
    ``record_witnesses``, or the source's own entry in this node's namespaces
    (a namespace it hosts).  Both are this node's operator configuration; a
    peer, a proof or the message cannot change them.  ``hosted`` is the
    source's configuration when this node hosts it (for the node-message
    exception of admission rule 6: :func:`check_source_policy`).
    """

    namespace: str
    rule: WitnessPolicy
    learned_from: Literal["trusted_sources", "namespaces"]
    hosted: NamespaceConfig | None = None


def source_policy(trust: TrustedSource, hosted: NamespaceConfig | None) -> SourcePolicy:
    """Check 2's second half: the source's admission policy, from this node's
    configuration only (``xns_source_policy_unknown`` when it has none;
    configuration loading refuses that already, ``trusted_source_policy_unknown``)."""
    if trust.record_witnesses is not None:
        return SourcePolicy(trust.namespace, trust.record_witnesses, "trusted_sources", hosted)
    if hosted is not None and hosted.name == trust.namespace:
        rule = WitnessPolicy(hosted.min_required, hosted.witnesses)
        return SourcePolicy(trust.namespace, rule, "namespaces", hosted)
    raise PolicyError(
        f"this node does not know the admission policy of {trust.namespace}: it hosts no"
        " such namespace and its trusted_sources entry has no record_witnesses",
        code="xns_source_policy_unknown",
        details={"source": trust.namespace},
    )


def check_source_policy(
    record: Record, policy: SourcePolicy, *, node_did: str | None = None
) -> tuple[str, ...]:
    """Check 3's second half: the message record meets its source namespace's
    admission rule 6 as ``policy`` states it; returns the record witnesses
    that count, or raises ``xns_source_policy_unmet`` (422) with a
    per-signature account, like admission's ``witness_quorum_not_met``.

    The one exception is admission's own: a delivery or answer record written
    by ``node_did`` (this node's key) into a namespace this node hosts
    (:func:`node_message_kind` under that namespace's configuration), such
    as an answer from one namespace of this node delivered to another."""
    if (
        node_did is not None
        and policy.hosted is not None
        and record.actor == node_did
        and node_message_kind(record, policy.hosted) is not None
    ):
        return ()
    count = count_witnesses(record, policy.rule.allowlist)
    if len(count.counted) < policy.rule.min_required:
        where = (
            "its trusted_sources entry"
            if policy.learned_from == "trusted_sources"
            else "this node's namespaces"
        )
        raise VerificationError(
            f"the message has {len(count.counted)} valid signatures of record witnesses"
            f" that {policy.namespace} allowlists ({where}); its admission policy requires"
            f" {policy.rule.min_required}, so it is not a message of {policy.namespace},"
            " whatever log holds it",
            code="xns_source_policy_unmet",
            details={"source": policy.namespace, "policy": policy.learned_from,
                     **count.details(policy.rule.min_required)},
        )  # fmt: skip
    return count.counted


def verify_message(
    record: Record,
    proof_data: bytes,
    target: NamespaceConfig,
    schemas: SchemaRegistry,
    known_logs: Mapping[str, Sequence[NoteVerifier]],
    *,
    hosted: Mapping[str, NamespaceConfig] | None = None,
    node_did: str | None = None,
) -> VerifiedMessage:
    """Checks 1 to 7 of the module docstring; raise at the first failure.

    ``known_logs`` maps log origins to the note keys this node knows for them
    (its own logs, the logs it witnesses); a ``trusted_sources`` entry with
    ``log_vkeys`` replaces it for its source.  ``hosted`` are the namespaces
    this node hosts (where the source's admission policy may come from) and
    ``node_did`` this node's key (see :func:`check_source_policy`).
    """
    msg = Message.from_record(record, schemas)
    if msg.target != target.name:
        raise FormatError(
            f"the message is for {msg.target}, not {target.name}",
            code="xns_target_mismatch",
            details={"target": msg.target},
        )
    if not target.schema_allowed(MESSAGE_SCHEMA):
        raise PolicyError(
            f"{target.name} does not admit {MESSAGE_SCHEMA} records",
            code="xns_schema_not_allowed",
        )
    trust = target.trusted(msg.source)
    if trust is None:
        raise PolicyError(
            f"{target.name} does not trust messages from {msg.source}",
            code="xns_source_untrusted",
            details={
                "source": msg.source,
                "trusted": [t.namespace for t in target.trusted_sources],
            },
        )
    policy = source_policy(trust, (hosted or {}).get(msg.source))
    _check_actor_signature(record)
    check_source_policy(record, policy, node_did=node_did)
    proof = parse_proof(proof_data)
    # The parse checked the checkpoint: its first line is the origin.
    origin = proof.checkpoint_note.partition(b"\n")[0].decode("utf-8")
    candidates = _log_verifiers(origin, msg.source, trust, known_logs)
    cosigner_verifiers = [_cosigner(v) for v in trust.witnesses]
    signed = verifier = None
    for candidate in candidates:  # several keys: a rotation; the one that signed
        try:
            signed = open_checkpoint(proof.checkpoint_note, candidate, cosigner_verifiers)
            verifier = candidate
            break
        except VerificationError as e:
            if e.code == "checkpoint_unsigned":
                continue
            raise VerificationError(
                f"the proof's checkpoint does not verify: {e.message}",
                code="xns_proof_signature_invalid",
                details={"cause": e.code, "origin": origin},
            ) from e
        except FormatError as e:
            raise FormatError(
                f"the proof's checkpoint is malformed: {e.message}",
                code="xns_proof_malformed",
                details={"cause": e.code},
            ) from e
    if signed is None:
        raise VerificationError(
            f"the proof's checkpoint is not signed by the key of {origin!r}",
            code="xns_proof_signature_invalid",
            details={"origin": origin},
        )
    checkpoint = signed.checkpoint
    counted = [c.name for c in signed.distinct_cosigners(getattr(verifier, "public_key", None))]
    if len(counted) < trust.min_cosigners:
        raise VerificationError(
            f"the proof's checkpoint has {len(counted)} cosignatures of witnesses that"
            f" {target.name} trusts for {msg.source}; it needs {trust.min_cosigners}",
            code="xns_cosignatures_missing",
            details={"required": trust.min_cosigners, "verified": sorted(counted),
                     "size": checkpoint.size},
        )  # fmt: skip
    _check_inclusion(proof, checkpoint, record.leaf)
    return VerifiedMessage(msg, trust, proof, checkpoint, tuple(counted))


def count_cosigners(note: bytes, log_verifier: NoteVerifier, witnesses: Sequence[str]) -> int:
    """How many distinct keys among the cosigner vkeys ``witnesses`` (other than
    the log's own key) validly cosigned the checkpoint ``note``; 0 when the
    note does not verify.  For waiting until a proof will satisfy a policy."""
    try:
        signed = open_checkpoint(note, log_verifier, [_cosigner(w) for w in witnesses])
    except RemembrancerError:
        return 0
    return len(signed.distinct_cosigners(getattr(log_verifier, "public_key", None)))


def _check_actor_signature(record: Record) -> None:
    sigs = [s for s in record.signatures if s.role == "actor"]
    if len(sigs) != 1 or sigs[0].kid != record.actor:
        raise VerificationError(
            "the message record needs exactly one actor signature, by its actor",
            code="xns_signature_invalid",
        )
    if not _public(record.actor).verify(record.signing_input, sigs[0].sig):
        raise VerificationError(
            "the actor signature of the message does not verify",
            code="xns_signature_invalid",
            details={"actor": record.actor},
        )


def _log_verifiers(
    origin: str,
    source: str,
    trust: TrustedSource,
    known_logs: Mapping[str, Sequence[NoteVerifier]],
) -> list[NoteVerifier]:
    prefix, _, tail = origin.rpartition("/")
    if not prefix or tail != source:
        raise VerificationError(
            f"the proof is for log {origin!r}, not a log of {source}",
            code="xns_proof_origin_mismatch",
            details={"origin": origin, "source": source},
        )
    if trust.log_vkeys:
        candidates: Sequence[NoteVerifier] = [_log_key(v) for v in trust.log_vkeys]
    else:
        candidates = known_logs.get(origin, ())
    found = [v for v in candidates if v.name == origin]
    if not found:
        raise PolicyError(
            f"this node knows no key of the log {origin!r}: it is neither hosted nor witnessed"
            " here, nor pinned in trusted_sources",
            code="xns_source_log_unknown",
            details={"origin": origin},
        )
    return found


@lru_cache(maxsize=1024)
def _log_key(vkey: str) -> Verifier:
    return parse_vkey(vkey)


@lru_cache(maxsize=1024)
def _cosigner(vkey: str) -> CosignatureVerifier:
    return parse_cosigner_vkey(vkey)


@lru_cache(maxsize=4096)
def _public(did: str) -> PublicKey:
    return public_from_did_key(did)


def _check_inclusion(proof: TlogProof, checkpoint: Checkpoint, leaf: bytes) -> None:
    try:
        root = root_from_inclusion_proof(
            proof.index, checkpoint.size, hash_leaf(leaf), proof.proof_hashes
        )
    except VerificationError as e:
        short = e.code == "proof_wrong_length" and e.details["length"] < e.details["expected"]
        raise FormatError(
            f"the inclusion proof is {'truncated' if short else 'malformed'}: {e.message}",
            code="xns_proof_truncated" if short else "xns_proof_malformed",
            details=e.details,
        ) from e
    if root != checkpoint.root_hash:
        raise VerificationError(
            f"the proof is not a proof of this record: for leaf {proof.index} it leads to another"
            f" root than the checkpoint's at size {checkpoint.size}",
            code="xns_proof_foreign",
            details={"index": proof.index, "size": checkpoint.size},
        )


@dataclass(frozen=True, slots=True)
class KnownHead:
    """A checkpoint of a source log that the target already holds as true.

    ``kind``: ``hosted`` (the target's node is the log's home: ``size`` is its
    current size, and no valid checkpoint can be larger), ``stored`` (the
    home node's stored checkpoint at some size), ``witnessed`` (the latest it
    cosigned as a witness) or ``accepted`` (the newest in a delivery it
    accepted).
    """

    kind: Literal["hosted", "stored", "witnessed", "accepted"]
    size: int
    root_hash: bytes


def check_fresh(checkpoint: Checkpoint, trust: TrustedSource, known: Sequence[KnownHead]) -> None:
    """Check 9: the proof's checkpoint agrees with every known checkpoint of the
    same size and is no larger than the hosted log (``xns_proof_inconsistent``,
    with both roots), and it is at most ``trust.max_lag`` entries older than
    the newest accepted one (``xns_proof_stale``).

    Consistency between checkpoints of different sizes is what witnesses
    attest: a target that needs it for a log it does not host requires
    cosignatures of witnesses it trusts (``trusted_sources.witnesses``).
    """
    for head in known:
        if (head.size == checkpoint.size and head.root_hash != checkpoint.root_hash) or (
            head.kind == "hosted" and checkpoint.size > head.size
        ):
            raise InconsistencyError(
                f"the proof's checkpoint of {checkpoint.origin} at size {checkpoint.size}"
                f" contradicts the {head.kind} checkpoint at size {head.size}",
                code="xns_proof_inconsistent",
                details={"origin": checkpoint.origin, "size": checkpoint.size,
                         "root": checkpoint.root_hash.hex(), "known": head.kind,
                         "known_size": head.size, "known_root": head.root_hash.hex()},
            )  # fmt: skip
    accepted = max((h.size for h in known if h.kind == "accepted"), default=0)
    if accepted - checkpoint.size > trust.max_lag:
        raise ConflictError(
            f"the proof's checkpoint (size {checkpoint.size}) is older than the newest"
            f" checkpoint of {checkpoint.origin} accepted here (size {accepted}) by more than"
            f" {trust.max_lag} entries; fetch a fresh proof",
            code="xns_proof_stale",
            details={"size": checkpoint.size, "accepted": accepted, "max_lag": trust.max_lag},
        )


def delivery_envelope(
    verified: VerifiedMessage, *, actor: str, timestamp: int, nonce: str
) -> dict[str, Any]:
    """The unsigned delivery record, for the target's log (sign it with the node key)."""
    m = verified.message
    payload = {
        "source": m.source,
        "target": m.target,
        "action": m.action,
        "payload": {
            "operation": m.operation,
            "parameters": m.parameters,
            "proof": verified.delivery_proof(),
        },
    }
    return unsigned_envelope(namespace=m.target, schema=MESSAGE_SCHEMA, payload=payload, actor=actor,
                             event_id=delivery_event_id(m.event_hash), timestamp=timestamp, nonce=nonce)  # fmt: skip


def answer_envelope(
    verified: VerifiedMessage,
    delivery: Record,
    result: Mapping[str, Any],
    *,
    actor: str,
    timestamp: int,
    nonce: str,
) -> dict[str, Any]:
    """The unsigned answer to a query or invoke: a ``notify`` from the target back to
    the source, recorded in the target's log next to the delivery."""
    m = verified.message
    size = len(canonicalize(dict(result)))
    if size > MAX_RESULT_BYTES:
        raise FormatError(
            f"the result is {size} bytes; at most {MAX_RESULT_BYTES}",
            code="xns_result_too_large",
            details={"size": size, "limit": MAX_RESULT_BYTES},
        )
    payload = {
        "source": m.target,
        "target": m.source,
        "action": "notify",
        "payload": {
            "operation": m.operation,
            "parameters": {
                "inReplyTo": delivery.event_hash_hex,
                "message": m.record.event_hash_hex,
                "action": m.action,
                "result": dict(result),
            },
        },
    }
    return unsigned_envelope(namespace=m.target, schema=MESSAGE_SCHEMA, payload=payload, actor=actor,
                             event_id=answer_event_id(m.event_hash), timestamp=timestamp, nonce=nonce)  # fmt: skip


def node_message_kind(record: Record, ns: NamespaceConfig) -> Literal["delivery", "answer"] | None:
    """Which messaging record of a node this is, if any (admission rule 6).

    A ``delivery``: a message whose target is ``ns``, from a source ``ns``
    trusts, with event id ``xns:<hex>`` and a ``payload.proof`` whose
    ``extra`` line holds the source record: a message of that source, with
    that event hash, that the delivery repeats exactly.  An ``answer``: a
    ``notify`` from ``ns`` to a source it trusts, with event id
    ``xns-answer:<hex>``, no proof, and parameters ``inReplyTo``,
    ``message`` (whose hex is the event id's), ``action`` and ``result``.
    Only the structure is checked here: the proof was verified by the node
    before it signed (see ``remembrancer.federation.xns``).
    """
    if record.schema_name != MESSAGE_NAME or not isinstance(record.payload, dict):
        return None
    p = record.payload
    inner = p.get("payload")
    if not isinstance(inner, dict):
        return None
    if p.get("target") == ns.name and record.event_id.startswith(DELIVERY_PREFIX):
        if ns.trusted(p.get("source")) is None or not isinstance(inner.get("proof"), str):
            return None
        try:
            extra = TlogProof.parse(inner["proof"].encode("utf-8")).extra
            source = Record.from_bytes(extra) if extra is not None else None
        except (FormatError, UnicodeError):
            return None
        if (
            source is None
            or delivery_event_id(source.event_hash) != record.event_id
            or source.namespace != p.get("source")
            or source.payload
            != {
                "source": p.get("source"),
                "target": ns.name,
                "action": p.get("action"),
                "payload": {k: v for k, v in inner.items() if k != "proof"},
            }
        ):
            return None
        return "delivery"
    if p.get("source") == ns.name and record.event_id.startswith(ANSWER_PREFIX):
        params = inner.get("parameters")
        if (
            p.get("action") != "notify"
            or ns.trusted(p.get("target")) is None
            or "proof" in inner
            or not isinstance(params, dict)
            or set(params) != {"inReplyTo", "message", "action", "result"}
            or not isinstance(params["message"], str)
            or not HASH_RE.match(params["message"])
            or not isinstance(params["inReplyTo"], str)
            or not HASH_RE.match(params["inReplyTo"])
            or ANSWER_PREFIX + params["message"][7:] != record.event_id
            or params["action"] not in ("query", "invoke")
            or not isinstance(params["result"], dict)
        ):
            return None
        return "answer"
    return None
