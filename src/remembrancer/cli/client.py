"""Commands that read a log or talk to a node: ``proof``, ``checkpoint``, ``witness``.

``checkpoint`` and ``proof`` read a Remembrancer node (``--url URL --namespace
NS``) or any static tlog-tiles log (``--tiles PREFIX``, or ``--url PREFIX``
alone), through :mod:`remembrancer.cli.tiledlog`.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import click

from remembrancer.cli.common import errors_as_one_line, write_output
from remembrancer.core.checkpoint import Checkpoint
from remembrancer.core.cosignature import parse_cosigner_vkey
from remembrancer.core.errors import (
    FormatError,
    NotFoundError,
    PeerError,
    RemembrancerError,
    VerificationError,
)
from remembrancer.core.jcs import loads_strict
from remembrancer.core.note import Note, open_note, parse_vkey
from remembrancer.core.rfc6962 import (
    consistency_proof,
    inclusion_proof,
    root_hash,
    verify_consistency,
    verify_inclusion,
)
from remembrancer.core.witness import AddCheckpointRequest
from remembrancer.net.http import Answer, HttpFailure, request

MAX_ANSWER = 8 << 20


def _exchange(method: str, url: str, body: bytes | None, headers: dict[str, str],
              timeout: float) -> Answer:  # fmt: skip
    """One bounded exchange with a node (:mod:`remembrancer.net.http`): the answer,
    whatever its status; PeerError ``node_unreachable`` (no answer in time) or
    ``node_answer_too_large`` (over MAX_ANSWER)."""
    try:
        return request(method, url, content=body, headers=headers, timeout=timeout,
                       limit=MAX_ANSWER)  # fmt: skip
    except HttpFailure as e:
        if e.kind == "too_large":
            raise PeerError(e.message, code="node_answer_too_large",
                            details={"url": url, "limit": MAX_ANSWER}) from e  # fmt: skip
        raise PeerError(f"cannot reach the node: {e.message}", code="node_unreachable",
                        details={"url": url, "kind": e.kind}) from e  # fmt: skip


def _node_error(status: int, data: bytes) -> RemembrancerError:
    """A node's error answer as the error it names (its code and message)."""
    try:
        value = loads_strict(data, max_bytes=MAX_ANSWER)
    except FormatError:
        value = None
    err = value.get("error", {}) if isinstance(value, dict) else {}
    if not isinstance(err, dict):
        err = {}
    return RemembrancerError(f"{err.get('message', data[:200])} (HTTP {status})",
                             code=err.get("code", f"http_{status}"))  # fmt: skip


def http(method: str, url: str, body: bytes | None = None, *, content_type: str = "application/json",
         timeout: float = 30.0) -> tuple[int, str, bytes]:  # fmt: skip
    """One HTTP exchange; returns (status, content type, body) for any status."""
    answer = _exchange(method, url, body, {"Content-Type": content_type}, timeout)
    return answer.status, answer.content_type, answer.content


def api_json(method: str, url: str, body: bytes | None = None) -> Any:
    status, _, data = http(method, url, body)
    if status >= 400:
        raise _node_error(status, data)
    try:
        return loads_strict(data, max_bytes=MAX_ANSWER)
    except FormatError:
        return None


def admin_token(token: str | None, token_file: str | None) -> str:
    """The admin token from --token / REMEMBRANCER_ADMIN_TOKEN or --token-file."""
    if token is None and token_file:
        from remembrancer.cli.common import read_input

        token = read_input(token_file, what="token file").decode().strip()
    if not token:
        raise FormatError(
            "an admin token is needed: --token, --token-file or REMEMBRANCER_ADMIN_TOKEN",
            code="usage",
        )
    return token


def admin_post(url: str, token: str, *, timeout: float = 120.0) -> Any:
    """POST to an admin route with the bearer token; the JSON answer, or the
    node's error as a RemembrancerError."""
    answer = _exchange("POST", url, b"", {"Authorization": f"Bearer {token}"}, timeout)
    if answer.status >= 400:
        raise _node_error(answer.status, answer.content)
    return loads_strict(answer.content, max_bytes=MAX_ANSWER)


@click.group()
def proof() -> None:
    """Fetch or compute proofs from a node or any tlog-tiles log."""


_URL_HELP = "A Remembrancer node's base URL (with --namespace), or a log's tlog-tiles prefix."
_TILES_HELP = "The tlog-tiles prefix of any log (the URL that /checkpoint and /tile/... extend)."
_TIMEOUT_HELP = "Deadline for all the fetches, in seconds."


def _source_options(fn: Any) -> Any:
    """--url, --namespace, --tiles, --timeout: where the log is."""
    fn = click.option("--timeout", type=click.FloatRange(1, 3600), default=60.0,
                      show_default=True, help=_TIMEOUT_HELP)(fn)  # fmt: skip
    fn = click.option("--tiles", default=None, help=_TILES_HELP)(fn)
    fn = click.option("--namespace", default=None, help="The log's namespace on a node (--url).")(
        fn
    )
    return click.option("--url", default=None, help=_URL_HELP)(fn)


@proof.command("inclusion")
@_source_options
@click.option("--index", required=True, type=click.IntRange(0), help="The entry's index.")
@click.option("--size", type=click.IntRange(1), default=None,
              help="Tree size (default: the latest; a node only).")  # fmt: skip
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Write a c2sp.org/tlog-proof@v1 file here.",
)
@click.option("--vkey", default=None,
              help="Verify the checkpoint's log signature with this vkey first (tiles).")  # fmt: skip
@click.option("--entry-out", type=click.Path(dir_okay=False), default=None,
              help="Also write the entry itself, read from its entry bundle and checked (tiles).")  # fmt: skip
@errors_as_one_line
def proof_inclusion(url: str | None, namespace: str | None, tiles: str | None, timeout: float,
                    index: int, size: int | None, out: str, vkey: str | None,
                    entry_out: str | None) -> None:  # fmt: skip
    """Write the tlog-proof file for entry INDEX (check it with `remembrancer verify`).

    From a node (--url URL --namespace NS) the node builds the proof.  From any
    tlog-tiles log (--tiles PREFIX, or --url PREFIX alone) the proof is computed
    from the log's tiles, each checked against the checkpoint's root, and is for
    the latest checkpoint."""
    if tiles is None and url is not None and namespace is not None and not (vkey or entry_out):
        base = url.rstrip("/")
        query = f"index={index}&format=tlog-proof" + (f"&size={size}" if size else "")
        status, _, data = http("GET", f"{base}/v1/namespaces/{namespace}/proofs/inclusion?{query}",
                               timeout=timeout)  # fmt: skip
        if status != 200:
            api_json("GET", f"{base}/v1/namespaces/{namespace}/proofs/inclusion?{query}")
        write_output(out, data)
        click.echo(f"wrote {out}")
        return
    from remembrancer.cli.tiledlog import TiledLog, log_prefix, read_head
    from remembrancer.core.tlogproof import TlogProof

    with TiledLog(log_prefix(url, namespace, tiles), timeout=timeout) as log:
        head = read_head(log, parse_vkey(vkey) if vkey else None)
        cp = head.checkpoint
        if size is not None and size != cp.size:
            raise FormatError(f"a tiled log serves its latest checkpoint only (size {cp.size}); "
                              f"--size {size} needs a node", code="usage")  # fmt: skip
        if index >= cp.size:
            raise NotFoundError(f"entry {index} is not in the log (size {cp.size})",
                                code="index_out_of_range")  # fmt: skip
        hashes = inclusion_proof(index, cp.size, head.reader)
        leaf = head.reader.read_nodes([(0, index)])[0]
        verify_inclusion(index, cp.size, leaf, hashes, cp.root_hash)
        entry = (
            head.reader.read_entries(index, index + 1, log.fetch_bundles)[0] if entry_out else b""
        )
    write_output(out, TlogProof(index, tuple(hashes), head.note).to_bytes())
    click.echo(f"wrote {out}" + (" (signature verified)" if head.signed else ""))
    if entry_out:
        write_output(entry_out, entry)
        click.echo(f"wrote {entry_out} ({len(entry)} bytes)")


@proof.command("consistency")
@_source_options
@click.option("--old", default=None, type=click.IntRange(1),
              help="The older size (default: the size of --old-checkpoint).")  # fmt: skip
@click.option("--new", default=None, type=click.IntRange(1),
              help="The newer size (default: the latest checkpoint's).")  # fmt: skip
@click.option(
    "--out",
    default=None,
    type=click.Path(dir_okay=False),
    help="Write the JSON here (default: print).",
)
@click.option("--vkey", multiple=True,
              help="Verify: the log's vkey (repeatable; the one named after the origin is used).")  # fmt: skip
@click.option("--trust", "trust_file", default=None,
              help="Verify: a trust policy YAML (log_vkeys, witness_vkeys, min_cosigners).")  # fmt: skip
@click.option("--witness-vkey", multiple=True,
              help="Verify: a witness's cosignature/v1 vkey (repeatable).")  # fmt: skip
@click.option("--min-cosigners", type=click.IntRange(0), default=None,
              help="Verify: distinct witness cosignatures each checkpoint needs.")  # fmt: skip
@click.option("--old-checkpoint", type=click.Path(dir_okay=False), default=None,
              help="Verify: a checkpoint you kept (its note file), proven to be extended by the new one.")  # fmt: skip
@errors_as_one_line
def proof_consistency(url: str | None, namespace: str | None, tiles: str | None, timeout: float,
                      old: int | None, new: int | None, out: str | None, vkey: tuple[str, ...],
                      trust_file: str | None, witness_vkey: tuple[str, ...],
                      min_cosigners: int | None, old_checkpoint: str | None) -> None:  # fmt: skip
    """Fetch a consistency proof between two tree sizes (JSON), and with
    --vkey/--trust verify it.

    From a node: the proof and both checkpoints.  From a tlog-tiles log: the
    proof computed from the tiles of the latest checkpoint (each tile checked
    against its root), both root hashes, and that checkpoint.

    With --vkey or --trust (and --old-checkpoint FILE, a checkpoint you kept),
    both checkpoints are verified (log signature, and the witness cosignatures
    the policy asks for) and the proof must take the old one's root to the new
    one's: exit 0 only if so, 1 if something does not verify, 2 for bad input,
    as `remembrancer verify`."""
    from remembrancer.cli.verify import load_trust

    verifying = bool(vkey or trust_file or old_checkpoint or witness_vkey or min_cosigners)
    logs, witnesses, minimum = (
        load_trust(trust_file, vkey, witness_vkey, min_cosigners) if verifying else ([], [], 0)
    )
    verifiers = [parse_vkey(v) for v in logs]
    cosigners = [parse_cosigner_vkey(v) for v in witnesses]
    kept = None
    if old_checkpoint is not None:
        from remembrancer.cli.common import read_input

        kept = read_input(old_checkpoint, what="checkpoint")
        kept_size = Checkpoint.parse(Note.from_bytes(kept).text).size
        if old is not None and old != kept_size:
            raise FormatError(f"--old {old} is not the size of {old_checkpoint} ({kept_size})",
                              code="usage")  # fmt: skip
        old = kept_size
    if old is None:
        raise FormatError("give --old SIZE or --old-checkpoint FILE", code="usage")
    checked: list[str] = []
    if tiles is None and url is not None and namespace is not None:
        base = url.rstrip("/")
        if new is None:
            note = _node_checkpoint(base, namespace, timeout)
            new = Checkpoint.parse(Note.from_bytes(note).text).size
        value = api_json(
            "GET", f"{base}/v1/namespaces/{namespace}/proofs/consistency?old={old}&new={new}"
        )
        if verifying:
            notes = {s: (value.get("checkpoints") or {}).get(str(s)) for s in (old, new)}
            old_note = kept if kept is not None else notes[old]
            new_note = notes[new]
            if old_note is None or new_note is None:
                missing = old if old_note is None else new
                raise FormatError(
                    f"the node has no signed checkpoint at size {missing} to verify; give sizes"
                    " it signed, or --old-checkpoint FILE with a checkpoint you kept",
                    code="checkpoint_missing",
                )
            opened = [_open_trusted(n.encode() if isinstance(n, str) else n, verifiers,
                                    cosigners, minimum) for n in (old_note, new_note)]  # fmt: skip
            old_cp, new_cp = (o.checkpoint for o in opened)
            if old_cp.origin != new_cp.origin or (old_cp.size, new_cp.size) != (old, new):
                raise VerificationError(
                    f"the checkpoints are of {old_cp.origin} at {old_cp.size} and {new_cp.origin}"
                    f" at {new_cp.size}, not of one log at {old} and {new}",
                    code="checkpoint_mismatch",
                )
            hashes = [base64.b64decode(h, validate=True) for h in value["proof"]]
            verify_consistency(old, new, old_cp.root_hash, new_cp.root_hash, hashes)
            checked = [f"checkpoint at {old}: log signature", f"checkpoint at {new}: log signature",
                       f"{minimum} witness cosignatures each", "RFC 6962 consistency"]  # fmt: skip
    else:
        from remembrancer.cli.tiledlog import TiledLog, log_prefix, read_head

        with TiledLog(log_prefix(url, namespace, tiles), timeout=timeout) as log:
            head = None
            if verifying:
                origin = Checkpoint.parse(Note.from_bytes(log.checkpoint()).text).origin
                verifier = next((v for v in verifiers if v.name == origin), None)
                if verifier is None:
                    raise VerificationError(f"no trusted log key for origin {origin!r}",
                                            code="log_key_unknown")  # fmt: skip
                head = read_head(log, verifier, cosigners, minimum)
            else:
                head = read_head(log, None)
            cp = head.checkpoint
            new = cp.size if new is None else new
            if not old <= new <= cp.size:
                raise NotFoundError(f"need old <= new <= {cp.size} (the latest size)",
                                    code="size_out_of_range")  # fmt: skip
            hashes = consistency_proof(old, new, head.reader)
            roots = {s: root_hash(s, head.reader) for s in (old, new)}
        verify_consistency(old, new, roots[old], roots[new], hashes)
        if kept is not None:
            saved = _open_trusted(kept, verifiers, cosigners, minimum).checkpoint
            if saved.origin != cp.origin or saved.root_hash != roots[old]:
                raise VerificationError(
                    f"the log's tiles give another root at size {old} than the checkpoint you"
                    " kept: the log does not extend it (a split view or a fork)",
                    code="consistency_root1_mismatch",
                )
        if verifying:
            checked = [f"checkpoint at {cp.size}: log signature",
                       f"{minimum} witness cosignatures", "tiles against the checkpoint root",
                       "RFC 6962 consistency"]  # fmt: skip
            if kept is not None:
                checked.insert(1, f"kept checkpoint at {old}: log signature, root")
        value = {"origin": cp.origin, "old": old, "new": new,
                 "proof": [base64.b64encode(h).decode() for h in hashes],
                 "roots": {str(s): base64.b64encode(r).decode() for s, r in roots.items()},
                 "checkpoints": {str(s): (head.note.decode() if s == cp.size else None)
                                 for s in (old, new)}}  # fmt: skip
    text = json.dumps(value, indent=2) + "\n"
    if out:
        write_output(out, text.encode())
        click.echo(f"wrote {out}")
    else:
        click.echo(text, nl=False)
    if checked:
        click.echo(f"verified: the log at {new} extends its checkpoint at {old} ("
                   + ", ".join(checked) + ")", err=True)  # fmt: skip


def _open_trusted(note: bytes, verifiers: list[Any], cosigners: list[Any], minimum: int) -> Any:
    """A checkpoint note opened with the trusted key named after its origin, with
    ``minimum`` distinct witness cosignatures."""
    from remembrancer.cli.tiledlog import check_cosigners
    from remembrancer.core.checkpoint import open_checkpoint

    origin = Checkpoint.parse(Note.from_bytes(note).text).origin
    verifier = next((v for v in verifiers if v.name == origin), None)
    if verifier is None:
        raise VerificationError(f"no trusted log key for origin {origin!r}", code="log_key_unknown")
    signed = open_checkpoint(note, verifier, cosigners)
    check_cosigners(signed, verifier, minimum)
    return signed


def _node_checkpoint(base: str, namespace: str, timeout: float) -> bytes:
    status, _, data = http("GET", f"{base}/logs/{namespace}/checkpoint", timeout=timeout)
    if status != 200:
        api_json("GET", f"{base}/logs/{namespace}/checkpoint")
    return data


@click.command()
@_source_options
@click.option("--vkey", default=None,
              help="Verify the log signature with this vkey (its key name is the origin).")  # fmt: skip
@errors_as_one_line
def checkpoint(url: str | None, namespace: str | None, tiles: str | None, timeout: float,
               vkey: str | None) -> None:  # fmt: skip
    """Print a log's latest checkpoint, from a node (--url URL --namespace NS) or
    any tlog-tiles log (--tiles PREFIX, or --url PREFIX alone).

    With --vkey the log signature is verified; the log's right-edge tiles are
    checked against the checkpoint's root either way (a log whose tiles do not
    match what it signed is an error)."""
    from remembrancer.cli.tiledlog import TiledLog, log_prefix, read_head

    with TiledLog(log_prefix(url, namespace, tiles), timeout=timeout) as log:
        head = read_head(log, parse_vkey(vkey) if vkey else None)
        edge = head.reader.verify()
    if head.signed is not None:
        click.echo(f"verified: signed by {head.signed.log_signature.name}", err=True)
    click.echo(f"verified: {len(edge)} right-edge tiles hash to the root at size "
               f"{head.checkpoint.size}", err=True)  # fmt: skip
    click.echo(head.note.decode("utf-8"), nl=False)


@click.group()
def witness() -> None:
    """Talk to a tlog-witness."""


@witness.command("add-checkpoint")
@click.option(
    "--witness", "witness_url", required=True, help="The witness's submission prefix (…/witness)."
)
@click.option(
    "--log-url", required=True, help="The log's node base URL (for its checkpoint and proofs)."
)
@click.option("--namespace", required=True)
@click.option(
    "--witness-vkey", default=None, help="Verify the returned cosignature with this vkey."
)
@errors_as_one_line
def add_checkpoint(
    witness_url: str, log_url: str, namespace: str, witness_vkey: str | None
) -> None:
    """Submit a log's latest checkpoint to a witness (C2SP tlog-witness client):
    start from old size 0, follow a 409 to the witness's size with a consistency
    proof, and print the cosigned checkpoint."""
    base = log_url.rstrip("/")
    status, _, note = http("GET", f"{base}/logs/{namespace}/checkpoint")
    if status != 200:
        api_json("GET", f"{base}/logs/{namespace}/checkpoint")
    new_size = Checkpoint.parse(Note.from_bytes(note).text).size
    old, proof_hashes = 0, tuple[bytes, ...]()
    for _ in range(3):
        body = AddCheckpointRequest(old, tuple(proof_hashes), note).to_bytes()
        status, ctype, answer = http("POST", f"{witness_url.rstrip('/')}/add-checkpoint", body,
                                     content_type="text/plain")  # fmt: skip
        if status == 200:
            break
        if status == 409 and ctype.startswith("text/x.tlog.size"):
            old = int(answer.strip())
            if old == new_size or old == 0:
                proof_hashes = ()
            else:
                value = api_json(
                    "GET",
                    f"{base}/v1/namespaces/{namespace}/proofs/consistency?old={old}&new={new_size}",
                )
                proof_hashes = tuple(base64.b64decode(h) for h in value["proof"])
            continue
        raise RemembrancerError(
            f"the witness answered HTTP {status}: {answer[:200]!r}", code=f"witness_http_{status}"
        )
    else:
        raise RemembrancerError("the witness kept moving its size", code="witness_race")
    cosigned = note + answer
    if witness_vkey:
        verifier = parse_cosigner_vkey(witness_vkey)
        opened = open_note(cosigned, [verifier])
        if not opened.verified:
            raise VerificationError("no cosignature from that witness", code="cosignature_missing")
    click.echo(cosigned.decode(), nl=False)


COMMANDS = [proof, checkpoint, witness]
