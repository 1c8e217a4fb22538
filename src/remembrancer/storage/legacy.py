"""Schema 1 to 2: the generic state rows that became typed tables.

Before schema version 2, anchor receipts, the witness's cosigned checkpoints,
federation receipts and misbehaviour evidence were values in the generic
``state`` table (scopes ``anchors``, ``witness``, ``federation-receipts``,
``federation-evidence`` with its per-subject index
``federation-evidence-subjects``).  The migration of every durable backend,
and the restore of a v1 or v2 backup archive, use :class:`LegacySplitter`
(or :func:`split_legacy` for rows at hand) to turn such rows into typed
rows; every other row stays named state.  A legacy row that does not parse
is kept as it was (it is named state nobody reads any more, and the
migration must not lose data); so is an evidence file no subject's index
names.  Evidence needs both scopes, so the splitter holds evidence rows
until :meth:`LegacySplitter.finish` (they are bounded per subject).

Anchor receipts are marked finished from their own anchors
(:attr:`~remembrancer.core.anchor.AnchorReceipt.finished`).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from remembrancer.core.anchor import AnchorReceipt
from remembrancer.core.errors import RemembrancerError
from remembrancer.storage.base import (
    AnchorReceiptRow,
    CosignedRow,
    EvidenceRow,
    FederationReceiptRow,
)

ANCHORS_SCOPE: Final = "anchors"
WITNESS_SCOPE: Final = "witness"
FEDERATION_RECEIPTS_SCOPE: Final = "federation-receipts"
EVIDENCE_SCOPE: Final = "federation-evidence"
EVIDENCE_SUBJECTS_SCOPE: Final = "federation-evidence-subjects"
LEGACY_SCOPES: Final = (ANCHORS_SCOPE, WITNESS_SCOPE, FEDERATION_RECEIPTS_SCOPE, EVIDENCE_SCOPE,
                        EVIDENCE_SUBJECTS_SCOPE)  # fmt: skip


@dataclass(slots=True)
class Split:
    """Rows of the old ``state`` table sorted into their new homes."""

    state: list[tuple[str, str, bytes]] = field(default_factory=list)
    anchor_receipts: list[AnchorReceiptRow] = field(default_factory=list)
    cosigned: list[CosignedRow] = field(default_factory=list)
    federation_receipts: list[FederationReceiptRow] = field(default_factory=list)
    evidence: list[EvidenceRow] = field(default_factory=list)
    moved: list[tuple[str, str]] = field(default_factory=list)  # (scope, key) now in a table


class LegacySplitter:
    """Sorts ``(scope, key, value)`` rows, fed in any number of chunks."""

    def __init__(self) -> None:
        self._files: dict[str, bytes] = {}
        self._indexes: dict[str, bytes] = {}

    def feed(self, rows: Iterable[tuple[str, str, bytes]]) -> Split:
        """The rows of this chunk sorted, but for evidence (see :meth:`finish`)."""
        out = Split()
        for scope, key, value in rows:
            value = bytes(value)
            if scope == ANCHORS_SCOPE and (row := _anchor_row(key, value)) is not None:
                out.anchor_receipts.append(row)
            elif scope == WITNESS_SCOPE and (cos := _cosigned_row(key, value)) is not None:
                out.cosigned.append(cos)
            elif scope == FEDERATION_RECEIPTS_SCOPE and "/" in key:
                namespace, _, receipt_id = key.partition("/")
                out.federation_receipts.append(FederationReceiptRow(namespace, receipt_id, value))
            elif scope == EVIDENCE_SCOPE:
                self._files[key] = value
                continue
            elif scope == EVIDENCE_SUBJECTS_SCOPE:
                self._indexes[key] = value
                continue
            else:
                out.state.append((scope, key, value))
                continue
            out.moved.append((scope, key))
        return out

    def finish(self) -> Split:
        """Evidence: each file an index names becomes a row; the rest stays state."""
        out = Split()
        for subject, raw in sorted(self._indexes.items()):
            incidents = _incidents(raw)
            refs = list(incidents.values()) if incidents is not None else []
            if (
                incidents is None
                or len(set(refs)) != len(refs)
                or any(r not in self._files for r in refs)
            ):
                out.state.append((EVIDENCE_SUBJECTS_SCOPE, subject, raw))
                continue
            for incident, ref in sorted(incidents.items()):
                data = self._files.pop(ref)
                out.evidence.append(EvidenceRow(ref, subject, incident, data))
                out.moved.append((EVIDENCE_SCOPE, ref))
            out.moved.append((EVIDENCE_SUBJECTS_SCOPE, subject))
        out.state += [(EVIDENCE_SCOPE, ref, data) for ref, data in sorted(self._files.items())]
        self._files.clear()
        self._indexes.clear()
        return out


def split_legacy(rows: Iterable[tuple[str, str, bytes]]) -> Split:
    """Sort ``(scope, key, value)`` rows at hand: legacy rows that parse become typed rows."""
    splitter = LegacySplitter()
    out = splitter.feed(rows)
    rest = splitter.finish()
    out.state += rest.state
    out.evidence += rest.evidence
    out.moved += rest.moved
    return out


def _incidents(raw: bytes) -> dict[str, str] | None:
    try:
        doc = json.loads(raw)
        incidents = doc["incidents"]
        if not isinstance(incidents, dict):
            return None
        return {str(k): str(v) for k, v in incidents.items()}
    except (ValueError, KeyError, TypeError):
        return None


def _anchor_row(key: str, value: bytes) -> AnchorReceiptRow | None:
    namespace, _, size = key.rpartition("/")
    try:
        receipt = AnchorReceipt.from_dict(json.loads(value))
    except (RemembrancerError, ValueError, AttributeError):
        return None
    if not namespace or not size.isdigit() or int(size) != receipt.size:
        return None
    return AnchorReceiptRow(namespace, receipt.size, value, receipt.finished)


def _cosigned_row(origin: str, value: bytes) -> CosignedRow | None:
    try:
        doc = json.loads(value)
        return CosignedRow(
            origin,
            int(doc["size"]),
            base64.b64decode(doc["root"], validate=True),
            str(doc["note"]).encode(),
            str(doc["cosignature"]),
            int(doc.get("time", 0)),
        )
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
        return None
