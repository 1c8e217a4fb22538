"""The operations on an archive: verify it, restore it into a store, extract its files.

A restore checks inside the target store's load transaction, so a failed
check leaves the store empty.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from remembrancer.core.errors import ConfigError
from remembrancer.node.backup.manifest import BackupFile, Manifest
from remembrancer.node.backup.read import Archive, read_archive, trusted_keys
from remembrancer.node.config import NodeConfig, check_data_dir
from remembrancer.node.keyfile import read_key_file
from remembrancer.storage import open_store

__all__ = ["RestoreReport", "extract_files", "read_manifest", "restore_backup", "verify_backup"]


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """The manifest of an archive, after checking its structure (not its contents)."""
    archive = Archive(Path(path))
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
    return read_archive(Path(path), None, trust, allow_unsigned)


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
            read_archive(Path(path), loader, trusted, allow_unsigned)
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
    trusted = trusted_keys(trust)
    archive = Archive(Path(path))
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
