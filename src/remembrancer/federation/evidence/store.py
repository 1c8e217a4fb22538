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

Files live in the store's evidence table (one row per ``evidence_ref``, the
``sha256:`` of the file, with its subject and incident; schema version 2,
before which they were named state under ``federation-evidence`` with an
index under ``federation-evidence-subjects``).  The store checks the
incident and the bound and stores the file in one atomic step
(:meth:`~remembrancer.storage.base.Store.keep_evidence`), so racing keepers
never exceed the bound and no file is kept without its incident.
"""

from __future__ import annotations

from typing import Final

from remembrancer.core.errors import PolicyError
from remembrancer.storage.base import EvidenceRow, Store

__all__ = ["MAX_EVIDENCE_PER_SUBJECT", "EvidenceStore"]

MAX_EVIDENCE_PER_SUBJECT: Final = 8


class EvidenceStore:
    """Evidence files in a :class:`~remembrancer.storage.base.Store` (thread-safe, blocking)."""

    def __init__(self, store: Store, *, per_subject: int = MAX_EVIDENCE_PER_SUBJECT) -> None:
        if type(per_subject) is not int or per_subject < 1:
            raise ValueError("per_subject is an int >= 1")
        self.store = store
        self.per_subject = per_subject

    def incidents(self, subject: str) -> dict[str, str]:
        """The incidents kept about ``subject``: incident -> evidence_ref."""
        return self.store.evidence_incidents(subject)

    def keep(self, subject: str, incident: str, ref: str, data: bytes) -> str:
        """Keep the evidence file ``data`` (its ``ref``) proving ``incident`` of ``subject``.

        Returns the ref that stands for the incident: ``ref``, or the file kept
        earlier for the same incident (then ``data`` is not stored).  PolicyError
        ``evidence_subject_full`` when the subject has
        :attr:`per_subject` other incidents kept.
        """
        kept = self.store.keep_evidence(
            EvidenceRow(ref, subject, incident, data), per_subject=self.per_subject
        )
        if kept is None:
            raise PolicyError(
                f"{self.per_subject} incidents of {subject} are kept already; more evidence"
                " about it changes nothing",
                code="evidence_subject_full",
                details={"subject": subject[:512], "kept": self.per_subject},
            )
        return kept

    def get(self, ref: str) -> bytes | None:
        return self.store.evidence_file(ref)

    def page(self, *, after: str | None, limit: int) -> tuple[list[tuple[str, bytes]], str | None]:
        """Up to ``limit`` ``(evidence_ref, file)`` in ref order after ``after``, and
        the cursor of the next page (None on the last one)."""
        rows = self.store.evidence_page(after=after, limit=limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return [(r.ref, r.data) for r in rows], (rows[-1].ref if more and rows else None)
