"""Either kind of evidence file, told apart by its first bytes."""

from __future__ import annotations

from remembrancer.core.errors import FormatError
from remembrancer.federation.evidence.claims import ClaimEvidence
from remembrancer.federation.evidence.equivocation import EQUIVOCATION_HEADER, EquivocationEvidence

__all__ = ["parse_evidence"]


def parse_evidence(data: bytes) -> EquivocationEvidence | ClaimEvidence:
    """Parse an equivocation file or claim evidence, by its first bytes."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise FormatError("evidence is bytes", code="evidence_malformed")
    if bytes(data[: len(EQUIVOCATION_HEADER)]) == EQUIVOCATION_HEADER.encode("ascii"):
        return EquivocationEvidence.parse(bytes(data))
    return ClaimEvidence.parse(bytes(data))
