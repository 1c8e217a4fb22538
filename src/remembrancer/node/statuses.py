"""Every HTTP status the node answers with, in one place.

Core, log, anchoring and federation code never names an HTTP status: they
raise :class:`~remembrancer.core.errors.RemembrancerError` (code, message,
evidence) or return an outcome, and this module turns both into statuses
(tests/unit/test_layering.py keeps it that way).  Three tables, one per wire
protocol whose specification fixes the statuses:

* :data:`API_STATUS`, the node's own API (``/v1``, tlog-tiles, explorer),
  which also holds the C2SP tlog-witness refusals of ``/witness/*``
  (:data:`WITNESS_STATUS`, the spec's table); a code not in it gets the
  default of its error class (:func:`status_for`);
* :data:`FEDERATION_STATUS`, the refusals of ``POST /federation/v1/messages``
  (docs/spec/federation.md, "HTTP"): one status per refusal code, a
  separate table because the federation spec gives some codes that the API
  also uses (``signature_invalid``) a status of their own;
* :data:`OUTCOME_STATUS`, the successful outcomes that are not a plain 200.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Final

from remembrancer.core.errors import (
    ConflictError,
    FormatError,
    NotFoundError,
    PolicyError,
    PushbackError,
    RemembrancerError,
    StorageError,
    VerificationError,
)
from remembrancer.federation.transport import CONTENT_TYPE, Received

OK: Final = 200

# The C2SP tlog-witness spec's status for each refusal (core/witness.py lists the cases).
WITNESS_STATUS: Final[Mapping[str, int]] = {
    "witness_request_malformed": 400,
    "witness_origin_unknown": 404,
    "witness_signature_invalid": 403,
    "witness_old_size_too_large": 400,
    "witness_old_size_mismatch": 409,
    "witness_root_mismatch": 409,
    "witness_proof_invalid": 422,
}

# Codes whose status differs from their error class's default.
API_STATUS: dict[str, int] = {
    "namespace_unknown": 404,
    "event_id_conflict": 409,
    "nonce_replayed": 409,
    "namespace_mismatch": 400,
    "body_too_large": 413,
    "rate_limited": 429,
    **WITNESS_STATUS,
    "unauthorized": 401,
    "quorum_not_reached": 504,
    "federation_not_configured": 404,
    "rail_unavailable": 503,
    "storage_full": 507,
    "xns_relay_failed": 502,
    "xns_handler_timeout": 504,
    "request_body_timeout": 408,
    "request_timeout": 503,
    "fenced": 503,
    "no_leader": 503,
}

# POST /federation/v1/messages: the spec's status table (one status per refusal code).
FEDERATION_STATUS: Final[Mapping[str, int]] = {
    "malformed": 400,
    "signature_invalid": 401,
    "role_not_allowed": 403,
    "unknown_sender": 404,
    "replayed": 409,
    "peer_suspended": 410,
    "oversize": 413,
    "unsupported_media_type": 415,
    "federation_mismatch": 421,
    "stale": 422,
    "rate_limited": 429,
    "unavailable": 503,
}

# Outcomes of a successful call that the wire tells apart by status.
OUTCOME_STATUS: Final[Mapping[str, int]] = {
    "integrated": 200,  # a record's receipt: durably in the log
    "pending": 202,  # admitted, not yet integrated: poll the receipt URL
    "delivered": 200,  # a cross-namespace message recorded here
    "relayed": 202,  # a cross-namespace message handed to the target's home node
    "federation_accepted": 202,  # a federation message passed every check
}

# The error class's default when the code is in no table.
_CLASS_STATUS: Final[tuple[tuple[type[RemembrancerError], int], ...]] = (
    (NotFoundError, 404),
    (ConflictError, 409),
    (FormatError, 400),
    (VerificationError, 422),
    (PolicyError, 403),
    (StorageError, 503),
)
_PUSHBACK_UNAVAILABLE: Final = frozenset({"overloaded", "shutting_down"})


def status_for(e: RemembrancerError) -> int:
    """The node API's status for ``e``: its code's, else its class's, else 500."""
    if e.code in API_STATUS:
        return API_STATUS[e.code]
    if isinstance(e, PushbackError):
        return 503 if e.code in _PUSHBACK_UNAVAILABLE else 429
    for cls, status in _CLASS_STATUS:
        if isinstance(e, cls):
            return status
    return 500


def outcome_status(outcome: str) -> int:
    """The status of a successful ``outcome`` (:data:`OUTCOME_STATUS`)."""
    return OUTCOME_STATUS[outcome]


def retry_after(e: RemembrancerError) -> dict[str, str]:
    """The node API's ``Retry-After`` for pushback (rounded, at least 1 s), else none."""
    if isinstance(e, PushbackError):
        return {"Retry-After": str(max(1, round(e.retry_after)))}
    if e.code == "fenced":  # not written: retry, through any process, once the lease settled
        return {"Retry-After": "1"}
    return {}


def federation_answer(received: Received) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body answering a federation POST (docs/spec/federation.md):
    ``202 {"seq": n}`` when accepted, else the refusal's status from
    :data:`FEDERATION_STATUS` (503 for other pushback, 500 otherwise), its JSON
    error and, for pushback, ``Retry-After``."""
    headers = {"Content-Type": CONTENT_TYPE}
    if received.message is not None:
        body = {"seq": received.message.seq}
        return outcome_status("federation_accepted"), headers, _json(body)
    err = received.error
    assert err is not None
    status = FEDERATION_STATUS.get(err.code)
    if status is None:
        status = 503 if isinstance(err, PushbackError) else 500
    if isinstance(err, PushbackError):  # the federation spec rounds up
        headers["Retry-After"] = str(max(1, math.ceil(err.retry_after)))
    return status, headers, _json({"error": err.to_dict()})


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
