"""Admission, rule by rule (DESIGN.md 3.5): every refusal has its own code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from remembrancer.core.admission import (
    check_policy,
    check_replay,
    check_signatures,
    lookup_namespace,
)
from remembrancer.core.encoding import b64url_encode
from remembrancer.core.errors import FormatError, PolicyError, RemembrancerError, VerificationError
from remembrancer.core.keys import SigningKey
from remembrancer.core.namespace import parse_namespaces
from remembrancer.core.record import Record
from remembrancer.core.tiles import MAX_ENTRY_SIZE
from remembrancer.demo.keys import demo_key
from remembrancer.demo.records import ledger_payload, make_record
from remembrancer.log.schemas import bundled_schemas

EXAMPLES = Path(__file__).resolve().parents[2] / "src" / "remembrancer" / "examples"
NOW = 1_764_100_000
SCHEMAS = bundled_schemas()
NAMESPACES = parse_namespaces(
    yaml.safe_load((EXAMPLES / "namespaces.yaml").read_text()),
    source="namespaces.yaml",
    known_schemas=frozenset(SCHEMAS.names()),
)
DAO = NAMESPACES["dao:vaultmesh"]
ACTOR = demo_key("did:vm:actor:demo")
W1 = demo_key("did:vm:arbiter:prod-us-east-1")
W2 = demo_key("did:vm:arbiter:prod-eu-west-1")
W3 = demo_key("did:vm:arbiter:prod-dao-suite")


def good(**kw: object) -> Record:
    args: dict = {"timestamp": NOW}
    args.update(kw)
    witnesses = args.pop("witnesses", (W1, W2))
    return make_record(
        "dao:vaultmesh", "ledger.append@1.0.0", ledger_payload(1), ACTOR, witnesses, **args
    )


def admit(record: Record) -> None:
    ns = lookup_namespace(record, NAMESPACES)
    check_policy(record, ns, NOW, SCHEMAS)
    check_signatures(record, ns)


def test_a_good_record_is_admitted() -> None:
    rec = good()
    admit(rec)
    report = check_signatures(rec, DAO)
    assert set(report.counted) == {W1.did, W2.did}
    assert rec.event_hash.hex() == __import__("hashlib").sha256(rec.signing_input).hexdigest()
    assert b'"signatures"' in rec.leaf and b'"signatures"' not in rec.signing_input


def _mutate(rec: Record, **changes: object) -> bytes:
    env = rec.envelope()
    for k, v in changes.items():
        if v is ...:
            env.pop(k, None)
        else:
            env[k] = v
    return json.dumps(env).encode()


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"not json", "json_malformed"),
        (b"[]", "record_malformed"),
        (b'{"a":1,"a":1}', "json_duplicate_key"),
        (None, "record_missing_field"),
        (None, "record_unknown_field"),
        (None, "record_field_type"),
        (None, "event_type_mismatch"),
        (None, "record_too_large"),
        (None, "signature_alg_unsupported"),
    ],
)
def test_malformed_records(data: bytes | None, code: str) -> None:
    rec = good()
    if data is None:
        env = rec.envelope()
        if code == "record_missing_field":
            del env["nonce"]
        elif code == "record_unknown_field":
            env["extra"] = 1
        elif code == "record_field_type":
            env["timestamp"] = "yesterday"
        elif code == "event_type_mismatch":
            env["event:type"] = "vote.cast"
        elif code == "record_too_large":
            env["payload"]["data"] = "x" * (MAX_ENTRY_SIZE + 1)
        elif code == "signature_alg_unsupported":
            env["signatures"][0]["alg"] = "RS256"
        data = json.dumps(env).encode()
    with pytest.raises(FormatError) as e:
        Record.from_bytes(data)
    assert e.value.code == code


def test_wrong_types_everywhere() -> None:
    rec = good()
    for field, bad in [
        ("event:id", ""), ("event:id", "x" * 129), ("namespace", "DAO:Vault"), ("actor", "did:web:x"),
        ("nonce", "short"), ("prev", "sha256:XYZ"), ("payload", []), ("signatures", []),
        ("vm:version", "2.0"), ("timestamp", True), ("timestamp", -1), ("schema", "ledger.append"),
    ]:  # fmt: skip
        with pytest.raises(FormatError) as e:
            Record.from_bytes(_mutate(rec, **{field: bad}))
        assert e.value.code in ("record_field_type", "event_type_mismatch"), field


def test_each_fault_of_a_signature_entry_is_named_with_its_position() -> None:
    """Signatures are taken in one pass when every entry is well formed; any
    fault sends the list to the checks that name it, with its position, both
    in the first entry and in a later one."""
    rec = good()
    sig = rec.envelope()["signatures"][1]["sig"]
    faults: list[tuple[object, str, str]] = [
        ("not an object", "record_field_type", "must have exactly alg, kid, role and sig"),
        ({"alg": "Ed25519", "kid": W1.did, "role": "witness"}, "record_field_type", "exactly"),
        ({"alg": "RS256", "kid": W1.did, "role": "witness", "sig": sig},
         "signature_alg_unsupported", "alg must be Ed25519"),
        ({"alg": "Ed25519", "kid": "did:web:x", "role": "witness", "sig": sig},
         "record_field_type", "kid must be an Ed25519 did:key"),
        ({"alg": "Ed25519", "kid": [W1.did], "role": "witness", "sig": sig},
         "record_field_type", "kid must be an Ed25519 did:key"),
        ({"alg": "Ed25519", "kid": W1.did, "role": "boss", "sig": sig},
         "record_field_type", "role must be"),
        ({"alg": "Ed25519", "kid": W1.did, "role": "witness", "sig": sig + "=="},
         "record_field_type", "not unpadded base64url"),
        ({"alg": "Ed25519", "kid": W1.did, "role": "witness", "sig": sig[:-1] + "B"},
         "record_field_type", "not canonical base64url"),
        ({"alg": "Ed25519", "kid": W1.did, "role": "witness", "sig": b64url_encode(b"x" * 63)},
         "record_field_type", "must be a 64-byte Ed25519 signature"),
        ({"alg": "Ed25519", "kid": W1.did, "role": "witness", "sig": 7},
         "record_field_type", "not unpadded base64url"),
    ]  # fmt: skip
    for at in (0, 2):
        for entry, code, words in faults:
            env = rec.envelope()
            env["signatures"][at] = entry
            with pytest.raises(FormatError) as e:
                Record.from_bytes(json.dumps(env).encode())
            assert e.value.code == code and words in e.value.message, (at, entry, e.value)
            assert f"signatures[{at}]" in e.value.message, e.value.message
    for bad in ({}, "x", [None] * 65):
        with pytest.raises(FormatError) as e:
            Record.from_bytes(_mutate(rec, signatures=bad))
        assert e.value.code == "record_field_type" and "signatures must be" in e.value.message


def test_a_trailing_newline_does_not_pass_the_field_patterns() -> None:
    """Regression: the patterns ended in ``$``, which also matches before a
    final newline, so ``"dao:vaultmesh\\n"`` passed as a namespace (and the
    JavaScript verifier, whose ``$`` does not, disagreed)."""
    rec = good()
    env = json.loads(rec.leaf)
    for field in ("namespace", "schema", "actor", "nonce", "prev", "payload:hash"):
        value = env.get(field) or "sha256:" + "0" * 64
        with pytest.raises(FormatError) as e:
            Record.from_bytes(_mutate(rec, **{field: value + "\n"}))
        assert e.value.code == "record_field_type", field


def test_unknown_namespace() -> None:
    rec = make_record(
        "dao:other", "ledger.append@1.0.0", ledger_payload(1), ACTOR, (W1, W2), timestamp=NOW
    )
    with pytest.raises(PolicyError) as e:
        admit(rec)
    assert e.value.code == "namespace_unknown"


def test_namespace_comes_from_the_field_not_the_subject() -> None:
    rec = good(subject="urn:fin:clearing:thing")
    assert lookup_namespace(rec, NAMESPACES).name == "dao:vaultmesh"


@pytest.mark.parametrize("offset", [-301, 301, 10_000])
def test_clock_drift(offset: int) -> None:
    with pytest.raises(PolicyError) as e:
        admit(good(timestamp=NOW + offset))
    assert e.value.code == "timestamp_out_of_window"


def test_drift_edge_is_inside() -> None:
    admit(good(timestamp=NOW + 300))
    admit(good(timestamp=NOW - 300))


def test_schema_not_allowed() -> None:
    rec = make_record(
        "dao:vaultmesh",
        "oracle.publish@1.0.0",
        {"feed": "f", "value": 1, "observedAt": 1},
        ACTOR,
        (W1, W2),
        timestamp=NOW,
    )
    with pytest.raises(PolicyError) as e:
        admit(rec)
    assert e.value.code == "schema_not_allowed"


def test_patch_wildcard_allows_any_patch_but_unknown_versions_are_refused() -> None:
    rec = make_record(
        "dao:vaultmesh", "ledger.append@1.0.7", ledger_payload(1), ACTOR, (W1, W2), timestamp=NOW
    )
    with pytest.raises(PolicyError) as e:
        admit(rec)
    assert e.value.code == "schema_unknown"  # allowed by 1.0.x, but no such bundled schema
    rec = make_record(
        "dao:vaultmesh", "ledger.append@1.1.0", ledger_payload(1), ACTOR, (W1, W2), timestamp=NOW
    )
    with pytest.raises(PolicyError) as e:
        admit(rec)
    assert e.value.code == "schema_not_allowed"


def test_payload_invalid() -> None:
    rec = make_record(
        "dao:vaultmesh", "ledger.append@1.0.0", {"stream": "s"}, ACTOR, (W1, W2), timestamp=NOW
    )
    with pytest.raises(FormatError) as e:
        admit(rec)
    assert e.value.code == "payload_invalid"
    assert e.value.details["errors"]


def test_bad_actor_signature() -> None:
    rec = good()
    env = rec.envelope()
    sig = bytearray(rec.signatures[0].sig)
    sig[0] ^= 1
    env["signatures"][0]["sig"] = b64url_encode(bytes(sig))
    with pytest.raises(VerificationError) as e:
        admit(Record.from_value(env))
    assert e.value.code == "actor_signature_invalid"


def test_missing_actor_signature() -> None:
    env = good().envelope()
    env["signatures"] = env["signatures"][1:]
    with pytest.raises(VerificationError) as e:
        admit(Record.from_value(env))
    assert e.value.code == "actor_signature_missing"


def test_payload_tampered_after_signing() -> None:
    env = good().envelope()
    env["payload"]["stream"] = "other"
    with pytest.raises(VerificationError) as e:
        admit(Record.from_value(env))
    assert e.value.code == "actor_signature_invalid"


def test_duplicate_witnesses_count_once() -> None:
    with pytest.raises(VerificationError) as e:
        admit(good(witnesses=(W1, W1)))
    assert e.value.code == "witness_quorum_not_met"
    assert {"kid": W1.did, "reason": "duplicate"} in e.value.details["ignored"]


def test_unknown_witnesses_do_not_count() -> None:
    stranger = SigningKey.generate()
    with pytest.raises(VerificationError) as e:
        admit(good(witnesses=(W1, stranger)))
    assert e.value.code == "witness_quorum_not_met"
    assert {"kid": stranger.did, "reason": "not_allowlisted"} in e.value.details["ignored"]


def test_the_actor_does_not_count_as_witness() -> None:
    # Even when the actor is itself an allowlisted witness key.
    rec = make_record(
        "dao:vaultmesh", "ledger.append@1.0.0", ledger_payload(1), W1, (W1, W2), timestamp=NOW
    )
    with pytest.raises(VerificationError) as e:
        admit(rec)
    assert e.value.code == "witness_quorum_not_met"
    assert {"kid": W1.did, "reason": "actor"} in e.value.details["ignored"]


def test_invalid_witness_signature_does_not_count() -> None:
    rec = good(witnesses=(W1, W2, W3))
    env = rec.envelope()
    env["signatures"][1]["sig"] = b64url_encode(bytes(64))
    env["signatures"][2]["sig"] = b64url_encode(bytes(64))
    with pytest.raises(VerificationError) as e:
        admit(Record.from_value(env))
    assert e.value.code == "witness_quorum_not_met"
    # With one bad of three, quorum 2 still holds.
    env = rec.envelope()
    env["signatures"][1]["sig"] = b64url_encode(bytes(64))
    admit(Record.from_value(env))


def test_replay_rules() -> None:
    rec = good()
    assert check_replay(rec, None, None) is False
    assert check_replay(rec, rec.leaf, None) is True
    assert check_replay(rec, None, rec.leaf) is True
    other = good(event_id=rec.event_id)
    with pytest.raises(PolicyError) as e:
        check_replay(other, rec.leaf, None)
    assert e.value.code == "event_id_conflict"
    with pytest.raises(PolicyError) as e:
        check_replay(other, None, rec.leaf)
    assert e.value.code == "nonce_replayed"


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_random_bytes_raise_only_format_errors(data: bytes) -> None:
    try:
        Record.from_bytes(data)
    except FormatError:
        pass


RECORD_BYTES = good().leaf


def _admitted(data: bytes) -> Record | None:
    """The record if admission (rules 1 to 6) takes ``data``; None if it is refused
    with a typed error (anything else fails the test)."""
    try:
        rec = Record.from_bytes(data)
        admit(rec)
    except RemembrancerError:
        return None
    return rec


def _mutant(pos: int, byte: int) -> bytes:
    data = bytearray(RECORD_BYTES)
    data[pos] = byte
    return bytes(data)


# Mutations that keep the record well-formed, so that only the signature
# checks can refuse them: a letter of the payload, a digit of the timestamp.
_MEMO = RECORD_BYTES.index(b'"memo":"') + 8
_TIMESTAMP = RECORD_BYTES.index(b'"timestamp":') + 12


@settings(max_examples=300)
@example(pos=_MEMO, byte=ord("y"))
@example(pos=_TIMESTAMP + 8, byte=RECORD_BYTES[_TIMESTAMP + 8] ^ 1)
@given(st.integers(0, len(RECORD_BYTES) - 1), st.integers(0, 255))
def test_a_mutated_record_is_refused_unless_byte_equivalent(pos: int, byte: int) -> None:
    """One byte changed: admission raises only typed errors, and admits the
    result only if it is the same record (its canonical bytes unchanged)."""
    rec = _admitted(_mutant(pos, byte))
    assert rec is None or rec.leaf == RECORD_BYTES, (
        f"byte {pos} set to {byte:#04x} was admitted: {rec.leaf[max(0, pos - 40) : pos + 40]!r}"
    )


def test_every_single_byte_mutation_that_parses_is_refused() -> None:
    """Each byte of the record changed to its neighbours in the same character
    class (so that many mutants stay well-formed and reach the signature
    checks): every mutant that is not the same record is refused."""
    parsed = refused_by_signatures = 0
    for pos, old in enumerate(RECORD_BYTES):
        for byte in {old ^ 1, old ^ 2, old ^ 0x20} - {old}:
            if not 0x20 <= byte < 0x7F or byte in b'"\\':
                continue
            data = _mutant(pos, byte)
            try:
                rec = Record.from_bytes(data)
            except FormatError:
                continue
            parsed += 1
            if rec.leaf == RECORD_BYTES:
                continue
            with pytest.raises(RemembrancerError) as e:
                admit(rec)
            refused_by_signatures += isinstance(e.value, VerificationError)
    # The mutants reached the signature checks, and those refused them.
    assert parsed > 1500, parsed
    assert refused_by_signatures > 1200, refused_by_signatures


@pytest.mark.parametrize(
    ("number", "code"),
    [
        (b"NaN", "json_number_invalid"),
        (b"Infinity", "json_number_invalid"),
        (b"-Infinity", "json_number_invalid"),
        (b"1e999", "json_number_invalid"),
        (b"9007199254740993", "json_number_invalid"),
        (b'"\\udfff"', "json_string_invalid"),
    ],
)
@pytest.mark.parametrize("canonical", [True, False])
def test_a_record_with_a_value_rfc8785_cannot_represent_is_refused(
    number: bytes, code: str, canonical: bool
) -> None:
    """Regression: the canonical fast path parsed ``NaN`` (json.loads without
    parse_constant) and re-encoded it as ``NaN``, so a record whose payload
    held NaN was admitted, its API view showed null, and the eventHash
    recomputed from the API differed from the signed one."""
    from remembrancer.core.jcs import canonicalize

    env = good().envelope()
    env["payload"]["amount"] = "PLACEHOLDER"
    data = canonicalize(env) if canonical else json.dumps(env, indent=1).encode()
    data = data.replace(b'"PLACEHOLDER"', number)
    with pytest.raises(FormatError) as e:
        Record.from_bytes(data)
    assert e.value.code == code


_TRICKY = st.sampled_from(['","signatures":[', ',"signatures":[{"alg":"Ed25519"}]', "}]", '"', "\\",
                           ',"timestamp":1,"vm:version":"1.0"}', "é", "\u2028", "x"])  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["signatures", "memo", "a", "zz", "timestamp"]),
                    st.one_of(_TRICKY, st.integers(-5, 5), st.lists(_TRICKY, max_size=3)),
                    max_size=4),
    st.one_of(st.none(), _TRICKY.filter(str.isprintable).map(lambda t: "urn:x:" + t)),
    st.integers(1, 3),
)  # fmt: skip
def test_the_signing_input_cut_from_a_canonical_leaf_is_the_encoded_one(
    payload: dict[str, object], subject: str | None, witnesses: int
) -> None:
    """Record.from_bytes cuts the signing input out of a canonical leaf instead
    of encoding the envelope again; whatever the payload and subject hold
    (even a "signatures" member with the same text), it is the encoding."""
    from remembrancer.core.jcs import canonical_members, join_members
    from remembrancer.core.record import sign_envelope, unsigned_envelope

    env = unsigned_envelope(namespace="dao:vaultmesh", schema="note.add@1.0.0", payload=payload,
                            actor=ACTOR.did, event_id="evt-1", timestamp=NOW, nonce="n0nce-123",
                            subject=subject)  # fmt: skip
    signed = sign_envelope(env, ACTOR, [W1, W2, W3][:witnesses])
    if subject is None:
        payload.setdefault("signatures", signed.envelope()["signatures"])  # the same text again
        signed = sign_envelope(
            unsigned_envelope(**{**_args(env), "payload": payload}), ACTOR, [W1, W2][:witnesses]
        )
    parsed = Record.from_bytes(signed.leaf)
    envelope = json.loads(signed.leaf)
    expected = join_members(canonical_members(envelope), exclude="signatures")
    assert parsed.leaf == signed.leaf
    assert parsed.signing_input == expected == signed.signing_input
    assert parsed.event_hash == signed.event_hash


def _args(env: dict[str, object]) -> dict[str, object]:
    names = {"vm:version": None, "event:type": None, "event:id": "event_id"}
    return {names.get(k, k): v for k, v in env.items() if names.get(k, k)}


_KIDS = [ACTOR.did, W1.did, W2.did, W3.did, SigningKey(b"\x09" * 32).did]


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(_KIDS), st.sampled_from(["actor", "witness"]),
                       st.binary(min_size=64, max_size=64)), min_size=1, max_size=6),
    st.lists(st.booleans(), min_size=6, max_size=6),
)  # fmt: skip
def test_check_signatures_verifies_only_its_jobs(
    entries: list[tuple[str, str, bytes]], verdicts: list[bool]
) -> None:
    """check_signatures asks ``verify`` only for pairs signature_jobs lists, whatever
    the signatures and whatever the verdicts: the sequencer relies on it when it
    answers "verified" for a record whose every job verified in a worker."""
    from remembrancer.core.admission import signature_jobs

    env = good().envelope()
    env["signatures"] = [{"alg": "Ed25519", "kid": k, "role": r, "sig": b64url_encode(s)}
                         for k, r, s in entries]  # fmt: skip
    record = Record.from_value(env)
    jobs = set(signature_jobs(record, DAO))
    asked: list[tuple[str, bytes]] = []

    def verify(kid: str, sig: bytes) -> bool:
        asked.append((kid, sig))
        return verdicts[len(asked) - 1]

    try:
        check_signatures(record, DAO, verify=verify)
    except RemembrancerError:
        pass
    assert set(asked) <= jobs, (asked, jobs)
