"""The explorer's data: each page's content as a JSON value.

Every function here reads a bounded amount of state, whatever the size of
the logs: a log page is one index range (at most :data:`MAX_PAGE` entries),
a search is one indexed lookup, a record is one entry and one O(log n)
proof, and the witness page looks at the newest checkpoints only
(:meth:`Explorer.recent_checkpoints`).  Anchor receipts and federation
receipts are read through the anchoring and federation layers' own lists.

Bad input raises :class:`~remembrancer.core.errors.FormatError`, unknown
things :class:`~remembrancer.core.errors.NotFoundError`; the node turns them
into 400 and 404 answers.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from remembrancer.core.checkpoint import Checkpoint
from remembrancer.core.encoding import encode_base64
from remembrancer.core.errors import FormatError, NotFoundError, RemembrancerError
from remembrancer.core.identifiers import NAMESPACE_RE
from remembrancer.core.jcs import loads_strict
from remembrancer.core.note import Note, NoteSignature, Verifier, parse_vkey
from remembrancer.core.record import Record
from remembrancer.core.rfc6962 import hash_leaf
from remembrancer.explorer.source import ExplorerSource
from remembrancer.federation.registry.scoring import effective_peers
from remembrancer.federation.witnessing import WitnessPeer
from remembrancer.storage.base import StoredCheckpoint

DEFAULT_PAGE = 25
MAX_PAGE = 100
MAX_INDEX = 2**63 - 1
MAX_QUERY = 200
RECENT_CHECKPOINTS = 40  # per namespace, for witness activity
LAG_WINDOW = 16  # checkpoints looked back to find a peer's newest cosignature
LIVE_CACHE_SECONDS = 0.5
HEARTBEAT_BUCKET = 10  # seconds: heartbeat ages coarser than this do not wake live pages
LEVELS = ("fast", "strong", "cold")
KNOWN_ANCHOR_FIELDS = frozenset({
    "target", "root", "chain", "network", "txRef", "blockNumber", "anchorTs", "observedAt",
    "status", "verifier", "finality", "evidence", "error", "superseded_by",
})  # fmt: skip
_HEX64 = re.compile("(?:sha256:)?([0-9a-fA-F]{64})")


def check_namespace(namespace: str) -> str:
    if not isinstance(namespace, str) or not NAMESPACE_RE.match(namespace):
        raise FormatError(f"{namespace!r:.80} is not a namespace name", code="namespace_invalid")
    return namespace


def check_page(before: int | None, limit: int) -> None:
    if isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE:
        raise FormatError(f"limit is between 1 and {MAX_PAGE}", code="limit_out_of_range")
    if before is not None and not 0 <= before <= MAX_INDEX:
        raise FormatError("before is a non-negative index", code="before_out_of_range")


def inclusion_path(index: int, size: int) -> list[tuple[tuple[int, int], tuple[int, int], str]]:
    """The RFC 6962 audit path of leaf ``index`` in a tree of ``size``, bottom-up:
    for each proof hash, (the range of the node it completes, the range the hash
    covers, which side of the path it is on: ``left`` or ``right``).

    Follows the recursive definition of RFC 6962 section 2.1.1 (split at the
    largest power of two below the subtree's size), so entry ``i`` of the list
    pairs with proof hash ``i``."""
    if not 0 <= index < size:
        raise NotFoundError(f"no entry {index} in a tree of size {size}", code="index_out_of_range")
    steps = []
    start, end = 0, size
    while end - start > 1:
        k = 1 << ((end - start - 1).bit_length() - 1)
        mid = start + k
        if index < mid:
            steps.append(((start, end), (mid, end), "right"))
            end = mid
        else:
            steps.append(((start, end), (start, mid), "left"))
            start = mid
    steps.reverse()
    return steps


def parse_query(q: str) -> tuple[str, Any]:
    """What a search box query asks for: ``("index", int)``, ``("eventHash", bytes)``
    or ``("event:id", str)``."""
    if not isinstance(q, str):
        raise FormatError("the query is a string", code="query_invalid")
    q = q.strip()
    if not q:
        raise FormatError(
            "type an index, an eventHash (sha256:<hex>) or an event:id", code="query_empty"
        )
    if len(q) > MAX_QUERY:
        raise FormatError(f"a query is at most {MAX_QUERY} characters", code="query_too_long")
    if q.isdigit() and q.isascii():
        value = int(q)
        if value > MAX_INDEX:
            raise FormatError("index out of range", code="index_out_of_range")
        return "index", value
    m = _HEX64.fullmatch(q)
    if m:
        return "eventHash", bytes.fromhex(m.group(1))
    if q.lower().startswith("sha256:"):
        raise FormatError("an eventHash is sha256:<64 hex digits>", code="query_invalid")
    return "event:id", q


def entry_summary(index: int, leaf: bytes) -> dict[str, Any]:
    """One line of a log page: a record's identifying fields, or a raw entry's hash."""
    out: dict[str, Any] = {
        "index": index,
        "leafHash": encode_base64(hash_leaf(leaf)),
        "bytes": len(leaf),
    }
    try:
        rec = Record.from_bytes(leaf)
    except (RemembrancerError, ValueError):
        out["kind"] = "entry"
        out["entryHash"] = "sha256:" + hashlib.sha256(leaf).hexdigest()
        return out
    out.update({"kind": "record", "eventHash": rec.event_hash_hex, "event:id": rec.event_id,
                "event:type": rec.event_type, "schema": rec.schema, "actor": rec.actor,
                "timestamp": rec.timestamp})  # fmt: skip
    return out


def cosignature_time(sig: NoteSignature) -> int | None:
    """The timestamp of a ``cosignature/v1`` signature line (first 8 bytes)."""
    if len(sig.signature) != 72:
        return None
    return int.from_bytes(sig.signature[:8], "big")


@dataclass(frozen=True, slots=True)
class _Peer:
    """A witness this node asks for cosignatures, and its federation identity if any."""

    witness: WitnessPeer
    did: str | None


class Explorer:
    """The explorer's views over one node (see the module docstring)."""

    def __init__(self, source: ExplorerSource) -> None:
        self.source = source
        self._live: tuple[float, dict[str, Any]] | None = None
        self._live_lock = threading.Lock()

    # --- helpers -----------------------------------------------------------------
    def now(self) -> int:
        return int(self.source.clock())

    def configured(self) -> list[str]:
        return sorted(self.source.namespaces.current())

    def require(self, namespace: str) -> str:
        check_namespace(namespace)
        if (
            namespace not in self.source.namespaces.current()
            and self.source.sequencer.head(namespace) is None
        ):
            raise NotFoundError(
                f"namespace {namespace} is not hosted here", code="namespace_unknown"
            )
        return namespace

    def _log_verifier(self, namespace: str) -> Verifier | None:
        vkey = self.source.info()["vkeys"].get(namespace)
        return parse_vkey(vkey) if vkey else None

    def _peers(self) -> list[_Peer]:
        """Witnesses of this node's checkpoints, tied to federation peers by key."""
        by_key: dict[bytes, str] = {}
        fed = self.source.federation
        if fed is not None:
            by_key = {p.pubkey.raw: p.did for p in fed.registry.peers}
        return [
            _Peer(w, by_key.get(w.verifier.public_key.raw)) for w in self.source.witnessing.peers
        ]

    def describe_checkpoint(self, namespace: str, note_bytes: bytes) -> dict[str, Any]:
        """A checkpoint note's fields and signature lines, each named: the log's
        own, a known witness's cosignature (with its time), or an unknown key.
        ``checked_by_node`` says whether this node found the signature valid; the
        browser checks again by itself."""
        note = Note.from_bytes(note_bytes)
        cp = Checkpoint.parse(note.text)
        text = note.text.encode("utf-8")
        log_v = self._log_verifier(namespace)
        witnesses = {(p.witness.name, p.witness.verifier.key_id): p for p in self._peers()}
        sigs = []
        for s in note.signatures:
            item: dict[str, Any] = {"name": s.name, "key_id": f"{s.key_id:08x}"}
            peer = witnesses.get((s.name, s.key_id))
            if log_v is not None and (s.name, s.key_id) == (log_v.name, log_v.key_id):
                item.update(kind="log", checked_by_node=log_v.verify(text, s.signature))
            elif peer is not None:
                item.update(kind="cosignature", timestamp=cosignature_time(s), peer=peer.did,
                            checked_by_node=peer.witness.verifier.verify(text, s.signature))  # fmt: skip
            else:
                item.update(kind="unknown", checked_by_node=None)
            sigs.append(item)
        return {"origin": cp.origin, "size": cp.size, "root": encode_base64(cp.root_hash),
                "body": note.text, "note": note_bytes.decode("utf-8"), "signatures": sigs}  # fmt: skip

    def recent_checkpoints(self, namespace: str, n: int) -> list[StoredCheckpoint]:
        """The newest ``n`` stored checkpoints of a log (oldest first), found with
        a few bounded range queries (checkpoints are listed by increasing size)."""
        head = self.source.sequencer.head(namespace)
        if head is None or n <= 0:
            return []
        cap = 4 * n
        lo, hi, width = 0, 0, 64
        found: list[StoredCheckpoint] = []
        for _ in range(24):
            after = max(-1, head.size - width)
            found = self.source.store.checkpoints(namespace, after_size=after, limit=cap)
            if len(found) == cap and width > 1:  # the window holds too many: narrow it
                hi = width
                width = (lo + width) // 2
                if width <= lo:
                    break
                continue
            if len(found) < n and after > -1:  # too few: widen it
                lo = width
                width = width * 8 if not hi else (width + hi) // 2
                if hi and width >= hi:
                    break
                continue
            break
        return found[-n:]

    # --- pages -----------------------------------------------------------------------
    def overview(self) -> dict[str, Any]:
        info = self.source.info()
        namespaces = []
        anchoring: dict[str, int] = {}
        for ns in self.configured():
            head = self.source.sequencer.head(ns)
            status = self.source.scheduler.health(ns)["status"]
            anchoring[status] = anchoring.get(status, 0) + 1
            namespaces.append({"namespace": ns, "size": head.size if head else 0,
                               "anchoring": status})  # fmt: skip
        out: dict[str, Any] = {
            "node": {"did": info["did"], "origin_prefix": info["origin_prefix"],
                     "version": info["version"], "witness": info["witness"]["vkey"]},
            "namespaces": namespaces,
            "totals": {"namespaces": len(namespaces),
                       "entries": sum(n["size"] for n in namespaces),
                       "anchoring": anchoring},
            "witnessing": self.source.witnessing.stats(),
            "federation": None,
            "at": self.now(),
        }  # fmt: skip
        fed = self.source.federation
        if fed is None:
            return out
        status = fed.status()
        lags = self._cosign_lags()
        for p in status["peers"]:
            p["cosign_lag"] = lags.get(p["did"])
        active = sum(p["status"] == "active" for p in status["peers"])
        evidence = len(fed.evidence())
        out["federation"] = {k: status[k] for k in ("federation_id", "quorum", "anchor_strategy",
                             "self", "peers", "registry_digest", "receipts_final")}  # fmt: skip
        out["federation"]["history"] = status["history"][-20:]
        out["totals"].update(peers=len(status["peers"]), active_peers=active,
                             federation_receipts=status["receipts_final"], evidence=evidence)  # fmt: skip
        return out

    def _cosign_lags(self) -> dict[str, dict[str, Any]]:
        """Per federation peer that witnesses this node: how many entries of this
        node's logs it has not cosigned yet (None when its newest cosignature is
        older than the last :data:`LAG_WINDOW` checkpoints)."""
        out: dict[str, dict[str, Any]] = {}
        peers = [p for p in self._peers() if p.did is not None]
        for ns in self.configured():
            head = self.source.sequencer.head(ns)
            if head is None:
                continue
            recent: list[StoredCheckpoint] | None = None
            for p in peers:
                entry = out.setdefault(str(p.did), {"entries": 0, "complete": True, "logs": {}})
                lag = self._lag(head.checkpoint, head.size, p)
                if lag is None:
                    if recent is None:
                        recent = self.recent_checkpoints(ns, LAG_WINDOW)
                    for cp in reversed(recent):
                        if self._lag(cp.note, head.size, p, cp.size) is not None:
                            lag = head.size - cp.size
                            break
                entry["logs"][ns] = lag
                if lag is None:
                    entry["complete"] = False
                else:
                    entry["entries"] += lag
        return out

    @staticmethod
    def _lag(note_bytes: bytes, head_size: int, p: _Peer, size: int | None = None) -> int | None:
        try:
            note = Note.from_bytes(note_bytes)
        except RemembrancerError:
            return None
        key = (p.witness.name, p.witness.verifier.key_id)
        if any((s.name, s.key_id) == key for s in note.signatures):
            return head_size - (head_size if size is None else size)
        return None

    def namespace_summary(self, namespace: str) -> dict[str, Any]:
        self.require(namespace)
        src = self.source
        head = src.sequencer.head(namespace)
        out: dict[str, Any] = {"namespace": namespace, "origin": src.sequencer.origin(namespace),
                               "size": head.size if head else 0, "checkpoint": None,
                               "configured": namespace in src.namespaces.current(), "at": self.now()}  # fmt: skip
        if head is not None:
            cp = self.describe_checkpoint(namespace, head.checkpoint)
            stored = src.store.checkpoint_at(namespace, head.size)
            cp["time"] = stored.time if stored else None
            out["checkpoint"] = cp
        if out["configured"]:
            health = src.scheduler.health(namespace)
            out["anchoring"] = {"status": health["status"],
                                "levels": self._levels(namespace, health["levels"])}  # fmt: skip
            ns = src.namespaces.current()[namespace]
            out["description"] = ns.description
        return out

    def _levels(self, namespace: str, levels: Mapping[str, Any]) -> list[dict[str, Any]]:
        now = self.now()
        out = []
        for level, lv in levels.items():
            last = None
            if lv.get("last_size"):
                receipt = self.source.scheduler.receipt(namespace, lv["last_size"])
                mine = [a for a in (receipt.anchors if receipt else ()) if a.target == lv["target"]]
                if mine:
                    a = max(mine, key=lambda a: a.observed_at).to_dict()
                    last = {k: a.get(k) for k in ("status", "txRef", "anchorTs", "observedAt",
                                                  "finality", "superseded_by", "error")}  # fmt: skip
                    last["size"] = lv["last_size"]
            retry_at = lv.get("retry_at")
            out.append({
                "level": level, "target": lv["target"], "every": lv["every"], "period": lv["period"],
                "confirmations": lv.get("confirmations"), "last_anchor_at": lv.get("last_anchor_at"),
                "last_size": lv.get("last_size"), "next_due": lv.get("next_due"), "last_anchor": last,
                "backoff": {"failures": lv.get("failures", 0), "retry_at": retry_at,
                            "active": bool(retry_at and retry_at > now),
                            "last_error": lv.get("last_error")},
            })  # fmt: skip
        return out

    def namespaces_view(self) -> dict[str, Any]:
        names = set(self.configured()) | set(self.source.store.namespaces())
        return {"namespaces": [self.namespace_summary(ns) for ns in sorted(names)
                               if NAMESPACE_RE.match(ns)], "at": self.now()}  # fmt: skip

    def log_page(
        self, namespace: str, before: int | None = None, limit: int = DEFAULT_PAGE
    ) -> dict[str, Any]:
        """Entries ``[before - limit, before)`` newest first (``before`` defaults
        to the log size: the newest page)."""
        self.require(namespace)
        check_page(before, limit)
        head = self.source.sequencer.head(namespace)
        size = head.size if head else 0
        end = size if before is None else before
        if end > size:
            raise NotFoundError(
                f"{namespace} has {size} entries; there is no page before {end}",
                code="index_out_of_range",
                details={"size": size},
            )
        start = max(0, end - limit)
        leaves = self.source.store.read_entries(namespace, start, end) if end > start else []
        entries = [entry_summary(start + i, leaf) for i, leaf in enumerate(leaves)]
        entries.reverse()
        return {
            "namespace": namespace, "size": size, "before": end, "limit": limit,
            "first": start, "entries": entries,
            "newer": (min(size, end + limit) if end < size else None),
            "older": (start if start > 0 else None),
            "oldest": (min(limit, size) if start > 0 else None),
        }  # fmt: skip

    def namespace(
        self, namespace: str, before: int | None = None, limit: int = DEFAULT_PAGE
    ) -> dict[str, Any]:
        out = self.namespace_summary(namespace)
        out["log"] = self.log_page(namespace, before, limit)
        return out

    def search(self, namespace: str, q: str) -> dict[str, Any]:
        """Find a record by index, ``eventHash`` or ``event:id`` (indexed lookups only)."""
        self.require(namespace)
        kind, value = parse_query(q)
        store = self.source.store
        if kind == "index":
            head = self.source.sequencer.head(namespace)
            size = head.size if head else 0
            if value >= size:
                raise NotFoundError(f"{namespace} has {size} entries; no entry {value}",
                                    code="index_out_of_range", details={"size": size})  # fmt: skip
            index = value
        else:
            found = (
                store.find_event_hash(namespace, value)
                if kind == "eventHash"
                else store.find_event_id(namespace, value)
            )
            if found is None:
                raise NotFoundError(f"no record in {namespace} with that {kind}",
                                    code="record_not_found", details={"by": kind})  # fmt: skip
            index = found.index
        return {"namespace": namespace, "by": kind, "index": index,
                "url": f"/explorer/namespaces/{namespace}/records/{index}"}  # fmt: skip

    def _entry(self, namespace: str, index: int) -> tuple[bytes, int]:
        head = self.source.sequencer.head(namespace)
        size = head.size if head else 0
        if not 0 <= index < size:
            raise NotFoundError(f"{namespace} has {size} entries; no entry {index}",
                                code="index_out_of_range", details={"size": size})  # fmt: skip
        leaves = self.source.store.read_entries(namespace, index, index + 1)
        if not leaves:
            raise NotFoundError(f"no entry {index} in {namespace}", code="index_out_of_range")
        return leaves[0], size

    def tree(self, namespace: str, index: int, size: int | None = None) -> dict[str, Any]:
        """The inclusion path of entry ``index`` up to the root of the tree of
        ``size`` (default: the latest checkpoint), with the proof hashes."""
        self.require(namespace)
        leaf, _ = self._entry(namespace, index)
        if size is not None and not 0 < size <= MAX_INDEX:
            raise FormatError("size is a positive tree size", code="size_out_of_range")
        proof, state = self.source.sequencer.proof_inclusion(namespace, index, size)
        tree_size = state.size if size is None else size
        note = state.checkpoint if tree_size == state.size else None
        if note is None:
            stored = self.source.store.checkpoint_at(namespace, tree_size)
            note = stored.note if stored else None
        root = Checkpoint.parse(Note.from_bytes(note).text).root_hash if note else None
        steps = inclusion_path(index, tree_size)
        return {
            "namespace": namespace, "index": index, "treeSize": tree_size,
            "leafHash": encode_base64(hash_leaf(leaf)), "root": encode_base64(root) if root else None,
            "path": [{"level": i, "node": list(node), "sibling": list(sib), "side": side,
                      "hash": encode_base64(h)} for i, ((node, sib, side), h) in enumerate(zip(steps, proof, strict=True))],
        }  # fmt: skip

    def record(self, namespace: str, index: int) -> dict[str, Any]:
        """Everything the record page shows and the browser verifies."""
        self.require(namespace)
        src = self.source
        leaf, _ = self._entry(namespace, index)
        proof, state = src.sequencer.proof_inclusion(namespace, index)
        out: dict[str, Any] = {"namespace": namespace, "origin": src.sequencer.origin(namespace),
                               "index": index, "entry": encode_base64(leaf), **entry_summary(index, leaf),
                               "at": self.now()}  # fmt: skip
        if out["kind"] == "record":
            envelope = loads_strict(leaf)  # a record: it parses strictly
            out["envelope"] = envelope
            out["signatures"] = [{k: s.get(k) for k in ("alg", "kid", "role")}
                                 for s in envelope.get("signatures", [])]  # fmt: skip
        out["receipt"] = {"eventHash": out.get("eventHash"), "index": index, "treeSize": state.size,
                          "proof": [encode_base64(h) for h in proof], "checkpoint": state.checkpoint.decode("utf-8")}  # fmt: skip
        out["checkpoint"] = self.describe_checkpoint(namespace, state.checkpoint)
        steps = inclusion_path(index, state.size)
        out["tree"] = {"treeSize": state.size, "root": encode_base64(state.root_hash),
                       "path": [{"level": i, "node": list(n), "sibling": list(s), "side": side,
                                 "hash": encode_base64(h)} for i, ((n, s, side), h) in enumerate(zip(steps, proof, strict=True))]}  # fmt: skip
        out["anchored"] = self._anchored(namespace, index)
        out["federation_receipts"] = self._federation_receipts(namespace, index)
        out["keys"] = self.keys(namespace)
        return out

    def _anchored(self, namespace: str, index: int) -> dict[str, Any] | None:
        """The earliest anchored checkpoint covering the entry, the entry's
        inclusion proof under it and that checkpoint's anchors."""
        if namespace not in self.source.namespaces.current():
            return None
        covering = self.source.scheduler.covering(namespace, index)
        if covering is None:
            return None
        proof, _ = self.source.sequencer.proof_inclusion(namespace, index, covering.size)
        d = covering.to_dict()
        return {"treeSize": covering.size, "checkpoint": d["checkpoint"], "root": d["root"],
                "proof": [encode_base64(h) for h in proof], "anchors": d["anchors"]}  # fmt: skip

    def _federation_receipts(self, namespace: str, index: int) -> list[dict[str, Any]]:
        fed = self.source.federation
        if fed is None:
            return []
        covering = []
        origin = self.source.sequencer.origin(namespace)
        for r in fed.receipts(namespace):
            if r.get("origin") != origin:  # peers' logs of the same namespace have their own
                continue
            try:
                note = str(r["evidence"]["checkpoint"]).encode("utf-8")
                size = Checkpoint.parse(Note.from_bytes(note).text).size
            except (RemembrancerError, KeyError, TypeError):
                continue
            if size > index:
                covering.append((size, r))
        covering.sort(key=lambda x: x[0])
        return [r for _, r in covering[:5]]

    def keys(self, namespace: str) -> dict[str, Any]:
        """The keys a visitor needs to check this namespace's proofs, as this node
        states them (to be compared with an independent source)."""
        info = self.source.info()
        out: dict[str, Any] = {
            "log": info["vkeys"].get(namespace),
            "cosigners": [p.witness.verifier.vkey for p in self._peers()],
            "federation": None,
        }
        fed = self.source.federation
        if fed is not None:
            out["federation"] = {
                "federation_id": fed.registry.federation_id, "quorum": fed.registry.quorum,
                "peers": [{"did": p.did, "pubkey": p.key_did, "status": p.status, "endpoint": p.endpoint}
                          for p in effective_peers(fed.registry, fed.scores)],
            }  # fmt: skip
        return out

    def witness(self) -> dict[str, Any]:
        """Cosignatures on this node's recent checkpoints per witness, what this
        node's own witness cosigned, and misbehaviour evidence."""
        src = self.source
        peers = self._peers()
        events: dict[str, list[dict[str, Any]]] = {p.witness.name: [] for p in peers}
        by_id = {(p.witness.name, p.witness.verifier.key_id): p for p in peers}
        checkpoints = 0
        for ns in self.configured():
            for cp in self.recent_checkpoints(ns, RECENT_CHECKPOINTS):
                checkpoints += 1
                try:
                    note = Note.from_bytes(cp.note)
                except RemembrancerError:
                    continue
                for s in note.signatures:
                    p = by_id.get((s.name, s.key_id))
                    if p is not None:
                        events[p.witness.name].append({"namespace": ns, "size": cp.size,
                                                       "time": cosignature_time(s), "signed_at": cp.time})  # fmt: skip
        times = [e["time"] for evs in events.values() for e in evs if e["time"] is not None]
        lo, hi = (min(times), max(times)) if times else (0, 0)
        buckets = 12
        span = max(1, hi - lo + 1)
        out_peers = []
        for p in peers:
            evs = sorted(
                events[p.witness.name], key=lambda e: (e["time"] or 0, e["size"]), reverse=True
            )
            series = [0] * buckets
            for e in evs:
                if e["time"] is not None:
                    series[min(buckets - 1, (e["time"] - lo) * buckets // span)] += 1
            out_peers.append({"name": p.witness.name, "vkey": p.witness.verifier.vkey, "did": p.did,
                              "url": p.witness.url, "cosignatures": len(evs),
                              "last": evs[0]["time"] if evs else None, "recent": evs[:20],
                              "series": series})  # fmt: skip
        cosigned = []
        for origin in src.info()["witness"]["logs"]:
            row = src.store.get_cosigned(origin)
            cosigned.append({"origin": origin, "size": row.size if row else None,
                             "time": row.time if row else None})  # fmt: skip
        fed = src.federation
        evidence = fed.evidence() if fed is not None else []
        return {
            "window": {"checkpoints": checkpoints, "from": lo or None, "to": hi or None,
                       "buckets": buckets, "per_namespace": RECENT_CHECKPOINTS},
            "peers": out_peers, "cosigned_by_this_node": cosigned,
            "evidence": evidence, "split_views": list(src.witnessing.split_views)[-20:],
            "stats": src.witnessing.stats(), "at": self.now(),
        }  # fmt: skip

    def anchors(
        self, namespace: str | None = None, before: int | None = None, limit: int = 20
    ) -> dict[str, Any]:
        """Anchor receipts per namespace (newest first, paged by checkpoint size),
        a summary per rail, and what superseded what."""
        check_page(before, limit)
        if namespace is not None:
            self.require(namespace)
            if namespace not in self.source.namespaces.current():
                return {"namespaces": [], "at": self.now()}
        out = []
        for ns in [namespace] if namespace else self.configured():
            receipts = list(self.source.scheduler.iter_receipts(ns))
            rails: dict[str, dict[str, Any]] = {}
            for r in receipts:
                for a in r.anchors:
                    rail = rails.setdefault(a.target, {"target": a.target, "chain": a.chain,
                                                       "statuses": {}, "conflicts": 0, "latest": None})  # fmt: skip
                    rail["statuses"][a.status] = rail["statuses"].get(a.status, 0) + 1
                    rail["conflicts"] += a.superseded_by is not None
                    if a.anchor_ts and (rail["latest"] is None or a.anchor_ts > rail["latest"]):
                        rail["latest"] = a.anchor_ts
            shown = [r for r in receipts if before is None or r.size < before]
            page = shown[-limit:][::-1]
            items = []
            for r in page:
                d = r.to_dict()
                d["conflicts"] = [{"superseded": a["target"] + "/" + str(a.get("txRef") or ""),
                                   "by": a["superseded_by"]} for a in d["anchors"] if a.get("superseded_by")]  # fmt: skip
                for a in d["anchors"]:
                    a["extra"] = {k: v for k, v in a.items() if k not in KNOWN_ANCHOR_FIELDS}
                items.append(d)
            out.append({"namespace": ns, "rails": sorted(rails.values(), key=lambda x: x["target"]),
                        "receipts": items, "total": len(receipts),
                        "older": page[-1].size if len(shown) > limit else None})  # fmt: skip
        return {"namespaces": out, "limit": limit, "at": self.now()}

    def live(self) -> dict[str, Any]:
        """A cheap summary that changes when anything a page shows changes:
        one version string per topic (``logs``, ``anchors``, ``peers``).
        Cached for :data:`LIVE_CACHE_SECONDS` across clients."""
        now = time.monotonic()
        with self._live_lock:
            if self._live is not None and now - self._live[0] < LIVE_CACHE_SECONDS:
                return self._live[1]
        src = self.source
        logs: dict[str, Any] = {}
        anchors: dict[str, Any] = {}
        for ns in self.configured():
            head = src.sequencer.head(ns)
            logs[ns] = [head.size, head.checkpoint.count(b"\n\xe2\x80\x94 ")] if head else [0, 0]
            anchors[ns] = [
                src.store.get_state("scheduler", f"{ns}/{level}") or b"" for level in LEVELS
            ]
        peers: list[Any] = []
        fed = src.federation
        wall = int(src.clock())
        if fed is not None:
            for p in effective_peers(fed.registry, fed.scores):
                seen = fed.heads.get(p.did, {}).get("at")
                age = (wall - seen) // HEARTBEAT_BUCKET if seen else None
                peers.append([p.did, p.status, round(fed.scores.score(p.did)), age])
        value = {
            "at": wall,
            "sizes": {ns: v[0] for ns, v in logs.items()},
            "topics": {"logs": _digest(logs), "anchors": _digest(anchors), "peers": _digest(peers)},
        }
        with self._live_lock:
            self._live = (now, value)
        return value


def _digest(value: Any) -> str:
    def default(o: Any) -> Any:
        return o.hex() if isinstance(o, bytes) else str(o)

    data = json.dumps(value, sort_keys=True, default=default).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def anchor_extras(anchor: Mapping[str, Any]) -> Iterable[tuple[str, Any]]:
    """Fields of an anchor this explorer does not know (shown as they are)."""
    return ((k, v) for k, v in anchor.items() if k not in KNOWN_ANCHOR_FIELDS and k != "extra")
