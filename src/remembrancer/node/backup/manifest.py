"""The backup manifest: what an archive holds, each member's size and SHA-256, and its signature.

:class:`Manifest` is the last member (``manifest.json``).  Formats v3 and
v2 are signed by the node key over :data:`MANIFEST_DOMAIN` + the RFC 8785
form of the manifest without ``signature``; v1 is unsigned and read only
with ``allow_unsigned``.  v3 adds the typed tables (member
:data:`TABLES_MEMBER`, row counts in ``table_rows``); v2 and v1 archives
kept those rows as named state, which a restore moves into the tables.  Parsing is strict: exact member names
(:data:`FILE_MEMBER`), known file roles (secret roles only for key files),
counts and hashes of the right form.  Pure.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final

from remembrancer.core.encoding import b64url_decode, b64url_encode
from remembrancer.core.errors import FormatError, VerificationError
from remembrancer.core.identifiers import NAMESPACE_RE
from remembrancer.core.jcs import canonicalize, loads_strict
from remembrancer.core.keys import PublicKey, SigningKey
from remembrancer.core.rfc6962 import HASH_SIZE

__all__ = ["FORMAT", "FORMAT_V1", "FORMAT_V2", "BackupFile", "BackupLog", "Manifest",
           "ManifestSignature", "TableRows"]  # fmt: skip


FORMAT: Final = "remembrancer-backup/v3"
FORMAT_V2: Final = "remembrancer-backup/v2"  # signed; typed state still in state.jsonl
FORMAT_V1: Final = "remembrancer-backup/v1"  # unsigned manifest: read with allow_unsigned only
READ_FORMATS: Final = (FORMAT, FORMAT_V2, FORMAT_V1)
# What the node key signs: this line, then the RFC 8785 form of the manifest
# without its "signature" member.  No other signature of the node key (records,
# federation messages: canonical JSON objects; notes: text lines) starts so.
MANIFEST_DOMAIN: Final = b"remembrancer-backup-manifest/v2\n"
MANIFEST: Final = "manifest.json"
STATE_MEMBER: Final = "state.jsonl"
TABLES_MEMBER: Final = "tables.jsonl"  # v3: anchor receipts, witness state, federation state
TABLES: Final = (
    "anchor_receipts",
    "witness_cosigned",
    "federation_receipts",
    "federation_evidence",
)
MAX_FILE_BYTES: Final = 16 << 20  # a configuration or key file
MAX_MANIFEST_BYTES: Final = 64 << 20
MAX_LINE_BYTES: Final = 16 << 20  # one JSON line of checkpoints, records or state
READ_CHUNK: Final = 1 << 20


_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
FILE_MEMBER = re.compile(r"^(node/[A-Za-z0-9._@+=-][A-Za-z0-9._@+=/-]*|external/[0-9]+/[^/]+)$")
SECRET_ROLES: Final = frozenset({"node_key", "admin_token", "anchoring_key"})
_ROLES: Final = frozenset({"node_config", "namespaces", "federation", "anchoring", *SECRET_ROLES})


@dataclass(frozen=True, slots=True)
class BackupFile:
    """A configuration (or, with --include-keys, secret) file in the archive."""

    member: str
    path: str  # relative to node.yaml's directory, or absolute for an external file
    role: str
    secret: bool


@dataclass(frozen=True, slots=True)
class BackupLog:
    """One log as the archive holds it: its head and how many rows it has."""

    namespace: str
    origin: str
    size: int
    root_hash: bytes
    checkpoint: bytes  # the head's signed checkpoint
    checkpoints: int
    records: int

    @property
    def members(self) -> tuple[str, str, str]:
        return log_members(self.namespace)


def log_members(namespace: str) -> tuple[str, str, str]:
    """The checkpoints, records and entries members of one log."""
    base = f"logs/{namespace}"
    return f"{base}/checkpoints.jsonl", f"{base}/records.jsonl", f"{base}/entries.bin"


@dataclass(frozen=True, slots=True)
class BackupMember:
    name: str
    size: int
    sha256: bytes


@dataclass(frozen=True, slots=True)
class TableRows:
    """How many rows of each typed table ``tables.jsonl`` holds (format v3)."""

    anchor_receipts: int = 0
    witness_cosigned: int = 0
    federation_receipts: int = 0
    federation_evidence: int = 0

    def to_dict(self) -> dict[str, int]:
        return {t: getattr(self, t) for t in TABLES}


@dataclass(frozen=True, slots=True)
class ManifestSignature:
    """The node key's signature over the manifest (format v2)."""

    kid: str  # the did:key that signed
    sig: bytes

    def to_dict(self) -> dict[str, str]:
        return {"alg": "Ed25519", "kid": self.kid, "sig": b64url_encode(self.sig)}


@dataclass(frozen=True, slots=True)
class Manifest:
    """``manifest.json``: what the archive holds and how to check it.

    ``log_keys`` and ``node_did`` are what the writer says; readers never take
    a key from them (they trust the restoring node's key and ``--trust``),
    and name them only in error messages.  ``signing_input`` is what the
    signature covers (empty for an unsigned v1 manifest)."""

    tool: str
    created: int
    origin_prefix: str
    node_did: str
    log_keys: tuple[str, ...]
    source_backend: str
    includes_keys: bool
    files: tuple[BackupFile, ...]
    logs: tuple[BackupLog, ...]
    state_rows: int
    members: tuple[BackupMember, ...]
    table_rows: TableRows | None = None  # format v3 only
    format: str = FORMAT
    signature: ManifestSignature | None = None
    signing_input: bytes = field(default=b"", repr=False, compare=False)

    def expected_members(self) -> list[str]:
        """Every member but the manifest, in archive order."""
        names = [f.member for f in self.files]
        for log in self.logs:
            names.extend(log.members)
        names.append(STATE_MEMBER)
        if self.table_rows is not None:
            names.append(TABLES_MEMBER)
        return names

    def to_dict(self) -> dict[str, Any]:
        """The manifest without its signature."""
        return {
            "format": self.format,
            "tool": self.tool,
            "created": datetime.fromtimestamp(self.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "origin_prefix": self.origin_prefix,
            "node_did": self.node_did,
            "log_keys": list(self.log_keys),
            "source_backend": self.source_backend,
            "includes_keys": self.includes_keys,
            "files": [
                {"member": f.member, "path": f.path, "role": f.role, "secret": f.secret}
                for f in self.files
            ],
            "logs": [
                {
                    "namespace": g.namespace,
                    "origin": g.origin,
                    "size": g.size,
                    "root_hash": base64.b64encode(g.root_hash).decode(),
                    "checkpoint": g.checkpoint.decode(),
                    "checkpoints": g.checkpoints,
                    "records": g.records,
                }
                for g in self.logs
            ],
            "state_rows": self.state_rows,
            **({} if self.table_rows is None else {"table_rows": self.table_rows.to_dict()}),
            "members": [
                {"name": m.name, "size": m.size, "sha256": m.sha256.hex()} for m in self.members
            ],
        }

    def signed(self, key: SigningKey) -> Manifest:
        """This manifest, signed by ``key`` (the node key)."""
        body = MANIFEST_DOMAIN + canonicalize(self.to_dict())
        return replace(
            self, signature=ManifestSignature(key.did, key.sign(body)), signing_input=body
        )

    def to_bytes(self) -> bytes:
        doc = self.to_dict()
        if self.signature is not None:
            doc["signature"] = self.signature.to_dict()
        return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()

    def check_signature(self, trusted: Sequence[str], *, allow_unsigned: bool = False) -> None:
        """The manifest is signed by a key in ``trusted`` (did:keys: the restoring
        node's key, ``--trust``), or it is a v1 manifest and ``allow_unsigned``.

        ``backup_manifest_unsigned``, ``backup_manifest_untrusted`` (signed by
        a key not in ``trusted``), ``backup_manifest_signature_invalid``
        (``VerificationError``)."""
        if self.signature is None:
            if allow_unsigned:
                return
            raise VerificationError(
                f"the manifest of this {self.format} archive is not signed, so its state and"
                " configuration are not authenticated (the logs still are, by their"
                " checkpoints); pass --allow-unsigned if you know where it came from, or take"
                " a new backup",
                code="backup_manifest_unsigned",
                details={"format": self.format},
            )
        if self.signature.kid not in trusted:
            raise VerificationError(
                f"the manifest is signed by {self.signature.kid}, which is not a key this node"
                " trusts (its own node key and --trust); if that was this node's key, pass"
                " --trust with it",
                code="backup_manifest_untrusted",
                details={"kid": self.signature.kid, "trusted": list(trusted)},
            )
        if not PublicKey.from_did(self.signature.kid).verify(
            self.signing_input, self.signature.sig
        ):
            raise VerificationError(
                f"the manifest's signature by {self.signature.kid} does not verify: the"
                " manifest was changed after it was signed",
                code="backup_manifest_signature_invalid",
                details={"kid": self.signature.kid},
            )

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """Parse and check ``manifest.json`` strictly (``FormatError``:
        ``backup_manifest_invalid``, ``backup_format_unsupported``).  The
        signature is parsed, not checked: see :meth:`check_signature`."""
        try:
            doc = loads_strict(data, max_bytes=MAX_MANIFEST_BYTES)
        except FormatError as e:
            raise bad_manifest(f"not strict JSON ({e.code}: {e.message})") from e
        if not isinstance(doc, dict):
            raise bad_manifest("not a JSON object")
        fmt = doc.get("format")
        if fmt not in READ_FORMATS:
            if isinstance(fmt, str) and fmt.startswith("remembrancer-backup/"):
                raise FormatError(
                    f"the archive is in format {fmt}; this Remembrancer reads"
                    f" {' and '.join(READ_FORMATS)} only (upgrade Remembrancer)",
                    code="backup_format_unsupported",
                    details={"format": fmt},
                )
            raise bad_manifest("it is not a Remembrancer backup manifest")
        raw_sig = doc.pop("signature", None)
        if (raw_sig is None) != (fmt == FORMAT_V1):
            raise bad_manifest(
                f"a {fmt} manifest {'has no' if raw_sig is None else 'has a'} signature"
            )
        try:
            manifest = cls._parse(doc)
            if (manifest.table_rows is None) != (fmt != FORMAT):
                raise ValueError(f"table_rows is {'missing' if fmt == FORMAT else 'unexpected'}"
                                 f" in a {fmt} manifest")  # fmt: skip
            if raw_sig is not None:
                if not isinstance(raw_sig, dict) or set(raw_sig) != {"alg", "kid", "sig"}:
                    raise ValueError("the signature is not {alg, kid, sig}")
                if raw_sig["alg"] != "Ed25519":
                    raise ValueError("the signature is not Ed25519")
                kid = expect_text(raw_sig["kid"])
                PublicKey.from_did(kid)
                sig = b64url_decode(expect_text(raw_sig["sig"]), what="signature.sig")
                if len(sig) != 64:
                    raise ValueError("the signature is not 64 bytes")
                manifest = replace(
                    manifest,
                    format=fmt,
                    signature=ManifestSignature(kid, sig),
                    signing_input=MANIFEST_DOMAIN + canonicalize(doc),
                )
            else:
                manifest = replace(manifest, format=fmt)
        except (KeyError, TypeError, ValueError, binascii.Error) as e:
            raise bad_manifest(f"a field is missing or has the wrong type ({e!r})") from e
        except FormatError as e:  # a key that is not an Ed25519 did:key
            raise bad_manifest(e.message) from e
        names = [m.name for m in manifest.members]
        if names != manifest.expected_members():
            raise bad_manifest("its member list does not match its files and logs")
        return manifest

    @classmethod
    def _parse(cls, doc: dict[str, Any]) -> Manifest:
        created = datetime.strptime(expect_text(doc["created"]), "%Y-%m-%dT%H:%M:%SZ")
        prefix = expect_text(doc["origin_prefix"])
        files = tuple(
            BackupFile(
                expect_text(f["member"]),
                expect_text(f["path"]),
                expect_text(f["role"]),
                _flag(f["secret"]),
            )
            for f in _list(doc["files"])
        )
        for f in files:
            _check_file(f)
        logs = []
        for g in _list(doc["logs"]):
            ns = expect_text(g["namespace"])
            if not NAMESPACE_RE.match(ns):
                raise ValueError(f"invalid namespace {ns!r}")
            if expect_text(g["origin"]) != f"{prefix}/{ns}":
                raise ValueError(f"the origin of {ns} is not <origin_prefix>/{ns}")
            root = base64.b64decode(expect_text(g["root_hash"]), validate=True)
            if len(root) != HASH_SIZE:
                raise ValueError(f"the root hash of {ns} is not 32 bytes")
            logs.append(
                BackupLog(ns, g["origin"], expect_count(g["size"]), root, expect_text(g["checkpoint"]).encode(),
                          expect_count(g["checkpoints"]), expect_count(g["records"]))
            )  # fmt: skip
        if len({g.namespace for g in logs}) != len(logs):
            raise ValueError("a namespace is listed twice")
        members = []
        for m in _list(doc["members"]):
            digest = expect_text(m["sha256"])
            if not _SHA256_HEX.match(digest):
                raise ValueError("a member's sha256 is not 64 lowercase hex digits")
            members.append(
                BackupMember(expect_text(m["name"]), expect_count(m["size"]), bytes.fromhex(digest))
            )
        table_rows = None
        if "table_rows" in doc:
            counts = doc["table_rows"]
            if not isinstance(counts, dict) or set(counts) != set(TABLES):
                raise ValueError(f"table_rows is not {{{', '.join(TABLES)}}}")
            table_rows = TableRows(*(expect_count(counts[t]) for t in TABLES))
        keys = tuple(expect_text(k) for k in _list(doc["log_keys"]))
        for did in (expect_text(doc["node_did"]), *keys):
            PublicKey.from_did(did)  # FormatError for anything but an Ed25519 did:key
        return cls(
            tool=expect_text(doc["tool"]),
            created=int(created.replace(tzinfo=UTC).timestamp()),
            origin_prefix=prefix,
            node_did=doc["node_did"],
            log_keys=keys,
            source_backend=expect_text(doc["source_backend"]),
            includes_keys=_flag(doc["includes_keys"]),
            files=files,
            logs=tuple(logs),
            state_rows=expect_count(doc["state_rows"]),
            members=tuple(members),
            table_rows=table_rows,
        )


def bad_manifest(why: str) -> FormatError:
    return FormatError(f"{MANIFEST} is invalid: {why}", code="backup_manifest_invalid")


def expect_text(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"expected non-empty text, got {value!r}")
    return value


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {value!r}")
    return value


def expect_count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TypeError(f"expected a count, got {value!r}")
    return value


def _list(value: object) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list, got {type(value).__name__}")
    return value


def _check_file(f: BackupFile) -> None:
    if f.role not in _ROLES or f.secret != (f.role in SECRET_ROLES):
        raise ValueError(f"file {f.member} has an unknown role {f.role!r}")
    if not FILE_MEMBER.match(f.member) or ".." in f.member.split("/"):
        raise ValueError(f"file member name {f.member!r} is not allowed")
    if f.member.startswith("node/") and f.member != f"node/{f.path}":
        raise ValueError(f"file {f.member} is not stored under its path {f.path!r}")
    if f.member.startswith("external/") and not os.path.isabs(f.path):
        raise ValueError(f"external file {f.member} has a relative path")
