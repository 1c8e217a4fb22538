"""Admission: DESIGN.md section 3.5, rule by rule, each failure its own code.

1. Well-formed (``Record.from_bytes``) and the namespace exists here
   (``namespace_unknown``).
2. ``timestamp`` within the namespace's drift window (``timestamp_out_of_window``).
3. ``schema`` allowed by the namespace's ``schema_policy`` (``schema_not_allowed``).
4. ``payload`` valid against that exact bundled schema version
   (``schema_unknown``, ``payload_invalid``).
5. The actor signature verifies (``actor_signature_missing``,
   ``actor_signature_duplicate``, ``actor_signature_invalid``).
6. Witness quorum: distinct allowlisted keys with a valid ``witness``
   signature number at least ``min_required``; duplicates, unknown keys and
   the actor do not count (``witness_quorum_not_met``, with a per-signature
   account in ``details``).  One narrow exception: the delivery of a
   cross-namespace message from a source the namespace trusts, and the
   answer to it, written by this node's own key
   (:func:`remembrancer.core.xns.node_message_kind`), stand on the source's
   proof, which the node verified under the namespace's ``trusted_sources``
   policy before signing, and need no record witnesses.  The node key
   already signs every checkpoint of the log, so this grants it nothing new.
7. Replay (``event_id_conflict``, ``nonce_replayed``) needs the log's
   history and is checked by the sequencer against storage; see
   :func:`check_replay`.

Rules 1 to 4 are cheap and run on receipt (:func:`check_policy`); rules 5
and 6 are the signature checks (:func:`check_signatures`), which release the
GIL in PyNaCl and run on a thread pool.  The current time is a parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache

from remembrancer.core.errors import FormatError, PolicyError, VerificationError
from remembrancer.core.keys import PublicKey, public_from_did_key
from remembrancer.core.namespace import NamespaceConfig
from remembrancer.core.quorum import count_witnesses
from remembrancer.core.record import Record
from remembrancer.core.schema import SchemaRegistry
from remembrancer.core.xns import node_message_kind


@lru_cache(maxsize=4096)
def _public(did: str) -> PublicKey:
    return public_from_did_key(did)


def lookup_namespace(record: Record, namespaces: Mapping[str, NamespaceConfig]) -> NamespaceConfig:
    """Rule 1's last part: the namespace (from the ``namespace`` field only) exists."""
    ns = namespaces.get(record.namespace)
    if ns is None:
        raise PolicyError(
            f"namespace {record.namespace} is not hosted on this node",
            code="namespace_unknown",
            details={"namespace": record.namespace},
        )
    return ns


def check_policy(record: Record, ns: NamespaceConfig, now: int, schemas: SchemaRegistry) -> None:
    """Rules 2 to 4."""
    drift = record.timestamp - now
    if abs(drift) > ns.timestamp_drift:
        raise PolicyError(
            f"timestamp is {drift:+d} s from this node's clock; the window is"
            f" +-{ns.timestamp_drift} s",
            code="timestamp_out_of_window",
            details={"timestamp": record.timestamp, "now": now, "window": ns.timestamp_drift},
        )
    if not ns.schema_allowed(record.schema):
        raise PolicyError(
            f"schema {record.schema} is not allowed in {ns.name}",
            code="schema_not_allowed",
            details={"schema": record.schema, "allow": [str(p) for p in ns.schema_allow]},
        )
    schemas.validate(record.schema, record.payload)


@dataclass(frozen=True, slots=True)
class SignatureReport:
    """What rule 6 counted: the witnesses that count, and why others did not."""

    counted: tuple[str, ...]
    ignored: tuple[tuple[str, str], ...]  # (kid, reason)


Verify = Callable[[str, bytes], bool]
"""Whether a signature (kid, sig) over the record's signing input verifies."""


def signature_jobs(record: Record, ns: NamespaceConfig) -> list[tuple[str, bytes]]:
    """The (kid, signature) pairs :func:`check_signatures` may verify for this
    record in ``ns``: its actor signatures by the actor, and its witness
    signatures by allowlisted keys other than the actor.  At most
    ``MAX_SIGNATURES``; lets a caller verify them elsewhere (another process)
    and hand the results back as ``verify``."""
    witnesses = ns.witnesses
    return [
        (s.kid, s.sig)
        for s in record.signatures
        if (s.kid == record.actor) == (s.role == "actor")
        and (s.role == "actor" or s.kid in witnesses)
    ]


def check_actor_signature(record: Record, verify: Verify | None = None) -> None:
    """Rule 5 alone, needing no namespace: exactly one actor signature, by the
    record's actor, and it verifies.  What an offline verifier checks too
    (``remembrancer verify``, and the JavaScript verifier in ``clients/js``).
    ``verify``: the verdicts of signatures verified elsewhere (else PyNaCl here)."""
    actor_sigs = [s for s in record.signatures if s.role == "actor"]
    if not actor_sigs:
        raise VerificationError("the record has no actor signature", code="actor_signature_missing")
    if len(actor_sigs) > 1 or actor_sigs[0].kid != record.actor:
        raise FormatError(
            "a record carries exactly one actor signature, by its actor",
            code="actor_signature_duplicate" if len(actor_sigs) > 1 else "actor_signature_mismatch",
        )
    sig = actor_sigs[0].sig
    if not (
        verify(record.actor, sig)
        if verify is not None
        else _public(record.actor).verify(record.signing_input, sig)
    ):
        raise VerificationError(
            "the actor signature does not verify",
            code="actor_signature_invalid",
            details={"actor": record.actor},
        )


def check_signatures(
    record: Record, ns: NamespaceConfig, *, node_did: str | None = None,
    verify: Verify | None = None,
) -> SignatureReport:  # fmt: skip
    """Rules 5 and 6.  Thread-safe; PyNaCl releases the GIL while verifying.

    ``node_did`` is this node's key, the only actor whose message deliveries
    and answers rule 6 exempts (see the module docstring).  ``verify``: the
    verdicts of the :func:`signature_jobs` verified elsewhere; the decision
    is the same code either way."""
    check_actor_signature(record, verify)
    if node_did is not None and record.actor == node_did and node_message_kind(record, ns):
        return SignatureReport((), ())
    count = count_witnesses(record, ns.witnesses, verify)
    if len(count.counted) < ns.min_required:
        raise VerificationError(
            f"{len(count.counted)} valid allowlisted witness signatures; {ns.name} requires"
            f" {ns.min_required}",
            code="witness_quorum_not_met",
            details=count.details(ns.min_required),
        )
    return SignatureReport(count.counted, count.ignored)


def check_replay(record: Record, by_event_id: bytes | None, by_nonce: bytes | None) -> bool:
    """Rule 7, given the leaf bytes already admitted under this record's
    ``(namespace, event:id)`` and under its ``(actor, nonce)`` (``None`` if never seen).

    Returns True when the record is a byte-identical resubmission of an
    admitted one (the caller answers with the original receipt), False when it
    is new; raises PolicyError for any other reuse, including the same signed
    content with a different set of signatures.
    """
    if by_event_id is not None:
        if by_event_id == record.leaf:
            return True
        raise PolicyError(
            f"event:id {record.event_id!r} was already admitted in {record.namespace}"
            " for a different record",
            code="event_id_conflict",
            details={"event_id": record.event_id},
        )
    if by_nonce is not None:
        if by_nonce == record.leaf:
            return True
        raise PolicyError(
            "this actor already used this nonce",
            code="nonce_replayed",
            details={"actor": record.actor, "nonce": record.nonce},
        )
    return False
