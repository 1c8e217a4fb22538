"""The grammars of the project's identifiers, each stated once.

- A *namespace* is ``<org>:<name>``, each part a :data:`LABEL`
  (``[a-z0-9][a-z0-9-]{0,62}``): :data:`NAMESPACE_RE`, and
  :data:`NAMESPACE_PATTERN` for the places that take a pattern string (HTTP
  path parameters).  The bundled JSON schemas state the same pattern as
  data; a test checks that they agree.
- A *federation id* is one label: :data:`FEDERATION_ID_RE`.
- A *DID* follows W3C DID syntax, ``did:<method>:<method-specific id>``,
  without DID URL parts (no path, query or fragment), and is at most
  :data:`MAX_DID_CHARS` characters long: :func:`is_did`.  Registry peers may
  use readable alias DIDs (``did:vm:node:east1``); signatures are always
  checked against keys.
- A *did:key* of an Ed25519 key is ``did:key:z`` and 40 to 60 base58btc
  characters: :data:`DID_KEY_RE` (the exact decoding is
  :func:`remembrancer.core.keys.public_from_did_key`).

Every regex here is anchored (``^...\\Z``), so ``match`` and ``fullmatch``
agree.  Pure.
"""

from __future__ import annotations

import re
from typing import Final, TypeGuard

__all__ = [
    "DID_KEY_RE",
    "DID_RE",
    "FEDERATION_ID_PATTERN",
    "FEDERATION_ID_RE",
    "LABEL",
    "MAX_DID_CHARS",
    "NAMESPACE_PATTERN",
    "NAMESPACE_RE",
    "is_did",
]

LABEL: Final = r"[a-z0-9][a-z0-9-]{0,62}"
"""One part of a namespace, and a federation id."""
NAMESPACE_PATTERN: Final = rf"^{LABEL}:{LABEL}$"
NAMESPACE_RE: Final = re.compile(rf"^{LABEL}:{LABEL}\Z")
FEDERATION_ID_PATTERN: Final = rf"^{LABEL}$"
FEDERATION_ID_RE: Final = re.compile(rf"^{LABEL}\Z")

MAX_DID_CHARS: Final = 512
DID_RE: Final = re.compile(r"^did:[a-z0-9]+:(?:[A-Za-z0-9._-]|%[0-9A-Fa-f]{2}|:)*[A-Za-z0-9._-]\Z")
DID_KEY_RE: Final = re.compile(r"^did:key:z[1-9A-HJ-NP-Za-km-z]{40,60}\Z")


def is_did(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a DID (W3C syntax, no URL parts) of at most MAX_DID_CHARS."""
    return (
        isinstance(value, str) and len(value) <= MAX_DID_CHARS and DID_RE.match(value) is not None
    )
