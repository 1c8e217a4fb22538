"""``remembrancer federation status|propagate-anchor|verify|join|leave|approve|drop``."""

from __future__ import annotations

from typing import Any

import click

from remembrancer.cli.client import admin_post, admin_token, api_json, http
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
    """Peers with status, score, last heartbeat and lag per namespace; with a
    collaborative or hybrid strategy, the epoch and each target's coordinator."""
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
    if value["anchor_strategy"] != "independent":
        collab = api_json("GET", f"{url.rstrip('/')}/v1/federation/anchoring")
        c = collab["counters"]
        click.echo(f"  collaborative anchoring: epoch {collab['epoch']} ({collab['epoch_seconds']} s), "
                   f"made {c['made']}, received {c['received']}, refused {c['refused']}, "
                   f"missed {c['missed']}, fallback {c['fallback']}, pending {len(collab['pending'])}")  # fmt: skip
        for target, t in collab["targets"].items():
            click.echo(
                f"      {target}: coordinator {t['coordinator']}, next {t['next_coordinator']}"
            )


@federation.command("propagate-anchor")
@click.argument("namespace")
@click.option("--url", required=True)
@click.option("--token", envvar="REMEMBRANCER_ADMIN_TOKEN", default=None)
@click.option("--token-file", type=click.Path(dir_okay=False), default=None)
@errors_as_one_line
def propagate(namespace: str, url: str, token: str | None, token_file: str | None) -> None:
    """Have the peers countersign NAMESPACE's newest verified anchor; print the final receipt."""
    token = admin_token(token, token_file)
    echo_json(admin_post(f"{url.rstrip('/')}/v1/admin/federation/propagate/{namespace}", token))


@federation.command("verify")
@click.argument("receipt_file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--registry",
    "registry_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="The federation.yaml whose peers' keys, regions, quorum and receipt policy to trust.",
)
@click.option("--min-regions", type=click.IntRange(0, 256), default=0, show_default=True,
              help="Require at least this many distinct signer regions (the registry's "
                   "receipts.min_regions applies when it is higher).")  # fmt: skip
@errors_as_one_line
def verify(receipt_file: str, registry_file: str, min_regions: int) -> None:
    """Verify a federation receipt offline: a quorum of distinct active peers
    countersigned it, those signers span the required number of distinct
    regions (as the registry lists them), and its anchor covers its
    checkpoint (the anchored root is the checkpoint's digest, or an
    aggregation path leads there).  Prints the signers and their regions."""
    verify_federation_receipt_file(receipt_file, registry_file, min_regions)


def verify_federation_receipt_file(
    receipt_file: str, registry_file: str, min_regions: int = 0
) -> None:
    """Shared by ``federation verify`` and ``remembrancer verify --registry``."""
    from remembrancer.federation.receipts import FederationReceipt, verify_federation_receipt
    from remembrancer.federation.registry.parse import load_federation_file

    registry = load_federation_file(registry_file)
    receipt = FederationReceipt.from_dict(loads_strict(read_input(receipt_file, what="receipt")))
    if receipt.federation_id != registry.federation_id:
        raise FormatError(f"the receipt is for federation {receipt.federation_id}, the registry is "
                          f"{registry.federation_id}", code="federation_mismatch")  # fmt: skip
    peers = {p.did: p.pubkey for p in registry.peers}
    active = [p.did for p in registry.peers if p.status == "active"]
    min_regions = max(registry.receipt_regions, min_regions)
    report = verify_federation_receipt(receipt, peers, registry.quorum, active=active,
                                       regions=registry.regions(), min_regions=min_regions)  # fmt: skip
    spanned = ", ".join(report.regions) or "none declared"
    click.echo(f"OK: {receipt.namespace} anchor {receipt.anchor.target} {receipt.anchor.tx_ref} countersigned by "
               f"{len(report.signers)} of quorum {report.quorum}: {', '.join(report.signers)}")  # fmt: skip
    click.echo(f"regions: {len(report.regions)} of {report.min_regions} required: {spanned}")
    for did in report.signers:
        click.echo(f"  {did}: {registry.regions().get(did) or '(no region)'}")


def _propose(
    federation_id: str, peers: tuple[str, ...], key_file: str, change: Any, memo: str
) -> None:
    """Fetch the registry from the first peer, apply ``change`` to it, sign the
    ``federation.registry.set`` proposal with KEY_FILE and submit it to every peer."""
    import base64
    import os
    import time

    from remembrancer.core.record import sign_envelope, unsigned_envelope
    from remembrancer.federation.registry.model import Registry
    from remembrancer.node.keyfile import read_key_file

    key = read_key_file(key_file)
    doc = api_json("GET", f"{peers[0].rstrip('/')}/v1/federation/registry")
    current = Registry.from_dict(doc, source=f"{peers[0]}/v1/federation/registry")
    if current.federation_id != federation_id:
        raise FormatError(f"{peers[0]} is in federation {current.federation_id}, not {federation_id}",
                          code="federation_id_mismatch")  # fmt: skip
    proposed = change(current)
    env = unsigned_envelope(
        namespace=f"fed:{federation_id}",
        schema="federation.registry.set@1.0.0",
        payload=proposed.registry_record_payload(memo=memo[:280]),
        actor=key.did,
        event_id=f"registry-{int(time.time())}-{os.urandom(6).hex()}",
        timestamp=int(time.time()),
        nonce=base64.urlsafe_b64encode(os.urandom(12)).decode().rstrip("="),
    )
    record = sign_envelope(env, key)
    failures = 0
    for peer in peers:
        url = f"{peer.rstrip('/')}/v1/federation/proposals"
        try:
            status, _, data = http("POST", url, record.leaf)
        except RemembrancerError as e:
            click.echo(f"  {peer}: {e.message}", err=True)
            failures += 1
            continue
        if status >= 400:
            failures += 1
            click.echo(f"  {peer}: refused (HTTP {status}): {data[:300].decode('utf-8', 'replace')}",
                       err=True)  # fmt: skip
        else:
            view = loads_strict(data, max_bytes=len(data) + 1)
            click.echo(
                f"  {peer}: {view['state']}, {view['approval_count']} of quorum {view['quorum']}"
            )
    click.echo(f"proposal {record.event_id} ({record.event_hash_hex})")
    click.echo("to apply it, the operators of a quorum of active peers run:")
    click.echo(f"  remembrancer federation approve {record.event_id} --url THEIR_NODE_URL "
               "--token-file keys/admin.token")  # fmt: skip
    if failures == len(peers):
        raise RemembrancerError("no peer accepted the proposal", code="proposal_refused")


@federation.command("join")
@click.option("--federation", "federation_id", required=True, help="The federation's id.")
@click.option(
    "--node", "node_did", required=True, help="The DID this node will use in the registry."
)
@click.option(
    "--key",
    "key_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="This node's key file (signs the proposal; its did:key becomes the pubkey).",
)
@click.option(
    "--endpoint", default=None, help="This node's URL as peers will reach it (default: --url)."
)
@click.option(
    "--url", default=None, help="This node's URL; when given, checked to serve KEY's did:key."
)
@click.option(
    "--peer",
    "peers",
    multiple=True,
    required=True,
    help="A member's URL (repeatable); the registry is fetched from the first.",
)
@errors_as_one_line
def join(federation_id: str, node_did: str, key_file: str, endpoint: str | None, url: str | None,
         peers: tuple[str, ...]) -> None:  # fmt: skip
    """Propose adding this node (active, all roles) to the federation's registry."""
    from remembrancer.federation.registry.model import ROLES, Peer
    from remembrancer.node.keyfile import read_key_file

    key = read_key_file(key_file)
    if url is not None:
        info = api_json("GET", f"{url.rstrip('/')}/v1/node")
        if info.get("did") != key.did:
            raise FormatError(f"{url} serves node key {info.get('did')}, not {key.did}",
                              code="node_key_mismatch")  # fmt: skip
    endpoint = endpoint or url
    if not endpoint:
        raise FormatError("give --endpoint (or --url)", code="usage")
    me = Peer(node_did, endpoint.rstrip("/"), key.public, "active", frozenset(ROLES))

    def add(current: Any) -> Any:
        if current.peer_by_key(key.public) is not None or current.get(node_did) is not None:
            raise FormatError(f"{node_did} (or its key) is already in the registry",
                              code="peer_already_member")  # fmt: skip
        return current.with_peer(me)

    _propose(federation_id, peers, key_file, add, f"join {node_did}")


@federation.command("leave")
@click.option("--federation", "federation_id", required=True, help="The federation's id.")
@click.option("--node", "node_did", required=True, help="The DID of the peer that leaves.")
@click.option(
    "--key",
    "key_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="The key that signs the proposal (as its actor).",
)
@click.option(
    "--quorum",
    type=click.IntRange(1),
    default=None,
    help="The quorum after the change (default: unchanged, capped at the active peers left).",
)
@click.option(
    "--peer",
    "peers",
    multiple=True,
    required=True,
    help="A member's URL (repeatable); the registry is fetched from the first.",
)
@errors_as_one_line
def leave(federation_id: str, node_did: str, key_file: str, quorum: int | None,
          peers: tuple[str, ...]) -> None:  # fmt: skip
    """Propose removing a peer from the federation's registry."""
    from dataclasses import replace

    def remove(current: Any) -> Any:
        out = current.without_peer(node_did)
        active = len(out.active_peers())
        return replace(
            out, quorum=quorum if quorum is not None else max(1, min(out.quorum, active))
        )

    _propose(federation_id, peers, key_file, remove, f"leave {node_did}")


@federation.command("approve")
@click.argument("proposal_id")
@click.option("--url", required=True, help="Your node's URL.")
@click.option("--token", envvar="REMEMBRANCER_ADMIN_TOKEN", default=None)
@click.option("--token-file", type=click.Path(dir_okay=False), default=None)
@errors_as_one_line
def approve(proposal_id: str, url: str, token: str | None, token_file: str | None) -> None:
    """Approve a pending registry change with your node's key; it is forwarded to every peer."""
    from urllib.parse import quote

    token = admin_token(token, token_file)
    url = f"{url.rstrip('/')}/v1/admin/federation/proposals/{quote(proposal_id, safe='')}/approve"
    echo_json(admin_post(url, token))


@federation.command("drop")
@click.argument("proposal_id")
@click.option("--url", required=True, help="Your node's URL.")
@click.option("--token", envvar="REMEMBRANCER_ADMIN_TOKEN", default=None)
@click.option("--token-file", type=click.Path(dir_okay=False), default=None)
@errors_as_one_line
def drop(proposal_id: str, url: str, token: str | None, token_file: str | None) -> None:
    """Drop a pending registry change on your node: it frees its slot, and the
    same proposal is refused there if it is submitted again."""
    from urllib.parse import quote

    token = admin_token(token, token_file)
    url = f"{url.rstrip('/')}/v1/admin/federation/proposals/{quote(proposal_id, safe='')}/drop"
    echo_json(admin_post(url, token))


COMMANDS = [federation]
