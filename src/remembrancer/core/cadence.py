"""Cadence algebra (DESIGN.md section 3.9).

A namespace anchors at up to three levels, ``fast``, ``strong`` and ``cold``.
Each level has a ``target`` (``rfc3161:<tsa>``, ``eip155:<chain id>``,
``btc:<network>``), an ``every`` (``<N>s|m|h|d`` or ``<K>*<level>``, a
multiple of another level of the same namespace), and optionally the
``confirmations`` the target must reach and an RFC 3161 ``policyOID``.

Relative periods resolve to seconds; a cycle, a reference to a level that is
not configured, and a zero period are errors.  Retry delays after a failed
anchor follow ``base * phi**k`` (base 5 s, k capped at 7), doubled for
authentication errors and halved for validation errors.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from remembrancer.core.errors import ConfigError

LEVELS = ("fast", "strong", "cold")
Level = Literal["fast", "strong", "cold"]
TARGET_PATTERN = r"^(rfc3161|eip155|btc):[A-Za-z0-9._-]{1,64}$"
"""An anchoring target, ``<rail>:<name>``, as a pattern string (HTTP parameters; the schemas say the same)."""
TARGET_RE = re.compile(r"^(rfc3161|eip155|btc):([A-Za-z0-9._-]{1,64})\Z")
_EVERY_RE = re.compile(
    r"^(?:(?P<n>[0-9]{1,9})(?P<unit>[smhd])|(?P<k>[0-9]{1,6})\*(?P<ref>[a-z]+))$"
)
_OID_RE = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}

PHI = (1 + math.sqrt(5)) / 2
BACKOFF_BASE = 5.0
BACKOFF_MAX_K = 7
ErrorClass = Literal["transient", "auth", "validation"]


@dataclass(frozen=True, slots=True)
class LevelSpec:
    level: str
    target: str
    every: str
    period: int  # seconds, resolved
    confirmations: int | None = None
    policy_oid: str | None = None

    @property
    def scheme(self) -> str:
        return self.target.partition(":")[0]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"target": self.target, "every": self.every}
        if self.confirmations is not None:
            out["confirmations"] = self.confirmations
        if self.policy_oid is not None:
            out["policyOID"] = self.policy_oid
        return out


@dataclass(frozen=True, slots=True)
class Cadence:
    levels: tuple[LevelSpec, ...] = ()

    def get(self, level: str) -> LevelSpec | None:
        for spec in self.levels:
            if spec.level == level:
                return spec
        return None

    def to_dict(self) -> dict[str, Any]:
        return {spec.level: spec.to_dict() for spec in self.levels}

    def merged(
        self, changes: Mapping[str, Mapping[str, Any]], *, where: str = "cadence"
    ) -> Cadence:
        """A new cadence with the given levels' fields replaced (a governance change)."""
        raw = self.to_dict()
        for level, fields in changes.items():
            base = dict(raw.get(level, {}))
            base.update(fields)
            raw[level] = base
        return parse_cadence(raw, where=where)


def parse_period(text: object) -> tuple[int | None, tuple[int, str] | None]:
    """``"89s"`` -> (89, None); ``"34*fast"`` -> (None, (34, "fast"))."""
    m = _EVERY_RE.match(text) if isinstance(text, str) else None
    if m is None:
        raise ConfigError(
            f"every {text!r} is not <N>s|m|h|d or <K>*<level>", code="cadence_every_invalid"
        )
    if m["n"] is not None:
        return int(m["n"]) * _UNIT[m["unit"]], None
    return None, (int(m["k"]), m["ref"])


def parse_cadence(raw: Any, *, where: str = "cadence") -> Cadence:
    """Validate a ``cadence`` mapping and resolve every period to seconds."""
    if raw is None:
        return Cadence()
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a mapping of levels", code="cadence_invalid")
    unknown = [k for k in raw if k not in LEVELS]
    if unknown:
        raise ConfigError(
            f"{where}.{unknown[0]} is not one of fast, strong, cold", code="cadence_level_unknown"
        )
    specs: dict[str, dict[str, Any]] = {}
    for level, body in raw.items():
        at = f"{where}.{level}"
        if not isinstance(body, Mapping):
            raise ConfigError(f"{at} must be a mapping", code="cadence_invalid")
        extra = [k for k in body if k not in ("target", "every", "confirmations", "policyOID")]
        if extra:
            raise ConfigError(f"{at}.{extra[0]} is not a cadence key", code="cadence_key_unknown")
        target = body.get("target")
        if not isinstance(target, str) or not TARGET_RE.match(target):
            raise ConfigError(
                f"{at}.target must be rfc3161:<name>, eip155:<chain id> or btc:<network>",
                code="cadence_target_invalid",
            )
        if target.startswith("eip155:") and not target[7:].isdigit():
            raise ConfigError(
                f"{at}.target chain id must be decimal", code="cadence_target_invalid"
            )
        every = body.get("every")
        try:
            seconds, rel = parse_period(every)
        except ConfigError as e:
            raise ConfigError(f"{at}.every: {e.message}", code=e.code) from e
        conf = body.get("confirmations")
        if conf is not None and (type(conf) is not int or conf < 1):
            raise ConfigError(
                f"{at}.confirmations must be an integer >= 1", code="cadence_confirmations_invalid"
            )
        oid = body.get("policyOID")
        if oid is not None and (not isinstance(oid, str) or not _OID_RE.match(oid)):
            raise ConfigError(f"{at}.policyOID must be a dotted OID", code="cadence_oid_invalid")
        specs[level] = {"target": target, "every": every, "seconds": seconds, "rel": rel,
                        "confirmations": conf, "policy_oid": oid}  # fmt: skip

    resolved: dict[str, int] = {}

    def resolve(level: str, trail: tuple[str, ...]) -> int:
        if level in resolved:
            return resolved[level]
        if level in trail:
            cycle = " -> ".join((*trail, level))
            raise ConfigError(f"{where}: cadence cycle {cycle}", code="cadence_cycle")
        spec = specs[level]
        if spec["seconds"] is not None:
            period = int(spec["seconds"])
        else:
            k, ref = spec["rel"]
            if ref not in specs:
                raise ConfigError(
                    f"{where}.{level}.every refers to level {ref!r}, which is not configured",
                    code="cadence_reference_unknown",
                )
            period = k * resolve(ref, (*trail, level))
        if period <= 0:
            raise ConfigError(
                f"{where}.{level}.every must be longer than zero", code="cadence_zero"
            )
        resolved[level] = period
        return period

    levels = []
    for level in LEVELS:
        if level in specs:
            spec = specs[level]
            levels.append(
                LevelSpec(
                    level=level,
                    target=spec["target"],
                    every=spec["every"],
                    period=resolve(level, ()),
                    confirmations=spec["confirmations"],
                    policy_oid=spec["policy_oid"],
                )
            )
    return Cadence(tuple(levels))


def backoff_delay(failures: int, error: ErrorClass = "transient") -> float:
    """Seconds to wait after the ``failures``-th failure in a row (1-based).

    ``5 * phi**k`` with ``k = min(failures - 1, 7)``: 5, 8.1, 13.1, 21.2, 34.3,
    55.5, 89.7, 145.2 s; times 2 for auth errors, times 0.5 for validation errors.
    """
    if failures <= 0:
        return 0.0
    k = min(failures - 1, BACKOFF_MAX_K)
    delay = BACKOFF_BASE * PHI**k
    if error == "auth":
        delay *= 2
    elif error == "validation":
        delay *= 0.5
    return delay
