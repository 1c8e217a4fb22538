"""The chunks of signature jobs the worker processes verify
(remembrancer.log.verifier): packed in order, verified in order, and a
malformed chunk is refused rather than misread."""

from __future__ import annotations

import pytest

from remembrancer.core.keys import SigningKey
from remembrancer.log.verifier import pack_jobs, verify_packed

A, B = SigningKey(b"\x01" * 32), SigningKey(b"\x02" * 32)


def _chunk() -> tuple[bytes, list[int]]:
    """Three messages of different lengths (one empty), five signatures, two
    of them bad (by the wrong key; over another message)."""
    parts: list[bytes] = []
    m1, m2, m3 = b"first message", b"", b"x" * 70_000
    pack_jobs(parts, m1, [(A.public.raw, A.sign(m1)), (B.public.raw, A.sign(m1))])
    pack_jobs(parts, m2, [(B.public.raw, B.sign(m2))])
    pack_jobs(parts, m3, [(A.public.raw, A.sign(m1)), (B.public.raw, B.sign(m3))])
    return b"".join(parts), [1, 0, 1, 0, 1]


def test_each_signature_gets_its_own_verdict_in_order() -> None:
    chunk, expected = _chunk()
    verdicts, cpu = verify_packed(chunk)
    assert list(verdicts) == expected
    assert cpu >= 0


def test_a_truncated_chunk_is_refused() -> None:
    chunk, _ = _chunk()
    for cut in (1, 5, 40, len(chunk) - 1):
        with pytest.raises(ValueError):
            verify_packed(chunk[:cut])


@pytest.mark.parametrize(
    "pairs",
    [[], [(b"k" * 31, b"s" * 64)], [(b"k" * 32, b"s" * 63)], [(b"k" * 32, b"s" * 64)] * 256],
)
def test_what_the_format_cannot_hold_is_refused_when_packing(pairs) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        pack_jobs([], b"message", pairs)
