""":func:`create_backup`: one consistent snapshot of a live node, streamed into a tar archive.

The archive is written to a hidden partial file (mode 0600) beside the
target, verified as a reader would, and only then linked into place, so a
target path holds a complete, checked archive or nothing.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tarfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from remembrancer import __version__
from remembrancer.core.errors import ConfigError, FormatError
from remembrancer.core.identifiers import NAMESPACE_RE
from remembrancer.core.keys import PublicKey
from remembrancer.node.backup.manifest import (
    FILE_MEMBER,
    MANIFEST,
    MAX_FILE_BYTES,
    READ_CHUNK,
    SECRET_ROLES,
    STATE_MEMBER,
    TABLES,
    TABLES_MEMBER,
    BackupFile,
    BackupLog,
    BackupMember,
    Manifest,
    TableRows,
    log_members,
)
from remembrancer.node.backup.restore import verify_backup
from remembrancer.node.config import NodeConfig
from remembrancer.node.keyfile import read_key_file
from remembrancer.storage import open_store
from remembrancer.storage.base import LogState, StoreSnapshot

__all__ = ["create_backup"]


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
        if rel is not None and FILE_MEMBER.match(f"node/{rel.as_posix()}"):
            member, shown = f"node/{rel.as_posix()}", rel.as_posix()
        else:
            member, shown = f"external/{len(out)}/{path.name}", str(path)
        out.append((BackupFile(member, shown, role, role in SECRET_ROLES), path))
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
            with os.fdopen(fd, "wb", buffering=READ_CHUNK) as f:
                tar = _TarWriter(f, now)
                for bf, path in files:
                    tar.add(bf.member, _read_small(path, bf.role), 0o600 if bf.secret else 0o644)
                with store.snapshot() as snap:
                    logs = [
                        _write_log(tar, snap, head, config.origin_prefix) for head in snap.logs()
                    ]
                    rows = _write_state(tar, snap)
                    table_rows = _write_tables(tar, snap)
                manifest = Manifest(
                    tool=f"remembrancer {__version__}", created=now,
                    origin_prefix=config.origin_prefix, node_did=node_did, log_keys=tuple(keys),
                    source_backend=store.backend, includes_keys=include_keys,
                    files=tuple(bf for bf, _ in files), logs=tuple(logs), state_rows=rows,
                    members=tuple(tar.members), table_rows=table_rows,
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
    names = log_members(ns)
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


def _write_tables(tar: _TarWriter, snap: StoreSnapshot) -> TableRows:
    """``tables.jsonl``: every row of the typed tables, one JSON line each, tagged
    with its table; bytes in base64 (receipts, notes, roots)."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    counts = dict.fromkeys(TABLES, 0)
    with tar.stream(TABLES_MEMBER) as sink:
        for a in snap.anchor_receipts():
            sink.write(_line({"table": "anchor_receipts", "namespace": a.namespace,
                              "size": a.size, "finished": a.finished, "receipt": b64(a.receipt)}))  # fmt: skip
            counts["anchor_receipts"] += 1
        for c in snap.cosigned():
            sink.write(_line({"table": "witness_cosigned", "origin": c.origin, "size": c.size,
                              "root_hash": b64(c.root_hash), "note": b64(c.note),
                              "cosignature": c.cosignature, "time": c.time}))  # fmt: skip
            counts["witness_cosigned"] += 1
        for f in snap.federation_receipts():
            sink.write(_line({"table": "federation_receipts", "namespace": f.namespace,
                              "receipt_id": f.receipt_id, "receipt": b64(f.receipt)}))  # fmt: skip
            counts["federation_receipts"] += 1
        for e in snap.evidence():
            sink.write(_line({"table": "federation_evidence", "ref": e.ref, "subject": e.subject,
                              "incident": e.incident, "data": b64(e.data)}))  # fmt: skip
            counts["federation_evidence"] += 1
    return TableRows(**counts)


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
