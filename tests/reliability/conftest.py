"""The reliability suite (docs/reliability.md): fuzzing, faults, security.

``REMEMBRANCER_FUZZ=long`` switches the fuzz targets to their long budgets
(``quick``, the default, is what ``make test`` runs); the summary at the end
of the session gives the number of generated inputs per target and in total.

``await rel.make_world(tmp_path)`` (the ``rel`` fixture is this module: test
modules cannot import a conftest) starts one real node in process (SQLite
store in a temp directory, the example namespaces, a witnessed foreign log, a
federation registry with peers of limited roles, an admin token): a
:class:`World`, driven through its ASGI application with raw requests (exact
``raw_path`` bytes, as uvicorn passes them), that can say whether the node's
durable state changed.  ``await rel.close_world(w)`` stops it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import sqlite3
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from remembrancer.core.checkpoint import Checkpoint, sign_checkpoint
from remembrancer.core.encoding import b64url_encode
from remembrancer.core.jcs import canonicalize
from remembrancer.core.keys import SigningKey
from remembrancer.core.namespace import parse_namespaces
from remembrancer.core.note import format_vkey
from remembrancer.core.record import Record, sign_envelope
from remembrancer.demo.keys import demo_key
from remembrancer.demo.records import EXAMPLE_WITNESSES, example_record, make_record
from remembrancer.log.namespaces import StaticNamespaces
from remembrancer.log.schemas import bundled_schemas
from remembrancer.node.app import create_app
from remembrancer.node.config import Limits, WitnessedLog
from remembrancer.node.runtime import Node
from remembrancer.storage import open_store
from remembrancer.testing import fuzz
from remembrancer.testing.naive_merkle import NaiveTree
from remembrancer.testing.waiting import heartbeats_under_way

EXAMPLES = Path(__file__).resolve().parents[2] / "src" / "remembrancer" / "examples"
FED = "fuzz-federation"
ADMIN_TOKEN = "reliability-admin-token-Zq8vR2mK7pX4"
FOREIGN = "foreign.test/dao:vaultmesh"
FOREIGN_KEY = SigningKey.generate(b"\x61" * 32)
PEER = SigningKey.generate(b"\x62" * 32)  # every role
WITNESS_ONLY = SigningKey.generate(b"\x63" * 32)  # role witness only
SUSPENDED = SigningKey.generate(b"\x64" * 32)  # suspended in the registry
OUTSIDER = SigningKey.generate(b"\x65" * 32)  # not in the registry
ALL_ROLES = ["witness", "anchor", "countersign", "relay", "coordinator"]
CLOSED = "http://127.0.0.1:9"  # a port nobody listens on: deliveries fail at once


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not fuzz.COUNTS:
        return
    total = sum(fuzz.COUNTS.values())
    tr = terminalreporter
    tr.section(f"fuzzing ({fuzz.mode()} mode)")
    width = max(len(name) for name in fuzz.COUNTS)
    for name, n in sorted(fuzz.COUNTS.items()):
        tr.write_line(f"{name:<{width}}  {n:>10,}")
    tr.write_line(f"{'total generated inputs':<{width}}  {total:>10,}")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        import json

        return json.loads(self.body)


class LogCapture(logging.Handler):
    """Every log record at WARNING or above, and every exception the event loop saw."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        return "\n".join(self.format(r) for r in self.records)

    def tracebacks(self) -> list[str]:
        """Records that carry an exception: something failed that nobody handled."""
        return [self.format(r) for r in self.records if r.exc_info or r.levelno >= logging.ERROR]


@dataclass
class World:
    node: Node
    app: Any
    directory: Path
    db: Path
    logs: LogCapture
    foreign_tree: NaiveTree
    foreign_size: int = 0  # the size this node's witness has cosigned
    seq: dict[str, int] = field(default_factory=dict)
    observer: sqlite3.Connection | None = None
    baseline_tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    loop_errors: list[str] = field(default_factory=list)

    # --- requests ---------------------------------------------------------------------
    async def call(
        self,
        method: str,
        raw_path: bytes | str,
        *,
        query: bytes | str = b"",
        body: bytes = b"",
        headers: list[tuple[bytes, bytes]] | None = None,
        timeout: float = 90.0,
    ) -> Answer:
        """One request through the ASGI app, as uvicorn would pass it."""
        if isinstance(raw_path, str):
            raw_path = raw_path.encode("ascii")
        if isinstance(query, str):
            query = query.encode("ascii")
        hdrs = [(b"host", b"node.test")]
        hdrs += headers if headers is not None else [(b"content-type", b"application/json")]
        if body and not any(k == b"content-length" for k, _ in hdrs):
            hdrs.append((b"content-length", str(len(body)).encode()))
        scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1", "method": method, "scheme": "http",
            "path": urllib.parse.unquote(raw_path.decode("ascii")), "raw_path": raw_path,
            "query_string": query, "root_path": "", "headers": hdrs,
            "client": ("127.0.0.1", 50000), "server": ("node.test", 80), "state": {},
        }  # fmt: skip
        done = asyncio.Event()
        sent = False
        status = [0]
        out_headers: dict[str, str] = {}
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                for k, v in message.get("headers", []):
                    out_headers[k.decode("latin-1").lower()] = v.decode("latin-1")
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    done.set()

        try:
            await asyncio.wait_for(self.app(scope, receive, send), timeout)
        finally:
            done.set()
        return Answer(status[0], out_headers, b"".join(chunks))

    async def get(self, path: str, **kw: Any) -> Answer:
        path, _, query = path.partition("?")
        return await self.call("GET", path, query=query, **kw)

    async def post(self, path: str, body: bytes, **kw: Any) -> Answer:
        path, _, query = path.partition("?")
        return await self.call("POST", path, query=query, body=body, **kw)

    # --- state ------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything a request could change durably: logs, entries, records,
        checkpoints, and every state row except the node's own bookkeeping
        (peer scores and its own message counter, which the federation spec lets
        authentic refused messages and background rounds change)."""
        if self.observer is None:
            self.observer = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        c = self.observer
        c.execute("BEGIN")
        try:
            logs = c.execute(
                "SELECT namespace, size, root_hash, checkpoint FROM logs ORDER BY namespace"
            ).fetchall()
            counts = {t: c.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                      for t in ("bundles", "records", "tiles", "checkpoints")}  # fmt: skip
            rows = c.execute(
                "SELECT scope, key, value FROM state"
                " WHERE NOT (scope = 'federation' AND key IN ('scores', 'own-seq'))"
                " ORDER BY scope, key"
            ).fetchall()
        finally:
            c.execute("COMMIT")
        state = {f"{s}/{k}": hashlib.sha256(v).hexdigest()[:16] for s, k, v in rows}
        return {"logs": {ns: (size, root.hex()[:16], hashlib.sha256(cp).hexdigest()[:16])
                         for ns, size, root, cp in logs}, "counts": counts, "state": state}  # fmt: skip

    async def settle(self, limit: float = 5.0) -> None:
        """Wait until the tasks an accepted request started have finished."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            me = asyncio.current_task()
            busy = [t for t in asyncio.all_tasks() if t is not me and t not in self.baseline_tasks
                    and not t.done() and not _long_lived(t)]  # fmt: skip
            if not busy:
                await asyncio.sleep(0)
                return
            await asyncio.wait(busy, timeout=max(0.01, deadline - time.monotonic()))

    # --- inputs -----------------------------------------------------------------------
    def record(self, namespace: str = "dao:vaultmesh", i: int = 0) -> Record:
        return example_record(namespace, i, timestamp=int(time.time()))

    def resign_record(self, value: Any) -> bytes:
        """A (mutated) unsigned envelope, signed by the demo actor and the witnesses
        its namespace needs, so that it gets past the signature checks."""
        if not isinstance(value, dict):
            return canonicalize(value)
        value.pop("signatures", None)
        value.pop("eventHash", None)
        ns = value.get("namespace")
        aliases = (
            EXAMPLE_WITNESSES.get(ns, EXAMPLE_WITNESSES["dao:vaultmesh"])
            if isinstance(ns, str)
            else ()
        )
        actor = (
            PEER if isinstance(ns, str) and ns.startswith("fed:") else demo_key("did:vm:actor:demo")
        )
        if actor is PEER:
            value["actor"] = PEER.did
        return sign_envelope(value, actor, [demo_key(a) for a in aliases]).leaf

    def message(self, kind: str, content: Any, *, key: SigningKey = PEER, sender: str | None = None,
                timestamp: int | None = None, seq: int | None = None, fid: str = FED) -> bytes:  # fmt: skip
        """A federation message in wire form, signed by ``key`` with a fresh seq."""
        sender = sender or key.did
        if seq is None:
            seq = self.seq[sender] = max(self.seq.get(sender, 0) + 1, int(time.time() * 1e6))
        body = {"type": kind, "federation_id": fid, "sender": sender, "seq": seq,
                "timestamp": int(time.time()) if timestamp is None else timestamp, "content": content}  # fmt: skip
        body["signature"] = b64url_encode(key.sign(canonicalize(body)))
        return canonicalize(body)

    def resign_message(self, value: Any) -> bytes:
        if not isinstance(value, dict):
            return canonicalize(value)
        value.pop("signature", None)
        key = next(
            (k for k in (PEER, WITNESS_ONLY, SUSPENDED, OUTSIDER) if k.did == value.get("sender")),
            None,
        )
        if key is not None:
            if isinstance(value.get("seq"), int) and value["seq"] > 1000:
                sender = value["sender"]
                value["seq"] = self.seq[sender] = max(
                    self.seq.get(sender, 0) + 1, int(time.time() * 1e6)
                )
            value["signature"] = b64url_encode(key.sign(canonicalize(value)))
        return canonicalize(value)

    def foreign_note(self, size: int) -> bytes:
        return sign_checkpoint(Checkpoint(FOREIGN, size, self.foreign_tree.root(size)), FOREIGN_KEY)

    def witness_request(self, grow: int = 3) -> bytes:
        """A valid add-checkpoint request extending what this witness cosigned."""
        old = self.foreign_size
        new = min(len(self.foreign_tree.leaves), old + grow)
        proof = self.foreign_tree.consistency_proof(old, new) if 0 < old < new else []
        head = f"old {old}\n" + "".join(base64.b64encode(h).decode() + "\n" for h in proof)
        return head.encode() + b"\n" + self.foreign_note(new)

    def proposal(self) -> bytes:
        """A ``federation.registry.set`` proposal by PEER (pending: quorum is 3)."""
        reg = self.node.federation.registry  # type: ignore[union-attr]
        payload = reg.registry_record_payload("fuzz")
        payload["registry"]["peers"].append(
            {"did": OUTSIDER.did, "endpoint": CLOSED, "pubkey": OUTSIDER.did, "status": "probation",
             "roles": ["witness"]})  # fmt: skip
        return make_record(f"fed:{FED}", "federation.registry.set@1.0.0", payload, PEER,
                           timestamp=int(time.time())).leaf  # fmt: skip

    def admin(self) -> list[tuple[bytes, bytes]]:
        return [(b"authorization", f"Bearer {ADMIN_TOKEN}".encode())]


def all_routes(app: Any) -> list[Any]:
    """Every route of the app, including those of included routers (the explorer's),
    which FastAPI keeps inside an ``_IncludedRouter`` entry of ``app.routes``."""
    out = []
    todo = list(app.routes)
    while todo:
        route = todo.pop(0)
        inner = getattr(route, "original_router", None)
        if inner is not None:
            todo = list(inner.routes) + todo
        elif getattr(route, "path", None) is not None:
            out.append(route)
    return out


def _long_lived(task: asyncio.Task[Any]) -> bool:
    name = task.get_name()
    return name.startswith(("sequencer:", "federation-heartbeats")) or "loop" in name.lower()


def registry_doc(node_key: SigningKey) -> dict[str, Any]:
    def peer(key: SigningKey, roles: list[str], status: str = "active") -> dict[str, Any]:
        return {
            "did": key.did,
            "endpoint": CLOSED,
            "pubkey": key.did,
            "status": status,
            "roles": roles,
        }

    return {"federation_id": FED, "quorum": 3, "anchor_strategy": "independent", "peers": [
        peer(node_key, ALL_ROLES), peer(PEER, ALL_ROLES), peer(WITNESS_ONLY, ["witness"]),
        peer(SUSPENDED, ALL_ROLES, "suspended")]}  # fmt: skip


@pytest.fixture
def rel() -> Any:
    """This module, for its helpers: test modules cannot import a conftest."""
    return sys.modules[__name__]


async def make_world(tmp_path: Path, *, records: int = 12) -> World:
    """Build and start the node (call :func:`close_world` when done)."""
    from remembrancer.federation.registry.model import Registry

    schemas = bundled_schemas()
    doc = yaml.safe_load((EXAMPLES / "namespaces.yaml").read_text())
    namespaces = parse_namespaces(doc, known_schemas=frozenset(schemas.names()))
    node_key = SigningKey.generate(b"\x60" * 32)
    db = tmp_path / "node.db"
    node = Node(
        store=open_store(f"sqlite:///{db}"), node_key=node_key, origin_prefix="fuzz.test",
        namespaces=StaticNamespaces(namespaces), schemas=schemas,
        limits=Limits(client_rate=1e9, client_burst=10**9, namespace_rate=1e9, namespace_burst=10**9),
        admin_token=ADMIN_TOKEN,
        witnessed=(WitnessedLog(FOREIGN, (format_vkey(FOREIGN, FOREIGN_KEY.public),)),),
        scheduler_enabled=False, federation_registry=Registry.from_dict(registry_doc(node_key)),
        heartbeat_seconds=3600, antientropy_seconds=3600,
    )  # fmt: skip
    capture = LogCapture()
    capture.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(capture)
    app = create_app(node, manage_node=False)
    foreign = NaiveTree.from_entries([b"foreign entry %d" % i for i in range(4000)])
    w = World(node, app, tmp_path, db, capture, foreign)
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(
        lambda _loop, ctx: w.loop_errors.append(str(ctx.get("exception") or ctx))
    )
    await node.start()
    for i in range(records):
        await node.submit(w.record("dao:vaultmesh", i).leaf)
    await node.submit(w.record("fin:clearing", 0).leaf)
    # The first heartbeat round is under way: its deliveries to the closed peer
    # endpoints retry for seconds; they are part of the baseline, not awaited.
    await heartbeats_under_way()
    w.baseline_tasks = set(asyncio.all_tasks())
    return w


async def close_world(w: World) -> None:
    logging.getLogger().removeHandler(w.logs)
    if w.observer is not None:
        w.observer.close()
    await w.node.stop()


def xns_message_record() -> Record:
    body = {"source": "dao:vaultmesh", "target": "fin:clearing", "action": "notify",
            "payload": {"operation": "status.update", "parameters": {"status": "done"}}}  # fmt: skip
    return make_record("dao:vaultmesh", "namespace.message@1.0.0", body, demo_key("did:vm:actor:demo"),
                       [demo_key(a) for a in EXAMPLE_WITNESSES["dao:vaultmesh"]],
                       timestamp=int(time.time()))  # fmt: skip
