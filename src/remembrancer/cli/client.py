"""Commands that talk to a running node: ``proof``, ``checkpoint``, ``witness``."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any

import click

from remembrancer.cli.common import errors_as_one_line, write_output
from remembrancer.core.checkpoint import Checkpoint, open_checkpoint
from remembrancer.core.cosignature import parse_cosigner_vkey
from remembrancer.core.errors import FormatError, PeerError, RemembrancerError, VerificationError
from remembrancer.core.jcs import loads_strict
from remembrancer.core.note import Note, open_note, parse_vkey
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
        value = loads_strict(data, max_bytes=MAX_ANSWER)
    except FormatError:
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
            return loads_strict(resp.read(MAX_ANSWER), max_bytes=MAX_ANSWER)
    except urllib.error.HTTPError as e:
        try:
            body = loads_strict(e.read(1 << 16) or b"{}").get("error", {})
        except (FormatError, AttributeError):
            body = {}
        raise RemembrancerError(f"{body.get('message', e.reason)} (HTTP {e.code})",
                                code=body.get("code", f"http_{e.code}")) from e  # fmt: skip
    except (urllib.error.URLError, OSError) as e:
        raise PeerError(f"cannot reach {url}: {e}", code="node_unreachable") from e


@click.group()
def proof() -> None:
    """Fetch proofs from a node."""


@proof.command("inclusion")
@click.option("--url", required=True, help="Node base URL.")
@click.option("--namespace", required=True)
@click.option("--index", required=True, type=click.IntRange(0))
@click.option(
    "--size", type=click.IntRange(1), default=None, help="Tree size (default: the latest)."
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Write a c2sp.org/tlog-proof@v1 file here.",
)
@errors_as_one_line
def proof_inclusion(url: str, namespace: str, index: int, size: int | None, out: str) -> None:
    """Write the tlog-proof file for entry INDEX (check it with `remembrancer verify`)."""
    query = f"index={index}&format=tlog-proof" + (f"&size={size}" if size else "")
    status, _, data = http(
        "GET", f"{url.rstrip('/')}/v1/namespaces/{namespace}/proofs/inclusion?{query}"
    )
    if status != 200:
        api_json("GET", f"{url.rstrip('/')}/v1/namespaces/{namespace}/proofs/inclusion?{query}")
    write_output(out, data)
    click.echo(f"wrote {out}")


@proof.command("consistency")
@click.option("--url", required=True)
@click.option("--namespace", required=True)
@click.option("--old", required=True, type=click.IntRange(1))
@click.option("--new", required=True, type=click.IntRange(1))
@click.option(
    "--out",
    default=None,
    type=click.Path(dir_okay=False),
    help="Write the JSON here (default: print).",
)
@errors_as_one_line
def proof_consistency(url: str, namespace: str, old: int, new: int, out: str | None) -> None:
    """Fetch a consistency proof between two tree sizes (JSON with both checkpoints)."""
    value = api_json(
        "GET", f"{url.rstrip('/')}/v1/namespaces/{namespace}/proofs/consistency?old={old}&new={new}"
    )
    text = json.dumps(value, indent=2) + "\n"
    if out:
        write_output(out, text.encode())
        click.echo(f"wrote {out}")
    else:
        click.echo(text, nl=False)


@click.command()
@click.option("--url", required=True)
@click.option("--namespace", required=True)
@click.option("--vkey", default=None, help="Verify the log signature with this vkey.")
@errors_as_one_line
def checkpoint(url: str, namespace: str, vkey: str | None) -> None:
    """Print a log's latest checkpoint (verified if --vkey is given)."""
    status, _, data = http("GET", f"{url.rstrip('/')}/logs/{namespace}/checkpoint")
    if status != 200:
        api_json("GET", f"{url.rstrip('/')}/logs/{namespace}/checkpoint")
    if vkey:
        open_checkpoint(data, parse_vkey(vkey))
        click.echo("verified: signed by " + parse_vkey(vkey).name, err=True)
    click.echo(data.decode(), nl=False)


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
