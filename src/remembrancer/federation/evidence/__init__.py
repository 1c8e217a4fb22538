"""Misbehaviour evidence that anyone can re-check offline.

Three offences put a peer on probation at once (DESIGN.md 3.10).  Each has
an evidence format whose verification needs no trust in whoever holds it.

Equivocation (a split view)
---------------------------
Two checkpoints of one origin, both validly signed by the log's key, that
cannot both describe one append-only log.  The file (``.equivocation``,
its lines and limits in :mod:`.equivocation`) carries the origin, the log's
vkey, both notes verbatim and, when the sizes differ, a prefix root and a
consistency proof.

What makes it conclusive (:func:`.equivocation.verify_equivocation`): both notes are for
``origin``, the vkey is named ``origin`` and signs both, and either

(i) the sizes are equal and the root hashes differ: conclusive on its own; or
(ii) size a < size b, and ``prefix`` with ``proof`` form an RFC 6962
     consistency proof from ``(size a, prefix)`` to B's ``(size b, root b)``
     that verifies, while ``prefix`` differs from A's root.  A consistency
     proof that verifies shows (short of a SHA-256 collision) that
     ``prefix`` *is* the root of the first ``size a`` entries of the tree
     B commits to, so B's tree does not extend A's.  Anyone holding B's
     tiles (the log serves them; ``EquivocationEvidence.build`` takes any
     NodeReader such as ``TileTree`` or ``TileNodeReader``) can make this
     proof without the accused log's cooperation, and nobody can make it
     for two consistent checkpoints.  For size a = 0 the prefix is the
     empty tree's root and the proof is empty.

So a consistency proof that a log served and that fails is *not* evidence
by itself (it may be a bug or a corrupted transfer, and it is unsigned); the
holder computes the proof above from B's tiles instead, which either shows
the fork or shows there is none.

Invalid anchor claims (and why "forged countersignatures" prove nothing)
-----------------------------------------------------------------------
Evidence proves misbehaviour only through a statement the accused itself
signed that is false on its face (docs/spec/federation.md, "Evidence").
Equivocation (above) is one.  The other is a countersignature, or a
coordinator's signed aggregate claim, over an anchor that does not hold.
The evidence is a JSON object, signed by the reporting peer (RFC 8785 of
the object without ``signature``, Ed25519, unpadded base64url)::

    {
      "type": "remembrancer.evidence/v1",
      "kind": "invalid_anchor_claim" | "forged_countersignature",
      "federation_id": "vaultmesh-primary",
      "accused": "did:key:z6Mk…",               the accused peer's key
      "message": "<base64 of the exact bytes received>",
      "receipt_at": "/content/receipt",          RFC 6901 pointer to the receipt
      "countersigner": "did:key:z6Mk…",         the countersignature at issue
      "finding": "root_mismatch" | "rail_failed" | "signature_invalid",
      "reporter": "did:key:z6Mk…",
      "reported_at": 1764100000,
      "signature": "<base64url>"
    }

- ``invalid_anchor_claim``: ``message`` holds (at ``receipt_at``) a receipt
  that the accused itself countersigned, validly, although its claim is
  false: ``root_mismatch`` - the anchored root is not the SHA-256 of the
  checkpoint body the receipt carries (offline, conclusive); or
  ``rail_failed`` - the anchor, claimed ``verified``, comes back ``failed``
  from the verifier's own rail (offline for ``rfc3161`` with the verifier's
  trust bundle; chains need the verifier's RPC).  The countersignature
  itself attributes the claim, wherever the receipt travelled, so no message
  signature is needed.  The anchor "covers" the checkpoint as
  :func:`remembrancer.core.anchor.covers` says: its root is the checkpoint's
  digest, or (aggregated) its path leads from that digest to the root; a
  covering anchor is no ``root_mismatch``.
- ``invalid_anchor_claim`` by a collaborative-anchoring coordinator:
  ``message`` is a ``receipt`` message signed by the accused (checked with
  ``open_message``) that carries at ``/content/receipt`` (the only place
  where a coordinator makes a claim) a ``remembrancer.aggregate-anchor/v1``
  claim (docs/spec/aggregate-anchor.md) whose ``coordinator`` is the
  accused.  ``root_mismatch``: the claim's aggregation path does not lead
  from its ``checkpoint`` digest to the anchored root (offline, conclusive);
  ``rail_failed``: its anchor, claimed ``verified``, comes back ``failed``
  from the verifier's own rail.
- ``forged_countersignature`` still parses (older nodes made such files)
  but never verifies (``evidence_not_attributable``): a countersignature
  that does not verify is nobody's statement, and a message that carries
  one, in whatever envelope its sender signed, is a relay; relaying is never
  misbehaviour.  Nodes drop such countersignatures on arrival instead
  (:func:`remembrancer.federation.receipts.verified_countersignatures`).

The reporter's signature makes the report accountable; it is not what makes
it true: the verifier re-derives every finding.

Each verified report has ``evidence_ref`` (``sha256:`` of the evidence
bytes) and ``incident`` (``sha256:`` of the offence itself, so several files
proving one offence count once; see ``PeerScores.on_misbehaviour``).

Parsers raise FormatError; verification raises VerificationError with the
codes listed on each function.

The modules: :mod:`.equivocation`, :mod:`.claims`, :mod:`.parse` (a file of
either kind) and :mod:`.store` (what a node keeps, bounded per subject).
"""
