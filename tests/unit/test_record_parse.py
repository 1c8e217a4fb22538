"""The typed fast path of Record.from_bytes (msgspec structs, byte equality
with the sorted re-encoding) against the plain path (a JSON value checked
member by member): the same record, or the same refusal, for every input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from remembrancer.core import record as record_module
from remembrancer.core.errors import FormatError
from remembrancer.core.jcs import canonicalize, loads_strict
from remembrancer.core.record import Record, sign_envelope, unsigned_envelope
from remembrancer.demo.keys import demo_key
from remembrancer.demo.records import ledger_payload, make_record

ACTOR = demo_key("did:vm:actor:demo")
W1 = demo_key("did:vm:arbiter:prod-us-east-1")
NOW = 1_764_100_000
RECORD = make_record("dao:vaultmesh", "ledger.append@1.0.0", ledger_payload(1), ACTOR, [W1],
                     timestamp=NOW).leaf  # fmt: skip


def _plain(data: bytes) -> Record | str:
    """The record the member-by-member checks make of ``data``, or the code of
    their refusal."""
    try:
        return Record.from_value(loads_strict(data, max_bytes=record_module.MAX_INPUT_BYTES))
    except FormatError as e:
        return e.code


def _parsed(data: bytes) -> Record | str:
    try:
        return Record.from_bytes(data)
    except FormatError as e:
        return e.code


def _same(data: bytes) -> None:
    assert _parsed(data) == _plain(data), data


def test_every_neighbour_byte_mutation_parses_as_the_plain_path_does() -> None:
    """Each byte changed to its neighbours in the same character class, so
    that most mutants stay JSON and many stay envelopes (a member renamed, a
    type changed, a digit, a letter of a signature, white space)."""
    reached = 0
    for pos, old in enumerate(RECORD):
        for byte in {old ^ 1, old ^ 2, old ^ 0x20, 0x20} - {old}:
            data = RECORD[:pos] + bytes([byte]) + RECORD[pos + 1 :]
            _same(data)
            reached += isinstance(_parsed(data), Record)
    assert reached > 300, reached  # the mutants did reach the typed path's checks


@pytest.mark.parametrize(
    "edit",
    [
        lambda env: env.pop("prev"),
        lambda env: env.update(prev="sha256:" + "ab" * 32),
        lambda env: env.update(subject="urn:x:1"),
        lambda env: env.update(subject=None),
        lambda env: env.update({"payload:hash": "sha256:" + "cd" * 32}),
        lambda env: env.update({"payload:cid": "bafy"}),
        lambda env: env.update({"payload": {"amount": "1", "n": [1, {"b": None, "a": "é"}]}}),
        lambda env: env.update(timestamp=0),
    ],
)
def test_optional_members_present_or_absent_take_the_typed_path(edit, monkeypatch) -> None:
    """A canonical record with or without each optional member is parsed
    without the plain parser (which is made to fail here), to the same
    record as the plain path makes."""
    env = unsigned_envelope(namespace="dao:vaultmesh", schema="note.add@1.0.0",
                            payload={"text": "x"}, actor=ACTOR.did, event_id="evt-1",
                            timestamp=NOW, nonce="n0nce-123")  # fmt: skip
    edit(env)
    leaf = sign_envelope(env, ACTOR, [W1]).leaf
    expected = _plain(leaf)
    assert isinstance(expected, Record)

    def no_plain_parse(data: bytes) -> None:
        raise AssertionError("the plain parser ran for a canonical envelope")

    monkeypatch.setattr(record_module, "parse_canonical", no_plain_parse)
    monkeypatch.setattr(record_module, "loads_strict", no_plain_parse)
    assert Record.from_bytes(leaf) == expected


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b'"actor":', b'"actor":"did:key:z6Mk","actor":'),  # a duplicate member
        (b'"alg":"Ed25519",', b'"alg":"Ed25519","alg":"Ed25519",'),  # duplicate in a signature
        (b'"nonce":', b' "nonce":'),  # white space
        (b'"timestamp":1764100000', b'"timestamp":1764100000.0'),
        (b'"timestamp":1764100000', b'"timestamp":"1764100000"'),
        (b'"prev":null', b'"prev":null,"zz":1'),  # an unknown member
        (b'"vm:version":"1.0"', b'"vm:version":"1.1"'),
        (b'"role":"witness"', b'"role":"Witness"'),
    ],
)
def test_what_the_typed_path_cannot_prove_goes_the_plain_way(old: bytes, new: bytes) -> None:
    assert old in RECORD
    _same(RECORD.replace(old, new, 1))


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=8,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["actor", "event:id", "event:type", "namespace", "nonce", "payload",
                        "prev", "schema", "signatures", "subject", "timestamp", "vm:version",
                        "payload:cid", "payload:hash", "extra"]), _JSON)  # fmt: skip
def test_any_value_in_any_member_parses_as_the_plain_path_does(member: str, value: object) -> None:
    env = loads_strict(RECORD)
    env[member] = value
    try:
        data = canonicalize(env)
    except FormatError:
        return
    _same(data)
