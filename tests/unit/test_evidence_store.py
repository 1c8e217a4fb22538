"""The evidence a node keeps: one file per incident, a bound per subject, pages."""

from __future__ import annotations

import threading

import pytest

from remembrancer.core.errors import PolicyError
from remembrancer.federation.evidence.store import MAX_EVIDENCE_PER_SUBJECT, EvidenceStore
from remembrancer.storage.memory import MemoryStore


def test_one_file_per_incident_and_a_bound_per_subject() -> None:
    store = MemoryStore()
    ev = EvidenceStore(store)
    assert ev.keep("did:key:a", "inc-1", "sha256:01", b"file 1") == "sha256:01"
    # Another file proving the same incident is not kept: the first stands for it.
    assert ev.keep("did:key:a", "inc-1", "sha256:02", b"file 1 again") == "sha256:01"
    assert ev.get("sha256:02") is None
    for i in range(2, MAX_EVIDENCE_PER_SUBJECT + 1):
        ev.keep("did:key:a", f"inc-{i}", f"sha256:a{i}", b"x")
    assert len(ev.incidents("did:key:a")) == MAX_EVIDENCE_PER_SUBJECT
    with pytest.raises(PolicyError) as e:
        ev.keep("did:key:a", "inc-more", "sha256:ff", b"more")
    assert e.value.code == "evidence_subject_full"
    assert ev.get("sha256:ff") is None  # refused: nothing stored
    # A known incident is still answered, and other subjects have their own bound.
    assert ev.keep("did:key:a", "inc-2", "sha256:new", b"x") == "sha256:a2"
    assert ev.keep("did:key:b", "inc-1", "sha256:b1", b"y") == "sha256:b1"
    assert len(store.evidence_page(limit=100)) == MAX_EVIDENCE_PER_SUBJECT + 1


def test_racing_keeps_never_exceed_the_bound() -> None:
    store = MemoryStore()
    ev = EvidenceStore(store, per_subject=3)
    errors: list[str] = []

    def keep(i: int) -> None:
        try:
            ev.keep("did:key:a", f"inc-{i}", f"sha256:{i:02d}", b"f%d" % i)
        except PolicyError as e:
            errors.append(e.code)

    threads = [threading.Thread(target=keep, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ev.incidents("did:key:a")) == 3
    assert sorted(ev.incidents("did:key:a").values()) == [r.ref for r in store.evidence_page()]
    assert errors == ["evidence_subject_full"] * 9


def test_pages_follow_the_cursor() -> None:
    ev = EvidenceStore(MemoryStore(), per_subject=100)
    refs = [f"sha256:{i:04x}" for i in range(25)]
    for i, ref in enumerate(refs):
        ev.keep(f"did:key:{i % 3}", f"inc-{i}", ref, ref.encode())
    seen: list[str] = []
    after: str | None = None
    while True:
        rows, after = ev.page(after=after, limit=10)
        seen += [ref for ref, _ in rows]
        if after is None:
            break
    assert seen == sorted(refs)
    rows, cursor = ev.page(after=None, limit=25)
    assert len(rows) == 25 and cursor is None
