"""The misbehaviour evidence a node keeps: bounded per subject, read by pages.

A node keeps only evidence that matters to it (docs/spec/federation.md,
"Evidence"): about a peer of its registry, or about a log it witnesses.  Who
may be accused is the caller's policy; this module bounds how much is kept
for each accused *subject* (a peer's registry DID, or a log origin):

- one file per incident (several files proving one offence are one offence:
  the first one kept stands for it, see ``PeerScores.on_misbehaviour``);
- at most :data:`MAX_EVIDENCE_PER_SUBJECT` incidents per subject.  Two
  proven offences suspend a peer, so a subject at the bound is suspended
  already; more evidence about it is refused (PolicyError
  ``evidence_subject_full``) and changes nothing.

Files live in the state scope ``federation-evidence`` under their
``evidence_ref`` (``sha256:`` of the file), as before; the per-subject index
(incident -> evidence_ref) lives in ``federation-evidence-subjects`` under the
subject and is updated with compare-and-swap.  A file is written before its
index entry and removed again when the index refuses it, so the files never
outnumber the index.
"""

from __future__ import annotations

import json
from typing import Final

from remembrancer.core.errors import PolicyError, StorageError
from remembrancer.storage.base import Store

__all__ = [
    "EVIDENCE_SCOPE",
    "MAX_EVIDENCE_PER_SUBJECT",
    "SUBJECT_SCOPE",
    "EvidenceStore",
]

EVIDENCE_SCOPE: Final = "federation-evidence"
SUBJECT_SCOPE: Final = "federation-evidence-subjects"
MAX_EVIDENCE_PER_SUBJECT: Final = 8
_CAS_ATTEMPTS: Final = 16


class EvidenceStore:
    """Evidence files in a :class:`~remembrancer.storage.base.Store` (thread-safe, blocking)."""

    def __init__(self, store: Store, *, per_subject: int = MAX_EVIDENCE_PER_SUBJECT) -> None:
        if type(per_subject) is not int or per_subject < 1:
            raise ValueError("per_subject is an int >= 1")
        self.store = store
        self.per_subject = per_subject

    def incidents(self, subject: str) -> dict[str, str]:
        """The incidents kept about ``subject``: incident -> evidence_ref."""
        raw = self.store.get_state(SUBJECT_SCOPE, subject)
        return _index(raw)

    def keep(self, subject: str, incident: str, ref: str, data: bytes) -> str:
        """Keep the evidence file ``data`` (its ``ref``) proving ``incident`` of ``subject``.

        Returns the ref that stands for the incident: ``ref``, or the file kept
        earlier for the same incident (then ``data`` is not stored).  PolicyError
        ``evidence_subject_full`` when the subject has
        :attr:`per_subject` other incidents kept.
        """
        for _ in range(_CAS_ATTEMPTS):
            raw = self.store.get_state(SUBJECT_SCOPE, subject)
            index = _index(raw)
            if incident in index:
                return index[incident]
            if len(index) >= self.per_subject:
                raise PolicyError(
                    f"{self.per_subject} incidents of {subject} are kept already; more evidence"
                    " about it changes nothing",
                    code="evidence_subject_full",
                    details={"subject": subject[:512], "kept": len(index)},
                )
            fresh = self.store.put_state(EVIDENCE_SCOPE, ref, data, expect=None)
            index[incident] = ref
            value = json.dumps({"incidents": index}, sort_keys=True).encode()
            if self.store.put_state(SUBJECT_SCOPE, subject, value, expect=raw):
                return ref
            if fresh:  # someone else changed the index meanwhile: undo, then look again
                self.store.delete_state(EVIDENCE_SCOPE, ref, expect=data)
        raise StorageError(
            f"the evidence index of {subject} kept changing", code="evidence_index_contended"
        )

    def get(self, ref: str) -> bytes | None:
        return self.store.get_state(EVIDENCE_SCOPE, ref)

    def page(self, *, after: str | None, limit: int) -> tuple[list[tuple[str, bytes]], str | None]:
        """Up to ``limit`` ``(evidence_ref, file)`` in ref order after ``after``, and
        the cursor of the next page (None on the last one)."""
        rows = self.store.list_state_page(EVIDENCE_SCOPE, after=after, limit=limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, (rows[-1][0] if more and rows else None)


def _index(raw: bytes | None) -> dict[str, str]:
    if raw is None:
        return {}
    doc = json.loads(raw)
    incidents = doc.get("incidents") if isinstance(doc, dict) else None
    if not isinstance(incidents, dict):
        raise StorageError("the evidence index is unreadable", code="evidence_index_corrupt")
    return {str(k): str(v) for k, v in incidents.items()}
