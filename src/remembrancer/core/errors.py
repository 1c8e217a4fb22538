"""The one error tree of Remembrancer.

Every error derives from :class:`RemembrancerError` and is grouped by who is
at fault (malformed input, failed verification, policy refusal, storage,
anchoring, peers, pushback).  An error carries a stable machine ``code``
(what the API puts in ``{"error": {"code": ...}}``), a one-line human
``message`` and optional ``details`` (JSON-serialisable evidence).

Only ``node/`` maps codes to HTTP status codes, and only ``cli/`` maps them to
exit codes; this module knows neither.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar


class RemembrancerError(Exception):
    """Root of every error raised by Remembrancer code."""

    default_code: ClassVar[str] = "internal"
    fault: ClassVar[str] = "internal"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.details: dict[str, Any] = dict(details) if details else {}

    def to_dict(self) -> dict[str, Any]:
        """The API's error object: ``{"code", "message", "details"}``."""
        return {"code": self.code, "message": self.message, "details": self.details}

    def explain(self) -> str:
        """One readable line for a command-line user."""
        return f"{self.code}: {self.message}"


class FormatError(RemembrancerError):
    """Input is malformed: wrong grammar, type, size or encoding."""

    default_code = "malformed"
    fault = "input"


class VerificationError(RemembrancerError):
    """Input is well-formed but a signature, proof or commitment does not verify."""

    default_code = "verification_failed"
    fault = "input"


class InconsistencyError(VerificationError):
    """Two views of one log cannot both be true (a fork or a bad consistency proof).

    ``details`` carries the evidence: both checkpoints and the proof where known.
    """

    default_code = "inconsistent"


class PolicyError(RemembrancerError):
    """Input is valid but this node's policy refuses it (admission, roles, trust)."""

    default_code = "policy_refused"
    fault = "policy"


class ConflictError(PolicyError):
    """The request conflicts with state already recorded (reused id, stale size)."""

    default_code = "conflict"


class NotFoundError(RemembrancerError):
    """The thing asked for does not exist here."""

    default_code = "not_found"
    fault = "input"


class ConfigError(RemembrancerError):
    """A configuration file or setting is invalid."""

    default_code = "config_invalid"
    fault = "operator"


class StorageError(RemembrancerError):
    """The storage backend failed or holds data this code cannot use."""

    default_code = "storage_failed"
    fault = "internal"


class AnchoringError(RemembrancerError):
    """A rail failed to commit or to verify an anchor."""

    default_code = "anchoring_failed"
    fault = "external"


class PeerError(RemembrancerError):
    """A federation peer misbehaved or could not be reached."""

    default_code = "peer_failed"
    fault = "external"


class PushbackError(RemembrancerError):
    """The node is saturated or the client is over its limits; retry later."""

    default_code = "overloaded"
    fault = "pushback"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float = 1.0,
        code: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message, code=code, details=details)
        self.retry_after = retry_after
