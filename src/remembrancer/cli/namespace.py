"""``remembrancer namespace list|show|message``."""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from importlib import resources
from pathlib import Path
from typing import Any

import click

from remembrancer.cli.common import echo_json, errors_as_one_line, read_input, write_output
from remembrancer.core.errors import FormatError, NotFoundError, RemembrancerError
from remembrancer.core.jcs import canonicalize, loads_strict
from remembrancer.core.keys import SigningKey
from remembrancer.core.record import Record, sign_envelope, unsigned_envelope
from remembrancer.core.xns import MAX_PARAMETERS_BYTES, MESSAGE_SCHEMA
from remembrancer.log.namespaces import load_namespaces_file
from remembrancer.log.schemas import bundled_schemas
from remembrancer.node.keyfile import read_key_file
from remembrancer.program import invocation


def example_namespaces_path() -> str:
    return str(resources.files("remembrancer.examples").joinpath("namespaces.yaml"))


namespaces_option = click.option(
    "--namespaces",
    "namespaces_file",
    envvar="REMEMBRANCER_NAMESPACES",
    default=None,
    type=click.Path(dir_okay=False),
    help="Namespaces YAML file (default: the bundled example; env REMEMBRANCER_NAMESPACES).",
)


@click.group()
def namespace() -> None:
    """Namespaces: inspect their configuration, send messages between them."""


@namespace.command("list")
@namespaces_option
@errors_as_one_line
def list_cmd(namespaces_file: str | None) -> None:
    """List namespaces with their witness quorum and schemas."""
    spaces = load_namespaces_file(namespaces_file or example_namespaces_path(), bundled_schemas())
    for name, ns in spaces.items():
        levels = ", ".join(f"{lv.level} {lv.target} every {lv.every}" for lv in ns.cadence.levels)
        click.echo(
            f"{name}\t{ns.min_required}-of-{len(ns.witnesses)} witnesses\t{len(ns.schema_allow)} schemas\t{levels}"
        )


@namespace.command("show")
@click.argument("name")
@namespaces_option
@errors_as_one_line
def show_cmd(name: str, namespaces_file: str | None) -> None:
    """Show one namespace's policy as JSON."""
    spaces = load_namespaces_file(namespaces_file or example_namespaces_path(), bundled_schemas())
    if name not in spaces:
        raise NotFoundError(f"namespace {name} is not configured", code="namespace_unknown")
    echo_json(spaces[name].to_dict())


DEFAULT_URL = "http://127.0.0.1:8080"
RETRYABLE = ("xns_cosignatures_missing", "xns_proof_stale")  # a fresher proof may pass


@namespace.command("message")
@click.option("--from", "source", required=True, help="Source namespace (records the message).")
@click.option("--to", "target", required=True, help="Target namespace (receives it).")
@click.option("--action", required=True, type=click.Choice(["notify", "query", "invoke"]),
              help="notify: recorded only; query: a built-in read (log.head, record.get)"
                   " answered with proof; invoke: the target's handler for OPERATION.")  # fmt: skip
@click.option("--operation", required=True, help="Operation name, e.g. status.update.")
@click.option("--payload", "parameters", default="{}", show_default=True,
              help="The operation's parameters: a JSON object, or @FILE.")  # fmt: skip
@click.option("--url", envvar="REMEMBRANCER_URL", default=DEFAULT_URL, show_default=True,
              help="The source's node (env REMEMBRANCER_URL).")  # fmt: skip
@click.option("--to-url", default=None,
              help="The target's node, if not the source's: deliver there directly, with the"
                   " proof fetched from --url.  Without it the source's node delivers, or"
                   " relays through its federation.")  # fmt: skip
@click.option("--actor-key", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The actor's key file (default: the PUBLIC demo actor key).")  # fmt: skip
@click.option("--witness-key", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="A record witness's key file (repeatable; default with the demo actor: the"
                   " demo witness keys the source's policy needs).")  # fmt: skip
@click.option("--event-id", default=None, help="Event id of the message (default: a fresh UUID).")
@click.option("--wait", type=click.FloatRange(0, 600), default=15.0, show_default=True,
              help="Seconds to wait for cosignatures and for a relayed delivery.")  # fmt: skip
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Also write the message, delivery and answer records and their proofs here,"
                   " for `remembrancer verify`.")  # fmt: skip
@errors_as_one_line
def message_cmd(source: str, target: str, action: str, operation: str, parameters: str, url: str,
                to_url: str | None, actor_key: str | None, witness_key: tuple[str, ...],
                event_id: str | None, wait: float, out_dir: str | None) -> None:  # fmt: skip
    """Send a cross-namespace message (namespace.message@1.0.0).

    Records the message in the source namespace (signed by --actor-key and
    the witnesses), then has it delivered into the target with its tlog-proof:
    the target verifies the proof under its trusted_sources policy and records
    the delivery in its own log.  Prints the delivery as JSON (for a query or
    invoke, with the answer), each part with its receipt and tlog-proof.

    \b
    remembrancer namespace message --from dao:vaultmesh --to fin:clearing \\
        --action notify --operation status.update --payload '{"status":"completed"}'
    """
    from remembrancer.cli.client import api_json

    value = loads_strict(
        read_input(parameters[1:], what="payload file")
        if parameters.startswith("@")
        else parameters.encode()
    )
    if not isinstance(value, dict):
        raise FormatError("--payload must be a JSON object", code="payload_invalid")
    if len(canonicalize(value)) > MAX_PARAMETERS_BYTES:
        raise FormatError(f"--payload is over {MAX_PARAMETERS_BYTES} bytes", code="payload_invalid")
    url = url.rstrip("/")
    actor, witnesses = _message_keys(url, source, actor_key, witness_key)
    env = unsigned_envelope(
        namespace=source, schema=MESSAGE_SCHEMA, actor=actor.did,
        payload={"source": source, "target": target, "action": action,
                 "payload": {"operation": operation, "parameters": value}},
        event_id=event_id or str(uuid.uuid4()), timestamp=int(time.time()),
        nonce=base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("="),
    )  # fmt: skip
    record = sign_envelope(env, actor, witnesses)
    receipt = api_json("POST", f"{url}/v1/namespaces/{source}/records", record.leaf)
    click.echo(
        f"recorded {record.event_hash_hex} in {source} at index {receipt['index']}", err=True
    )
    deadline = time.monotonic() + wait
    if to_url:
        result = _deliver_direct(url, to_url.rstrip("/"), record, receipt["index"], deadline)
        target_node = to_url.rstrip("/")
    else:
        body = json.dumps({"record": record.envelope()}).encode()
        result = api_json(
            "POST", f"{url}/v1/namespaces/{target}/messages?wait={min(wait, 60):g}", body
        )
        target_node = url
        if result.get("status") == "relayed":
            click.echo(f"relayed to {result['relay']['peer']}; waiting for the delivery", err=True)
            target_node = result["relay"]["endpoint"]
            result = _await_delivery(result["delivery"], deadline)
    click.echo(
        f"delivered into {target} as entry {result['delivery']['receipt']['index']} of"
        f" {result['delivery']['receipt']['origin']}",
        err=True,
    )
    if out_dir:
        _write_files(Path(out_dir), record, result, target_node, target)
    echo_json(result)


def _message_keys(url: str, source: str, actor_key: str | None,
                  witness_key: tuple[str, ...]) -> tuple[SigningKey, list[SigningKey]]:  # fmt: skip
    """The keys to sign with: the given ones, or the public demo keys that the
    source's policy (asked of its node) accepts."""
    if actor_key is not None:
        return read_key_file(actor_key), [read_key_file(p) for p in witness_key]
    from remembrancer.cli.client import api_json
    from remembrancer.demo.keys import DEMO_ALIASES, demo_key

    actor = demo_key("did:vm:actor:demo")
    if witness_key:
        return actor, [read_key_file(p) for p in witness_key]
    policy = api_json("GET", f"{url}/v1/namespaces/{source}").get("policy") or {}
    needed = int(policy.get("witnesses", {}).get("min_required", 0))
    allowed = {w["did"] for w in policy.get("witnesses", {}).get("allowlist", [])}
    keys = [k for k in (demo_key(a) for a in DEMO_ALIASES) if k.did in allowed][:needed]
    if len(keys) < needed:
        raise FormatError(
            f"{source} needs {needed} record witnesses and its policy lists no demo keys for"
            " them: give --actor-key and --witness-key",
            code="usage",
        )
    click.echo("note: signing with the PUBLIC demo keys (--actor-key to use yours)", err=True)
    return actor, keys


def _deliver_direct(url: str, to_url: str, record: Record, index: int,
                    deadline: float) -> dict[str, Any]:  # fmt: skip
    """Fetch the message's proof from the source's node and deliver it to the
    target's; a proof refused for missing cosignatures or as stale is fetched
    again until the deadline (a refusal changes nothing, so retrying is safe)."""
    from remembrancer.cli.client import api_json, http

    proof_url = (
        f"{url}/v1/namespaces/{record.namespace}/proofs/inclusion?index={index}&format=tlog-proof"
    )
    target = record.payload["target"]
    while True:
        status, _, proof = http("GET", proof_url)
        if status != 200:
            api_json("GET", proof_url)
        body = json.dumps({"record": record.envelope(), "proof": proof.decode()}).encode()
        try:
            answer: dict[str, Any] = api_json(
                "POST", f"{to_url}/v1/namespaces/{target}/messages", body
            )
            return answer
        except RemembrancerError as e:
            if e.code not in RETRYABLE or time.monotonic() >= deadline:
                raise
        time.sleep(0.2)


def _await_delivery(delivery_url: str, deadline: float) -> dict[str, Any]:
    from remembrancer.cli.client import api_json

    while True:
        try:
            answer: dict[str, Any] = api_json("GET", delivery_url)
            return answer
        except RemembrancerError as e:
            if e.code != "xns_delivery_not_found":
                raise
        if time.monotonic() >= deadline:
            raise RemembrancerError(
                f"the relayed message was not delivered in time ({delivery_url}); the target"
                " may have refused it (its remembrancer_xns_rejected_total says why), or"
                " deliver with --to-url to see the refusal",
                code="xns_delivery_timeout",
            )
        time.sleep(0.2)


def _write_files(out: Path, record: Record, result: dict[str, Any], node_url: str,
                 target: str) -> None:  # fmt: skip
    from remembrancer.cli.client import api_json

    out.mkdir(parents=True, exist_ok=True)
    write_output(str(out / "message.json"), record.leaf + b"\n")
    parts = [("delivery", result["delivery"]), ("answer", result.get("answer"))]
    for name, part in parts:
        if part:
            write_output(str(out / f"{name}.json"), canonicalize(part["record"]) + b"\n")
            write_output(str(out / f"{name}.tlog-proof"), part["proof"].encode())
    vkey = api_json("GET", f"{node_url}/v1/node")["vkeys"].get(target, "<the target log's vkey>")
    program = invocation()
    for name, part in parts:
        if part:
            click.echo(f"check: {program} verify {out / (name + '.json')} --proof"
                       f" {out / (name + '.tlog-proof')} --vkey '{vkey}'", err=True)  # fmt: skip


COMMANDS = [namespace]
