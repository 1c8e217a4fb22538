"""Record-witness quorum: admission rule 6's count (DESIGN.md section 3.5).

The number of *distinct* keys on an allowlist with a valid ``witness``
signature over the record's signing input.  Duplicates, keys not on the
allowlist and the actor itself do not count; each signature that does not
count is reported with its reason (``actor``, ``not_allowlisted``,
``duplicate``, ``invalid``).  Used by admission (for the namespace a record
is submitted to) and by cross-namespace delivery (for the *source*
namespace's policy, as the target knows it: :mod:`remembrancer.core.xns`).
"""

from __future__ import annotations

from collections.abc import Callable, Container
from dataclasses import dataclass
from functools import lru_cache

from remembrancer.core.keys import PublicKey, public_from_did_key
from remembrancer.core.record import Record


@lru_cache(maxsize=4096)
def _public(did: str) -> PublicKey:
    return public_from_did_key(did)


@dataclass(frozen=True, slots=True)
class WitnessCount:
    """What rule 6 counted: the witnesses that count, and why others did not."""

    counted: tuple[str, ...]
    ignored: tuple[tuple[str, str], ...]  # (kid, reason)

    def details(self, required: int) -> dict[str, object]:
        return {
            "required": required,
            "counted": list(self.counted),
            "ignored": [{"kid": k, "reason": r} for k, r in self.ignored],
        }


def count_witnesses(
    record: Record, allowlist: Container[str], verify: Callable[[str, bytes], bool] | None = None
) -> WitnessCount:
    """Count the record's valid witness signatures by distinct allowlisted keys.

    Thread-safe; PyNaCl releases the GIL while verifying.  ``verify``: the
    verdicts of signatures verified elsewhere, by (kid, sig)."""
    message = record.signing_input
    counted: list[str] = []
    ignored: list[tuple[str, str]] = []
    seen: set[str] = set()
    for sig in record.signatures:
        if sig.role != "witness":
            continue
        if sig.kid == record.actor:
            ignored.append((sig.kid, "actor"))
        elif sig.kid not in allowlist:
            ignored.append((sig.kid, "not_allowlisted"))
        elif sig.kid in seen:
            ignored.append((sig.kid, "duplicate"))
        elif not (
            verify(sig.kid, sig.sig)
            if verify is not None
            else _public(sig.kid).verify(message, sig.sig)
        ):
            ignored.append((sig.kid, "invalid"))
        else:
            seen.add(sig.kid)
            counted.append(sig.kid)
    return WitnessCount(tuple(counted), tuple(ignored))


__all__ = ["WitnessCount", "count_witnesses"]
