"""``remembrancer record``: build, sign and submit (or write) a record."""

from __future__ import annotations

import base64
import os
import time
import uuid
from collections.abc import Iterable
from typing import Any

import click

from remembrancer.cli.common import echo_json, errors_as_one_line, write_output
from remembrancer.core.errors import FormatError
from remembrancer.core.jcs import loads_strict
from remembrancer.core.record import Record, sign_envelope, unsigned_envelope
from remembrancer.node.keyfile import read_key_file


def submit(url: str, record: Record) -> dict[str, object]:
    """POST a record to a node and return its JSON answer (the receipt)."""
    from remembrancer.cli.client import api_json

    answer: dict[str, object] = api_json(
        "POST", f"{url.rstrip('/')}/v1/namespaces/{record.namespace}/records", record.leaf
    )
    return answer


def build_record(namespace: str, schema: str, payload: dict[str, Any], actor_key: str,
                 witness_keys: Iterable[str], *, event_id: str | None = None,
                 subject: str | None = None, prev: str | None = None,
                 timestamp: int | None = None) -> Record:  # fmt: skip
    """A record envelope signed by the actor's key file and each witness key file
    (a fresh UUID event id, now as timestamp and a random nonce by default)."""
    actor = read_key_file(actor_key)
    witnesses = [read_key_file(p) for p in witness_keys]
    env = unsigned_envelope(
        namespace=namespace,
        schema=schema,
        payload=payload,
        actor=actor.did,
        event_id=event_id or str(uuid.uuid4()),
        timestamp=int(time.time()) if timestamp is None else timestamp,
        nonce=base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("="),
        prev=prev,
        subject=subject,
    )
    return sign_envelope(env, actor, witnesses)


@click.command("record")
@click.option("--namespace", required=True, help="Namespace, e.g. dao:vaultmesh.")
@click.option(
    "--schema", required=True, help="Payload schema, NAME@VERSION, e.g. ledger.append@1.0.0."
)
@click.option("--payload", required=True, help="Payload as JSON text, or @FILE.")
@click.option(
    "--actor-key",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="The actor's key file.",
)
@click.option(
    "--witness-key",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="A record witness's key file (repeatable).",
)
@click.option("--event-id", default=None, help="Event id (default: a fresh UUID).")
@click.option("--subject", default=None, help="DID or URN the event is about.")
@click.option("--prev", default=None, help="sha256:<hex> of the actor's previous record here.")
@click.option("--timestamp", type=int, default=None, help="Seconds since the epoch (default: now).")
@click.option("--url", default=None, help="Submit to the node at this base URL.")
@click.option(
    "--out",
    default=None,
    type=click.Path(dir_okay=False),
    help="Write the signed record to this file.",
)
@errors_as_one_line
def record_cmd(namespace: str, schema: str, payload: str, actor_key: str, witness_key: tuple[str, ...],
               event_id: str | None, subject: str | None, prev: str | None, timestamp: int | None,
               url: str | None, out: str | None) -> None:  # fmt: skip
    """Build and sign a record envelope; submit it to a node (--url), write it
    to a file (--out), or both: the file is written first, so the signed record
    is kept whatever the node answers (check it later with `verify`)."""
    if url is None and out is None:
        raise FormatError("give --url (submit), --out (write the file) or both", code="usage")
    if payload.startswith("@"):
        from remembrancer.cli.common import read_input

        payload_value = loads_strict(read_input(payload[1:], what="payload file"))
    else:
        payload_value = loads_strict(payload.encode())
    if not isinstance(payload_value, dict):
        raise FormatError("--payload must be a JSON object", code="payload_invalid")
    rec = build_record(namespace, schema, payload_value, actor_key, witness_key,
                       event_id=event_id, subject=subject, prev=prev, timestamp=timestamp)  # fmt: skip
    if out is not None:
        write_output(out, rec.leaf + b"\n")
        click.echo(f"{rec.event_hash_hex} written to {out}", err=url is not None)
    if url is not None:
        echo_json(submit(url, rec))


COMMANDS = [record_cmd]
