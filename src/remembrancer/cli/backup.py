"""``remembrancer backup create|verify|restore|extract-config``."""

from __future__ import annotations

import os
from typing import Any

import click

from remembrancer.cli.common import echo_json, errors_as_one_line


@click.group()
def backup() -> None:
    """Back up a node and restore it (docs/operations.md).

    A backup is one tar archive: every log's entries, checkpoints and record
    keys, the node's state (witness, anchoring, federation, governance) and
    its configuration files, with a manifest signed by the node key.  It
    restores into SQLite or PostgreSQL, whatever it was taken from.  Reading
    an archive trusts only keys you name (the node's key, --trust), never the
    keys the archive lists.
    """


def _config(path: str) -> Any:
    from remembrancer.node.config import load_node_config

    return load_node_config(path, dict(os.environ))


_TRUST_HELP = ("A did:key that may sign the manifest and the checkpoints: the node's key, or an "
               "earlier node key after a rotation. Repeatable. The archive's own key list is "
               "never trusted.")  # fmt: skip
_UNSIGNED_HELP = ("Accept a format v1 archive, whose manifest is not signed: its state and "
                  "configuration are then on your word (its logs are still checked against "
                  "the trusted keys, and its replay index against the entries).")  # fmt: skip


def _node_did(config_path: str) -> str:
    from remembrancer.node.keyfile import read_key_file

    return read_key_file(_config(config_path).node_key).did


def _summary(manifest: Any) -> dict[str, Any]:
    doc = manifest.to_dict()
    return {key: doc[key] for key in ("format", "created", "origin_prefix", "node_did",
                                      "source_backend", "includes_keys", "logs", "state_rows",
                                      "table_rows") if key in doc}  # fmt: skip


@backup.command("create")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="The node's node.yaml.")  # fmt: skip
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="The archive to write (must not exist).")  # fmt: skip
@click.option("--include-keys", is_flag=True,
              help="Also archive the SECRETS: the node key, the admin token file and anchoring "
                   "key files. Off by default; the archive has mode 0600 either way.")  # fmt: skip
@click.option("--log-key", "log_keys", multiple=True, metavar="DID",
              help="An earlier node key (did:key) that signed checkpoints the logs still hold "
                   "(after a key rotation). Repeatable.")  # fmt: skip
@errors_as_one_line
def create(config_path: str, out: str, include_keys: bool, log_keys: tuple[str, ...]) -> None:
    """Write a backup of a node, running or not, and verify it.

    The store is read through one consistent snapshot while the node goes on
    serving and writing; the archive is written beside OUT, verified in full
    (as `backup verify` does) and only then renamed to OUT.
    """
    from remembrancer.node.backup.write import create_backup

    manifest = create_backup(
        _config(config_path), out, include_keys=include_keys, log_keys=log_keys
    )
    echo_json({"file": out, "bytes": os.path.getsize(out), **_summary(manifest)})


@backup.command("verify")
@click.argument("archive", type=click.Path(dir_okay=False))
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="A node.yaml whose node key to trust (the node the backup is of).")  # fmt: skip
@click.option("--trust", "trust", multiple=True, metavar="DID", help=_TRUST_HELP)
@click.option("--allow-unsigned", is_flag=True, help=_UNSIGNED_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the manifest's summary as JSON.")
@errors_as_one_line
def verify(
    archive: str, config_path: str | None, trust: tuple[str, ...], allow_unsigned: bool,
    as_json: bool,
) -> None:  # fmt: skip
    """Check a backup offline, completely, against keys you trust.

    The manifest's signature, every member's SHA-256, every log's entries
    against the root hash of every stored checkpoint, every checkpoint's
    signature, and the replay index against the entries.  The keys come
    from --config (its node key) and --trust; at least one is needed.

    Exit 0 if it checks out, 1 if something does not verify, 2 if it is not a
    readable backup or no key was named.
    """
    from remembrancer.node.backup.restore import verify_backup

    keys = ([_node_did(config_path)] if config_path else []) + list(trust)
    manifest = verify_backup(archive, trust=keys, allow_unsigned=allow_unsigned)
    if as_json:
        echo_json(_summary(manifest))
        return
    entries = sum(g.size for g in manifest.logs)
    click.echo(f"OK: {archive}: {len(manifest.logs)} logs, {entries} entries, "
               f"{manifest.state_rows} state rows"
               f"{'' if manifest.table_rows is None else f', {sum(manifest.table_rows.to_dict().values())} table rows'}"
               f", taken {manifest.to_dict()['created']} "
               f"from {manifest.origin_prefix} ({manifest.node_did})")  # fmt: skip
    for g in manifest.logs:
        click.echo(f"  {g.origin}: size {g.size}, {g.checkpoints} checkpoints")


@backup.command("restore")
@click.argument("archive", type=click.Path(dir_okay=False))
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="node.yaml of the node to restore into (its store must be empty).")  # fmt: skip
@click.option("--trust", "trust", multiple=True, metavar="DID", help=_TRUST_HELP)
@click.option("--allow-new-node-key", is_flag=True,
              help="Restore although the node's key is not the one that signed the backup's "
                   "checkpoints (a key rotation; see docs/operations.md). Name the earlier "
                   "key with --trust.")  # fmt: skip
@click.option("--allow-unsigned", is_flag=True, help=_UNSIGNED_HELP)
@errors_as_one_line
def restore(
    archive: str, config_path: str, trust: tuple[str, ...], allow_new_node_key: bool,
    allow_unsigned: bool,
) -> None:  # fmt: skip
    """Load a backup into the empty store of a stopped node.

    The store comes from --config (storage:, or REMEMBRANCER_STORAGE), so a
    backup of a SQLite node restores into PostgreSQL too.  The manifest and
    the checkpoints must be signed by the node's key (node_key: in --config)
    or a key named with --trust.  Every check of `backup verify` runs inside
    the store's load transaction: if one fails, the store stays empty.  The
    replay index is rebuilt from the entries and must match the archive's.
    Configuration files are not written; see `backup extract-config`.
    """
    from remembrancer.node.backup.restore import restore_backup

    report = restore_backup(_config(config_path), archive, trust=trust,
                            allow_new_node_key=allow_new_node_key, allow_unsigned=allow_unsigned)  # fmt: skip
    for note in report.notes:
        click.echo(f"note: {note}", err=True)
    echo_json({"restored": archive, "backend": report.backend, **_summary(report.manifest)})


@backup.command("extract-config")
@click.argument("archive", type=click.Path(dir_okay=False))
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False),
              help="Where to write node.yaml and the files beside it.")  # fmt: skip
@click.option("--trust", "trust", multiple=True, metavar="DID", help=_TRUST_HELP)
@click.option("--allow-unsigned", is_flag=True, help=_UNSIGNED_HELP)
@errors_as_one_line
def extract_config(
    archive: str, directory: str, trust: tuple[str, ...], allow_unsigned: bool
) -> None:
    """Write a backup's configuration files into DIR.

    Only from an archive whose manifest is signed by a key named with --trust
    (the node's DID): the configuration names keys to trust and code to run.
    node.yaml and the files beside it (with the keys, if the backup has
    them) go to their paths relative to node.yaml; key files get mode 0600.
    Refuses to overwrite anything; files that lay outside node.yaml's
    directory are listed, not written.
    """
    from remembrancer.node.backup.restore import extract_files

    for line in extract_files(archive, directory, trust=trust, allow_unsigned=allow_unsigned):
        click.echo(line)


COMMANDS = [backup]
