"""Commands that read a log or talk to a node: ``proof``, ``checkpoint``, ``witness``.

``checkpoint`` and ``proof`` read a Remembrancer node (``--url URL --namespace
NS``) or any static tlog-tiles log (``--tiles PREFIX``, or ``--url PREFIX``
alone), through :mod:`remembrancer.cli.tiledlog`.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
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
from remembrancer.core.note import Note, open_note, parse_vkey
from remembrancer.core.rfc6962 import (
    consistency_proof,
    inclusion_proof,
    root_hash,
    verify_consistency,
    verify_inclusion,
)
from remembrancer.core.witness import AddCheckpointRequest

MAX_ANSWER = 8 << 20


def http(method: str, url: str, body: bytes | None = None, *, content_type: str = "application/json",
         timeout: float = 30.0) -> tuple[int, str, bytes]:  # fmt: skip
    """One HTTP exchange; returns (status, content type, body) for any status."""
    req = urllib.request.Request(
        url, data=body, method=method, headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read(MAX_ANSWER)
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read(MAX_ANSWER)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise PeerError(f"cannot reach {url}: {e}", code="node_unreachable") from e


def api_json(method: str, url: str, body: bytes | None = None) -> Any:
    status, _, data = http(method, url, body)
    try:
        value = json.loads(data)
    except ValueError:
        value = None
    if status >= 400:
        err = value.get("error", {}) if isinstance(value, dict) else {}
        raise RemembrancerError(f"{err.get('message', data[:200])} (HTTP {status})",
                                code=err.get("code", f"http_{status}"))  # fmt: skip
    return value


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
    req = urllib.request.Request(
        url, data=b"", method="POST", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read(MAX_ANSWER))
    except urllib.error.HTTPError as e:
        try:
            body = json.loads(e.read(1 << 16) or b"{}").get("error", {})
        except ValueError:
            body = {}
        raise RemembrancerError(f"{body.get('message', e.reason)} (HTTP {e.code})",
                                code=body.get("code", f"http_{e.code}")) from e  # fmt: skip
    except (urllib.error.URLError, OSError) as e:
        raise PeerError(f"cannot reach {url}: {e}", code="node_unreachable") from e


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
@click.option("--old", required=True, type=click.IntRange(1))
@click.option("--new", default=None, type=click.IntRange(1),
              help="The newer size (default: the latest checkpoint's).")  # fmt: skip
@click.option(
    "--out",
    default=None,
    type=click.Path(dir_okay=False),
    help="Write the JSON here (default: print).",
)
@click.option("--vkey", default=None,
              help="Verify the latest checkpoint's log signature with this vkey first (tiles).")  # fmt: skip
@errors_as_one_line
def proof_consistency(url: str | None, namespace: str | None, tiles: str | None, timeout: float,
                      old: int, new: int | None, out: str | None, vkey: str | None) -> None:  # fmt: skip
    """Fetch a consistency proof between two tree sizes (JSON).

    From a node: the proof and both checkpoints.  From a tlog-tiles log: the
    proof computed from the tiles of the latest checkpoint (each tile checked
    against its root), both root hashes, and that checkpoint."""
    if tiles is None and url is not None and namespace is not None and not vkey:
        base = url.rstrip("/")
        if new is None:
            note = _node_checkpoint(base, namespace, timeout)
            new = Checkpoint.parse(Note.from_bytes(note).text).size
        value = api_json(
            "GET", f"{base}/v1/namespaces/{namespace}/proofs/consistency?old={old}&new={new}"
        )
    else:
        from remembrancer.cli.tiledlog import TiledLog, log_prefix, read_head

        with TiledLog(log_prefix(url, namespace, tiles), timeout=timeout) as log:
            head = read_head(log, parse_vkey(vkey) if vkey else None)
            cp = head.checkpoint
            new = cp.size if new is None else new
            if not old <= new <= cp.size:
                raise NotFoundError(f"need old <= new <= {cp.size} (the latest size)",
                                    code="size_out_of_range")  # fmt: skip
            hashes = consistency_proof(old, new, head.reader)
            roots = {s: root_hash(s, head.reader) for s in (old, new)}
        verify_consistency(old, new, roots[old], roots[new], hashes)
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
