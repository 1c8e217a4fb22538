"""``remembrancer governance propose|vote|status``: cadence governance (docs/governance.md).

A proposal is a ``governance.cadence.set@1.0.0`` record and a vote a
``vote.cast@1.0.0`` record, signed like any record (the actor and the record
witnesses the namespace requires) and admitted into the namespace's own log,
so every step of a decision is provable.  These commands only build, sign and
submit them; the node applies the namespace's rule (docs/governance.md).
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from typing import Any

import click

from remembrancer.cli.client import api_json
from remembrancer.cli.common import echo_json, errors_as_one_line
from remembrancer.cli.record import build_record, submit
from remembrancer.core.errors import FormatError
from remembrancer.core.jcs import loads_strict

PROPOSAL_SCHEMA = "governance.cadence.set@1.0.0"
VOTE_SCHEMA = "vote.cast@1.0.0"

_signing = [
    click.option("--actor-key", required=True, type=click.Path(exists=True, dir_okay=False),
                 help="The key file of who proposes or votes (the record's actor)."),
    click.option("--witness-key", multiple=True, type=click.Path(exists=True, dir_okay=False),
                 help="A record witness's key file (repeatable; as many as the namespace requires)."),
    click.option("--url", required=True, help="The namespace's node base URL."),
]  # fmt: skip


def signing(fn: Any) -> Any:
    for option in reversed(_signing):
        fn = option(fn)
    return fn


@click.group()
def governance() -> None:
    """Change a namespace's cadence by its governance rule: propose, vote, follow."""


@governance.command("propose")
@click.argument("namespace")
@click.option("--cadence", "cadence_json", required=True,
              help='The levels to change, as JSON: \'{"fast": {"every": "45s"}}\'.')  # fmt: skip
@click.option("--effective-after", default=None,
              help="RFC 3339 date-time from which the change holds (default: once approved).")  # fmt: skip
@click.option("--memo", default=None, help="Why (at most 280 characters).")
@click.option("--event-id", default=None, help="The proposal's id (default: a fresh UUID).")
@signing
@errors_as_one_line
def propose(namespace: str, cadence_json: str, effective_after: str | None, memo: str | None,
            event_id: str | None, actor_key: str, witness_key: tuple[str, ...], url: str) -> None:  # fmt: skip
    """Propose a cadence change for NAMESPACE.  By an admin of the namespace it
    applies at once; otherwise voters approve it with `governance vote`.  Prints
    the node's receipt; the proposal's id is its `event:id`."""
    cadence = loads_strict(cadence_json.encode())
    if not isinstance(cadence, dict) or not cadence:
        raise FormatError("--cadence must be a JSON object with at least one level",
                          code="cadence_invalid")  # fmt: skip
    payload: dict[str, Any] = {"namespace": namespace, "cadence": cadence}
    if effective_after is not None:
        payload["effective_after"] = effective_after
    if memo is not None:
        payload["memo"] = memo
    rec = build_record(namespace, PROPOSAL_SCHEMA, payload, actor_key, witness_key,
                       event_id=event_id or str(uuid.uuid4()))  # fmt: skip
    receipt = submit(url, rec)
    echo_json({"proposal": rec.event_id, "receipt": receipt})
    click.echo(f"proposal {rec.event_id}: see `governance status {namespace} --url {url}`",
               err=True)  # fmt: skip


@governance.command("vote")
@click.argument("namespace")
@click.argument("proposal")
@click.option("--choice", type=click.Choice(["approve", "reject", "abstain"]), default="approve",
              show_default=True)  # fmt: skip
@signing
@errors_as_one_line
def vote(namespace: str, proposal: str, choice: str, actor_key: str, witness_key: tuple[str, ...],
         url: str) -> None:  # fmt: skip
    """Vote on PROPOSAL (its event id) in NAMESPACE.  Only the namespace's voters
    count, each once; the change applies when the threshold is reached."""
    payload = {"proposalId": proposal, "choice": choice, "ballotId": str(uuid.uuid4())}
    rec = build_record(namespace, VOTE_SCHEMA, payload, actor_key, witness_key)
    echo_json(submit(url, rec))


@governance.command("status")
@click.argument("namespace")
@click.option("--url", required=True, help="The namespace's node base URL.")
@click.option("--json", "as_json", is_flag=True)
@errors_as_one_line
def status(namespace: str, url: str, as_json: bool) -> None:
    """NAMESPACE's governance rule, the proposals waiting for votes, the approved
    changes and the cadence in effect now."""
    view = api_json("GET", f"{url.rstrip('/')}/v1/namespaces/{namespace}/governance")
    if as_json:
        echo_json(view)
        return
    rule = view["rule"]
    click.echo(f"{namespace}: admins {', '.join(rule['admins']) or '(none)'}; voters"
               f" {', '.join(rule['voters']) or '(none)'}, threshold {rule['vote_threshold']}")  # fmt: skip
    click.echo(f"cadence now: {json.dumps(view['cadence'], sort_keys=True)}")
    click.echo(f"pending ({len(view['pending'])}):")
    for p in view["pending"]:
        click.echo(f"  {p['proposal']} by {p['actor']}: {json.dumps(p['cadence'], sort_keys=True)};"
                   f" votes {len(p['votes'])}, {p['votes_needed']} more needed"
                   + (f" ({p['memo']})" if p.get("memo") else ""))  # fmt: skip
    click.echo(f"applied ({len(view['applied'])}):")
    for a in view["applied"]:
        when = _when(a["effective_from"])
        click.echo(f"  {a['proposal']}: {json.dumps(a['cadence'], sort_keys=True)}, {a['state']}"
                   f" from {when}, approved by {', '.join(a['approved_by'])}"
                   + (f" ({a['memo']})" if a.get("memo") else ""))  # fmt: skip


def _when(t: int) -> str:
    stamp = dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    delta = t - int(time.time())
    return f"{stamp} (in {delta} s)" if delta > 0 else stamp


COMMANDS = [governance]
