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
verify: halved).  A rail never marks an anchor ``verified`` unless every
check passed.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from remembrancer.core.anchor import Anchor
from remembrancer.core.errors import AnchoringError, ConfigError

ErrorClass = Literal["transient", "auth", "validation"]


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


@dataclass(frozen=True, slots=True)
class VerifyContext:
    """What a verification may depend on besides the evidence."""

    now: int  # seconds since the epoch (the caller's clock)
    required_depth: int = 0  # confirmations the namespace's cadence asks for


class Rail(Protocol):
    """One target, e.g. ``rfc3161:tsa`` or ``eip155:31337``."""

    target: str

    def submit(self, digest: bytes, *, now: int) -> Anchor:
        """Commit ``digest``; return the anchor (``submitted`` or already ``verified``)."""
        ...

    def verify(self, anchor: Anchor, ctx: VerifyContext) -> Anchor:
        """Re-check an anchor's evidence and return it with updated status and
        finality (``verified``, ``submitted`` while not deep enough, ``failed``
        or ``reorged``); raise RailError only when the rail cannot be asked."""
        ...


# scheme -> (module, class, extra that provides its dependencies)
_RAILS: dict[str, tuple[str, str, str | None]] = {
    "rfc3161": ("remembrancer.anchoring.rfc3161", "Rfc3161Rail", None),
    "eip155": ("remembrancer.anchoring.evm", "EvmRail", "evm"),
    "btc": ("remembrancer.anchoring.btc", "BitcoinRail", "bitcoin"),
}


@dataclass
class RailRegistry:
    """Rails by target, built from the node's ``anchoring`` configuration::

    anchoring:
      rfc3161:
        tsa: {url: http://127.0.0.1:3161/, trust_bundle: tsa-ca.pem}
      eip155:
        "31337": {rpc: http://127.0.0.1:8545, key_file: keys/evm.key}
      btc:
        mainnet: {calendars: [...], bitcoin_rpc: http://...}
    """

    config: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)
    _rails: dict[str, Rail] = field(default_factory=dict)

    def register(self, rail: Rail) -> None:
        self._rails[rail.target] = rail

    def targets(self) -> list[str]:
        configured = [f"{s}:{n}" for s, names in self.config.items() for n in names]
        return sorted(set(configured) | set(self._rails))

    def is_configured(self, target: str) -> bool:
        """Whether the node's configuration has a rail for ``target`` (a cadence
        level whose target has none is *not configured*: a state, not a failure)."""
        scheme, _, name = target.partition(":")
        return target in self._rails or name in self.config.get(scheme, {})

    def get(self, target: str) -> Rail:
        rail = self._rails.get(target)
        if rail is not None:
            return rail
        scheme, _, name = target.partition(":")
        settings = self.config.get(scheme, {}).get(name)
        if scheme not in _RAILS:
            raise ConfigError(f"no rail for target scheme {scheme!r}", code="rail_unknown")
        if settings is None:
            raise ConfigError(
                f"target {target} is used by a cadence but not configured under anchoring.{scheme}.{name}",
                code="rail_not_configured",
            )
        module_name, class_name, extra = _RAILS[scheme]
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            hint = (
                f"; install the '{extra}' extra: pip install 'remembrancer[{extra}]'"
                if extra
                else ""
            )
            raise ConfigError(
                f"target {target} needs {e.name or 'a missing library'}{hint}",
                code="rail_dependency_missing",
            ) from e
        rail = getattr(module, class_name).from_config(target, settings)
        self._rails[target] = rail
        return rail  # type: ignore[no-any-return]
