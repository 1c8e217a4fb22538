"""Namespace configuration (the Phase IV policy), validated from plain data.

The document shape (YAML on disk, see ``examples/namespaces.yaml``)::

    version: 1
    aliases:                       # readable alias DID -> the did:key it stands for
      did:vm:arbiter:prod-us-east-1: did:key:z6Mk...
    namespaces:
      dao:vaultmesh:
        description: VaultMesh DAO canonical ledger
        witnesses: {min_required: 2, allowlist: [did:vm:arbiter:prod-us-east-1, ...]}
        schema_policy: {allow: [ledger.append@1.0.x, ...]}
        cadence: {fast: {target: eip155:8453, every: 89s, confirmations: 3}, ...}
        timestamp_drift: 300       # optional, seconds, default 300
        governance: {admins: [...], voters: [...], vote_threshold: 2}   # optional
        trusted_sources:           # optional: namespaces whose messages this one accepts
          - fin:clearing           # plain form: any log this node knows under that name
          - namespace: ops:audit   # full form (all keys but namespace optional)
            log_vkeys: [beta.example.org/ops:audit+1a2b3c4d+AQ...]   # pin the source log
            witnesses: [witness.example.org+5e6f7a8b+BA...]          # cosigner vkeys
            min_cosigners: 1       # default: every listed witness
            max_lag: 1024          # staleness bound in entries (docs/messaging.md)
            record_witnesses:      # the source's record-witness rule; needed when the
              min_required: 1      # source is not a namespace of this file
              allowlist: [did:vm:arbiter:audit-1]
        handlers:                  # optional: invoke operations -> handler
          ping: echo               # a built-in, or "package.module:function"

Acceptance always checks keys, never aliases: every alias resolves to a
did:key here, once, and policy objects hold only did:keys.  Every error names
the source file, the namespace and the key at fault.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from remembrancer.core.cadence import Cadence, parse_cadence
from remembrancer.core.cosignature import parse_cosigner_vkey
from remembrancer.core.errors import ConfigError, FormatError
from remembrancer.core.identifiers import DID_KEY_RE, NAMESPACE_RE
from remembrancer.core.note import parse_vkey
from remembrancer.core.schema import SchemaPattern

DEFAULT_DRIFT = 300
MAX_DRIFT = 7 * 86400
_NS_KEYS = {"description", "witnesses", "schema_policy", "cadence", "timestamp_drift",
            "governance", "trusted_sources", "handlers"}  # fmt: skip
_SOURCE_KEYS = (
    "namespace",
    "log_vkeys",
    "witnesses",
    "min_cosigners",
    "max_lag",
    "record_witnesses",
)
DEFAULT_MAX_LAG = 1024
MAX_TRUST_KEYS = 64
BUILTIN_HANDLERS = frozenset({"echo"})
OPERATION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # as namespace.message@1.0.0
HANDLER_REF_RE = re.compile(
    r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"
)


@dataclass(frozen=True, slots=True)
class Governance:
    """Who may change the namespace's cadence.

    A ``governance.cadence.set`` record whose actor is an admin applies at
    once (from its ``effective_after``).  Otherwise it is a proposal that
    applies when ``vote_threshold`` distinct voters have recorded a
    ``vote.cast`` with ``proposalId`` equal to the proposal's ``event:id`` and
    ``choice`` ``approve``.  With neither admins nor a threshold, cadence
    cannot be changed by records.
    """

    admins: frozenset[str] = frozenset()
    voters: frozenset[str] = frozenset()
    vote_threshold: int = 0


@dataclass(frozen=True, slots=True)
class WitnessPolicy:
    """A namespace's record-witness rule (admission rule 6): ``min_required``
    distinct keys of ``allowlist`` (did:key -> alias) must sign a record."""

    min_required: int
    allowlist: Mapping[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "min_required": self.min_required,
            "allowlist": [{"alias": a, "did": d} for d, a in self.allowlist.items()],
        }


@dataclass(frozen=True, slots=True)
class TrustedSource:
    """One ``trusted_sources`` entry: a namespace whose messages are accepted here,
    and what a message's proof must show (docs/messaging.md).

    ``log_vkeys`` (note vkeys named ``<prefix>/<namespace>``), when given, are
    the only source logs accepted; empty means any log this node knows under
    that namespace name (its own, or one it witnesses).  ``witnesses`` are
    cosigner vkeys, of which ``min_cosigners`` distinct ones must have cosigned
    the proof's checkpoint.  A proof whose checkpoint is more than ``max_lag``
    entries older than the newest source checkpoint already accepted here is
    stale.

    ``record_witnesses`` is the source namespace's admission rule 6 as this
    node's operator knows it: a message must carry ``min_required`` valid
    signatures of distinct allowlisted record witnesses, or it is not a
    message *of that namespace*, whatever log holds it.  When it is not
    given, the source's own entry in this namespaces file (a namespace this
    node hosts) is that policy; a source that is neither is a configuration
    error (docs/adr/0005-cross-namespace-messages.md, "The source's policy").
    """

    namespace: str
    log_vkeys: tuple[str, ...] = ()
    witnesses: tuple[str, ...] = ()
    min_cosigners: int = 0
    max_lag: int = DEFAULT_MAX_LAG
    record_witnesses: WitnessPolicy | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "log_vkeys": list(self.log_vkeys),
            "witnesses": list(self.witnesses),
            "min_cosigners": self.min_cosigners,
            "max_lag": self.max_lag,
            "record_witnesses": (
                self.record_witnesses.to_dict() if self.record_witnesses is not None else None
            ),
        }


_ALLOWED_MAX = 1024


@dataclass(frozen=True, slots=True)
class NamespaceConfig:
    name: str
    description: str = ""
    min_required: int = 0
    witnesses: Mapping[str, str] = field(default_factory=dict)  # did:key -> alias (or itself)
    schema_allow: tuple[SchemaPattern, ...] = ()
    cadence: Cadence = field(default_factory=Cadence)
    timestamp_drift: int = DEFAULT_DRIFT
    governance: Governance = field(default_factory=Governance)
    trusted_sources: tuple[TrustedSource, ...] = ()
    handlers: Mapping[str, str] = field(default_factory=dict)  # invoke operation -> handler
    # schema_allowed's answers so far (schemas recur from record to record); bounded.
    _allowed: dict[str, bool] = field(default_factory=dict, init=False, repr=False,
                                      compare=False, hash=False)  # fmt: skip

    def schema_allowed(self, schema: str) -> bool:
        known = self._allowed.get(schema)
        if known is None:
            known = any(p.matches(schema) for p in self.schema_allow)
            if len(self._allowed) >= _ALLOWED_MAX:
                self._allowed.clear()
            self._allowed[schema] = known
        return known

    def trusted(self, source: object) -> TrustedSource | None:
        """The ``trusted_sources`` entry for ``source``, or None if it is not trusted."""
        return next((t for t in self.trusted_sources if t.namespace == source), None)

    def to_dict(self) -> dict[str, Any]:
        """The effective policy as plain data (what the API and CLI show)."""
        return {
            "namespace": self.name,
            "description": self.description,
            "witnesses": {
                "min_required": self.min_required,
                "allowlist": [{"alias": a, "did": d} for d, a in self.witnesses.items()],
            },
            "schema_policy": {"allow": [str(p) for p in self.schema_allow]},
            "cadence": self.cadence.to_dict(),
            "timestamp_drift": self.timestamp_drift,
            "governance": {
                "admins": sorted(self.governance.admins),
                "voters": sorted(self.governance.voters),
                "vote_threshold": self.governance.vote_threshold,
            },
            "trusted_sources": [t.to_dict() for t in self.trusted_sources],
            "handlers": dict(self.handlers),
        }


def parse_namespaces(
    doc: Any, *, source: str = "<namespaces>", known_schemas: frozenset[str] | None = None
) -> dict[str, NamespaceConfig]:
    """Validate a whole namespaces document; raise ConfigError naming file, namespace and key."""
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{source}: the document must be a mapping", code="config_invalid")
    extra = [k for k in doc if k not in ("version", "aliases", "namespaces")]
    if extra:
        raise ConfigError(
            f"{source}: unknown top-level key {extra[0]!r}", code="config_key_unknown"
        )
    if type(doc.get("version", 1)) is not int or doc.get("version", 1) != 1:
        raise ConfigError(f"{source}: version must be 1", code="config_version_unsupported")
    aliases_raw = doc.get("aliases") or {}
    if not isinstance(aliases_raw, Mapping):
        raise ConfigError(f"{source}: aliases must be a mapping", code="config_invalid")
    aliases: dict[str, str] = {}
    for alias, did in aliases_raw.items():
        if not isinstance(alias, str) or not alias.startswith("did:") or len(alias) > 256:
            raise ConfigError(f"{source}: aliases: {alias!r} is not a DID", code="alias_invalid")
        aliases[alias] = _did_key(did, f"{source}: aliases.{alias}")
    spaces = doc.get("namespaces")
    if not isinstance(spaces, Mapping) or not spaces:
        raise ConfigError(
            f"{source}: namespaces must be a non-empty mapping", code="config_invalid"
        )
    out: dict[str, NamespaceConfig] = {}
    for name, body in spaces.items():
        if not isinstance(name, str) or not NAMESPACE_RE.match(name):
            raise ConfigError(
                f"{source}: namespace {name!r} does not match <org>:<name>",
                code="namespace_name_invalid",
            )
        out[name] = _parse_one(name, body, aliases, f"{source}: namespace {name}", known_schemas)
    for ns in out.values():
        for src in ns.trusted_sources:
            if src.namespace == ns.name:
                raise ConfigError(
                    f"{source}: namespace {ns.name}: trusted_sources lists the namespace itself",
                    code="trusted_source_invalid",
                )
            if src.record_witnesses is None and src.namespace not in out:
                raise ConfigError(
                    f"{source}: namespace {ns.name}: trusted_sources entry {src.namespace} is"
                    " not a namespace of this file, so its admission policy is unknown here:"
                    " give it record_witnesses {min_required, allowlist} (the source's"
                    " record witnesses), or the messages of any log under that name would"
                    " be taken on that log's word",
                    code="trusted_source_policy_unknown",
                    details={"namespace": ns.name, "source": src.namespace},
                )
    return out


def _did_key(value: Any, where: str) -> str:
    if not isinstance(value, str) or not DID_KEY_RE.match(value):
        raise ConfigError(f"{where}: {value!r} is not an Ed25519 did:key", code="did_invalid")
    # Decode for real, so a typo in the base58 text is caught at load time.
    from remembrancer.core.keys import public_from_did_key

    try:
        public_from_did_key(value)
    except FormatError as e:
        raise ConfigError(f"{where}: {e.message}", code="did_invalid") from e
    return value


def _resolve(value: Any, aliases: Mapping[str, str], where: str) -> tuple[str, str]:
    """(did:key, alias-or-did) for an allowlist or governance entry."""
    if isinstance(value, str) and value in aliases:
        return aliases[value], value
    if isinstance(value, str) and value.startswith("did:key:"):
        return _did_key(value, where), value
    raise ConfigError(
        f"{where}: {value!r} is neither a did:key nor an alias defined under aliases",
        code="alias_unknown",
    )


def _parse_one(
    name: str, body: Any, aliases: Mapping[str, str], at: str, known: frozenset[str] | None
) -> NamespaceConfig:
    if not isinstance(body, Mapping):
        raise ConfigError(f"{at}: must be a mapping", code="config_invalid")
    extra = sorted(k for k in body if k not in _NS_KEYS)
    if extra:
        raise ConfigError(f"{at}: unknown key {extra[0]!r}", code="config_key_unknown")
    description = body.get("description", "")
    if not isinstance(description, str) or len(description) > 1000:
        raise ConfigError(f"{at}: description must be a string", code="config_invalid")

    min_required, witnesses = _witness_policy(body.get("witnesses"), aliases, at, "witnesses")

    sp = body.get("schema_policy") or {}
    if not isinstance(sp, Mapping) or any(k != "allow" for k in sp):
        raise ConfigError(f"{at}: schema_policy must hold only allow", code="config_invalid")
    allow_list = sp.get("allow") or []
    if not isinstance(allow_list, list) or not allow_list:
        raise ConfigError(
            f"{at}: schema_policy.allow must be a non-empty list", code="config_invalid"
        )
    patterns = []
    for i, text in enumerate(allow_list):
        try:
            pattern = SchemaPattern.parse(text)
        except FormatError as e:
            raise ConfigError(f"{at}: schema_policy.allow[{i}]: {e.message}", code=e.code) from e
        if known is not None and not any(pattern.matches(s) for s in known):
            raise ConfigError(
                f"{at}: schema_policy.allow[{i}] {text!r} matches no bundled schema",
                code="schema_pattern_unmatched",
            )
        patterns.append(pattern)

    try:
        cadence = parse_cadence(body.get("cadence"), where="cadence")
    except ConfigError as e:
        raise ConfigError(f"{at}: {e.message}", code=e.code) from e

    drift = body.get("timestamp_drift", DEFAULT_DRIFT)
    if type(drift) is not int or not 1 <= drift <= MAX_DRIFT:
        raise ConfigError(
            f"{at}: timestamp_drift must be 1..{MAX_DRIFT} seconds", code="config_invalid"
        )

    g = body.get("governance") or {}
    if not isinstance(g, Mapping) or any(
        k not in ("admins", "voters", "vote_threshold") for k in g
    ):
        raise ConfigError(
            f"{at}: governance must hold only admins, voters and vote_threshold",
            code="config_invalid",
        )
    admins = frozenset(
        _resolve(v, aliases, f"{at}: governance.admins[{i}]")[0]
        for i, v in enumerate(_list(g.get("admins"), f"{at}: governance.admins"))
    )
    voters = frozenset(
        _resolve(v, aliases, f"{at}: governance.voters[{i}]")[0]
        for i, v in enumerate(_list(g.get("voters"), f"{at}: governance.voters"))
    )
    threshold = g.get("vote_threshold", 0)
    if type(threshold) is not int or threshold < 0:
        raise ConfigError(
            f"{at}: governance.vote_threshold must be an integer >= 0", code="config_invalid"
        )
    if threshold and not voters:
        voters = admins | frozenset(witnesses)
    if threshold > len(voters):
        raise ConfigError(
            f"{at}: governance.vote_threshold {threshold} exceeds the {len(voters)} voters",
            code="vote_threshold_impossible",
        )

    trusted: list[TrustedSource] = []
    for i, entry in enumerate(_list(body.get("trusted_sources"), f"{at}: trusted_sources")):
        src = _trusted_source(entry, aliases, f"{at}: trusted_sources[{i}]")
        if any(t.namespace == src.namespace for t in trusted):
            raise ConfigError(
                f"{at}: trusted_sources[{i}] lists {src.namespace} a second time",
                code="trusted_source_duplicate",
            )
        trusted.append(src)
    handlers = _handlers(body.get("handlers"), f"{at}: handlers")

    return NamespaceConfig(
        name=name,
        description=description,
        min_required=min_required,
        witnesses=witnesses,
        schema_allow=tuple(patterns),
        cadence=cadence,
        timestamp_drift=drift,
        governance=Governance(admins=admins, voters=voters, vote_threshold=threshold),
        trusted_sources=tuple(trusted),
        handlers=handlers,
    )


def _witness_policy(
    value: Any, aliases: Mapping[str, str], at: str, key: str
) -> tuple[int, dict[str, str]]:
    """A ``{min_required, allowlist}`` block: (min_required, did:key -> alias)."""
    w = value or {}
    if not isinstance(w, Mapping) or any(k not in ("min_required", "allowlist") for k in w):
        raise ConfigError(
            f"{at}: {key} must hold only min_required and allowlist", code="config_invalid"
        )
    allow_raw = w.get("allowlist") or []
    if not isinstance(allow_raw, list):
        raise ConfigError(f"{at}: {key}.allowlist must be a list", code="config_invalid")
    witnesses: dict[str, str] = {}
    for i, entry in enumerate(allow_raw):
        did, alias = _resolve(entry, aliases, f"{at}: {key}.allowlist[{i}]")
        if did in witnesses:
            raise ConfigError(
                f"{at}: {key}.allowlist[{i}] {alias} is the same key as {witnesses[did]}",
                code="witness_duplicate",
            )
        witnesses[did] = alias
    min_required = w.get("min_required", 0)
    if type(min_required) is not int or min_required < 0:
        raise ConfigError(
            f"{at}: {key}.min_required must be an integer >= 0", code="config_invalid"
        )
    if min_required > len(witnesses):
        raise ConfigError(
            f"{at}: {key}.min_required is {min_required} but the allowlist has only"
            f" {len(witnesses)} keys, so no record could ever be admitted",
            code="witness_quorum_impossible",
        )
    return min_required, witnesses


def _trusted_source(entry: Any, aliases: Mapping[str, str], where: str) -> TrustedSource:
    """A ``trusted_sources`` entry: a namespace name, or a mapping (see TrustedSource)."""
    if isinstance(entry, str):
        entry = {"namespace": entry}
    if not isinstance(entry, Mapping):
        raise ConfigError(
            f"{where} must be a namespace or a mapping", code="trusted_source_invalid"
        )
    extra = sorted(str(k) for k in entry if k not in _SOURCE_KEYS)
    if extra:
        raise ConfigError(f"{where}: unknown key {extra[0]!r}", code="config_key_unknown")
    name = entry.get("namespace")
    if not isinstance(name, str) or not NAMESPACE_RE.match(name):
        raise ConfigError(f"{where}: namespace is not a namespace", code="trusted_source_invalid")
    log_vkeys = _list(entry.get("log_vkeys"), f"{where}.log_vkeys")
    witnesses = _list(entry.get("witnesses"), f"{where}.witnesses")
    if len(log_vkeys) > MAX_TRUST_KEYS or len(witnesses) > MAX_TRUST_KEYS:
        raise ConfigError(
            f"{where}: at most {MAX_TRUST_KEYS} log_vkeys and witnesses", code="config_invalid"
        )
    for i, vkey in enumerate(log_vkeys):
        try:
            verifier = parse_vkey(vkey)
        except FormatError as e:
            raise ConfigError(f"{where}.log_vkeys[{i}]: {e.message}", code="vkey_invalid") from e
        prefix, _, tail = verifier.name.rpartition("/")
        if not prefix or tail != name:
            raise ConfigError(
                f"{where}.log_vkeys[{i}] is for origin {verifier.name!r}, not <prefix>/{name}",
                code="trusted_source_vkey_invalid",
            )
    keys: set[bytes] = set()
    for i, vkey in enumerate(witnesses):
        try:
            cosigner = parse_cosigner_vkey(vkey)
        except FormatError as e:
            raise ConfigError(f"{where}.witnesses[{i}]: {e.message}", code="vkey_invalid") from e
        if cosigner.public_key.raw in keys:
            raise ConfigError(
                f"{where}.witnesses[{i}] is a key already listed", code="witness_duplicate"
            )
        keys.add(cosigner.public_key.raw)
    minimum = entry.get("min_cosigners", len(witnesses))
    if type(minimum) is not int or not 0 <= minimum <= len(witnesses):
        raise ConfigError(
            f"{where}.min_cosigners must be an integer from 0 to the {len(witnesses)} witnesses"
            " listed",
            code="trusted_source_quorum_impossible",
        )
    max_lag = entry.get("max_lag", DEFAULT_MAX_LAG)
    if type(max_lag) is not int or not 0 <= max_lag < 2**63:
        raise ConfigError(f"{where}.max_lag must be an integer >= 0", code="config_invalid")
    record_witnesses = None
    if "record_witnesses" in entry:
        if not isinstance(entry["record_witnesses"], Mapping):
            raise ConfigError(
                f"{where}.record_witnesses must be a mapping of min_required and allowlist",
                code="config_invalid",
            )
        record_witnesses = WitnessPolicy(
            *_witness_policy(entry["record_witnesses"], aliases, where, "record_witnesses")
        )
    return TrustedSource(name, tuple(log_vkeys), tuple(witnesses), minimum, max_lag,
                         record_witnesses)  # fmt: skip


def _handlers(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a mapping", code="config_invalid")
    out: dict[str, str] = {}
    for op, ref in value.items():
        if not isinstance(op, str) or not OPERATION_RE.match(op):
            raise ConfigError(f"{where}: {op!r} is not an operation name", code="handler_invalid")
        if not isinstance(ref, str) or not (ref in BUILTIN_HANDLERS or HANDLER_REF_RE.match(ref)):
            raise ConfigError(
                f"{where}.{op}: {ref!r} is neither a built-in handler"
                f" ({', '.join(sorted(BUILTIN_HANDLERS))}) nor package.module:function",
                code="handler_invalid",
            )
        out[op] = ref
    return out


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{where} must be a list", code="config_invalid")
    return value
