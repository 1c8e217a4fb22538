"""``remembrancer federation status|propagate-anchor|verify``."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import click

from remembrancer.cli.client import api_json
from remembrancer.cli.common import echo_json, errors_as_one_line, read_input
from remembrancer.core.errors import FormatError, RemembrancerError
from remembrancer.core.jcs import loads_strict


@click.group()
def federation() -> None:
    """Federation: peers, countersigned federation receipts."""


@federation.command("status")
@click.option("--url", required=True, help="Node base URL.")
@click.option("--json", "as_json", is_flag=True)
@errors_as_one_line
def status(url: str, as_json: bool) -> None:
    """Peers with status, score, last heartbeat and lag per namespace."""
    value = api_json("GET", f"{url.rstrip('/')}/v1/federation")
    if as_json:
        echo_json(value)
        return
    click.echo(f"federation {value['federation_id']} (quorum {value['quorum']}, {value['anchor_strategy']}); "
               f"final receipts: {value['receipts_final']}")  # fmt: skip
    own = value["own_logs"]
    for p in value["peers"]:
        me = " (this node)" if p["self"] else ""
        age = f"{p['heartbeat_age_s']} s ago" if p["heartbeat_age_s"] is not None else "never"
        click.echo(f"  {p['did']}{me}: {p['status']} score {p['score']} heartbeat {age}")
        for origin, head in sorted(p["logs"].items()):
            mine = own.get(origin)
            lag = f", lag {mine - head['size']}" if mine is not None else ""
            click.echo(f"      {origin}: size {head['size']}{lag}")


@federation.command("propagate-anchor")
@click.argument("namespace")
@click.option("--url", required=True)
@click.option("--token", envvar="REMEMBRANCER_ADMIN_TOKEN", default=None)
@click.option("--token-file", type=click.Path(dir_okay=False), default=None)
@errors_as_one_line
def propagate(namespace: str, url: str, token: str | None, token_file: str | None) -> None:
    """Have the peers countersign NAMESPACE's newest verified anchor; print the final receipt."""
    if token is None and token_file:
        token = read_input(token_file, what="token file").decode().strip()
    if not token:
        raise FormatError(
            "an admin token is needed: --token, --token-file or REMEMBRANCER_ADMIN_TOKEN",
            code="usage",
        )
    req = urllib.request.Request(f"{url.rstrip('/')}/v1/admin/federation/propagate/{namespace}", data=b"",
                                 method="POST", headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            echo_json(json.loads(resp.read()))
    except urllib.error.HTTPError as e:
        body = json.loads(e.read() or b"{}").get("error", {})
        raise RemembrancerError(f"{body.get('message', e.reason)} (HTTP {e.code})",
                                code=body.get("code", f"http_{e.code}")) from e  # fmt: skip


@federation.command("verify")
@click.argument("receipt_file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--registry", "registry_file", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The federation.yaml whose peers' keys and quorum to trust.")  # fmt: skip
@errors_as_one_line
def verify(receipt_file: str, registry_file: str) -> None:
    """Verify a federation receipt offline: a quorum of distinct active peers
    countersigned it, and the anchored root is its checkpoint's digest."""
    from remembrancer.federation.receipts import FederationReceipt, verify_federation_receipt
    from remembrancer.federation.registry import load_federation_file

    registry = load_federation_file(registry_file)
    receipt = FederationReceipt.from_dict(loads_strict(read_input(receipt_file, what="receipt")))
    if receipt.federation_id != registry.federation_id:
        raise FormatError(f"the receipt is for federation {receipt.federation_id}, the registry is "
                          f"{registry.federation_id}", code="federation_mismatch")  # fmt: skip
    peers = {p.did: p.pubkey for p in registry.peers}
    active = [p.did for p in registry.peers if p.status == "active"]
    report = verify_federation_receipt(receipt, peers, registry.quorum, active=active)
    click.echo(f"OK: {receipt.namespace} anchor {receipt.anchor.target} {receipt.anchor.tx_ref} countersigned by "
               f"{len(report.signers)} of quorum {report.quorum}: {', '.join(report.signers)}")  # fmt: skip


COMMANDS = [federation]
