"""Backups of a node, their offline verification, and their restore into any store.

A backup is one uncompressed tar archive (GNU format, so names and members
of any length fit) that restores into SQLite or PostgreSQL whatever store it
was taken from.  Its members, in this order::

    node/<path>                         configuration files at their paths relative to
                                        node.yaml's directory: node.yaml, the namespaces
                                        file, federation.yaml, anchoring trust files; with
                                        --include-keys also the node key, the admin token
                                        file and anchoring key files (mode 0600)
    external/<n>/<name>                 such a file that lies outside that directory
    logs/<namespace>/checkpoints.jsonl  every stored checkpoint in size order:
                                        {"note": text, "size": n, "time": unix seconds}
    logs/<namespace>/records.jsonl      the keys of every indexed entry in index order:
                                        {"actor", "event_hash": hex|null, "event_id",
                                         "index", "nonce"}
    logs/<namespace>/entries.bin        every entry in index order, each prefixed by its
                                        big-endian uint16 length (the log's tlog-tiles
                                        entry bundles, concatenated)
    state.jsonl                         the named state (witness, anchoring, federation,
                                        governance): {"key", "scope", "value": base64}
    manifest.json                       last: format, tool, creation time, origin prefix,
                                        node DID, the keys that signed the checkpoints (as
                                        the writer says), the files, each log's origin,
                                        size, root hash, head checkpoint and row counts,
                                        every other member's size and SHA-256, and
                                        (format v2) the node key's signature:
                                        {"alg": "Ed25519", "kid": did:key, "sig": base64url}
                                        over MANIFEST_DOMAIN + the RFC 8785 form of the
                                        manifest without "signature"

Tiles are not archived: they are a function of the entries, and a restore
recomputes them (which is also how it proves that the entries are the ones
the checkpoints sign).  Reading an archive (:func:`verify_backup`,
:func:`restore_backup`, :func:`extract_files`) trusts only the keys the
reader names (the restoring node's key, ``--trust``), never the keys the
archive lists, and checks: the manifest's signature by one of them (a v1
manifest is unsigned: read only with ``allow_unsigned``); every member's
size and SHA-256 against the manifest; that each log's entries, hashed into
an RFC 6962 tree, give the root of every stored checkpoint at its size and
the manifest's root at the log's size; that every checkpoint is signed by
one of the trusted keys under the log's origin; that the replay index
(``records.jsonl``) is exactly what the entries give, so that no logged
record can be admitted again (the rows loaded are derived from the
entries); the row formats and counts.  It streams every member once, in
bounded memory, and every JSON line goes through the strict parser.  A
restore does this inside the target store's load transaction, so a failed
check leaves the store empty.

Writing (:func:`create_backup`) reads the store through one consistent
snapshot while the node goes on serving and writing, writes a hidden partial
file (mode 0600) beside the target, verifies it as above, and only then
links it into place.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import tarfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final

from remembrancer import __version__
from remembrancer.core.checkpoint import open_checkpoint
from remembrancer.core.errors import (
    ConfigError,
    FormatError,
    RemembrancerError,
    VerificationError,
)
from remembrancer.core.jcs import canonicalize, loads_strict
from remembrancer.core.keys import PublicKey, SigningKey, read_key_file
from remembrancer.core.note import Verifier
from remembrancer.core.record import NAMESPACE_RE, Record, b64url_decode, b64url_encode
from remembrancer.core.rfc6962 import hash_leaf
from remembrancer.log.tiles import TileWriter
from remembrancer.node.config import NodeConfig, check_data_dir
from remembrancer.storage import open_store
from remembrancer.storage.base import (
    BUNDLE_WIDTH,
    HASH_SIZE,
    LogState,
    RecordRow,
    StoredCheckpoint,
    StoreLoader,
    StoreSnapshot,
)

FORMAT: Final = "remembrancer-backup/v2"
FORMAT_V1: Final = "remembrancer-backup/v1"  # unsigned manifest: read with allow_unsigned only
READ_FORMATS: Final = (FORMAT, FORMAT_V1)
# What the node key signs: this line, then the RFC 8785 form of the manifest
# without its "signature" member.  No other signature of the node key (records,
# federation messages: canonical JSON objects; notes: text lines) starts so.
MANIFEST_DOMAIN: Final = b"remembrancer-backup-manifest/v2\n"
MANIFEST: Final = "manifest.json"
STATE_MEMBER: Final = "state.jsonl"
MAX_FILE_BYTES: Final = 16 << 20  # a configuration or key file
MAX_MANIFEST_BYTES: Final = 64 << 20
MAX_LINE_BYTES: Final = 16 << 20  # one JSON line of checkpoints, records or state
_READ_CHUNK: Final = 1 << 20
_FLUSH_BYTES: Final = 8 << 20  # entry bytes handed to the store per call
_FLUSH_ROWS: Final = 10_000
_TILE_BYTES: Final = 256 * HASH_SIZE
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_FILE_MEMBER = re.compile(r"^(node/[A-Za-z0-9._@+=-][A-Za-z0-9._@+=/-]*|external/[0-9]+/[^/]+)$")
_SECRET_ROLES: Final = frozenset({"node_key", "admin_token", "anchoring_key"})
_ROLES: Final = frozenset({"node_config", "namespaces", "federation", "anchoring", *_SECRET_ROLES})


# --- the manifest ---------------------------------------------------------------------


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
        return _log_members(self.namespace)


def _log_members(namespace: str) -> tuple[str, str, str]:
    """The checkpoints, records and entries members of one log."""
    base = f"logs/{namespace}"
    return f"{base}/checkpoints.jsonl", f"{base}/records.jsonl", f"{base}/entries.bin"


@dataclass(frozen=True, slots=True)
class BackupMember:
    name: str
    size: int
    sha256: bytes


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
    format: str = FORMAT
    signature: ManifestSignature | None = None
    signing_input: bytes = field(default=b"", repr=False, compare=False)

    def expected_members(self) -> list[str]:
        """Every member but the manifest, in archive order."""
        names = [f.member for f in self.files]
        for log in self.logs:
            names.extend(log.members)
        names.append(STATE_MEMBER)
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
            raise _bad_manifest(f"not strict JSON ({e.code}: {e.message})") from e
        if not isinstance(doc, dict):
            raise _bad_manifest("not a JSON object")
        fmt = doc.get("format")
        if fmt not in READ_FORMATS:
            if isinstance(fmt, str) and fmt.startswith("remembrancer-backup/"):
                raise FormatError(
                    f"the archive is in format {fmt}; this Remembrancer reads"
                    f" {' and '.join(READ_FORMATS)} only (upgrade Remembrancer)",
                    code="backup_format_unsupported",
                    details={"format": fmt},
                )
            raise _bad_manifest("it is not a Remembrancer backup manifest")
        raw_sig = doc.pop("signature", None)
        if (raw_sig is None) != (fmt == FORMAT_V1):
            raise _bad_manifest(
                f"a {fmt} manifest {'has no' if raw_sig is None else 'has a'} signature"
            )
        try:
            manifest = cls._parse(doc)
            if raw_sig is not None:
                if not isinstance(raw_sig, dict) or set(raw_sig) != {"alg", "kid", "sig"}:
                    raise ValueError("the signature is not {alg, kid, sig}")
                if raw_sig["alg"] != "Ed25519":
                    raise ValueError("the signature is not Ed25519")
                kid = _text(raw_sig["kid"])
                PublicKey.from_did(kid)
                sig = b64url_decode(_text(raw_sig["sig"]), what="signature.sig")
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
            raise _bad_manifest(f"a field is missing or has the wrong type ({e!r})") from e
        except FormatError as e:  # a key that is not an Ed25519 did:key
            raise _bad_manifest(e.message) from e
        names = [m.name for m in manifest.members]
        if names != manifest.expected_members():
            raise _bad_manifest("its member list does not match its files and logs")
        return manifest

    @classmethod
    def _parse(cls, doc: dict[str, Any]) -> Manifest:
        created = datetime.strptime(_text(doc["created"]), "%Y-%m-%dT%H:%M:%SZ")
        prefix = _text(doc["origin_prefix"])
        files = tuple(
            BackupFile(_text(f["member"]), _text(f["path"]), _text(f["role"]), _flag(f["secret"]))
            for f in _list(doc["files"])
        )
        for f in files:
            _check_file(f)
        logs = []
        for g in _list(doc["logs"]):
            ns = _text(g["namespace"])
            if not NAMESPACE_RE.match(ns):
                raise ValueError(f"invalid namespace {ns!r}")
            if _text(g["origin"]) != f"{prefix}/{ns}":
                raise ValueError(f"the origin of {ns} is not <origin_prefix>/{ns}")
            root = base64.b64decode(_text(g["root_hash"]), validate=True)
            if len(root) != HASH_SIZE:
                raise ValueError(f"the root hash of {ns} is not 32 bytes")
            logs.append(
                BackupLog(ns, g["origin"], _count(g["size"]), root, _text(g["checkpoint"]).encode(),
                          _count(g["checkpoints"]), _count(g["records"]))
            )  # fmt: skip
        if len({g.namespace for g in logs}) != len(logs):
            raise ValueError("a namespace is listed twice")
        members = []
        for m in _list(doc["members"]):
            digest = _text(m["sha256"])
            if not _SHA256_HEX.match(digest):
                raise ValueError("a member's sha256 is not 64 lowercase hex digits")
            members.append(BackupMember(_text(m["name"]), _count(m["size"]), bytes.fromhex(digest)))
        keys = tuple(_text(k) for k in _list(doc["log_keys"]))
        for did in (_text(doc["node_did"]), *keys):
            PublicKey.from_did(did)  # FormatError for anything but an Ed25519 did:key
        return cls(
            tool=_text(doc["tool"]),
            created=int(created.replace(tzinfo=UTC).timestamp()),
            origin_prefix=prefix,
            node_did=doc["node_did"],
            log_keys=keys,
            source_backend=_text(doc["source_backend"]),
            includes_keys=_flag(doc["includes_keys"]),
            files=files,
            logs=tuple(logs),
            state_rows=_count(doc["state_rows"]),
            members=tuple(members),
        )


def _bad_manifest(why: str) -> FormatError:
    return FormatError(f"{MANIFEST} is invalid: {why}", code="backup_manifest_invalid")


def _text(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"expected non-empty text, got {value!r}")
    return value


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {value!r}")
    return value


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TypeError(f"expected a count, got {value!r}")
    return value


def _list(value: object) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list, got {type(value).__name__}")
    return value


def _check_file(f: BackupFile) -> None:
    if f.role not in _ROLES or f.secret != (f.role in _SECRET_ROLES):
        raise ValueError(f"file {f.member} has an unknown role {f.role!r}")
    if not _FILE_MEMBER.match(f.member) or ".." in f.member.split("/"):
        raise ValueError(f"file member name {f.member!r} is not allowed")
    if f.member.startswith("node/") and f.member != f"node/{f.path}":
        raise ValueError(f"file {f.member} is not stored under its path {f.path!r}")
    if f.member.startswith("external/") and not os.path.isabs(f.path):
        raise ValueError(f"external file {f.member} has a relative path")


# --- writing ------------------------------------------------------------------------------


class _TarWriter:
    """Writes a GNU tar archive member by member, streaming each member's data.

    A streamed member's size is unknown until its end, so its header is
    written with size 0 and rewritten in place afterwards (the file is
    seekable; a GNU header stays 512 bytes for any size, and a long-name
    block depends on the name only).
    """

    def __init__(self, f: IO[bytes], mtime: int) -> None:
        self._f = f
        self._mtime = mtime
        self.members: list[BackupMember] = []

    def _header(self, name: str, size: int, mode: int) -> bytes:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode, info.type = size, self._mtime, mode, tarfile.REGTYPE
        return info.tobuf(tarfile.GNU_FORMAT, "utf-8", "strict")

    @contextmanager
    def stream(self, name: str, mode: int = 0o644) -> Iterator[_MemberSink]:
        f = self._f
        start = f.tell()
        header = self._header(name, 0, mode)
        f.write(header)
        sink = _MemberSink(f)
        yield sink
        _, rest = divmod(sink.size, tarfile.BLOCKSIZE)
        if rest:
            f.write(bytes(tarfile.BLOCKSIZE - rest))
        end = f.tell()
        final = self._header(name, sink.size, mode)
        assert len(final) == len(header)
        f.seek(start)
        f.write(final)
        f.seek(end)
        self.members.append(BackupMember(name, sink.size, sink.sha256.digest()))

    def add(self, name: str, data: bytes, mode: int = 0o644) -> None:
        with self.stream(name, mode) as sink:
            sink.write(data)

    def close(self) -> None:
        """The end-of-archive marker (two zero blocks), padded to a whole tar record."""
        f = self._f
        f.write(bytes(2 * tarfile.BLOCKSIZE))
        rest = f.tell() % tarfile.RECORDSIZE
        if rest:
            f.write(bytes(tarfile.RECORDSIZE - rest))


class _MemberSink:
    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self.size = 0
        self.sha256 = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self._f.write(data)
        self.sha256.update(data)
        self.size += len(data)


def _line(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n").encode()


def _collect_files(config: NodeConfig, include_keys: bool) -> list[tuple[BackupFile, Path]]:
    """The configuration files a node uses (and its secrets, if asked)."""
    base = config.path.parent
    wanted: list[tuple[str, Path]] = [
        ("node_config", config.path),
        ("namespaces", config.namespaces),
    ]
    if config.federation_file is not None:
        wanted.append(("federation", config.federation_file))
    for role, path in config.anchoring.files():
        if include_keys or role != "anchoring_key":
            wanted.append((role, path))
    if include_keys:
        wanted.append(("node_key", config.node_key))
        token_file = config.admin_token_file
        if token_file is not None:
            wanted.append(("admin_token", token_file))
    out: list[tuple[BackupFile, Path]] = []
    seen: set[Path] = set()
    for role, path in wanted:
        path = path.resolve()
        if path in seen:
            continue
        seen.add(path)
        if not path.is_file():
            raise ConfigError(
                f"{path} ({role.replace('_', ' ')}) is not a readable file; a backup needs it",
                code="backup_file_missing",
                details={"path": str(path), "role": role},
            )
        try:
            rel = path.relative_to(base)
        except ValueError:
            rel = None
        if rel is not None and _FILE_MEMBER.match(f"node/{rel.as_posix()}"):
            member, shown = f"node/{rel.as_posix()}", rel.as_posix()
        else:
            member, shown = f"external/{len(out)}/{path.name}", str(path)
        out.append((BackupFile(member, shown, role, role in _SECRET_ROLES), path))
    return out


def _read_small(path: Path, what: str) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror}", code="file_unreadable") from e
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(
            f"{what} {path} is larger than {MAX_FILE_BYTES} bytes", code="backup_file_too_large"
        )
    return data


def create_backup(
    config: NodeConfig,
    out: str | os.PathLike[str],
    *,
    include_keys: bool = False,
    log_keys: Sequence[str] = (),
    clock: Callable[[], float] = time.time,
) -> Manifest:
    """Write a verified backup of the node that ``config`` describes to ``out``.

    The node may be running: its store is read through one snapshot.  The
    archive is written beside ``out`` under a hidden name with mode 0600,
    verified (:func:`verify_backup`), and linked into place; ``out`` must not
    exist.  ``log_keys`` are earlier node keys (``did:key``) whose
    checkpoints the logs still hold, after a key rotation.
    """
    target = Path(out)
    if target.exists() or target.is_symlink():
        raise ConfigError(f"{target} exists; refusing to overwrite it", code="backup_exists")
    node_key = read_key_file(config.node_key)
    node_did = node_key.did
    keys = [node_did]
    for did in log_keys:
        PublicKey.from_did(did)
        if did not in keys:
            keys.append(did)
    files = _collect_files(config, include_keys)
    now = int(clock())
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as e:
        raise ConfigError(f"cannot create {partial}: {e.strerror}", code="file_unwritable") from e
    try:
        os.fchmod(fd, 0o600)
        store = open_store(config.storage)
        try:
            with os.fdopen(fd, "wb", buffering=_READ_CHUNK) as f:
                tar = _TarWriter(f, now)
                for bf, path in files:
                    tar.add(bf.member, _read_small(path, bf.role), 0o600 if bf.secret else 0o644)
                with store.snapshot() as snap:
                    logs = [
                        _write_log(tar, snap, head, config.origin_prefix) for head in snap.logs()
                    ]
                    rows = _write_state(tar, snap)
                manifest = Manifest(
                    tool=f"remembrancer {__version__}", created=now,
                    origin_prefix=config.origin_prefix, node_did=node_did, log_keys=tuple(keys),
                    source_backend=store.backend, includes_keys=include_keys,
                    files=tuple(bf for bf, _ in files), logs=tuple(logs), state_rows=rows,
                    members=tuple(tar.members),
                ).signed(node_key)  # fmt: skip
                tar.add(MANIFEST, manifest.to_bytes())
                tar.close()
                f.flush()
                os.fsync(f.fileno())
        finally:
            store.close()
        verify_backup(partial, trust=keys)
        try:
            os.link(partial, target)
        except FileExistsError as e:
            raise ConfigError(
                f"{target} exists; refusing to overwrite it", code="backup_exists"
            ) from e
        except OSError as e:
            raise ConfigError(
                f"cannot create {target}: {e.strerror}", code="file_unwritable"
            ) from e
        _fsync_dir(target.parent)
        return manifest
    finally:
        partial.unlink(missing_ok=True)


def _write_log(tar: _TarWriter, snap: StoreSnapshot, head: LogState, prefix: str) -> BackupLog:
    ns = head.namespace
    if not NAMESPACE_RE.match(ns):
        raise FormatError(
            f"the store holds a log named {ns!r}, which is not a namespace name",
            code="backup_namespace_invalid",
        )
    names = _log_members(ns)
    checkpoints = records = 0
    with tar.stream(names[0]) as sink:
        for cp in snap.checkpoints(ns):
            try:
                note = cp.note.decode("utf-8")
            except UnicodeDecodeError as e:
                raise FormatError(
                    f"the stored checkpoint of {ns} at size {cp.size} is not UTF-8",
                    code="backup_checkpoint_invalid",
                ) from e
            sink.write(_line({"note": note, "size": cp.size, "time": cp.time}))
            checkpoints += 1
    with tar.stream(names[1]) as sink:
        for r in snap.records(ns):
            sink.write(_line({"actor": r.actor, "event_hash": None if r.event_hash is None else r.event_hash.hex(),
                              "event_id": r.event_id, "index": r.index, "nonce": r.nonce}))  # fmt: skip
            records += 1
    with tar.stream(names[2]) as sink:
        for _, data in snap.bundles(ns):
            sink.write(data)
    return BackupLog(ns, f"{prefix}/{ns}", head.size, head.root_hash, head.checkpoint,
                     checkpoints, records)  # fmt: skip


def _write_state(tar: _TarWriter, snap: StoreSnapshot) -> int:
    rows = 0
    with tar.stream(STATE_MEMBER) as sink:
        for scope, key, value in snap.state():
            sink.write(
                _line({"key": key, "scope": scope, "value": base64.b64encode(value).decode()})
            )
            rows += 1
    return rows


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- reading ----------------------------------------------------------------------------------


def _corrupt(name: str, why: str) -> VerificationError:
    return VerificationError(
        f"member {name} of the archive is corrupt: {why}",
        code="backup_member_corrupt",
        details={"member": name},
    )


def _malformed(name: str, why: str) -> FormatError:
    return FormatError(f"{name}: {why}", code="backup_malformed", details={"member": name})


class _Member:
    """Reads one member, hashing what it reads; :meth:`finish` checks the hash."""

    def __init__(self, name: str, raw: IO[bytes], expected: BackupMember) -> None:
        self.name = name
        self._raw = raw
        self._expected = expected
        self._sha = hashlib.sha256()
        self._done = False

    def read(self, n: int = _READ_CHUNK) -> bytes:
        try:
            data = self._raw.read(n)
        except (OSError, tarfile.TarError, EOFError) as e:
            raise FormatError(
                f"the archive ends inside member {self.name} (truncated?): {e}",
                code="backup_truncated",
                details={"member": self.name},
            ) from e
        self._sha.update(data)
        return data

    def lines(self) -> Iterator[bytes]:
        """Complete lines (each ending in a newline), at most MAX_LINE_BYTES each."""
        pending = b""
        while True:
            chunk = self.read()
            if not chunk:
                if pending:
                    raise _malformed(self.name, "the last line has no newline")
                return
            pending += chunk
            start = 0
            while True:
                end = pending.find(b"\n", start)
                if end < 0:
                    break
                yield pending[start : end + 1]
                start = end + 1
            pending = pending[start:]
            if len(pending) > MAX_LINE_BYTES:
                raise _malformed(self.name, f"a line is longer than {MAX_LINE_BYTES} bytes")

    def finish(self) -> None:
        """Check that the member is fully read and matches the manifest."""
        if self._done:
            return
        if self.read(1):
            raise _malformed(self.name, "data after its last record")
        self._done = True
        if self._sha.digest() != self._expected.sha256:
            raise _corrupt(self.name, "its SHA-256 is not the manifest's")

    def intact(self) -> bool:
        """Drain the member; whether its bytes are the manifest's (used to blame a
        failed check on a corrupt member rather than on its contents)."""
        try:
            while self.read():
                pass
        except RemembrancerError:
            return False
        self._done = True
        return self._sha.digest() == self._expected.sha256


class _Archive:
    """An opened archive whose manifest and member list have been checked."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._file = path.open("rb")
        except OSError as e:
            raise ConfigError(f"cannot read {path}: {e.strerror}", code="file_unreadable") from e
        try:
            self._tar = tarfile.open(fileobj=self._file, mode="r:")  # noqa: SIM115 (closed by close())
            infos = self._tar.getmembers()
        except (tarfile.TarError, OSError, EOFError) as e:
            self._file.close()
            if isinstance(e, EOFError) or "unexpected end of data" in str(e):
                raise FormatError(
                    f"{path} ends inside a member: it is truncated", code="backup_truncated"
                ) from e
            raise FormatError(
                f"{path} is not a readable tar archive: {e}", code="backup_malformed"
            ) from e
        try:
            self.manifest = self._read_manifest(infos)
            self._infos = self._match_members(infos[:-1])
        except BaseException:
            self.close()
            raise

    def _read_manifest(self, infos: list[tarfile.TarInfo]) -> Manifest:
        last = infos[-1] if infos else None
        if last is None or last.name != MANIFEST:
            raise FormatError(
                f"{self.path} has no {MANIFEST} at its end: it is truncated, or not a "
                "Remembrancer backup",
                code="backup_truncated",
            )
        if not last.isreg() or last.size > MAX_MANIFEST_BYTES:
            raise _bad_manifest("not a regular file of a sensible size")
        raw = self._tar.extractfile(last)
        assert raw is not None
        try:
            data = raw.read()
        except (OSError, tarfile.TarError, EOFError) as e:
            raise FormatError(
                f"{self.path} ends inside {MANIFEST} (truncated?): {e}", code="backup_truncated"
            ) from e
        if len(data) != last.size:
            raise FormatError(f"{self.path} ends inside {MANIFEST}", code="backup_truncated")
        return Manifest.from_bytes(data)

    def _match_members(self, infos: list[tarfile.TarInfo]) -> dict[str, tarfile.TarInfo]:
        expected = self.manifest.members
        names = [i.name for i in infos]
        if names != [m.name for m in expected]:
            missing = [m.name for m in expected if m.name not in names]
            extra = [n for n in names if n not in {m.name for m in expected}]
            raise VerificationError(
                "the archive's members are not the ones its manifest lists"
                + (f" (missing: {', '.join(missing[:5])})" if missing else "")
                + (f" (unexpected: {', '.join(extra[:5])})" if extra else ""),
                code="backup_members_mismatch",
                details={"missing": missing[:20], "unexpected": extra[:20]},
            )
        for info, member in zip(infos, expected, strict=True):
            if not info.isreg():
                raise _corrupt(info.name, "it is not a regular file")
            if info.size != member.size:
                raise _corrupt(info.name, f"{info.size} bytes, the manifest says {member.size}")
        return {i.name: i for i in infos}

    def member(self, name: str) -> _Member:
        raw = self._tar.extractfile(self._infos[name])
        assert raw is not None
        expected = next(m for m in self.manifest.members if m.name == name)
        return _Member(name, raw, expected)

    def close(self) -> None:
        self._tar.close()
        self._file.close()


@contextmanager
def _blame(*members: _Member) -> Iterator[None]:
    """A failed check in these members is reported as the corruption of the first
    one whose bytes are not the manifest's, if there is one."""
    try:
        yield
    except RemembrancerError as e:
        if e.code in ("backup_member_corrupt", "backup_truncated"):
            raise
        for m in members:
            if not m.intact():
                raise _corrupt(m.name, f"its SHA-256 is not the manifest's ({e.message})") from e
        raise


def _trusted(trust: Sequence[str]) -> list[str]:
    """The did:keys checkpoints and the manifest may be signed by (``backup_trust_missing``
    when there are none: an archive's own key list is never one)."""
    out: list[str] = []
    for did in trust:
        try:
            PublicKey.from_did(did)
        except FormatError as e:
            raise ConfigError(
                f"--trust {did!r} is not an Ed25519 did:key", code="backup_trust_invalid"
            ) from e
        if did not in out:
            out.append(did)
    if not out:
        raise ConfigError(
            "no key to check the archive with: name the node's key (--config node.yaml, or"
            " --trust did:key:...); the keys an archive lists itself prove nothing",
            code="backup_trust_missing",
        )
    return out


def _read_archive(
    path: Path, loader: StoreLoader | None, trust: Sequence[str], allow_unsigned: bool
) -> Manifest:
    """Check the whole archive, streaming; with a loader, load every row into it."""
    trusted = _trusted(trust)
    archive = _Archive(path)
    try:
        manifest = archive.manifest
        manifest.check_signature(trusted, allow_unsigned=allow_unsigned)
        for f in manifest.files:
            m = archive.member(f.member)
            while m.read():
                pass
            m.finish()
        verifiers = [PublicKey.from_did(did) for did in trusted]
        for log in manifest.logs:
            _read_log(archive, log, verifiers, loader, manifest.log_keys)
        _read_state(archive, manifest.state_rows, loader)
        return manifest
    finally:
        archive.close()


def _read_log(
    archive: _Archive,
    log: BackupLog,
    keys: Sequence[PublicKey],
    loader: StoreLoader | None,
    claimed: Sequence[str] = (),
) -> None:
    ns = log.namespace
    if loader is not None:
        loader.add_log(LogState(ns, log.size, log.root_hash, log.checkpoint))
    cp_member, rec_member, ent_member = (archive.member(n) for n in log.members)
    verifiers = [Verifier(log.origin, k) for k in keys]
    with _blame(cp_member, rec_member, ent_member):
        checkpoints = _checkpoints(cp_member, log, verifiers, claimed)
        replay = _ReplayIndex(rec_member, log)
        records: list[RecordRow] = []
        writer = TileWriter.empty()
        partial: dict[tuple[int, int], bytes] = {}
        chunk: list[tuple[int, bytes]] = []
        cps: list[StoredCheckpoint] = []
        tiles: list[tuple[int, int, bytes]] = []
        held = 0
        upcoming = next(checkpoints, None)

        def passed(size: int) -> None:
            nonlocal upcoming
            while upcoming is not None and upcoming[0].size == size:
                cp, root = upcoming
                if root != writer.root():
                    raise _root_mismatch(log, cp.size, "a stored checkpoint's root hash")
                cps.append(cp)
                upcoming = next(checkpoints, None)

        def flush() -> None:
            nonlocal held
            if loader is not None:
                loader.add_bundles(ns, chunk)
                loader.add_tiles(ns, tiles)
                loader.add_checkpoints(ns, cps)
                loader.add_records(ns, records)
            chunk.clear()
            tiles.clear()
            cps.clear()
            records.clear()
            held = 0

        passed(0)
        for index, data, entries in _bundles(ent_member, log.size):
            records.extend(replay.entries(index * BUNDLE_WIDTH, entries))
            hashes = [hash_leaf(e) for e in entries]
            done = 0
            while done < len(hashes):
                step = len(hashes) - done
                if upcoming is not None:
                    step = min(step, upcoming[0].size - writer.size)
                for level, tile_index, tile in writer.append(hashes[done : done + step]):
                    if len(tile) == _TILE_BYTES:
                        partial.pop((level, tile_index), None)
                        tiles.append((level, tile_index, tile))
                    else:
                        partial[(level, tile_index)] = tile
                done += step
                passed(writer.size)
            chunk.append((index, data))
            held += len(data)
            if held >= _FLUSH_BYTES or len(records) >= _FLUSH_ROWS:
                flush()
        if upcoming is not None:
            raise _malformed(
                cp_member.name, f"a checkpoint at size {upcoming[0].size} lies beyond the log"
            )
        if writer.root() != log.root_hash:
            raise _root_mismatch(log, log.size, "the manifest's root hash")
        tiles.extend((lv, ix, t) for (lv, ix), t in sorted(partial.items()))
        replay.finish()
        flush()
        ent_member.finish()
        cp_member.finish()
        rec_member.finish()


def _root_mismatch(log: BackupLog, size: int, what: str) -> VerificationError:
    return VerificationError(
        f"the entries of {log.namespace} do not hash to {what} at size {size}",
        code="backup_root_mismatch",
        details={"namespace": log.namespace, "size": size},
    )


def _checkpoints(
    member: _Member, log: BackupLog, verifiers: Sequence[Verifier], claimed: Sequence[str] = ()
) -> Iterator[tuple[StoredCheckpoint, bytes]]:
    """The checkpoint rows, each checked (signed under the log's origin by a key the
    reader trusts, sizes increasing, the last one the head), with its root hash.
    ``claimed`` (the keys the archive lists) appear in the error message only."""
    count = 0
    last = -1
    head_seen = False
    for line in member.lines():
        try:
            row = loads_strict(line, max_bytes=MAX_LINE_BYTES)
            note, size, when = _text(row["note"]).encode(), _count(row["size"]), _count(row["time"])
        except (ValueError, KeyError, TypeError, FormatError) as e:
            raise _malformed(member.name, f"row {count + 1} is not a checkpoint row ({e!r})") from e
        if size <= last or size > log.size:
            raise _malformed(
                member.name, f"checkpoint sizes are not increasing within the log ({size})"
            )
        last = size
        signed = None
        for verifier in verifiers:
            try:
                signed = open_checkpoint(note, verifier)
                break
            except RemembrancerError:
                continue
        if signed is None or signed.checkpoint.size != size:
            untrusted = [k for k in claimed if k not in {v.public_key.did for v in verifiers}]
            raise VerificationError(
                f"the checkpoint of {log.origin} at size {size} is not signed by a key this "
                f"node trusts ({len(verifiers)}: its node key and --trust); after a node key "
                "rotation, name the earlier keys (--log-key when creating, --trust when "
                "verifying or restoring)"
                + (f"; the archive names, unverified: {', '.join(untrusted)}" if untrusted else ""),
                code="backup_checkpoint_invalid",
                details={"namespace": log.namespace, "size": size},
            )
        if size == log.size:
            if note != log.checkpoint:
                raise VerificationError(
                    f"the stored checkpoint of {log.namespace} at its size {size} is not the "
                    "manifest's head checkpoint",
                    code="backup_checkpoint_invalid",
                    details={"namespace": log.namespace, "size": size},
                )
            head_seen = True
        count += 1
        yield StoredCheckpoint(log.namespace, size, note, when), signed.checkpoint.root_hash
    if count != log.checkpoints or not head_seen:
        raise _malformed(
            member.name,
            f"{count} checkpoints, the manifest says {log.checkpoints}"
            + ("" if head_seen else f", and none at the log's size {log.size}"),
        )


def _bundles(member: _Member, size: int) -> Iterator[tuple[int, bytes, list[bytes]]]:
    """``(index, bundle bytes, entries)`` for each entry bundle of a log of ``size``."""
    buf = bytearray()
    pos = 0  # the next unread byte of buf
    mark = 0  # where the current bundle starts in buf

    def need(n: int) -> None:
        nonlocal pos, mark
        if len(buf) - pos >= n:
            return
        del buf[:mark]  # keep only the current bundle's bytes
        pos -= mark
        mark = 0
        while len(buf) - pos < n:
            chunk = member.read()
            if not chunk:
                raise _malformed(member.name, f"the entries end before entry {size} of the log")
            buf.extend(chunk)

    for index in range((size + BUNDLE_WIDTH - 1) // BUNDLE_WIDTH):
        mark = pos
        entries: list[bytes] = []
        for _ in range(min(BUNDLE_WIDTH, size - index * BUNDLE_WIDTH)):
            need(2)
            n = (buf[pos] << 8) | buf[pos + 1]
            need(2 + n)
            entries.append(bytes(buf[pos + 2 : pos + 2 + n]))
            pos += 2 + n
        yield index, bytes(buf[mark:pos]), entries


def _record_row(index: int, entry: bytes, namespace: str) -> RecordRow | None:
    """The replay-index row a node keeps for ``entry``: one for a record of
    ``namespace`` stored in its canonical form (what admission appends), none
    for anything else (raw entries are not indexed)."""
    if entry[:1] != b"{":
        return None
    try:
        rec = Record.from_bytes(entry)
    except FormatError:
        return None
    if rec.namespace != namespace or rec.leaf != entry:
        return None
    return RecordRow(index, rec.event_hash, rec.event_id, rec.actor, rec.nonce)


class _ReplayIndex:
    """``records.jsonl`` checked against the entries as they stream past.

    The replay index (admission rule 7) is what stops an already-logged record
    from being admitted again.  Every record in the entries must have exactly
    the row its own bytes give, and no other entry may have one; the rows
    loaded are those derived from the (checkpoint-authenticated) entries.  So
    an index that was emptied, thinned or forged is refused
    (``backup_records_mismatch``), whatever the manifest says.  The first
    mismatch is raised by :meth:`finish`, after the log's Merkle checks: an
    entry that was changed is reported as that (``backup_root_mismatch``)."""

    def __init__(self, member: _Member, log: BackupLog) -> None:
        self._log = log
        self._member = member
        self._count = 0
        self._error: VerificationError | None = None
        self._rows = self._parse()
        self._next = next(self._rows, None)

    def _parse(self) -> Iterator[RecordRow]:
        last = -1
        for line in self._member.lines():
            try:
                doc = loads_strict(line, max_bytes=MAX_LINE_BYTES)
                index = _count(doc["index"])
                digest = doc["event_hash"]
                event_hash = None if digest is None else bytes.fromhex(_text(digest))
                keys = [doc[k] for k in ("event_id", "actor", "nonce")]
                if any(k is not None and not isinstance(k, str) for k in keys):
                    raise TypeError("a key is not text")
            except (ValueError, KeyError, TypeError, FormatError) as e:
                raise _malformed(
                    self._member.name, f"row {self._count + 1} is not a record row ({e!r})"
                ) from e
            if index <= last or index >= self._log.size:
                raise _malformed(
                    self._member.name, f"record indexes are not increasing within the log ({index})"
                )
            if event_hash is not None and len(event_hash) != HASH_SIZE:
                raise _malformed(
                    self._member.name, f"the event hash of record {index} is not 32 bytes"
                )
            last = index
            self._count += 1
            yield RecordRow(index, event_hash, keys[0], keys[1], keys[2])

    def _mismatch(self, index: int, why: str) -> VerificationError:
        error = VerificationError(
            f"the replay index of {self._log.namespace} ({self._member.name}) does not match"
            f" its entries at index {index}: {why}",
            code="backup_records_mismatch",
            details={"namespace": self._log.namespace, "index": index},
        )
        self._error = self._error or error
        return error

    def entries(self, start: int, entries: Sequence[bytes]) -> list[RecordRow]:
        """Check the rows of entries ``start, start + 1, ...``; their derived rows."""
        out: list[RecordRow] = []
        ns = self._log.namespace
        for offset, entry in enumerate(entries):
            index = start + offset
            derived = _record_row(index, entry, ns)
            row = self._next
            if row is not None and row.index == index:
                if derived is None:
                    self._mismatch(index, "it has a row, but the entry is no record of " + ns)
                elif row != derived:
                    self._mismatch(index, "its row does not hold the record's keys")
                self._next = next(self._rows, None)
            elif derived is not None:
                self._mismatch(
                    index,
                    f"the record {derived.event_id!r} has no row, so once restored it could be"
                    " admitted again",
                )
            if derived is not None:
                out.append(derived)
        return out

    def finish(self) -> None:
        if self._error is not None:
            raise self._error
        if self._next is not None:
            raise self._mismatch(self._next.index, "a row beyond the entries read")
        if self._count != self._log.records:
            raise _malformed(
                self._member.name, f"{self._count} records, the manifest says {self._log.records}"
            )


def _read_state(archive: _Archive, expected: int, loader: StoreLoader | None) -> None:
    member = archive.member(STATE_MEMBER)
    rows: list[tuple[str, str, bytes]] = []
    count = 0
    with _blame(member):
        for line in member.lines():
            try:
                doc = loads_strict(line, max_bytes=MAX_LINE_BYTES)
                scope, key, text = doc["scope"], doc["key"], doc["value"]
                if not all(isinstance(v, str) for v in (scope, key, text)):
                    raise TypeError("scope, key and value are text")
                value = base64.b64decode(text, validate=True)
            except (ValueError, KeyError, TypeError, binascii.Error, FormatError) as e:
                raise _malformed(member.name, f"row {count + 1} is not a state row ({e!r})") from e
            rows.append((scope, key, value))
            count += 1
            if len(rows) >= _FLUSH_ROWS:
                if loader is not None:
                    loader.add_state(rows)
                rows = []
        if loader is not None and rows:
            loader.add_state(rows)
        if count != expected:
            raise _malformed(member.name, f"{count} state rows, the manifest says {expected}")
        member.finish()


# --- the operations -----------------------------------------------------------------------


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """The manifest of an archive, after checking its structure (not its contents)."""
    archive = _Archive(Path(path))
    archive.close()
    return archive.manifest


def verify_backup(
    path: str | os.PathLike[str], *, trust: Sequence[str], allow_unsigned: bool = False
) -> Manifest:
    """Check an archive completely, offline, against the keys in ``trust``
    (did:keys the reader trusts: the node's key, earlier keys after a
    rotation); raise on the first problem.  The keys the archive lists
    itself are never used.

    ``ConfigError`` without a trusted key (``backup_trust_missing``,
    ``backup_trust_invalid``); ``FormatError`` for an archive that is not one
    (``backup_malformed``, ``backup_truncated``, ``backup_manifest_invalid``,
    ``backup_format_unsupported``); ``VerificationError`` for one whose
    contents do not check out (``backup_manifest_unsigned`` for a v1
    archive unless ``allow_unsigned``, ``backup_manifest_untrusted``,
    ``backup_manifest_signature_invalid``, ``backup_member_corrupt``,
    ``backup_members_mismatch``, ``backup_root_mismatch``,
    ``backup_checkpoint_invalid``, ``backup_records_mismatch``).
    """
    return _read_archive(Path(path), None, trust, allow_unsigned)


@dataclass(frozen=True, slots=True)
class RestoreReport:
    manifest: Manifest
    backend: str
    notes: tuple[str, ...]


def restore_backup(
    config: NodeConfig,
    path: str | os.PathLike[str],
    *,
    trust: Sequence[str] = (),
    allow_new_node_key: bool = False,
    allow_unsigned: bool = False,
) -> RestoreReport:
    """Load an archive into the empty store of the node ``config`` describes.

    The keys that may sign the manifest and the checkpoints are this node's
    key (from ``config``, when its file exists) and ``trust``; never the
    archive's own list.  Refuses (``ConfigError``) a node with another origin
    prefix (``backup_origin_mismatch``) or, unless ``allow_new_node_key``,
    another node key (``backup_node_key_mismatch``); refuses a store that is
    not empty (``StorageError`` ``store_not_empty``).  Every check of
    :func:`verify_backup` runs inside the store's load transaction: on any
    failure the store stays empty.
    """
    manifest = read_manifest(path)
    if manifest.origin_prefix != config.origin_prefix:
        raise ConfigError(
            f"the backup is of the logs of {manifest.origin_prefix}, this node's origin prefix "
            f"is {config.origin_prefix}; checkpoints would no longer match their origin",
            code="backup_origin_mismatch",
            details={"backup": manifest.origin_prefix, "node": config.origin_prefix},
        )
    notes = []
    trusted = list(trust)
    if config.node_key.is_file():
        did = read_key_file(config.node_key).did
        trusted.insert(0, did)
        if did != manifest.node_did and not allow_new_node_key:
            raise ConfigError(
                f"the node key {config.node_key} is {did}, the backup's logs were signed by "
                f"{manifest.node_did}; restore with that key, or pass --allow-new-node-key to "
                "rotate the key (see docs/operations.md)",
                code="backup_node_key_mismatch",
                details={"backup": manifest.node_did, "node": did},
            )
    else:
        notes.append(
            f"the node key file {config.node_key} does not exist yet; put the key of "
            f"{manifest.node_did} there before serving"
        )
    check_data_dir(config.data_dir)
    store = open_store(config.storage)
    try:
        with store.load() as loader:
            _read_archive(Path(path), loader, trusted, allow_unsigned)
        backend = store.backend
    finally:
        store.close()
    return RestoreReport(manifest, backend, tuple(notes))


def extract_files(
    path: str | os.PathLike[str],
    directory: str | os.PathLike[str],
    *,
    trust: Sequence[str],
    allow_unsigned: bool = False,
) -> list[str]:
    """Write the archive's configuration (and key) files into ``directory``.

    Only from a manifest signed by a key in ``trust`` (or a v1 archive with
    ``allow_unsigned``): a node.yaml or namespaces file names code to run
    (invoke handlers) and keys to trust.  Files from node.yaml's directory go
    to the same relative paths (key files with mode 0600); none may exist yet
    (``ConfigError`` ``file_exists``, nothing written), nor lead out of
    ``directory`` through a symlink in it (``file_outside_directory``, nothing
    written).  Files that lay outside it are not written; the returned lines
    say where each belongs.
    """
    target = Path(directory)
    trusted = _trusted(trust)
    archive = _Archive(Path(path))
    try:
        archive.manifest.check_signature(trusted, allow_unsigned=allow_unsigned)
        plan: list[tuple[BackupFile, Path, bytes]] = []
        report: list[str] = []
        for f in archive.manifest.files:
            m = archive.member(f.member)
            data = b"".join(iter(m.read, b""))
            m.finish()
            if f.member.startswith("external/"):
                report.append(f"not written: {f.path} ({f.role}); it is member {f.member}")
                continue
            plan.append((f, target / f.path, data))
    finally:
        archive.close()
    root = target.resolve()
    for _, dest, _ in plan:
        if dest.exists() or dest.is_symlink():
            raise ConfigError(f"{dest} exists; refusing to overwrite it", code="file_exists")
        existing = dest.parent
        while not existing.exists() and existing != target:
            existing = existing.parent
        where = existing.resolve()
        if where != root and root not in where.parents:  # a symlink leads out of ``directory``
            raise ConfigError(
                f"{dest} would be written outside {target} (through {existing} -> {where})",
                code="file_outside_directory",
            )
    for f, dest, data in plan:
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700 if f.secret else 0o755)
        mode = 0o600 if f.secret else 0o644
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)
            out.write(data)
        report.append(f"wrote {dest}" + (" (secret, mode 0600)" if f.secret else ""))
    return report


__all__ = [
    "FORMAT",
    "FORMAT_V1",
    "BackupFile",
    "BackupLog",
    "Manifest",
    "ManifestSignature",
    "RestoreReport",
    "create_backup",
    "extract_files",
    "read_manifest",
    "restore_backup",
    "verify_backup",
]
