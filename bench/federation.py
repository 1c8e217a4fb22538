"""Federation message verification (docs/spec/federation.md).

Run ``python -m bench.federation`` (``--quick`` for fewer messages).

The figure is the rate of :meth:`MessageVerifier.verify` on one core (the
whole acceptance path: size check, strict parse of the canonical JSON,
envelope and content grammar, registry lookup, timestamp window, replay
check, Ed25519 verification, recording the seq) against the single-core
rate of PyNaCl's ``VerifyKey.verify`` over the same messages' signing inputs
and signatures, measured in the same run.  Goal: 0.7 for small messages.
Larger messages are shown for information: parsing grows with size while an
Ed25519 verification barely does.

Each timing is the best of a few repeats, taken in alternation with its
reference, to damp the noise of a shared machine.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from nacl.signing import VerifyKey

from bench.common import Row, suite_main
from bench.common import row as _row
from remembrancer.core.keys import SigningKey
from remembrancer.federation.protocol.contents import (
    BundleContent,
    CheckpointContent,
    Content,
    CountersignContent,
    HeartbeatContent,
    LogSummary,
)
from remembrancer.federation.protocol.verify import KnownPeer, MessageVerifier
from remembrancer.federation.protocol.wire import Message
from remembrancer.federation.receipts import Countersignature

FED = "vaultmesh-primary"
SENDER = "did:vm:node:east1"
NOW = 1_764_100_000
ROLES = frozenset({"witness", "anchor", "countersign", "relay", "coordinator"})


def _root(i: int) -> str:
    return "sha256:" + hashlib.sha256(i.to_bytes(8, "big")).hexdigest()


def _heartbeat(i: int) -> Content:
    return HeartbeatContent(
        (LogSummary("east1.vaultmesh.example/dao:vaultmesh", 1000 + i, _root(i)),)
    )


def _countersign(i: int) -> Content:
    sig = Countersignature("did:key:z6MkjchhfUsD6mmvni8mCdXHw216Xrm9bQe2mBH1P5RDjVJG", "witness",
                           NOW, hashlib.sha512(i.to_bytes(8, "big")).digest())  # fmt: skip
    return CountersignContent("dao:vaultmesh", f"{_root(i)[7:]}/rfc3161:tsa/{i:x}", sig)


def _checkpoint(i: int) -> Content:
    origin = "east1.vaultmesh.example/dao:vaultmesh"
    body = f"{origin}\n{1000 + i}\n{'A' * 43}=\n"
    sigs = "".join(f"\u2014 witness{w}.example {'B' * 94}==\n" for w in range(3))
    return CheckpointContent(origin, f"{body}\n\u2014 {origin} {'C' * 94}==\n{sigs}")


def _bundle(i: int) -> Content:
    anchors = tuple(
        {"target": "eip155:8453", "root": _root(i * 64 + j), "txRef": "0x" + _root(j)[7:],
         "blockNumber": 1_000_000 + j, "status": "verified", "observedAt": NOW,
         "finality": {"observedDepth": 3, "requiredDepth": 3, "state": "final"}}
        for j in range(64)
    )  # fmt: skip
    return BundleContent("dao:vaultmesh", (), anchors, i + 1)


def _messages(make: Callable[[int], Content], n: int, key: SigningKey) -> list[Message]:
    return [Message.sign(key, make(i), federation_id=FED, seq=NOW * 1_000_000 + i, timestamp=NOW,
                         sender=SENDER) for i in range(n)]  # fmt: skip


def bench_verify(label: str, make: Callable[[int], Content], n: int, repeats: int,
                 goal: float | None) -> Row:  # fmt: skip
    key = SigningKey(hashlib.sha256(b"bench federation").digest())
    msgs = _messages(make, n, key)
    raws = [m.to_bytes() for m in msgs]
    pairs = [(m.signing_input, m.signature) for m in msgs]
    peer = KnownPeer(SENDER, key.public, ROLES)
    vk = VerifyKey(key.public.raw)

    def ours() -> None:
        v = MessageVerifier(FED, [peer])  # fresh replay state
        verify = v.verify
        for raw in raws:
            verify(raw, NOW)

    def reference() -> None:
        verify = vk.verify
        for msg, sig in pairs:
            verify(msg, sig)

    t_ours = t_ref = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        ours()
        t_ours = min(t_ours, time.perf_counter() - start)
        start = time.perf_counter()
        reference()
        t_ref = min(t_ref, time.perf_counter() - start)
    size = sum(len(r) for r in raws) // len(raws)
    return _row(
        f"verify {label} messages (~{size:,} B): MessageVerifier.verify vs PyNaCl verify, one core",
        n / t_ours,
        n / t_ref,
        goal,
        "msgs/s",
    )


def run(quick: bool) -> list[Row]:
    """Rows of ``{name, ours, reference, ratio, goal, unit}``."""
    n, repeats = (2_000, 3) if quick else (20_000, 5)
    return [
        bench_verify("heartbeat", _heartbeat, n, repeats, 0.7),
        bench_verify("countersign", _countersign, n, repeats, 0.7),
        bench_verify("checkpoint", _checkpoint, n, repeats, 0.7),
        bench_verify("bundle of 64 anchors", _bundle, max(200, n // 20), repeats, None),
    ]


def main(argv: list[str] | None = None) -> int:
    return suite_main(
        run, "python -m bench.federation", __doc__, argv, quick_help="fewer messages (seconds)"
    )


if __name__ == "__main__":
    raise SystemExit(main())
