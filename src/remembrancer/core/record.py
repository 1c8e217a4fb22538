"""Record envelopes (DESIGN.md section 3.4).

A record is a JSON object signed by its actor and, usually, by record
witnesses.  Every signature signs the same bytes, the *signing input*: the
RFC 8785 canonical form of the envelope without ``signatures``.  The record's
``eventHash`` is ``sha256:`` + hex SHA-256 of the signing input, and the log
leaf is the canonical form of the whole envelope, signatures included, so an
inclusion proof shows exactly what was admitted.

Parsing is strict (rule 1 of admission, "well-formed"): exact field set,
types, lengths, at most 65,535 canonical bytes.  It does not check
signatures, time or policy; see :mod:`remembrancer.core.admission`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple, Protocol

import msgspec
from msgspec import UNSET, UnsetType

from remembrancer.core.encoding import b64url_decode, b64url_decode_64, b64url_encode
from remembrancer.core.errors import FormatError
from remembrancer.core.frozen import positional_maker
from remembrancer.core.identifiers import DID_KEY_RE, NAMESPACE_RE
from remembrancer.core.jcs import (
    canonical_members,
    dumps_plain,
    join_members,
    loads_strict,
    parse_canonical,
    parse_canonical_typed,
    typed_decoder,
)
from remembrancer.core.tiles import MAX_ENTRY_SIZE

MAX_INPUT_BYTES = 256 * 1024  # what a parser reads before refusing outright
MAX_SIGNATURES = 64
VM_VERSION = "1.0"

SCHEMA_RE = re.compile(
    r"^([a-z][a-z0-9]*(?:\.[a-z][a-z0-9]*)*)@(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\Z"
)
NONCE_RE = re.compile(r"^[A-Za-z0-9_-]{8,128}\Z")
B64URL_RE = re.compile(r"^[A-Za-z0-9_-]*\Z")
HASH_RE = re.compile(r"^sha256:[0-9a-f]{64}\Z")

_SIGNATURE_KEYS: Final = frozenset(("alg", "kid", "role", "sig"))
REQUIRED = ("vm:version", "event:id", "event:type", "schema", "namespace", "actor",
            "timestamp", "nonce", "payload", "signatures")  # fmt: skip
OPTIONAL = ("subject", "prev", "payload:cid", "payload:hash")
ALLOWED = frozenset(REQUIRED + OPTIONAL)
_REQUIRED_SET: Final = frozenset(REQUIRED)

# Strings already seen to match a pattern (schemas, namespaces and keys recur
# from record to record); bounded, emptied when full.
_SCHEMAS: set[str] = set()
_NAMESPACES: set[str] = set()
_DID_KEYS: set[str] = set()
_MATCHED_MAX = 4096


def _matches(pattern: re.Pattern[str], seen: set[str], text: str) -> bool:
    if text in seen:
        return True
    if pattern.match(text) is None:
        return False
    if len(seen) >= _MATCHED_MAX:
        seen.clear()
    seen.add(text)
    return True


Role = Literal["actor", "witness"]


class RecordSignature(NamedTuple):
    """One entry of ``signatures``: who signed (``kid``, a did:key) in which role.

    A named tuple (immutable, and made three times per record at a fraction
    of a frozen dataclass's cost)."""

    kid: str
    role: Role
    sig: bytes

    def to_dict(self) -> dict[str, str]:
        return {
            "alg": "Ed25519",
            "kid": self.kid,
            "role": self.role,
            "sig": b64url_encode(self.sig),
        }


@dataclass(frozen=True, slots=True)
class Record:
    """A parsed, well-formed record envelope and its canonical byte forms."""

    event_id: str
    event_type: str
    schema: str  # "name@major.minor.patch"
    namespace: str
    actor: str
    timestamp: int
    nonce: str
    prev: str | None
    subject: str | None
    payload: Any
    signatures: tuple[RecordSignature, ...]
    signing_input: bytes
    leaf: bytes
    event_hash: bytes  # raw 32 bytes

    @property
    def event_hash_hex(self) -> str:
        return "sha256:" + self.event_hash.hex()

    @property
    def schema_name(self) -> str:
        return self.schema.partition("@")[0]

    @property
    def schema_version(self) -> str:
        return self.schema.partition("@")[2]

    def envelope(self) -> dict[str, Any]:
        """The envelope as a JSON value (parsed back from the canonical leaf)."""
        value: dict[str, Any] = loads_strict(self.leaf)
        return value

    @classmethod
    def from_bytes(cls, data: bytes) -> Record:
        """Parse a record from JSON bytes (any formatting; canonicalised here)."""
        if len(data) > MAX_INPUT_BYTES:
            raise FormatError(
                f"record input larger than {MAX_INPUT_BYTES} bytes", code="record_too_large"
            )
        env = parse_canonical_typed(data, _decode_envelope)
        if env is not None:  # canonical, of the envelope's shape: the input is the leaf
            return cls._checked(
                env.event_id, env.event_type, env.schema, env.namespace, env.actor,
                env.timestamp, env.nonce, None if env.prev is UNSET else env.prev, env.subject,
                env.payload_hash, env.payload_cid, env.payload,
                env.signatures, data,
            )  # fmt: skip
        # Not canonical, or a member missing, unknown or of the wrong type: the
        # plain parse, which names the fault.
        value = parse_canonical(data)
        if type(value) is dict:  # canonical all the same: the input is the leaf
            return cls.from_value(value, _leaf=data)
        value = loads_strict(data, max_bytes=MAX_INPUT_BYTES)
        return cls.from_value(value)

    @classmethod
    def from_value(cls, value: Any, _leaf: bytes | None = None) -> Record:
        """Check a parsed JSON value against the envelope grammar.

        ``_leaf``: the canonical bytes ``value`` was parsed from, when
        :func:`~remembrancer.core.jcs.parse_canonical` proved them canonical
        (the signing input is then cut out of them, not encoded again)."""
        if not isinstance(value, dict):
            raise FormatError("a record must be a JSON object", code="record_malformed")
        keys = value.keys()
        missing = [] if keys >= _REQUIRED_SET else [k for k in REQUIRED if k not in value]
        if missing:
            raise FormatError(
                f"record lacks required field {missing[0]!r}",
                code="record_missing_field",
                details={"fields": missing},
            )
        unknown = [] if keys <= ALLOWED else sorted(k for k in value if k not in ALLOWED)
        if unknown:
            raise FormatError(
                f"record has unknown field {unknown[0]!r}",
                code="record_unknown_field",
                details={"fields": unknown},
            )
        if value["vm:version"] != VM_VERSION:
            raise _type("vm:version", f'must be "{VM_VERSION}"')
        return cls._checked(
            value["event:id"], value["event:type"], value["schema"], value["namespace"],
            value["actor"], value["timestamp"], value["nonce"], value.get("prev"),
            value.get("subject", UNSET), value.get("payload:hash", UNSET),
            value.get("payload:cid", UNSET), value["payload"],
            value["signatures"], _leaf, value,
        )  # fmt: skip

    @classmethod
    def _checked(
        cls,
        event_id: Any,
        event_type: Any,
        schema: Any,
        namespace: Any,
        actor: Any,
        timestamp: Any,
        nonce: Any,
        prev: Any,
        subject: Any,
        payload_hash: Any,
        payload_cid: Any,
        payload: Any,
        signatures: Any,
        leaf: bytes | None,
        value: dict[str, Any] | None = None,
    ) -> Record:
        """The record of these members once each is checked (every parse path
        ends here, so both check the same rules); ``UNSET``: an optional member
        that is absent.  ``leaf``: the canonical bytes of the envelope if known
        (the signing input is then cut out of them), else ``value``, the
        envelope to encode."""
        if (
            not isinstance(event_id, str)
            or not 1 <= len(event_id) <= 128
            or not event_id.isprintable()
        ):
            raise _type("event:id", "must be 1 to 128 printable characters")
        if not isinstance(schema, str) or not _matches(SCHEMA_RE, _SCHEMAS, schema):
            raise _type("schema", "must be name@major.minor.patch")
        if event_type != schema.partition("@")[0]:
            raise FormatError(
                f"event:type {event_type!r} does not match schema {schema!r}",
                code="event_type_mismatch",
            )
        if not isinstance(namespace, str) or not _matches(NAMESPACE_RE, _NAMESPACES, namespace):
            raise _type("namespace", "must match <org>:<name> (lowercase, digits, '-')")
        if not isinstance(actor, str) or not _matches(DID_KEY_RE, _DID_KEYS, actor):
            raise _type("actor", "must be an Ed25519 did:key")
        if type(timestamp) is not int or not 0 <= timestamp < 2**53:
            raise _type("timestamp", "must be an integer number of seconds since the epoch")
        if not isinstance(nonce, str) or not NONCE_RE.match(nonce):
            raise _type("nonce", "must be 8 to 128 base64url characters")
        if prev is not None and (not isinstance(prev, str) or not HASH_RE.match(prev)):
            raise _type("prev", "must be null or sha256:<64 lowercase hex>")
        if (
            subject is not None
            and subject is not UNSET
            and (
                not isinstance(subject, str)
                or not 1 <= len(subject) <= 512
                or not subject.isprintable()
            )
        ):
            raise _type("subject", "must be a DID or URN of at most 512 characters")
        if payload_hash is not UNSET and (
            not isinstance(payload_hash, str) or not HASH_RE.match(payload_hash)
        ):
            raise _type("payload:hash", "must be sha256:<64 lowercase hex>")
        if payload_cid is not UNSET and (
            not isinstance(payload_cid, str) or not 1 <= len(payload_cid) <= 256
        ):
            raise _type("payload:cid", "must be a string of at most 256 characters")
        if not isinstance(payload, dict):
            raise _type("payload", "must be a JSON object")
        sigs = _parse_signatures(signatures)

        if leaf is not None:
            signing_input = _without_signatures(leaf, timestamp, subject)
        else:
            assert value is not None
            members = canonical_members(value)
            leaf = join_members(members)
            signing_input = join_members(members, exclude="signatures")
        if len(leaf) > MAX_ENTRY_SIZE:  # a record is one tlog-tiles entry
            raise FormatError(
                f"record is {len(leaf)} canonical bytes, over the {MAX_ENTRY_SIZE} limit;"
                " reference large payloads by payload:hash or payload:cid",
                code="record_too_large",
            )
        make = _make_record if cls is Record else cls
        return make(event_id, event_type, schema, namespace, actor, timestamp, nonce, prev,
                    None if subject is UNSET else subject, payload, sigs, signing_input,
                    leaf, hashlib.sha256(signing_input).digest())  # fmt: skip


_make_record: Final = positional_maker(Record)
_new_tuple: Final = tuple.__new__  # a named tuple from its checked fields


class _SignatureIn(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """One entry of ``signatures`` as the typed fast path decodes it (members
    in the order of their names: see :func:`parse_canonical_typed`).  Neither
    struct is tracked by the garbage collector (``gc=False``): they hold decoded
    JSON, which cannot form a reference cycle, and live only while parsing."""

    alg: str
    kid: str
    role: str
    sig: str


class _EnvelopeIn(
    msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True, gc=False
):
    """The envelope's shape for the typed fast path of :meth:`Record.from_bytes`:
    members in the order of their names, optional ones ``UNSET`` when absent
    (so that the sorted encoding writes back exactly what was read).  Only
    the JSON types are checked here; every rule is :meth:`Record._checked`'s."""

    actor: str
    event_id: str = msgspec.field(name="event:id")
    event_type: str = msgspec.field(name="event:type")
    namespace: str
    nonce: str
    payload: dict[str, Any]
    payload_cid: str | UnsetType = msgspec.field(name="payload:cid", default=UNSET)
    payload_hash: str | UnsetType = msgspec.field(name="payload:hash", default=UNSET)
    prev: str | UnsetType | None = UNSET
    schema: str
    signatures: list[_SignatureIn]
    subject: str | UnsetType | None = UNSET
    timestamp: int
    vm_version: Literal["1.0"] = msgspec.field(name="vm:version")


_decode_envelope: Final = typed_decoder(_EnvelopeIn)


def _without_signatures(leaf: bytes, timestamp: int, subject: Any) -> bytes:
    """The signing input of a well-formed envelope whose canonical form is
    ``leaf`` (``subject``: its subject, ``UNSET`` if absent): ``leaf`` with its
    ``signatures`` member cut out.

    Members are in canonical order, so only ``subject``, ``timestamp`` and
    ``vm:version`` follow ``signatures``; they are encoded here (a few bytes)
    and must end ``leaf``.  The member itself is the last ``,"signatures":[``
    before them: well-formed signatures (``_parse_signatures`` checked them)
    hold only alg, kid, role and sig with did:key, base64url and fixed
    values, so that text cannot occur inside them.  Anything unexpected falls
    back to encoding the members (same result, slower)."""
    tail = b',"timestamp":%d,"vm:version":"%s"}' % (timestamp, VM_VERSION.encode())
    if subject is not UNSET:
        tail = b',"subject":' + dumps_plain(subject) + tail
    end = len(leaf) - len(tail)
    cut = leaf.rfind(b',"signatures":[', 0, end)
    if cut < 0 or not leaf.endswith(tail):  # not reached for a canonical leaf
        return join_members(canonical_members(loads_strict(leaf)), exclude="signatures")
    return leaf[:cut] + tail


def _type(field: str, message: str) -> FormatError:
    return FormatError(f"{field} {message}", code="record_field_type", details={"field": field})


def _parse_signatures(value: Any) -> tuple[RecordSignature, ...]:
    """The ``signatures`` member: a list of objects (or, from the typed fast
    path, of :class:`_SignatureIn`) of exactly alg, kid, role and sig."""
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_SIGNATURES:
        raise _type("signatures", f"must be a list of 1 to {MAX_SIGNATURES} signatures")
    out = []
    for i, item in enumerate(value):
        if type(item) is _SignatureIn:
            alg, kid, role, text = item.alg, item.kid, item.role, item.sig
        elif isinstance(item, dict) and item.keys() == _SIGNATURE_KEYS:
            alg, kid, role, text = item["alg"], item["kid"], item["role"], item["sig"]
        else:
            raise _type(f"signatures[{i}]", "must have exactly alg, kid, role and sig")
        if alg != "Ed25519":
            raise FormatError(
                f"signatures[{i}].alg must be Ed25519", code="signature_alg_unsupported"
            )
        if not isinstance(kid, str) or not _matches(DID_KEY_RE, _DID_KEYS, kid):
            raise _type(f"signatures[{i}].kid", "must be an Ed25519 did:key")
        if role != "actor" and role != "witness":
            raise _type(f"signatures[{i}].role", 'must be "actor" or "witness"')
        sig = b64url_decode_64(text)
        if sig is None:  # not the canonical form of 64 bytes: say what it is instead
            b64url_decode(text, what=f"signatures[{i}].sig")
            raise _type(f"signatures[{i}].sig", "must be a 64-byte Ed25519 signature")
        out.append(_new_tuple(RecordSignature, (kid, role, sig)))
    return tuple(out)


class RecordSigner(Protocol):
    """What signing a record needs: a did:key and a sign function (see core.keys)."""

    @property
    def did(self) -> str: ...

    def sign(self, message: bytes) -> bytes: ...


def unsigned_envelope(
    *,
    namespace: str,
    schema: str,
    payload: Mapping[str, Any],
    actor: str,
    event_id: str,
    timestamp: int,
    nonce: str,
    prev: str | None = None,
    subject: str | None = None,
) -> dict[str, Any]:
    """The envelope without signatures, ready for :func:`sign_envelope`."""
    env: dict[str, Any] = {
        "vm:version": VM_VERSION,
        "event:id": event_id,
        "event:type": schema.partition("@")[0],
        "schema": schema,
        "namespace": namespace,
        "actor": actor,
        "timestamp": timestamp,
        "nonce": nonce,
        "prev": prev,
        "payload": dict(payload),
    }
    if subject is not None:
        env["subject"] = subject
    return env


def sign_envelope(
    envelope: Mapping[str, Any], actor: RecordSigner, witnesses: Sequence[RecordSigner] = ()
) -> Record:
    """Sign an unsigned envelope with the actor key and any witness keys.

    ``actor`` and ``witnesses`` are e.g. :class:`remembrancer.core.keys.SigningKey`.
    """
    body = {k: v for k, v in envelope.items() if k != "signatures"}
    if body.get("actor") != actor.did:
        raise FormatError(
            "the envelope's actor is not the signing key's did:key", code="actor_mismatch"
        )
    signing_input = join_members(canonical_members(body))
    sigs = [RecordSignature(actor.did, "actor", actor.sign(signing_input))]
    sigs += [RecordSignature(w.did, "witness", w.sign(signing_input)) for w in witnesses]
    body["signatures"] = [s.to_dict() for s in sigs]
    return Record.from_value(body)
