"""Schema 1 to 2: the generic state rows that became typed tables.

Before schema version 2, anchor receipts, the witness's cosigned checkpoints
and federation receipts were JSON values in the generic ``state`` table
(scopes ``anchors``, ``witness`` and ``federation-receipts``).  The migration
of every durable backend, and the restore of a version-1 backup archive, use
:func:`split_legacy` to turn such rows into typed rows; every other row stays
named state.  A legacy row that does not parse is kept as it was (it is
named state nobody reads any more, and the migration must not lose data).

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
from remembrancer.storage.base import AnchorReceiptRow, CosignedRow, FederationReceiptRow

ANCHORS_SCOPE: Final = "anchors"
WITNESS_SCOPE: Final = "witness"
FEDERATION_RECEIPTS_SCOPE: Final = "federation-receipts"
LEGACY_SCOPES: Final = (ANCHORS_SCOPE, WITNESS_SCOPE, FEDERATION_RECEIPTS_SCOPE)


@dataclass(slots=True)
class Split:
    """Rows of the old ``state`` table sorted into their new homes."""

    state: list[tuple[str, str, bytes]] = field(default_factory=list)
    anchor_receipts: list[AnchorReceiptRow] = field(default_factory=list)
    cosigned: list[CosignedRow] = field(default_factory=list)
    federation_receipts: list[FederationReceiptRow] = field(default_factory=list)

    @property
    def moved(self) -> list[tuple[str, str]]:
        """``(scope, key)`` of the rows that went into a typed table."""
        out = [(ANCHORS_SCOPE, f"{r.namespace}/{r.size:020d}") for r in self.anchor_receipts]
        out += [(WITNESS_SCOPE, r.origin) for r in self.cosigned]
        out += [(FEDERATION_RECEIPTS_SCOPE, r.cursor) for r in self.federation_receipts]
        return out


def split_legacy(rows: Iterable[tuple[str, str, bytes]]) -> Split:
    """Sort ``(scope, key, value)`` rows: legacy rows that parse become typed rows."""
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
        else:
            out.state.append((scope, key, value))
    return out


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
