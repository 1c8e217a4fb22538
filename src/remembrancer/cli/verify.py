"""``remembrancer verify``: check a record (or any log entry) against its proof,
offline, or against the tiles of any tlog-tiles log."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

import click
from pydantic import Field, StrictStr, ValidationError

from remembrancer.cli.common import echo_json, errors_as_one_line, read_input
from remembrancer.configfile import NullIsEmptyList, Settings, config_error, parse_yaml
from remembrancer.core.admission import check_actor_signature
from remembrancer.core.checkpoint import Checkpoint
from remembrancer.core.cosignature import parse_cosigner_vkey
from remembrancer.core.errors import FormatError, VerificationError
from remembrancer.core.jcs import canonicalize, loads_strict
from remembrancer.core.note import Note, Verifier, parse_vkey
from remembrancer.core.record import Record
from remembrancer.core.rfc6962 import hash_leaf, inclusion_proof
from remembrancer.core.tlogproof import TlogProof, verify_tlog_proof


def proof_from_receipt(receipt: Any) -> TlogProof:
    """A tlog-proof holding the same facts as a JSON receipt (DESIGN.md 3.7)."""
    if not isinstance(receipt, dict):
        raise FormatError("a receipt is a JSON object", code="receipt_malformed")
    try:
        index = receipt["index"]
        hashes = [base64.b64decode(h, validate=True) for h in receipt["proof"]]
        note = receipt["checkpoint"].encode("utf-8")
    except (KeyError, TypeError, AttributeError, binascii.Error, UnicodeError) as e:
        raise FormatError(
            f"the receipt lacks or garbles a field: {e}", code="receipt_malformed"
        ) from e
    if type(index) is not int:
        raise FormatError("receipt index must be an integer", code="receipt_malformed")
    return TlogProof(index, tuple(hashes), note)


def record_leaf(data: bytes) -> bytes:
    """The record's leaf bytes from what a user has at hand: the record itself
    (its canonical JSON, as ``record --out`` writes it) or the JSON a node
    serves for an entry (``GET /v1/namespaces/NS/records/INDEX`` or
    ``.../events/HASH``: ``{"namespace", "index", "leafHash", "eventHash",
    "record"}``), whose ``record`` is re-encoded canonically and checked
    against its ``leafHash``."""
    try:
        doc = loads_strict(data)
    except FormatError:
        return data  # not JSON at all: Record.from_bytes says what is wrong
    if not isinstance(doc, dict) or "vm:version" in doc:
        return data
    if isinstance(doc.get("record"), dict):
        leaf = canonicalize(doc["record"])
        stated = doc.get("leafHash")
        if stated is not None and stated != base64.b64encode(hash_leaf(leaf)).decode():
            raise VerificationError(
                "the entry's record does not hash to the leafHash it comes with",
                code="entry_leaf_mismatch",
            )
        return leaf
    if "entry" in doc:
        raise FormatError(
            "this entry of the log is not a record (the node serves it as base64 `entry`)",
            code="entry_not_a_record",
        )
    raise FormatError(
        "not a record: give the record's JSON (as `remembrancer record --out` writes it) or"
        " the JSON of GET /v1/namespaces/NS/records/INDEX",
        code="record_malformed",
    )


class TrustPolicy(Settings):
    """A ``--trust`` file (JSON or YAML): the keys a verification trusts."""

    log_vkeys: Annotated[tuple[StrictStr, ...], NullIsEmptyList, Field(strict=False)] = ()
    witness_vkeys: Annotated[tuple[StrictStr, ...], NullIsEmptyList, Field(strict=False)] = ()
    min_cosigners: Annotated[int, Field(ge=0, le=1024)] = 0


def load_trust(path: str | None, vkeys: tuple[str, ...], witness_vkeys: tuple[str, ...],
               min_cosigners: int | None) -> tuple[list[str], list[str], int]:  # fmt: skip
    logs, witnesses, minimum = list(vkeys), list(witness_vkeys), min_cosigners
    if path:
        doc = parse_yaml(read_input(path, what="trust policy"), path)
        try:
            policy = TrustPolicy.model_validate({} if doc is None else doc)
        except ValidationError as e:
            raise config_error(
                e, TrustPolicy, source=path, code=lambda _path, _reason: "trust_policy_invalid"
            ) from None
        logs += policy.log_vkeys
        witnesses += policy.witness_vkeys
        if minimum is None:
            minimum = policy.min_cosigners
    if not logs:
        raise FormatError("give the log's vkey (--vkey) or a trust policy (--trust)", code="usage")
    return logs, witnesses, minimum or 0


@click.command()
@click.argument("record_file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--proof", "proof_file", default=None, help="A c2sp.org/tlog-proof@v1 file.")
@click.option("--receipt", "receipt_file", default=None, help="A JSON receipt from a node.")
@click.option("--tiles", default=None,
              help="Prove it now from this tlog-tiles log's tiles (needs --index).")  # fmt: skip
@click.option("--url", default=None,
              help="Prove it now from a node (with --namespace) or a tlog-tiles prefix (needs --index).")  # fmt: skip
@click.option("--namespace", default=None, help="The log's namespace on the node of --url.")
@click.option("--index", type=click.IntRange(0), default=None,
              help="The entry's index in the log (with --tiles or --url).")  # fmt: skip
@click.option("--timeout", type=click.FloatRange(1, 3600), default=60.0, show_default=True,
              help="Deadline for the fetches of --tiles/--url, in seconds.")  # fmt: skip
@click.option("--raw", is_flag=True,
              help="RECORD_FILE is a log entry's exact bytes (any log), not a Remembrancer record.")  # fmt: skip
@click.option("--vkey", multiple=True, help="A log's note verifier key (repeatable).")
@click.option("--witness-vkey", multiple=True, help="A witness's cosignature/v1 vkey (repeatable).")
@click.option(
    "--min-cosigners", type=int, default=None, help="Distinct witness cosignatures required."
)
@click.option(
    "--trust",
    "trust_file",
    default=None,
    help="Trust policy YAML: log_vkeys, witness_vkeys, min_cosigners.",
)
@click.option("--registry", "registry_file", default=None,
              help="federation.yaml: verify a federation receipt (given as the file) against it.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print what was checked as JSON.")
@errors_as_one_line
def verify(record_file: str, proof_file: str | None, receipt_file: str | None, tiles: str | None,
           url: str | None, namespace: str | None, index: int | None, timeout: float, raw: bool,
           vkey: tuple[str, ...], witness_vkey: tuple[str, ...], min_cosigners: int | None,
           trust_file: str | None, registry_file: str | None, as_json: bool) -> None:  # fmt: skip
    """Verify RECORD_FILE is in a log: its proof, the checkpoint's log signature,
    enough witness cosignatures and the record's actor signature.  RECORD_FILE
    is the record (as `record --out` writes it) or a node's JSON for it (GET
    /v1/namespaces/NS/records/INDEX).  Offline with --proof or --receipt; with
    --tiles PREFIX (or --url) --index I, the proof is computed now from the
    log's tiles (any tlog-tiles log, each tile checked against the checkpoint
    root).  --raw takes the file as the entry's bytes, for logs of anything.
    With --registry, the file is a federation receipt, checked against the
    registry's keys and quorum.  Exit 0 only if valid; 1 if something does not
    verify; 2 for bad input.  The same checks without Python: clients/js
    (remembrancer-verify)."""
    if registry_file is not None:
        from remembrancer.cli.federation import verify_federation_receipt_file

        verify_federation_receipt_file(record_file, registry_file)
        return
    online = tiles is not None or url is not None
    if [proof_file is not None, receipt_file is not None, online].count(True) != 1:
        raise FormatError("give exactly one of --proof, --receipt and --tiles/--url", code="usage")
    if online != (index is not None):
        raise FormatError("--index goes with --tiles or --url, and they need it", code="usage")
    data = read_input(record_file, what="record")
    record = None if raw else Record.from_bytes(record_leaf(data))
    leaf = data if record is None else record.leaf
    logs, witnesses, minimum = load_trust(trust_file, vkey, witness_vkey, min_cosigners)
    verifiers = [parse_vkey(v) for v in logs]
    cosigners = [parse_cosigner_vkey(v) for v in witnesses]
    if proof_file is not None:
        proof = TlogProof.parse(read_input(proof_file, what="proof"))
    elif receipt_file is not None:
        receipt = loads_strict(read_input(receipt_file, what="receipt"))
        proof = proof_from_receipt(receipt)
        if record is None or receipt.get("eventHash") != record.event_hash_hex:
            raise VerificationError(
                f"the receipt is for {receipt.get('eventHash')}, the record is "
                f"{record.event_hash_hex if record else 'a raw entry'}",
                code="receipt_record_mismatch",
            )
    else:
        assert index is not None
        from remembrancer.cli.tiledlog import log_prefix

        proof = _prove_from_tiles(log_prefix(url, namespace, tiles), timeout, index, verifiers)
    origin = Checkpoint.parse(Note.from_bytes(proof.checkpoint_note).text).origin
    log_verifier = _log_verifier(verifiers, origin)
    result = verify_tlog_proof(proof, leaf, log_verifier, cosigners, minimum)
    checked = ["entry" if record is None else "record canonical form", "RFC 6962 inclusion",
               "checkpoint log signature",
               f"{len(result.cosigners)} witness cosignatures (needed {minimum})"]  # fmt: skip
    if record is not None:
        check_actor_signature(record)
        checked.append("actor signature")
    if online:
        checked.insert(2, "tiles against the checkpoint root")
    report: dict[str, Any] = {
        "valid": True,
        "origin": origin,
        "index": result.index,
        "treeSize": result.checkpoint.size,
        "leafHash": "sha256:" + result.leaf_hash.hex(),
        "cosigners": len(result.cosigners),
        "checked": checked,
    }
    if record is not None:
        report |= {"eventHash": record.event_hash_hex, "namespace": record.namespace}
    if as_json:
        echo_json(report)
    else:
        name = f"entry sha256:{result.leaf_hash.hex()}" if record is None else record.event_hash_hex
        click.echo(
            f"OK: {name} is entry {result.index} of {origin} at size"
            f" {result.checkpoint.size}, signed by the log, {len(result.cosigners)} cosigners"
        )


def _log_verifier(verifiers: list[Verifier], origin: str) -> Verifier:
    found = next((v for v in verifiers if v.name == origin), None)
    if found is None:
        raise VerificationError(f"no trusted log key for origin {origin!r}", code="log_key_unknown")
    return found


def _prove_from_tiles(
    prefix: str, timeout: float, index: int, verifiers: list[Verifier]
) -> TlogProof:
    """The tlog-proof of entry ``index`` at the log's latest checkpoint, from its tiles
    (the checkpoint's signature is checked before any tile is fetched)."""
    from remembrancer.cli.tiledlog import TiledLog, open_head

    with TiledLog(prefix, timeout=timeout) as log:
        note = log.checkpoint()
        origin = Checkpoint.parse(Note.from_bytes(note).text).origin
        head = open_head(note, log, _log_verifier(verifiers, origin))
        size = head.checkpoint.size
        if index >= size:
            raise VerificationError(f"the log has {size} entries, no entry {index}",
                                    code="index_out_of_range")  # fmt: skip
        return TlogProof(index, tuple(inclusion_proof(index, size, head.reader)), note)


COMMANDS = [verify]
