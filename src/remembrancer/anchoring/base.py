"""The Rail protocol and the registry of rails by target scheme.

A rail commits a 32-byte digest to one target and re-verifies the evidence
later.  Rails are synchronous (the scheduler runs them on worker threads) and
import their heavy libraries lazily: a node without the ``evm`` or
``bitcoin`` extra starts, and a configured target that needs one fails with
a message naming the extra.

Errors: :class:`RailError` (an ``AnchoringError``) carries ``error_class``,
which drives the scheduler's backoff (DESIGN.md 3.9): ``transient``
(network, timeouts, 5xx: base delay), ``auth`` (401/403, bad credentials:
doubled), ``validation`` (the rail refused or returned evidence that does not
verify: halved).

Verification is a pure function of the evidence and this node's policy
(docs/federation.md, "Threat model: anchors").  :meth:`Rail.verify` takes an
anchor's *evidence* (root, target, txRef, evidence, aggregation) and the
node's own settings (the rail's trust bundle, chain node, headers and
``confirmations``, plus the :class:`VerifyContext`) and returns a
:class:`Verdict`: ``verified``, ``pending`` (committed but not final here:
too shallow, not mined yet, only a pending calendar attestation),
``failed`` (the evidence is false) or ``unchecked`` (this node lacks what it
needs to judge: headers, a reachable chain node, the rail itself).  It never
reads what the anchor says about itself: its ``status``, its ``finality``
(``requiredDepth`` included), its ``error`` or ``verifier``.  The required
depth of a chain rail is ``max(rail confirmations, ctx.required_depth)``,
both from this node's own configuration.

What a node *stores* for an anchor follows from its own verdicts only:
:func:`judged` turns a verdict into the anchor this node holds, given the
status it gave the same anchor last time (``prior``: its own earlier verdict,
never a claim); :func:`recheck` does both for an anchor the node already
holds.  A rail never says ``verified`` unless every check passed.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from remembrancer.anchoring.settings import AnchoringSettings
from remembrancer.core.anchor import Anchor, Finality, Status, allowed_transition
from remembrancer.core.errors import AnchoringError, ConfigError, FormatError
from remembrancer.net.http import ErrorClass, status_class

Outcome = Literal["verified", "pending", "failed", "unchecked"]
OUTCOMES: tuple[Outcome, ...] = ("verified", "pending", "failed", "unchecked")
VERIFIED = "anchor_verified"  # the code of a verified verdict
DEPTH_INSUFFICIENT = "anchor_depth_insufficient"  # committed, fewer confirmations than required
_STATUS_OF: dict[str, Status] = {"verified": "verified", "pending": "submitted", "failed": "failed"}


class RailError(AnchoringError):
    """A rail failed; ``error_class`` says how the scheduler backs off."""

    def __init__(
        self,
        message: str,
        *,
        code: str = "rail_failed",
        error_class: ErrorClass = "transient",
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message, code=code, details=details)
        self.error_class: ErrorClass = error_class


def http_status_error(status: int, what: str, codes: Mapping[ErrorClass, str]) -> RailError:
    """A rail's error for an HTTP status its service refused with: classed by
    the one classification (:func:`remembrancer.net.http.status_class`), with
    the rail's own code for each class in ``codes``."""
    cls = status_class(status)
    why = " (the credentials were refused)" if cls == "auth" else ""
    return RailError(f"{what}: HTTP {status}{why}", code=codes[cls], error_class=cls,
                     details={"http_status": status})  # fmt: skip


@dataclass(frozen=True, slots=True)
class VerifyContext:
    """This node's policy for one verification, besides the rail's own settings.

    ``required_depth`` is what this node's cadence level asks for (0: nothing
    beyond the rail's ``confirmations``).  It comes from this node's
    configuration (the governed cadence of one of its own namespaces, or a
    member's own level in collaborative anchoring), never from the anchor
    being verified."""

    now: int  # seconds since the epoch (the caller's clock)
    required_depth: int = 0

    def __post_init__(self) -> None:
        if type(self.required_depth) is not int or self.required_depth < 0:
            raise ValueError("required_depth is an integer >= 0")


@dataclass(frozen=True, slots=True)
class Verdict:
    """What this node's rail concluded about one anchor's evidence.

    ``code`` is :data:`VERIFIED` for a verified verdict, otherwise why not
    (``anchor_depth_insufficient``, ``ots_pending_only``,
    ``btc_header_unavailable``, ``tsa_chain_untrusted``, ...).  The facts
    (``tx_ref``, ``block_number``, ``anchor_ts``) are what the evidence shows,
    ``evidence`` the evidence as checked (refreshed from the chain or
    upgraded from a calendar; None: as given).  ``lost`` says the evidence
    names a block that is no longer the canonical one at its height (or a
    transaction the chain no longer holds there): an anchor this node had
    verified is then ``reorged``."""

    outcome: Outcome
    code: str
    message: str = ""
    verifier: str = ""
    observed_depth: int = 0
    required_depth: int = 0
    tx_ref: str | None = None
    block_number: int | None = None
    anchor_ts: int | None = None
    evidence: Mapping[str, Any] | None = None
    lost: bool = False

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"unknown verdict outcome {self.outcome!r}")
        if (self.outcome == "verified") != (self.code == VERIFIED):
            raise ValueError("a verdict is verified exactly when its code is anchor_verified")

    @property
    def verified(self) -> bool:
        return self.outcome == "verified"

    def explain(self) -> str:
        return f"{self.code}: {self.message}" if self.message else self.code

    def disagreement(self, claim: Anchor) -> str | None:
        """Why ``claim``'s own facts differ from what the evidence shows (None:
        they agree).  For a verified verdict on someone else's claim: the
        transaction reference, block and anchor time the claim states (what a
        countersignature commits to and the conflict order uses) must be the
        ones found, and the block it names must still be canonical."""
        if self.lost:
            return "the block the claim names is no longer the canonical one at its height"
        if self.tx_ref is not None and self.tx_ref != claim.tx_ref:
            return f"txRef is {self.tx_ref}, the claim says {claim.tx_ref}"
        if self.block_number != claim.block_number:
            return f"the block is {self.block_number}, the claim says {claim.block_number}"
        if self.anchor_ts != claim.anchor_ts:
            return f"the anchor time is {self.anchor_ts}, the claim says {claim.anchor_ts}"
        return None

    @classmethod
    def ok(cls, verifier: str, **facts: Any) -> Verdict:
        return cls("verified", VERIFIED, "", verifier, **facts)

    @classmethod
    def pending(cls, code: str, message: str, verifier: str = "", **facts: Any) -> Verdict:
        return cls("pending", code, message, verifier, **facts)

    @classmethod
    def failed(cls, code: str, message: str, verifier: str = "", **facts: Any) -> Verdict:
        return cls("failed", code, message, verifier, **facts)

    @classmethod
    def unchecked(cls, code: str, message: str, verifier: str = "", **facts: Any) -> Verdict:
        return cls("unchecked", code, message, verifier, **facts)


def judged(anchor: Anchor, verdict: Verdict, *, now: int, prior: Status | None) -> Anchor:
    """The anchor as this node holds it after its own verification.

    The status comes from ``verdict`` and from ``prior``, the status this node
    gave the same anchor at its previous verification (None for someone
    else's claim): never from ``anchor.status`` or ``anchor.finality``.

    ========== ============================ ==================================
    verdict    prior None/pending/submitted prior verified
    ========== ============================ ==================================
    verified   verified                     verified (reorged if lost)
    pending    submitted                    verified, not final, when only
                                            this node's required depth grew;
                                            otherwise reorged
    failed     failed                       reorged if lost, else failed
    unchecked  submitted                    verified (reorged if lost)
    ========== ============================ ==================================

    ``failed`` and ``reorged`` priors are final: the anchor keeps them.  A
    claim (``prior`` None) is verified only by a verified verdict."""
    if prior in ("failed", "reorged"):
        return replace(anchor, status=prior)
    outcome = verdict.outcome
    if prior == "verified" and verdict.code == DEPTH_INSUFFICIENT and not verdict.lost:
        # Only this node's required depth grew (e.g. a governance change).
        finality = Finality(verdict.observed_depth, verdict.required_depth, "pending")
        return replace(anchor, status="verified", observed_at=now, finality=finality, error=None,
                       verifier=verdict.verifier or anchor.verifier)  # fmt: skip
    if prior == "verified" and (verdict.lost or outcome == "pending"):
        # Keep the facts of what was lost.
        finality = Finality(anchor.finality.observed_depth, verdict.required_depth, "lost")
        why = f"anchor_moved: {verdict.message}" if verdict.verified else verdict.explain()
        return replace(anchor, status="reorged", observed_at=now, error=why,
                       verifier=verdict.verifier or anchor.verifier, finality=finality)  # fmt: skip
    status: Status
    if outcome == "unchecked":  # nothing to go on: what this node knew stands
        status = "verified" if prior == "verified" else "submitted"
        return replace(anchor, status=status,
                       error=None if status == "verified" else verdict.explain())  # fmt: skip
    status = _STATUS_OF[outcome]
    if prior is not None and not allowed_transition(prior, status):  # pragma: no cover
        raise FormatError(f"an anchor cannot go from {prior} to {status}",
                          code="anchor_transition_invalid")  # fmt: skip
    state: Literal["pending", "final", "lost"] = (
        "final"
        if status == "verified"
        else "lost"
        if status == "failed" and verdict.lost
        else "pending"
    )
    return replace(
        anchor,
        status=status,
        tx_ref=verdict.tx_ref if verdict.tx_ref is not None else anchor.tx_ref,
        block_number=verdict.block_number,
        anchor_ts=verdict.anchor_ts,
        observed_at=now,
        verifier=verdict.verifier or anchor.verifier,
        finality=Finality(verdict.observed_depth, verdict.required_depth, state),
        evidence=dict(verdict.evidence) if verdict.evidence is not None else anchor.evidence,
        error=None if status == "verified" else verdict.explain(),
    )


class Rail(Protocol):
    """One target, e.g. ``rfc3161:tsa`` or ``eip155:31337``."""

    target: str

    def submit(self, digest: bytes, *, now: int) -> Anchor:
        """Commit ``digest``; return the anchor (``submitted`` or already ``verified``)."""
        ...

    def verify(self, anchor: Anchor, ctx: VerifyContext) -> Verdict:
        """Judge ``anchor``'s evidence with this rail's settings and ``ctx``
        (see the module docstring).  Never reads ``anchor.status`` or
        ``anchor.finality``; never raises for anything the evidence or the
        chain says: a rail that cannot be asked gives an ``unchecked`` verdict
        whose code says why."""
        ...


def recheck(rail: Rail, held: Anchor, ctx: VerifyContext) -> Anchor:
    """Re-verify an anchor this node holds, whose ``status`` is this node's own
    earlier verdict (the scheduler's receipts), and return it updated."""
    if held.status in ("failed", "reorged"):
        return held
    return judged(held, rail.verify(held, ctx), now=ctx.now, prior=held.status)


# scheme -> (module, class, extra that provides its dependencies, libraries the rail
# needs whatever its settings; the EVM rail needs its extra only to sign, and
# checks that itself when a key is configured)
_RAILS: dict[str, tuple[str, str, str | None, tuple[str, ...]]] = {
    "rfc3161": ("remembrancer.anchoring.rfc3161.rail", "Rfc3161Rail", None, ()),
    "eip155": ("remembrancer.anchoring.evm.rail", "EvmRail", "evm", ()),
    "btc": (
        "remembrancer.anchoring.btc.rail",
        "BitcoinRail",
        "bitcoin",
        ("opentimestamps", "bitcoin"),
    ),
}


@dataclass
class RailRegistry:
    """Rails by target, built from the node's ``anchoring`` settings
    (:class:`~remembrancer.anchoring.settings.AnchoringSettings`, or a plain
    mapping validated into one here)::

    anchoring:
      rfc3161:
        tsa: {url: http://127.0.0.1:3161/, trust_bundle: tsa-ca.pem}
      eip155:
        "31337": {rpc: http://127.0.0.1:8545, key_file: keys/evm.key}
      btc:
        mainnet: {calendars: [...], bitcoin_rpc: http://...}

    Rails are built on first use, or all at once by :meth:`build_all` (the
    node does that at start, so a bad setting, an unreadable trust bundle or
    a missing extra stops it there, not at the first anchor).
    """

    config: AnchoringSettings | Mapping[str, Any] = field(
        default_factory=lambda: AnchoringSettings()
    )
    _rails: dict[str, Rail] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.config, AnchoringSettings):
            self.config = AnchoringSettings.parse(self.config)

    @property
    def settings(self) -> AnchoringSettings:
        assert isinstance(self.config, AnchoringSettings)
        return self.config

    def register(self, rail: Rail) -> None:
        self._rails[rail.target] = rail

    def targets(self) -> list[str]:
        return sorted(set(self.settings.targets()) | set(self._rails))

    def is_configured(self, target: str) -> bool:
        """Whether the node's configuration has a rail for ``target`` (a cadence
        level whose target has none is *not configured*: a state, not a failure)."""
        scheme, _, name = target.partition(":")
        return target in self._rails or self.settings.get(scheme, name) is not None

    def build_all(self) -> None:
        """Build every configured rail now; the first ConfigError stops it
        (its message then starts with the rail's key path)."""
        for target in self.settings.targets():
            try:
                self.get(target)
            except ConfigError as e:
                where = "anchoring." + target.replace(":", ".", 1)
                if e.message.startswith(where):
                    raise
                raise ConfigError(
                    f"{where}: {e.message}", code=e.code, details={**e.details, "key": where}
                ) from e

    def get(self, target: str) -> Rail:
        rail = self._rails.get(target)
        if rail is not None:
            return rail
        scheme, _, name = target.partition(":")
        if scheme not in _RAILS:
            raise ConfigError(f"no rail for target scheme {scheme!r}", code="rail_unknown")
        settings = self.settings.get(scheme, name)
        if settings is None:
            raise ConfigError(
                f"target {target} is used by a cadence but not configured under anchoring.{scheme}.{name}",
                code="rail_not_configured",
            )
        module_name, class_name, extra, needs = _RAILS[scheme]
        try:
            module = importlib.import_module(module_name)
            for library in needs:
                importlib.import_module(library)
        except ImportError as e:
            hint = (
                f"; install the '{extra}' extra: pip install 'remembrancer[{extra}]'"
                if extra
                else ""
            )
            raise ConfigError(
                f"target {target} needs {e.name or 'a missing library'}{hint}",
                code="rail_dependency_missing",
                details={"target": target, "extra": extra},
            ) from e
        rail = getattr(module, class_name).from_config(target, settings)
        self._rails[target] = rail
        return rail  # type: ignore[no-any-return]
