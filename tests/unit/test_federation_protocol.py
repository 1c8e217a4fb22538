"""Federation messages (docs/spec/federation.md): the example, round trips,
every refusal code in the spec's order, and fuzzing that only our errors come out."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remembrancer.core import jcs
from remembrancer.core.errors import (
    ConflictError,
    FormatError,
    PolicyError,
    PushbackError,
    RemembrancerError,
    VerificationError,
)
from remembrancer.core.jcs import canonicalize
from remembrancer.core.keys import SigningKey
from remembrancer.federation.protocol.contents import (
    AnchorContent,
    BundleContent,
    CheckpointContent,
    Content,
    CountersignContent,
    EvidenceContent,
    HeartbeatContent,
    LogSummary,
    ReceiptContent,
    RequestContent,
    XnsContent,
)
from remembrancer.federation.protocol.grammar import MESSAGE_TYPES
from remembrancer.federation.protocol.verify import (
    ALLOWED_ROLES,
    REPLAY_WINDOW,
    KnownPeer,
    MemoryReplayState,
    MessageVerifier,
    ReplayWindow,
)
from remembrancer.federation.protocol.wire import MAX_MESSAGE_BYTES, Message, SeqCounter
from remembrancer.federation.receipts import Countersignature
from remembrancer.federation.transport import REFUSAL_CODES, receive
from remembrancer.node.ratelimit import TokenBuckets
from remembrancer.node.statuses import FEDERATION_STATUS, federation_answer

SPEC = Path(__file__).resolve().parents[2] / "docs" / "spec" / "federation.md"
FED = "vaultmesh-primary"
NOW = 1_764_100_000
EAST = SigningKey(bytes(31) + b"\x01")  # the spec's example key: never use it
WEST = SigningKey(hashlib.sha256(b"west1").digest())
NORTH = SigningKey(hashlib.sha256(b"north1").digest())
ROOT = "sha256:" + hashlib.sha256(b"root").hexdigest()
ORIGIN = "east1.vaultmesh.example/dao:vaultmesh"
ALL_ROLES = frozenset({"witness", "anchor", "countersign", "relay", "coordinator"})


def peers(**changes: Any) -> list[KnownPeer]:
    table = {
        "did:vm:node:east1": KnownPeer("did:vm:node:east1", EAST.public, ALL_ROLES),
        "did:vm:node:west1": KnownPeer("did:vm:node:west1", WEST.public, ALL_ROLES),
        NORTH.did: KnownPeer(NORTH.did, NORTH.public, frozenset({"witness"})),
    }
    for did, peer in changes.items():
        table[did.replace("_", ":")] = peer
    return list(table.values())


def verifier(**kwargs: Any) -> MessageVerifier:
    return MessageVerifier(FED, peers(), **kwargs)


def heartbeat(size: int = 4242) -> HeartbeatContent:
    return HeartbeatContent((LogSummary(ORIGIN, size, ROOT),))


def make(
    content: Content | None = None,
    *,
    key: SigningKey = EAST,
    sender: str | None = "did:vm:node:east1",
    seq: int = 1,
    timestamp: int = NOW,
    federation_id: str = FED,
) -> Message:
    return Message.sign(
        key,
        content if content is not None else heartbeat(),
        federation_id=federation_id,
        seq=seq,
        timestamp=timestamp,
        sender=sender,
    )


def refused(v: MessageVerifier, data: bytes, now: float = NOW) -> RemembrancerError:
    with pytest.raises(RemembrancerError) as info:
        v.verify(data, now)
    return info.value


def note(origin: str = ORIGIN) -> str:
    return f"{origin}\n4242\n{ROOT[7:]}\n\n\u2014 {origin} AAAA\n"


SAMPLES: dict[str, Content] = {
    "heartbeat": heartbeat(),
    "checkpoint": CheckpointContent(ORIGIN, note()),
    "anchor": AnchorContent(
        "dao:vaultmesh",
        {"type": "remembrancer.federation-receipt/v1", "namespace": "dao:vaultmesh", "x": 1.5},
    ),
    "countersign": CountersignContent(
        "dao:vaultmesh",
        f"{ROOT[7:]}/rfc3161:tsa/0x1f",
        Countersignature(WEST.did, "witness", NOW, bytes(64)),
    ),
    "receipt": ReceiptContent("dao:vaultmesh", {"type": "remembrancer.anchor-receipt/v1"}),
    "evidence": EvidenceContent("equivocation", ORIGIN, "two checkpoints\n"),
    "request": RequestContent("dao:vaultmesh", NOW - 3600, NOW, ("receipts",)),
    "bundle": BundleContent("dao:vaultmesh", ({"type": "r/v1"},), ({"target": "btc:mainnet"},), 7),
    "xns": XnsContent(
        "dao:vaultmesh",
        "fin:clearing",
        {"namespace": "dao:vaultmesh", "schema": "namespace.message@1.0.0"},
        "c2sp.org/tlog-proof@v1\nindex 0\n\n" + note(),
    ),
}


# --- the spec's example -------------------------------------------------------------


def _spec_blocks() -> list[str]:
    return re.findall(r"```\n(.*?)```", SPEC.read_text(encoding="utf-8"), flags=re.S)


def test_spec_example_verifies_byte_for_byte() -> None:
    blocks = _spec_blocks()
    request, signed, answer = blocks[0], blocks[1], blocks[2]
    body = request.split("\n\n", 1)[1].rstrip("\n").encode("utf-8")
    assert f"Content-Length: {len(body)}" in request and len(body) == 397
    v = MessageVerifier(FED, [KnownPeer("did:vm:node:east1", EAST.public)])
    msg = v.verify(body, NOW)
    assert msg.signing_input == signed.rstrip("\n").encode("utf-8")
    assert len(msg.signing_input) == 296
    assert EAST.did == "did:key:z6MkjchhfUsD6mmvni8mCdXHw216Xrm9bQe2mBH1P5RDjVJG"
    # Signing the same content again gives the same bytes (Ed25519 is deterministic).
    again = make(msg.content, seq=msg.seq, timestamp=msg.timestamp)
    assert again.to_bytes() == body
    status, _, reply = federation_answer(
        receive(MessageVerifier(FED, v.peers), body, "application/json", NOW + 120)
    )
    assert status == 202 and reply.decode() == answer.split("\n\n", 1)[1].strip()


def test_spec_status_table_matches_the_code() -> None:
    text = SPEC.read_text(encoding="utf-8")
    rows = dict(
        (code, int(status)) for status, code in re.findall(r"^\| (\d{3}) \| `([a-z_]+)` \|", text, flags=re.M)
    )  # fmt: skip
    assert rows == dict(FEDERATION_STATUS)
    assert set(rows) == REFUSAL_CODES  # the federation names the codes, the node the statuses
    assert len(set(rows.values())) == len(rows)  # one status per failure


def test_spec_lists_every_type_and_its_roles() -> None:
    text = SPEC.read_text(encoding="utf-8")
    for t in MESSAGE_TYPES:
        heading = re.search(rf"^### {t} \((.*)\)$", text, flags=re.M)
        assert heading, t
        roles = ALLOWED_ROLES[t]
        expected = "any" if roles is None else ", ".join(sorted(roles))
        assert ", ".join(sorted(heading.group(1).split(", "))) == expected, t


# --- round trips ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", MESSAGE_TYPES)
def test_every_type_round_trips_and_verifies(kind: str) -> None:
    content = SAMPLES[kind]
    msg = make(content, seq=5)
    assert msg.type == kind
    parsed = Message.parse(msg.to_bytes())
    assert parsed == msg
    assert parsed.content == content
    assert canonicalize(content.to_json()) == canonicalize(json.loads(msg.raw)["content"])
    body = json.loads(msg.raw)
    del body["signature"]
    assert msg.signing_input == canonicalize(body)
    assert msg.message_id == "sha256:" + hashlib.sha256(msg.raw).hexdigest()
    assert verifier().verify(msg.raw, NOW) == msg


def test_sender_defaults_to_the_did_key() -> None:
    msg = make(sender=None, key=NORTH)
    assert msg.sender == NORTH.did
    assert verifier().verify(msg.raw, NOW).sender == NORTH.did


def test_non_ascii_and_fractions_take_the_strict_path() -> None:
    content = BundleContent(
        "dao:vaultmesh",
        ({"type": "r/v1", "memo": "vérifié ✓ 𝄞", "\u00e9": 1, "\U0001d11e": 2, "x": 0.1},),
        ({"v": 1e21, "w": -0.0, "big": 9_007_199_254_740_991},),
    )
    msg = make(content)
    assert Message.parse(msg.raw) == msg
    assert b'"v":1e+21' in msg.raw and b'"w":0' in msg.raw
    assert verifier().verify(msg.raw, NOW).content == content


def test_a_seq_that_looks_out_of_range_still_parses() -> None:
    for seq in (9_000_000_000_000_000, 2**53 - 1):
        assert Message.parse(make(seq=seq).raw).seq == seq


# --- refusals, one per code ---------------------------------------------------------------


def test_unknown_sender() -> None:
    stranger = SigningKey(b"\x07" * 32)
    e = refused(verifier(), make(key=stranger, sender="did:vm:node:stranger").raw)
    assert isinstance(e, PolicyError) and e.code == "unknown_sender"


def test_a_peer_claiming_another_peers_identity() -> None:
    forged = make(key=WEST, sender="did:vm:node:east1")  # west1's key, east1's name
    e = refused(verifier(), forged.raw)
    assert isinstance(e, VerificationError) and e.code == "signature_invalid"


def test_bad_signature() -> None:
    msg = make()
    good = json.loads(msg.raw)
    sig = bytearray(msg.signature)
    sig[10] ^= 1
    good["signature"] = _b64url(bytes(sig))
    e = refused(verifier(), canonicalize(good))
    assert e.code == "signature_invalid"
    # Content changed after signing: same signature, other bytes.
    changed = json.loads(msg.raw)
    changed["content"]["logs"][0]["size"] += 1
    assert refused(verifier(), canonicalize(changed)).code == "signature_invalid"


def _b64url(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_replayed_seq() -> None:
    v = verifier()
    v.verify(make(seq=10).raw, NOW)
    e = refused(v, make(seq=10).raw)
    assert isinstance(e, ConflictError) and e.code == "replayed"
    assert e.details == {"seq": 10, "last_seq": 10}
    v.verify(make(seq=12).raw, NOW)  # gaps are fine
    # Messages may overtake each other: an unseen seq inside the window is
    # accepted once, and only once.
    v.verify(make(seq=9).raw, NOW)
    assert refused(v, make(seq=9).raw).code == "replayed"
    assert refused(v, make(seq=12).raw).details == {"seq": 12, "last_seq": 12}
    # Per sender: west1 starts from zero.
    v.verify(make(key=WEST, sender="did:vm:node:west1", seq=1).raw, NOW)


@pytest.mark.parametrize("offset", [-121, 121, -10_000, 10_000])
def test_stale_or_future_timestamp(offset: int) -> None:
    e = refused(verifier(), make(timestamp=NOW + offset).raw)
    assert isinstance(e, PolicyError) and e.code == "stale"
    assert e.details["window"] == 120


@pytest.mark.parametrize("offset", [-120, 0, 120])
def test_timestamp_window_is_inclusive(offset: int) -> None:
    verifier().verify(make(timestamp=NOW + offset).raw, NOW)
    v = verifier(skew=5)
    assert refused(v, make(timestamp=NOW + 6).raw).code == "stale"


def test_oversize() -> None:
    big = EvidenceContent("equivocation", ORIGIN, "x" * MAX_MESSAGE_BYTES)
    with pytest.raises(FormatError) as info:
        make(big)
    assert info.value.code == "oversize"
    fits = make(EvidenceContent("equivocation", ORIGIN, "x" * (MAX_MESSAGE_BYTES - 1000)))
    assert len(fits.raw) <= MAX_MESSAGE_BYTES
    verifier().verify(fits.raw, NOW)
    e = refused(verifier(), b" " * (MAX_MESSAGE_BYTES + 1))
    assert isinstance(e, FormatError) and e.code == "oversize"
    assert refused(verifier(max_bytes=len(fits.raw) - 1), fits.raw).code == "oversize"


def test_wrong_federation() -> None:
    e = refused(verifier(), make(federation_id="other-federation").raw)
    assert isinstance(e, PolicyError) and e.code == "federation_mismatch"


@pytest.mark.parametrize(
    ("roles", "kind", "ok"),
    [
        (frozenset(), "heartbeat", True),
        (frozenset(), "checkpoint", True),
        (frozenset(), "evidence", True),
        (frozenset(), "request", True),
        (frozenset(), "bundle", True),
        (frozenset({"witness"}), "countersign", False),
        (frozenset({"countersign"}), "countersign", True),
        (frozenset({"countersign"}), "anchor", False),
        (frozenset({"anchor"}), "anchor", True),
        (frozenset({"coordinator"}), "anchor", True),
        (frozenset({"coordinator"}), "receipt", True),
        (frozenset({"witness", "countersign"}), "receipt", False),
        (frozenset({"anchor"}), "xns", False),
        (frozenset({"relay"}), "xns", True),
    ],
)
def test_roles_per_type(roles: frozenset[str], kind: str, ok: bool) -> None:
    v = MessageVerifier(FED, [KnownPeer("did:vm:node:east1", EAST.public, roles)])
    data = make(SAMPLES[kind]).raw
    if ok:
        v.verify(data, NOW)
    else:
        e = refused(v, data)
        assert isinstance(e, PolicyError) and e.code == "role_not_allowed"
        assert v.replay.last_seq("did:vm:node:east1") == 0


def test_suspended_peer_is_refused_and_probation_is_not() -> None:
    for status, code in (("suspended", "peer_suspended"), ("probation", None)):
        v = MessageVerifier(FED, [KnownPeer("did:vm:node:east1", EAST.public, ALL_ROLES, status)])  # type: ignore[arg-type]
        if code is None:
            v.verify(make().raw, NOW)
        else:
            e = refused(v, make().raw)
            assert isinstance(e, PolicyError) and e.code == code


def test_rate_limited_then_accepted_later() -> None:
    v = verifier(limiter=TokenBuckets(rate=1.0, burst=2))
    v.verify(make(seq=1).raw, NOW)
    v.verify(make(seq=2).raw, NOW)
    e = refused(v, make(seq=3).raw)
    assert isinstance(e, PushbackError) and e.code == "rate_limited"
    assert 0 < e.retry_after <= 1.0
    v.verify(make(seq=3).raw, NOW + 1)  # not consumed by the refusal


def test_forged_and_replayed_messages_do_not_use_up_a_peers_allowance() -> None:
    v = verifier(limiter=TokenBuckets(rate=0.001, burst=1))
    first = make(seq=1)
    for _ in range(5):
        refused(v, make(key=WEST, seq=2).raw)  # forged: signature_invalid
    v.verify(first.raw, NOW)
    for _ in range(5):
        assert refused(v, first.raw).code == "replayed"
    assert refused(v, make(seq=2).raw).code == "rate_limited"


def test_checks_run_in_the_spec_order() -> None:
    v = MessageVerifier(
        FED, [KnownPeer("did:vm:node:east1", EAST.public, frozenset(), "suspended")]
    )
    # Every failure at once: the earliest check wins.
    forged = make(SAMPLES["anchor"], key=WEST, timestamp=NOW - 500, federation_id="other")
    assert refused(v, forged.raw).code == "federation_mismatch"
    forged = make(SAMPLES["anchor"], key=WEST, timestamp=NOW - 500, sender="did:vm:node:x")
    assert refused(v, forged.raw).code == "unknown_sender"
    forged = make(SAMPLES["anchor"], key=WEST, timestamp=NOW - 500)
    assert refused(v, forged.raw).code == "stale"
    v.replay.advance("did:vm:node:east1", 10)
    forged = make(SAMPLES["anchor"], key=WEST, seq=10)
    assert refused(v, forged.raw).code == "replayed"
    forged = make(SAMPLES["anchor"], key=WEST, seq=11)
    assert refused(v, forged.raw).code == "signature_invalid"
    assert refused(v, make(SAMPLES["anchor"], seq=11).raw).code == "peer_suspended"
    v.set_peers([KnownPeer("did:vm:node:east1", EAST.public, frozenset())])
    assert refused(v, make(SAMPLES["anchor"], seq=11).raw).code == "role_not_allowed"


def test_refusals_change_nothing() -> None:
    v = verifier()
    for data in (make(key=WEST, seq=50).raw, make(seq=50, timestamp=NOW - 999).raw, b"{}"):
        refused(v, data)
    assert v.replay.last_seq("did:vm:node:east1") == 0
    v.verify(make(seq=1).raw, NOW)


# --- malformed ------------------------------------------------------------------------------


def _mutate(**changes: Any) -> bytes:
    value = json.loads(make().raw)
    for k, v in changes.items():
        if v is ...:
            del value[k]
        else:
            value[k] = v
    return canonicalize(value)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"[]",
        b"null",
        b"{",
        b"\xff\xfe{}",
        json.dumps(json.loads(make().raw), indent=1).encode(),  # not canonical
        make().raw + b"\n",  # trailing bytes
        make().raw.replace(b'{"content"', b' {"content"'),
        make().raw.replace(b'"seq":1,', b'"seq":1,"seq":1,'),  # duplicate member
        make().raw.replace(b'"seq":1,', b'"seq":1.0,'),
        make().raw.replace(b'"seq":1,', b'"seq":1e0,'),
        make().raw.replace(b"east1.vaultmesh", b"\\u0065ast1.vaultmesh"),  # needless escape
        _mutate(extra=1),
        _mutate(seq=...),
        _mutate(type="gossip"),
        _mutate(type=None),
        _mutate(seq=0),
        _mutate(seq=True),
        _mutate(seq="1"),
        _mutate(timestamp=-1),
        _mutate(sender="east1"),
        _mutate(sender="did:vm:" + "x" * 600),
        _mutate(federation_id="Vaultmesh"),
        _mutate(signature="A" * 85),
        _mutate(signature="A" * 85 + "B"),  # non-zero padding bits
        _mutate(signature="A" * 86 + "=="),
        _mutate(content=[]),
        _mutate(content={}),
        _mutate(content={"logs": [{"origin": ORIGIN, "size": 1, "root": ROOT, "x": 1}]}),
        _mutate(content={"logs": [{"origin": "a b", "size": 1, "root": ROOT}]}),
        _mutate(content={"logs": [{"origin": ORIGIN, "size": -1, "root": ROOT}]}),
        _mutate(content={"logs": [{"origin": ORIGIN, "size": 1, "root": ROOT.upper()}]}),
        _mutate(content={"logs": [{"origin": ORIGIN, "size": 1, "root": ROOT}] * 2}),
        _mutate(
            content={"logs": [{"origin": f"o{i}", "size": 1, "root": ROOT} for i in range(1025)]}
        ),
        b'{"a":' * 70 + b"1" + b"}" * 70,
        make().raw.replace(b'"seq":1,', b'"seq":90071992547409920,'),
    ],
)
def test_malformed(data: bytes) -> None:
    e = refused(verifier(), data)
    assert isinstance(e, FormatError) and e.code == "malformed", e


@pytest.mark.parametrize(
    ("kind", "content"),
    [
        ("checkpoint", {"origin": ORIGIN, "note": note("other.example/log")}),
        ("checkpoint", {"origin": ORIGIN, "note": note()[:-1]}),
        ("checkpoint", {"origin": ORIGIN, "note": note() + "\x00\n"}),
        ("anchor", {"namespace": "dao:vaultmesh", "receipt": {"type": "remembrancer.anchor-receipt/v1", "namespace": "dao:vaultmesh"}}),
        ("anchor", {"namespace": "dao:vaultmesh", "receipt": {"type": "remembrancer.federation-receipt/v1", "namespace": "fin:clearing"}}),
        ("anchor", {"namespace": "DAO", "receipt": {}}),
        ("countersign", {"namespace": "dao:vaultmesh", "receipt_id": "x", "signature": {"node": WEST.did, "role": "countersign", "timestamp": 1, "sig": "A" * 86}}),
        ("countersign", {"namespace": "dao:vaultmesh", "receipt_id": "a b", "signature": {"node": WEST.did, "role": "witness", "timestamp": 1, "sig": "A" * 86}}),
        ("countersign", {"namespace": "dao:vaultmesh", "receipt_id": "x", "signature": {"node": WEST.did, "role": "witness", "timestamp": 1}}),
        ("receipt", {"namespace": "dao:vaultmesh", "receipt": {"type": "no version"}}),
        ("evidence", {"kind": "gossip", "subject": ORIGIN, "file": "x"}),
        ("evidence", {"kind": "equivocation", "subject": ORIGIN, "file": ""}),
        ("request", {"namespace": "dao:vaultmesh", "fromTs": 5, "toTs": 4}),
        ("request", {"namespace": "dao:vaultmesh", "want": []}),
        ("request", {"namespace": "dao:vaultmesh", "want": ["receipts", "receipts"]}),
        ("request", {"namespace": "dao:vaultmesh", "want": ["everything"]}),
        ("bundle", {"namespace": "dao:vaultmesh", "receipts": [1], "anchors": []}),
        ("bundle", {"namespace": "dao:vaultmesh", "receipts": [], "anchors": [], "in_reply_to": 0}),
        ("xns", {"source": "dao:vaultmesh", "target": "dao:vaultmesh", "record": {"namespace": "dao:vaultmesh"}, "proof": "p"}),
        ("xns", {"source": "dao:vaultmesh", "target": "fin:clearing", "record": {"namespace": "fin:clearing"}, "proof": "p"}),
    ],
)  # fmt: skip
def test_malformed_content(kind: str, content: dict[str, Any]) -> None:
    body = {"type": kind, "federation_id": FED, "sender": "did:vm:node:east1", "seq": 1,
            "timestamp": NOW, "content": content}  # fmt: skip
    body["signature"] = _b64url(EAST.sign(canonicalize(body)))
    e = refused(verifier(), canonicalize(body))
    assert e.code == "malformed", e
    assert str(e.details.get("field", "")).startswith("content"), e.details


# --- pieces ---------------------------------------------------------------------------------


def test_seq_counter_follows_the_clock_and_never_goes_back() -> None:
    c = SeqCounter()
    a = c.next(NOW)
    assert a == NOW * 1_000_000
    assert c.next(NOW) == a + 1
    assert c.next(NOW - 3600) == a + 2  # the clock went back
    assert c.next(NOW + 1) == (NOW + 1) * 1_000_000
    assert SeqCounter(last=5).next(0) == 6


def test_replay_state_compare_and_set_is_exclusive() -> None:
    state = MemoryReplayState()
    wins: list[int] = []

    def race() -> None:
        if state.advance("p", 7):
            wins.append(1)

    threads = [threading.Thread(target=race) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wins == [1] and state.snapshot() == {"p": 7}
    assert not state.advance("p", 7) and state.advance("p", 6) and state.advance("p", 8)
    assert state.snapshot() == {"p": 8}


def test_replay_window_keeps_the_last_seqs_and_refuses_below_it() -> None:
    w = ReplayWindow()
    for seq in range(100, 100 + REPLAY_WINDOW):
        w = w.accepted(seq)
    assert w.floor == 0 and w.last == 100 + REPLAY_WINDOW - 1
    assert w.seen(100) and not w.seen(50)  # below the window but above the floor: still fresh
    w = w.accepted(1000)  # the window is full: 100 falls out and becomes the floor
    assert w.floor == 100 and w.seen(50) and w.seen(100) and not w.seen(999)
    assert len(w.recent) == REPLAY_WINDOW
    assert ReplayWindow.from_bytes(w.to_bytes()) == w
    assert ReplayWindow.from_bytes(b"42") == ReplayWindow(42)  # the stored form before windows
    assert ReplayWindow.from_bytes(b"42").seen(42) and not ReplayWindow.from_bytes(b"42").seen(43)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(-80, 5), st.integers(0, 3)), max_size=300))
def test_replay_window_in_any_arrival_order_is_the_sorted_window(
    steps: list[tuple[int, int]],
) -> None:
    # The window's definition: every fresh seq joins the sorted window, and past
    # REPLAY_WINDOW entries the oldest falls out and becomes the floor.  The
    # in-order fast paths must give the same window for any arrival order.
    w, floor, recent, base = ReplayWindow(), 0, [], 0
    for back, forward in steps:
        seq = base + back
        base += forward
        fresh = seq > floor and seq not in recent
        assert w.seen(seq) is not fresh
        if fresh:
            w = w.accepted(seq)
            recent = sorted([*recent, seq])
            while len(recent) > REPLAY_WINDOW:
                floor = recent.pop(0)
        assert (w.floor, w.recent) == (floor, tuple(recent))


def test_store_replay_state_is_durable_and_exclusive(tmp_path: Path) -> None:
    from remembrancer.federation.service import StoreReplayState
    from remembrancer.storage.sqlite import SqliteStore

    store = SqliteStore(tmp_path / "db.sqlite")
    try:
        state = StoreReplayState(store)
        assert state.advance("p", 10) and state.advance("p", 8)
        assert not state.advance("p", 8) and not state.advance("p", 10)
        again = StoreReplayState(store)  # as after a restart
        assert again.seen("p", 8) and again.last_seq("p") == 10 and not again.seen("p", 9)
    finally:
        store.close()


def test_concurrent_copies_of_one_message_are_accepted_once() -> None:
    v = verifier()
    data = make(seq=3).raw
    outcomes: list[str] = []
    lock = threading.Lock()

    def go() -> None:
        try:
            v.verify(data, NOW)
            result = "ok"
        except RemembrancerError as e:
            result = e.code
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["ok"] + ["replayed"] * 7


def test_peer_table_is_checked() -> None:
    with pytest.raises(FormatError):
        KnownPeer("east1", EAST.public)
    with pytest.raises(FormatError):
        KnownPeer("did:vm:node:east1", EAST.public, frozenset({"admin"}))
    with pytest.raises(FormatError):
        MessageVerifier(FED, [KnownPeer("did:vm:a", EAST.public)] * 2)
    with pytest.raises(FormatError):
        MessageVerifier("Not An Id", [])


def test_registry_peers_can_be_used_directly() -> None:
    from remembrancer.federation.registry.model import Peer

    peer = Peer(did="did:vm:node:east1", endpoint="https://east1.example",
                         pubkey=EAST.public, status="active", roles=frozenset({"relay"}))  # fmt: skip
    v = MessageVerifier(FED, [peer])
    assert v.verify(make(SAMPLES["xns"]).raw, NOW).type == "xns"


def test_every_refusal_code_has_one_status() -> None:
    codes = {"malformed", "oversize", "federation_mismatch", "unknown_sender", "stale",
             "replayed", "signature_invalid", "peer_suspended", "role_not_allowed",
             "rate_limited"}  # fmt: skip
    assert codes <= REFUSAL_CODES


# --- fuzzing: only our errors ------------------------------------------------------------------

_VALID = [make(SAMPLES[k], seq=100).raw for k in MESSAGE_TYPES]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_random_bytes_raise_only_format_errors(data: bytes) -> None:
    with pytest.raises(FormatError) as info:
        Message.parse(data)
    assert info.value.code in ("malformed", "oversize")


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(_VALID),
    st.lists(
        st.tuples(st.sampled_from(["flip", "insert", "delete"]), st.integers(0, 10**6), st.integers(0, 255)),
        min_size=1,
        max_size=4,
    ),
)  # fmt: skip
def test_mutated_messages_raise_only_our_errors(
    base: bytes, edits: list[tuple[str, int, int]]
) -> None:
    data = bytearray(base)
    for op, pos, byte in edits:
        i = pos % (len(data) + 1)
        if op == "insert":
            data.insert(i, byte)
        elif data and op == "delete":
            del data[i % len(data)]
        elif data:
            data[i % len(data)] ^= byte or 1
    try:
        msg = verifier().verify(bytes(data), NOW)
    except RemembrancerError as e:
        assert e.code in REFUSAL_CODES, e
    else:
        assert msg.raw == base  # only a no-op edit can be accepted


json_scalars = (
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=8)
)
# A float that RFC 8785 prints as an integer outside +-(2**53 - 1) (2.0**53 up
# to 1e21) reads back as such an integer, which is malformed: see the next test.
json_floats = st.floats(allow_nan=False, allow_infinity=False).filter(
    lambda f: not (f.is_integer() and 2**53 <= abs(f) < 1e21)
)
json_values = st.recursive(
    json_scalars | json_floats,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.dictionaries(st.text(max_size=6), json_values, max_size=4), max_size=3))
def test_any_json_objects_round_trip_through_a_bundle(objects: list[dict[str, Any]]) -> None:
    try:
        canonicalize(objects)
    except FormatError:
        return  # e.g. lone surrogates: not representable, refused when signing
    msg = make(BundleContent("dao:vaultmesh", tuple(objects), ()))
    parsed = verifier().verify(msg.raw, NOW)
    assert canonicalize(list(parsed.content.receipts)) == canonicalize(objects)  # type: ignore[union-attr]
    body = json.loads(msg.raw)
    del body["signature"]
    assert parsed.signing_input == canonicalize(body)


@pytest.mark.parametrize("number", [2.0**53, -(2.0**53), 1e20])
def test_numbers_printed_as_inexact_integers_are_refused_when_signing(number: float) -> None:
    with pytest.raises(FormatError) as info:
        make(BundleContent("dao:vaultmesh", ({"n": number},), ()))
    assert info.value.code == "malformed"
    make(BundleContent("dao:vaultmesh", ({"n": 1e21, "m": 2.0**53 - 1},), ()))


# --- the fast path's pre-parse checks against naive references -------------------------------


def _naive_depth(data: bytes) -> int:
    """The deepest a left-to-right JSON parser can get before it must stop."""
    depth = top = 0
    in_string = escaped = False
    for c in data:
        if in_string:
            if escaped:
                escaped = False
            elif c == 92:
                escaped = True
            elif c == 34:
                in_string = False
        elif c == 34:
            in_string = True
        elif c in (91, 123):
            depth += 1
            top = max(top, depth)
        elif c in (93, 125):
            depth -= 1
        elif c == 92:  # a backslash outside a string: the parser stops here
            break
    return top


def _nesting_within(data: bytes, limit: int) -> bool:
    """The fast path's nesting pre-check, given the brackets as it counts them."""
    brackets = data.translate(jcs._DIGITS_TO_ZERO).count(b"[")
    assert brackets == data.count(b"[") + data.count(b"{")
    return jcs._nesting_within(data, brackets, limit)


def _ints_exact(data: bytes) -> bool:
    """The fast path's integer pre-check, on the translation it makes."""
    return jcs._ints_exact(data, data.translate(jcs._DIGITS_TO_ZERO))


_pieces = st.sampled_from([b"[", b"]", b"{", b"}", b'"', b"\\", b"a", b"\\\\", b'\\"', b"\n", b","])


@settings(max_examples=2000)
@given(st.lists(_pieces, max_size=40))
def test_nesting_check_never_lets_deeper_input_through(parts: list[bytes]) -> None:
    data = b"".join(parts)
    if _nesting_within(data, 5):
        assert _naive_depth(data) <= 5, data


_nested = st.recursive(
    st.text(alphabet='[]{}"\\a\n', max_size=5) | st.integers(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(alphabet='[]{}"\\a', max_size=3), inner, max_size=3),
    max_leaves=30,
)  # fmt: skip


@settings(max_examples=1000)
@given(_nested)
def test_nesting_check_is_exact_on_json(value: Any) -> None:
    data = json.dumps(value).encode()
    assert _nesting_within(data, 5) == (_naive_depth(data) <= 5)


@settings(max_examples=1000)
@given(
    st.lists(
        st.integers(-(2**60), 2**60) | st.text(alphabet="0123456789-:,[x", max_size=20), max_size=5
    )
)
def test_inexact_integers_are_always_noticed(items: list[Any]) -> None:
    data = json.dumps(items, separators=(",", ":")).encode()
    if any(type(i) is int and abs(i) > 2**53 - 1 for i in items):
        assert not _ints_exact(data)
    if not _ints_exact(data):  # only numbers or strings that look like them
        assert any(len(str(i).lstrip("-")) >= 16 for i in items)


_texts = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=6)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_texts, _texts | st.integers(-(2**53) + 1, 2**53 - 1), max_size=5))
def test_only_the_canonical_encoding_is_accepted(obj: dict[str, Any]) -> None:
    # Keys beyond U+FFFF sort differently in UTF-16 (RFC 8785) and in code points:
    # both the fast and the strict path must agree with canonicalize().
    msg = make(BundleContent("dao:vaultmesh", (obj,), ()))
    assert Message.parse(msg.raw) == msg
    value = json.loads(msg.raw)
    for variant in (
        json.dumps(value, sort_keys=True, separators=(",", ":")).encode(),  # ASCII escapes
        json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(),
        json.dumps(value, separators=(", ", ":"), ensure_ascii=False).encode(),
    ):
        if variant != msg.raw:
            with pytest.raises(FormatError):
                Message.parse(variant)
        else:
            assert Message.parse(variant) == msg


def test_supplementary_characters_sort_by_utf16() -> None:
    obj = {"\U0001f600": 1, "\uff61": 2}  # code points: U+FF61 first; UTF-16: D83D... first
    msg = make(BundleContent("dao:vaultmesh", (obj,), ()))
    assert msg.raw.index("\U0001f600".encode()) < msg.raw.index("\uff61".encode())
    assert Message.parse(msg.raw) == msg
    code_point_order = msg.raw.replace(
        '{"\U0001f600":1,"\uff61":2}'.encode(), '{"\uff61":2,"\U0001f600":1}'.encode()
    )
    with pytest.raises(FormatError):
        Message.parse(code_point_order)
