"""``remembrancer anchor now|status|verify``."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import click

from remembrancer.cli.client import admin_post, admin_token, api_json
from remembrancer.cli.common import EXIT_UNCHECKED, echo_json, errors_as_one_line, read_input
from remembrancer.core.anchor import Anchor, AnchorReceipt
from remembrancer.core.errors import (
    AnchoringError,
    ConfigError,
    FormatError,
    RemembrancerError,
    VerificationError,
)
from remembrancer.core.jcs import loads_strict


@click.group()
def anchor() -> None:
    """Anchor logs to outside timestamp targets, and check anchors."""


@anchor.command("now")
@click.argument("namespace")
@click.option(
    "--level",
    type=click.Choice(["fast", "strong", "cold"]),
    default=None,
    help="One level (default: all).",
)
@click.option("--url", required=True, help="Node base URL.")
@click.option("--token", envvar="REMEMBRANCER_ADMIN_TOKEN", default=None,
              help="Admin token (or env REMEMBRANCER_ADMIN_TOKEN, or --token-file).")  # fmt: skip
@click.option("--token-file", type=click.Path(dir_okay=False), default=None)
@errors_as_one_line
def anchor_now(
    namespace: str, level: str | None, url: str, token: str | None, token_file: str | None
) -> None:
    """Anchor NAMESPACE's latest checkpoint now (an unchanged log is not re-anchored).

    Prints each level's outcome; exits 0 when no level failed, 3 when a level's
    rail failed (its error is in the printed `anchoring` health), 2 when no
    requested level has a rail configured on the node."""
    token = admin_token(token, token_file)
    query = f"?level={level}" if level else ""
    answer = admin_post(f"{url.rstrip('/')}/v1/admin/anchor/{namespace}{query}", token)
    echo_json(answer)
    results: dict[str, str] = answer.get("results") or {}
    failed = sorted(lv for lv, outcome in results.items() if outcome == "failed")
    if failed:
        levels = answer.get("anchoring", {}).get("levels", {})
        why = "; ".join(
            f"{lv}: {levels.get(lv, {}).get('last_error') or 'failed'}" for lv in failed
        )
        raise AnchoringError(f"{namespace}: anchoring failed at level {', '.join(failed)} ({why})",
                             code="anchor_now_failed")  # fmt: skip
    if results and all(outcome == "not_configured" for outcome in results.values()):
        raise ConfigError(
            f"{namespace}: no rail is configured for {', '.join(sorted(results))} on this node"
            " (add the target under `anchoring:` in node.yaml; see docs/node.md)",
            code="rail_not_configured",
        )


@anchor.command("status")
@click.option("--url", required=True, help="Node base URL.")
@click.option("--json", "as_json", is_flag=True)
@errors_as_one_line
def anchor_status(url: str, as_json: bool) -> None:
    """Anchoring health of every namespace: levels, last anchor, next due, backoff."""
    value = api_json("GET", f"{url.rstrip('/')}/v1/anchoring")
    if as_json:
        echo_json(value)
        return
    now = int(time.time())
    for ns, health in value["namespaces"].items():
        click.echo(f"{ns}: {health['status'].replace('_', ' ')}")
        for level, lv in health["levels"].items():
            if lv.get("state") == "not_configured":
                scheme, _, name = lv["target"].partition(":")
                click.echo(f"  {level:<6} {lv['target']:<16} not configured (no anchoring.{scheme}"
                           f".{name} in the node's configuration)")  # fmt: skip
                continue
            due = lv.get("next_due") or now
            err = f"  last error: {lv['last_error']}" if lv.get("last_error") else ""
            click.echo(f"  {level:<6} {lv['target']:<16} every {lv['every']:<8} size {lv['last_size']:<8} "
                       f"next in {max(0, due - now)} s, failures {lv['failures']}{err}")  # fmt: skip


def _registry(tsa_trust: str | None, evm_rpc: str | None, btc_rpc: str | None, btc_headers: str | None,
              targets: list[str], confirmations: int) -> Any:  # fmt: skip
    from remembrancer.anchoring.base import RailRegistry

    config: dict[str, dict[str, dict[str, Any]]] = {}
    for target in targets:
        scheme, _, name = target.partition(":")
        if scheme == "rfc3161" and tsa_trust:
            config.setdefault(scheme, {})[name] = {"trust_bundle": os.path.abspath(tsa_trust)}
        elif scheme == "eip155" and evm_rpc:
            config.setdefault(scheme, {})[name] = {"rpc": evm_rpc, "confirmations": confirmations}
        elif scheme == "btc" and (btc_rpc or btc_headers):
            settings: dict[str, Any] = {"confirmations": confirmations}
            if btc_rpc:
                settings["bitcoin_rpc"] = btc_rpc
            if btc_headers:
                settings["headers_file"] = os.path.abspath(btc_headers)
            config.setdefault(scheme, {})[name] = settings
    return RailRegistry(config)


_VERIFY_HELP = f"""Re-verify every anchor of an anchor receipt (or of a record receipt with
anchors) with your own trust settings and required depth.

\b
Each anchor gets this machine's own verdict, never the one the receipt
states (its status and requiredDepth are not read):
  verified   the evidence checks out, at least --confirmations deep
  pending    committed but not final here: fewer confirmations, not
             mined yet, or an OpenTimestamps proof with only pending
             calendar attestations
  failed     the evidence is false, or the anchor does not cover the
             receipt's checkpoint (its root is the checkpoint's digest, or
             an aggregation path leads from that digest to the root)
  unchecked  this command lacks what it needs to judge: the trust bundle,
             chain node or Bitcoin headers for the target, or they could
             not be reached

\b
With --target (repeatable), only the anchors of those targets are judged;
the others are listed as skipped.

\b
Exit status:
  0  every anchor judged is verified
  1  an anchor failed (or there is no anchor to judge)
  2  bad input or options
  {EXIT_UNCHECKED}  nothing failed, but some anchor is pending or unchecked
"""


@anchor.command("verify", help=_VERIFY_HELP)
@click.argument("receipt_file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--tsa-trust", default=None, help="PEM trust bundle for rfc3161 anchors (verified offline)."
)
@click.option("--evm-rpc", default=None, help="JSON-RPC URL of an EVM node for eip155 anchors.")
@click.option("--btc-rpc", default=None, help="Bitcoin Core RPC URL for btc anchors.")
@click.option(
    "--btc-headers",
    default=None,
    help="A file of Bitcoin block headers for offline btc verification.",
)
@click.option("--confirmations", type=click.IntRange(min=1), default=1, show_default=True,
              help="Confirmations a chain anchor (eip155, btc) needs to count as verified.")  # fmt: skip
@click.option("--target", "targets", multiple=True, metavar="TARGET",
              help="Judge only the anchors of this target (repeatable), e.g. rfc3161:tsa.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True)
@errors_as_one_line
def anchor_verify(receipt_file: str, tsa_trust: str | None, evm_rpc: str | None, btc_rpc: str | None,
                  btc_headers: str | None, confirmations: int, targets: tuple[str, ...],
                  as_json: bool) -> None:  # fmt: skip
    from remembrancer.anchoring.base import Verdict, VerifyContext
    from remembrancer.core.anchor import checkpoint_digest, covers
    from remembrancer.core.note import Note

    doc = loads_strict(read_input(receipt_file, what="receipt"))
    if isinstance(doc, dict) and doc.get("type") == "remembrancer.anchor-receipt/v1":
        receipt = AnchorReceipt.from_dict(doc)
        anchors, note = list(receipt.anchors), receipt.checkpoint
    elif isinstance(doc, dict) and "anchors" in doc and "checkpoint" in doc:
        anchors = [Anchor.from_dict(a) for a in doc["anchors"]]
        note = str(doc["checkpoint"]).encode()
    else:
        raise FormatError(
            "not an anchor receipt or a record receipt with anchors", code="receipt_malformed"
        )
    if not anchors:
        raise VerificationError("the receipt holds no anchors", code="no_anchors")
    if targets and not any(a.target in targets for a in anchors):
        raise VerificationError(
            f"the receipt holds no anchor of {', '.join(targets)}", code="no_anchors"
        )
    digest = checkpoint_digest(Note.from_bytes(note).text.encode())
    registry = _registry(tsa_trust, evm_rpc, btc_rpc, btc_headers, [a.target for a in anchors],
                         confirmations)  # fmt: skip
    now = int(time.time())
    results = []
    for a in anchors:
        row: dict[str, Any] = {"target": a.target, "txRef": a.tx_ref}
        if targets and a.target not in targets:
            results.append({**row, "status": "skipped", "code": None, "reason": None})
            continue
        if not covers(a, digest):
            reason = ("the aggregation path does not lead from this checkpoint's digest to the anchored root"
                      if a.aggregation else "the anchored root is not this checkpoint's digest")  # fmt: skip
            results.append({**row, "status": "failed", "code": "anchor_root_mismatch",
                            "reason": reason})  # fmt: skip
            continue
        try:
            verdict: Verdict = registry.get(a.target).verify(a, VerifyContext(now))
        except RemembrancerError as e:  # no rail for the target: nothing to judge with
            results.append({**row, "status": "unchecked", "code": e.code, "reason": e.message})
            continue
        results.append({**row, "status": verdict.outcome, "code": verdict.code,
                        "reason": None if verdict.verified else verdict.message,
                        "observedDepth": verdict.observed_depth,
                        "requiredDepth": verdict.required_depth, "verifier": verdict.verifier})  # fmt: skip
    outcomes = {r["status"] for r in results} - {"skipped"}
    valid = outcomes == {"verified"}
    if as_json:
        echo_json({"valid": valid, "anchors": results})
    else:
        for r in results:
            extra = f" ({r['code']}: {r['reason']})" if r.get("reason") else ""
            click.echo(f"{r['status']:<10} {r['target']:<16} {r['txRef']}{extra}")
    if "failed" in outcomes:
        raise VerificationError("an anchor in the receipt does not verify", code="anchor_failed")
    if not valid:
        click.echo(
            "error: anchors_unchecked: not every anchor could be verified here "
            "(pending or unchecked)",
            err=True,
        )
        sys.exit(EXIT_UNCHECKED)


COMMANDS = [anchor]
