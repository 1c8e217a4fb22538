"""Every HTTP route of a real node, fuzzed in process (docs/reliability.md).

The node (the ``rel.make_world`` fixture: SQLite store, federation, witnessed
log, admin token) gets raw ASGI requests as uvicorn would pass them.  Each
request targets one route (chosen in turn, so every route gets its share)
and is made from that route's valid requests by mutating one part: a path
parameter (bytes, traversal tokens, encodings), the query, the headers or
the body (structure-aware: records and federation messages are re-signed
after a JSON-level mutation, so they reach the admission and content checks).

For every request: no 5xx, an error is the documented JSON error object, an
accepted record, federation message, proposal or witness request verifies
under the original keys (checked without the node's code: the soundness
oracles of remembrancer.testing.oracles), and a refused request (4xx)
changes nothing durable (log heads, entries,
records, checkpoints, witness, replay, registry, proposal and evidence state;
compared before and after).  At the end the node still answers, its
sequencer still admits records, and nothing logged an unhandled exception.

The existing schemathesis test (tests/integration/test_openapi_fuzz.py)
checks conformance to the OpenAPI document; this one covers the routes
outside it (tlog-tiles, witness, replicas, explorer pages), state, and
inputs derived from valid ones.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
import urllib.parse
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from remembrancer.core.jcs import canonicalize, loads_strict
from remembrancer.core.keys import PublicKey
from remembrancer.demo.keys import demo_key
from remembrancer.testing import oracles
from remembrancer.testing.fuzz import Mutator, base_seed, budget, count

TRAVERSAL = [
    "..", "../..", "../../../../etc/passwd", "%2e%2e", "%2e%2e%2f%2e%2e", "..%2f..%2fetc",
    "/etc/passwd", "//etc", "dao:vaultmesh/../fin:clearing", "dao:vaultmesh%2f..%2f..", "%00",
    "dao:vaultmesh\x00", "C:\\Windows", "..\\..", "~root", "%252e%252e", "\u2025", ".%2e/",
]  # fmt: skip
ODD = ["", " ", "-1", "0", "1e3", "0x10", "99999999999999999999999", "9223372036854775808",
       "nan", "null", "true", "[]", "{}", "a" * 3000, "\u00e9", "\ud800", "%", "%zz", "?", "#"]  # fmt: skip
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
CONTENT_TYPES = [b"application/json", b"text/plain", b"", b"application/json; charset=latin-1",
                 b"multipart/form-data; boundary=x", b"application/x-www-form-urlencoded"]  # fmt: skip


def _encode_path_value(value: str, rng: random.Random) -> str:
    """A path parameter as it could appear in a request target (ASCII only)."""
    raw = value.encode("utf-8", "surrogatepass")
    roll = rng.random()
    if roll < 0.5:  # what a client would send: reserved characters encoded
        return urllib.parse.quote_from_bytes(raw, safe=":@")
    if roll < 0.8:  # slashes left raw
        return urllib.parse.quote_from_bytes(raw, safe=":@/%")
    return urllib.parse.quote_from_bytes(raw, safe="")  # everything encoded, even ':'


class Requests:
    """Valid requests per route, and mutations of them."""

    def __init__(self, world: Any, rel: Any, seed: int) -> None:
        self.w = world
        self.rel = rel
        self.rng = random.Random(seed)
        self.mut = Mutator(seed ^ 0x5EED)
        node = world.node
        self.origin_dao = node.sequencer.origin("dao:vaultmesh")
        self.hashes = [node.record_at("dao:vaultmesh", i)["eventHash"] for i in range(3)]
        self.xns = rel.xns_message_record()
        self.route_path = ""
        self.values: dict[str, list[str]] = {
            "namespace": ["dao:vaultmesh", "fin:clearing", "ops:none", f"fed:{rel.FED}"],
            "event_hash": [*self.hashes, "sha256:" + "0" * 64],
            "index": ["0", "3", "11", "12"],
            "size": ["1", "5", "12"],
            "tile_path": [
                "0/000",
                "0/000.p/5",
                "0/000.p/12",
                "1/000.p/1",
                "entries/000.p/5",
                "entries/000.p/12",
                "0/x001/000",
                "2/000.p/1",
            ],
            "origin": [rel.FOREIGN, self.origin_dao, "unknown.test/dao:vaultmesh"],
            "proposal_id": ["evt-none"],
            "name": ["explorer.js", "explorer.css", "verify.js"],
        }

    # --- parts -----------------------------------------------------------------------
    def path_value(self, param: str) -> str:
        r = self.rng
        pool = self.values.get(param, ["x"])
        if param == "namespace" and self.route_path.endswith("/messages"):
            pool = ["fin:clearing", *pool]  # the namespace that takes dao:vaultmesh's messages
        if param == "tile_path":
            size = self.w.node.sequencer.head("dao:vaultmesh").size
            pool = [f"0/000.p/{size % 256}", f"entries/000.p/{size % 256}", *pool]
        roll = r.random()
        if roll < 0.3:
            return pool[0]
        if roll < 0.55:
            return r.choice(pool)
        if roll < 0.7:
            return r.choice(TRAVERSAL)
        if roll < 0.8:
            return r.choice(ODD)
        mutated = self.mut.mutate_bytes(r.choice(pool).encode())
        return mutated.decode("utf-8", "surrogateescape")

    def query(self, params: list[dict[str, Any]]) -> str:
        r = self.rng
        out: list[tuple[str, str]] = []
        for p in params:
            if p["in"] != "query" or r.random() < 0.3:
                continue
            out.append((p["name"], self.query_value(p)))
        if r.random() < 0.1:
            out.append((r.choice(["x", "wait", "index", "format", "__proto__"]), r.choice(ODD)))
        return urllib.parse.urlencode(out, safe=":", errors="surrogatepass")

    def query_value(self, p: dict[str, Any]) -> str:
        r = self.rng
        schema = p.get("schema", {})
        good: list[str] = []
        for s in [schema, *schema.get("anyOf", [])]:
            if s.get("type") == "integer":
                lo = s.get("minimum", s.get("exclusiveMinimum", 0))
                good += [str(lo), str(lo + 1), "3", "12"]
            elif s.get("type") == "boolean":
                good += ["true", "false"]
            elif s.get("type") == "number":
                good += ["0", "0.5", "1"]
            elif s.get("pattern") == "^(json|tlog-proof)$":
                good += ["json", "tlog-proof"]
            elif s.get("pattern") == "^(fast|strong|cold)$":
                good += ["fast", "cold"]
            elif "enum" in s:
                good += [str(v) for v in s["enum"]]
        name = p["name"]
        if name == "origin":
            good += self.values["origin"]
        elif name == "target":
            good += ["rfc3161:tsa", "eip155:1", "btc:mainnet"]
        elif name == "namespace":
            good += self.values["namespace"]
        elif name == "q":
            good += ["3", self.hashes[0], "evt-x"]
        if not good or r.random() < 0.35:
            return r.choice(ODD + TRAVERSAL)
        return r.choice(good)

    def headers(self, route_path: str) -> list[tuple[bytes, bytes]]:
        r = self.rng
        ctype = b"text/plain" if route_path == "/witness/add-checkpoint" else b"application/json"
        if r.random() < 0.12:
            ctype = r.choice(CONTENT_TYPES)
        out = [(b"content-type", ctype)]
        if "/admin/" in route_path:
            roll = r.random()
            if roll < 0.5:
                out += self.w.admin()
            elif roll < 0.7:
                out.append((b"authorization", b"Bearer " + self.rel.ADMIN_TOKEN[:-1].encode()))
            elif roll < 0.8:
                out.append((b"authorization", self.rel.ADMIN_TOKEN.encode()))
        if r.random() < 0.03:
            out.append((b"content-length", r.choice([b"-1", b"abc", b"99999999999", b"0"])))
        return out

    # --- bodies ------------------------------------------------------------------------
    def body(self, route_path: str, chosen: dict[str, str]) -> bytes:
        w, r = self.w, self.rng
        if route_path == "/v1/namespaces/{namespace}/records":
            ns = chosen.get("namespace", "")
            ns = (
                ns
                if ns in ("dao:vaultmesh", "fin:clearing")
                else r.choice(["dao:vaultmesh", "fin:clearing"])
            )
            return self._json_body(lambda: w.record(ns, r.randrange(10**6)).leaf, w.resign_record)
        if route_path == "/witness/add-checkpoint":
            sample = w.witness_request(r.choice([0, 1, 3, 40]))
            return sample if r.random() < 0.3 else self._bytes_or_lines(sample)
        if route_path == "/federation/v1/messages":
            return self._json_body(self.federation_message, w.resign_message)
        if route_path == "/v1/namespaces/{namespace}/messages":
            rec = self.xns if r.random() < 0.7 else self.rel.xns_message_record()
            sample = json.dumps({"record": json.loads(rec.leaf)}).encode()
            return self._json_body(lambda: sample, lambda v: json.dumps(v).encode())
        if route_path == "/v1/federation/proposals":
            return self._json_body(w.proposal, w.resign_record)
        if r.random() < 0.5:
            return b""
        return self.mut.mutate_bytes(b'{"a": 1}')

    def federation_message(self) -> bytes:
        w, r, rel = self.w, self.rng, self.rel
        kind = r.choice(["heartbeat", "checkpoint", "request", "evidence", "countersign", "anchor",
                         "receipt", "bundle", "xns"])  # fmt: skip
        key = r.choice([rel.PEER] * 6 + [rel.WITNESS_ONLY, rel.SUSPENDED, rel.OUTSIDER])
        note = w.node.store.log_state("dao:vaultmesh").checkpoint.decode()
        content: dict[str, Any] = {
            "heartbeat": {"logs": [{"origin": self.origin_dao, "size": 12, "root": "sha256:" + "ab" * 32}]},
            "checkpoint": {"origin": self.origin_dao, "note": note},
            "request": {"namespace": "dao:vaultmesh", "want": ["receipts"]},
            "evidence": {"kind": "equivocation", "subject": rel.FOREIGN, "file": "not evidence\n"},
            "countersign": {"namespace": "dao:vaultmesh", "receipt_id": "ab" * 32 + "/rfc3161:tsa/x",
                            "signature": {"node": key.did, "role": "witness", "timestamp": int(time.time()),
                                          "sig": "A" * 86}},
            "anchor": {"namespace": "dao:vaultmesh", "receipt": {
                "type": "remembrancer.federation-receipt/v1", "namespace": "dao:vaultmesh"}},
            "receipt": {"namespace": "dao:vaultmesh", "receipt": {"type": "remembrancer.anchor-receipt/v1"}},
            "bundle": {"namespace": "dao:vaultmesh", "receipts": [], "anchors": []},
            "xns": {"source": "dao:vaultmesh", "target": "fin:clearing",
                    "record": json.loads(self.xns.leaf), "proof": "c2sp.org/tlog-proof@v1\nindex 0\n\n" + note},
        }[kind]  # fmt: skip
        return w.message(kind, content, key=key)

    def _json_body(self, sample: Any, finish: Any) -> bytes:
        r = self.rng
        data = sample()
        roll = r.random()
        if roll < 0.2:
            return data  # type: ignore[no-any-return]
        if roll < 0.65:
            try:
                value = self.mut.mutate_json(json.loads(data))
                return finish(value)  # type: ignore[no-any-return]
            except Exception:
                return self.mut.serialize(self.mut.mutate_json(json.loads(data)))
        return self.mut.mutate_bytes(data)

    def _bytes_or_lines(self, sample: bytes) -> bytes:
        return (
            self.mut._line_op(sample) if self.rng.random() < 0.4 else self.mut.mutate_bytes(sample)
        )

    # --- whole requests -------------------------------------------------------------------
    def request(
        self, route: Any, params: list[dict[str, Any]]
    ) -> tuple[str, str, str, bytes, list[tuple[bytes, bytes]]]:
        r = self.rng
        path = self.route_path = route.path
        chosen: dict[str, str] = {}
        for name in route.param_convertors:
            chosen[name] = self.path_value(name)
            value = _encode_path_value(chosen[name], r)
            path = path.replace("{" + name + "}", value).replace("{" + name + ":path}", value)
        methods = sorted(route.methods - {"HEAD"}) or ["GET"]
        method = r.choice(methods) if r.random() < 0.95 else r.choice(METHODS)
        body = self.body(route.path, chosen) if method in ("POST", "PUT", "PATCH") else b""
        return method, path, self.query(params), body, self.headers(route.path)


def _example_witnesses(rel: Any, namespace: str) -> tuple[dict[str, PublicKey], int]:
    """The record witnesses of the example namespace configuration (keys, quorum)."""
    doc = yaml.safe_load((rel.EXAMPLES / "namespaces.yaml").read_text())
    policy = doc["namespaces"][namespace]["witnesses"]
    return {demo_key(a).did: demo_key(a).public for a in policy["allowlist"]}, policy[
        "min_required"
    ]


def check_accepted(w: Any, rel: Any, route: str, body: bytes, status: int) -> None:
    """Soundness: what the node accepted verifies under the keys that made the
    valid requests, checked without the node's code.  Accepted: a 2xx answer
    to a POST, but a 202 of the records route (``wait=false``: queued, judged
    later) or of the messages route (relayed to another node, judged there)."""
    actor = demo_key("did:vm:actor:demo").public
    if status == 202 and route in ("/v1/namespaces/{namespace}/records",
                                   "/v1/namespaces/{namespace}/messages"):  # fmt: skip
        return
    if route == "/v1/namespaces/{namespace}/records":
        namespace = loads_strict(body)["namespace"]
        if namespace.startswith("fed:"):
            oracles.check_record_signed(body, rel.PEER.public, {}, 0)
        else:
            oracles.check_record_signed(body, actor, *_example_witnesses(rel, namespace))
    elif route == "/v1/namespaces/{namespace}/messages":
        record = canonicalize(loads_strict(body)["record"])
        oracles.check_record_signed(record, actor, *_example_witnesses(rel, "dao:vaultmesh"))
    elif route == "/v1/federation/proposals":
        oracles.check_record_signed(body, rel.PEER.public, {}, 0)
    elif route == "/federation/v1/messages":
        peers = {
            k.did: k.public for k in (w.node.node_key, rel.PEER, rel.WITNESS_ONLY, rel.SUSPENDED)
        }
        oracles.check_message_signed(body, peers)
    elif route == "/witness/add-checkpoint":
        head, _, note = body.partition(b"\n\n")
        text = oracles.check_note_signed(note, rel.FOREIGN, rel.FOREIGN_KEY.public)
        origin, size_line, root = text.decode().split("\n")[:3]
        size, old = int(size_line), int(head.split(b"\n")[0].removeprefix(b"old "))
        tree = w.foreign_tree
        if origin != rel.FOREIGN or base64.b64decode(root) != tree.root(size):
            raise oracles.Unsound("not a state of the foreign log")
        proof = [base64.b64decode(x) for x in head.split(b"\n")[1:] if x]
        if proof != (tree.consistency_proof(old, size) if 0 < old < size else []):
            raise oracles.Unsound("not the foreign log's consistency proof")


def _routes(app: Any, rel: Any) -> list[tuple[Any, list[dict[str, Any]]]]:
    spec = app.openapi()
    out = []
    for route in rel.all_routes(app):
        path = getattr(route, "path", None)
        if path is None or path.startswith(("/docs", "/redoc", "/openapi")):
            continue
        plain = path.replace(":path}", "}")
        params: list[dict[str, Any]] = []
        for op in spec["paths"].get(plain, {}).values():
            params += op.get("parameters", [])
        out.append((route, params))
    return out


def _is_error_body(answer: Any) -> bool:
    try:
        err = answer.json()["error"]
        return isinstance(err["code"], str) and isinstance(err["message"], str)
    except (ValueError, KeyError, TypeError):
        return False


def test_every_route_survives_mutated_requests_and_refusals_change_nothing(
    rel: Any, tmp_path: Path
) -> None:
    n = budget(3000, 200_000)

    async def go() -> dict[str, Counter[int]]:
        w = await rel.make_world(tmp_path)
        try:
            return await _fuzz(w, rel, n)
        finally:
            await rel.close_world(w)

    started = time.perf_counter()
    seen = asyncio.run(go())
    count("http.routes", n, time.perf_counter() - started)
    print({route: dict(c) for route, c in seen.items()})


async def _fuzz(
    w: Any, rel: Any, n: int, only: tuple[str, ...] | None = None
) -> dict[str, Counter[int]]:
    routes = [r for r in _routes(w.app, rel) if only is None or r[0].path in only]
    gen = Requests(w, rel, base_seed())
    await w.node.submit(gen.xns.leaf)  # in its source log: deliveries of it can succeed
    await w.settle()
    seen: dict[str, Counter[int]] = {r.path: Counter() for r, _ in routes}
    codes: dict[str, Counter[str]] = {r.path: Counter() for r, _ in routes}
    seed = w.node.node_key.to_bytes()
    secrets = [rel.ADMIN_TOKEN.encode(), seed, seed.hex().encode(), base64.b64encode(seed).rstrip(b"="),
               base64.urlsafe_b64encode(seed).rstrip(b"=")]  # fmt: skip
    before = w.state()
    for i in range(n):
        route, params = routes[i % len(routes)]
        method, path, query, body, headers = gen.request(route, params)
        answer = await w.call(method, path, query=query, body=body, headers=headers)
        seen[route.path][answer.status] += 1
        if answer.status >= 400 and _is_error_body(answer):
            codes[route.path][answer.json()["error"]["code"]] += 1
        where = f"request {i}: {method} {path}?{query} body={body[:300]!r} -> {answer.status} {answer.body[:500]!r}"
        assert answer.status < 500, where
        assert not any(secret in answer.body for secret in secrets), (
            f"a secret in the answer: {where}"
        )
        if answer.status >= 400:
            ctype = answer.headers.get("content-type", "")
            # JSON errors everywhere, but the witness's size answer (C2SP) and the
            # explorer's pages (an HTML error page, for people)
            assert (
                _is_error_body(answer)
                or ctype.startswith("text/x.tlog.size")
                or (route.path.startswith("/explorer") and ctype.startswith("text/html"))
            ), where
            after = w.state()
            assert after == before, (
                f"a refused request changed the state: {where}\n{_diff(before, after)}"
            )
        else:
            if method == "POST" and answer.status < 300:
                try:
                    check_accepted(w, rel, route.path, body, answer.status)
                except Exception as e:
                    raise oracles.Unsound(f"accepted, but unsound ({e}): {where}") from e
            if method != "GET":
                await w.settle()
                before = w.state()
                if route.path == "/witness/add-checkpoint" and answer.status == 200:
                    w.foreign_size = int(body.split(b"\n\n", 1)[1].split(b"\n")[1])
                if route.path == "/v1/federation/proposals":
                    gen.values["proposal_id"].append(answer.json().get("proposal_id", "evt-none"))
    # Everything in the record logs, queued ones (202) included, is sound: signed by
    # the original keys (but the node's own deliveries of cross-namespace messages).
    node_did = w.node.node_key.did
    for ns in ("dao:vaultmesh", "fin:clearing"):
        state = w.node.store.log_state(ns)
        for leaf in w.node.store.read_entries(ns, 0, state.size if state else 0):
            if loads_strict(leaf)["actor"] != node_did:
                oracles.check_record_signed(leaf, demo_key("did:vm:actor:demo").public,
                                            *_example_witnesses(rel, ns))  # fmt: skip
    # The node still works: it answers, admits a record, and logged no unhandled error.
    assert (await w.get("/readyz")).status == 200
    fresh = w.record("dao:vaultmesh", 10**7)
    ok = await w.post("/v1/namespaces/dao:vaultmesh/records", fresh.leaf)
    assert ok.status == 200, ok.body
    assert not w.loop_errors, w.loop_errors[:5]
    assert not w.logs.tracebacks(), "\n".join(w.logs.tracebacks()[:5])
    logged = w.logs.text().encode()
    assert not any(secret in logged for secret in secrets), "a secret in the node's log"
    # Every route was reached, and the valid requests among the mutations got through.
    assert all(sum(c.values()) > 0 for c in seen.values())
    ok_routes = {p for p, c in seen.items() if any(s < 400 for s in c)}
    for must in ("/v1/namespaces/{namespace}/records", "/witness/add-checkpoint",
                 "/federation/v1/messages", "/logs/{namespace}/tile/{tile_path:path}"):  # fmt: skip
        assert must in ok_routes, (must, dict(seen[must]))
    print({p: c.most_common(6) for p, c in codes.items()})
    return seen


def test_the_oracle_catches_a_node_with_broken_signature_checks(
    rel: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With Ed25519 verification broken in the node (every signature "valid"),
    the fuzzer fails on the first mutated record the node admits."""

    async def go() -> None:
        w = await rel.make_world(tmp_path)
        try:
            monkeypatch.setattr(PublicKey, "verify", lambda *a, **k: True)
            await _fuzz(w, rel, budget(600, 600), only=("/v1/namespaces/{namespace}/records",))
        finally:
            monkeypatch.undo()
            await rel.close_world(w)

    with pytest.raises(oracles.Unsound, match="accepted, but unsound"):
        asyncio.run(go())


def _diff(a: dict[str, Any], b: dict[str, Any]) -> str:
    lines = []
    for part in ("logs", "counts", "state"):
        x, y = a[part], b[part]
        for k in sorted(set(x) | set(y)):
            if x.get(k) != y.get(k):
                lines.append(f"  {part}[{k}]: {x.get(k)} -> {y.get(k)}")
    return "\n".join(lines[:20])
