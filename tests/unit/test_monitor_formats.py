"""core.monitor: the monitor's state file and the rollback evidence format."""

from __future__ import annotations

import json

import pytest

from remembrancer.core.checkpoint import Checkpoint, sign_checkpoint
from remembrancer.core.errors import FormatError, VerificationError
from remembrancer.core.keys import SigningKey
from remembrancer.core.monitor import (
    MonitorState,
    RollbackEvidence,
    open_state,
    verify_rollback,
)
from remembrancer.core.note import format_vkey

ORIGIN = "log.example.org/audited"
KEY = SigningKey.generate()
VKEY = format_vkey(ORIGIN, KEY.public)


def note(
    size: int, root: bytes | None = None, key: SigningKey = KEY, origin: str = ORIGIN
) -> bytes:
    return sign_checkpoint(Checkpoint(origin, size, root or bytes([size % 256]) * 32), key)


def test_state_round_trip_and_strictness() -> None:
    state = MonitorState(ORIGIN, VKEY, note(2**64 - 1), 1_764_000_000, 3)
    data = state.to_bytes()
    assert MonitorState.from_bytes(data) == state
    assert open_state(data, VKEY)[1].checkpoint.size == 2**64 - 1
    doc = json.loads(data)
    for change in ({"size": 5}, {"root": "AAAA"}, {"extra": 1}, {"format": "other/v1"},
                   {"observed_at": -1}, {"checkpoints_seen": True}, {"checkpoint": "x\n"},
                   {"origin": "other.example/log"}):  # fmt: skip
        with pytest.raises(FormatError) as e:
            MonitorState.from_bytes(json.dumps(doc | change).encode())
        assert e.value.code == "monitor_state_invalid", change
    with pytest.raises(FormatError) as e:
        open_state(data, format_vkey(ORIGIN, SigningKey.generate().public))
    assert e.value.code == "monitor_state_mismatch"
    forged = MonitorState(ORIGIN, VKEY, note(7, key=SigningKey.generate()), 0).to_bytes()
    with pytest.raises(VerificationError):
        open_state(forged, VKEY)


def test_rollback_round_trip_and_verification() -> None:
    evidence = RollbackEvidence(ORIGIN, VKEY, note(10), note(4))
    data = evidence.to_bytes()
    assert data.startswith(b"remembrancer.rollback/v1\norigin log.example.org/audited\nvkey ")
    assert RollbackEvidence.parse(data) == evidence
    report = verify_rollback(evidence)
    assert (report.seen.size, report.served.size) == (10, 4)
    assert report.to_dict()["evidence_ref"] == evidence.evidence_ref
    for bad in (data + b"\n", data.replace(b"\nserved ", b"\nserved  "), data[:-1],
                data.replace(b"seen ", b"seen: ")):  # fmt: skip
        with pytest.raises(FormatError):
            RollbackEvidence.parse(bad)


@pytest.mark.parametrize(
    ("seen", "served", "vkey", "code"),
    [
        (note(4), note(10), VKEY, "rollback_not_smaller"),
        (note(10), note(10, bytes(32)), VKEY, "rollback_not_smaller"),
        (note(10), note(4, key=SigningKey.generate()), VKEY, "rollback_note_unsigned"),
        (note(10, origin="other.example/log"), note(4), VKEY, "rollback_note_unsigned"),
        (note(10), note(4), format_vkey("other.example/log", KEY.public), "rollback_vkey_mismatch"),
    ],
)
def test_rollback_that_proves_nothing(seen: bytes, served: bytes, vkey: str, code: str) -> None:
    with pytest.raises(VerificationError) as e:
        verify_rollback(RollbackEvidence(ORIGIN, vkey, seen, served))
    assert e.value.code == code


def test_the_spec_examples_verify() -> None:
    """docs/spec/monitor.md's examples are real files (key seed 00..01)."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs/spec/monitor.md").read_text()
    blocks = re.findall(r"```(?:json)?\n(.*?)```", text, re.S)
    rollback = next(b for b in blocks if b.startswith("remembrancer.rollback/v1"))
    report = verify_rollback(RollbackEvidence.parse(rollback.encode()))
    assert (report.origin, report.seen.size, report.served.size) == ("log.example.org/log42", 5, 3)
    state_text = next(b for b in blocks if '"format"' in b)
    state, signed = open_state(state_text.encode(), report_vkey(rollback))
    assert state.to_bytes().decode() == state_text and signed.checkpoint.size == 5


def report_vkey(rollback: str) -> str:
    return rollback.split("\n")[2].removeprefix("vkey ")
