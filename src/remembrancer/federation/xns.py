"""Cross-namespace messages on a node (``namespace.message@1.0.0``, docs/messaging.md).

:class:`Messaging` is what a node does with a message and its proof:

- **deliver** it into a namespace hosted here: the checks of
  :func:`remembrancer.core.xns.verify_message` (among them, that the message
  meets its *source* namespace's admission policy as this node's own
  configuration states it), then replay (``xns_replayed``:
  the delivery's event id is derived from the message's event hash, so the
  sequencer's replay rule backs this check atomically) and freshness
  (:func:`~remembrancer.core.xns.check_fresh` against this node's own copy of
  the source log, the checkpoint it last cosigned as a witness, and the
  newest source checkpoint it accepted in a delivery); then, for a ``query``
  the answer of a built-in read-only operation and for an ``invoke`` the
  result of the handler configured for the operation, and finally the
  delivery record (and the answer record) through the sequencer, with full
  admission;
- **relay** it to the target's home node when the target is not hosted
  here: a federation ``xns`` message to the peer whose heartbeats announce a
  log of the target;
- **receive** relayed ``xns`` messages (a federation handler) and deliver them.

A refusal changes nothing but ``remembrancer_xns_rejected_total{code}``: no
record, no replay state, no accepted-checkpoint state.  A message relayed by
a peer and refused here does not count against that peer (it vouches for
nothing: the message carries its own proof).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import importlib
import inspect
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from remembrancer.core.checkpoint import Checkpoint
from remembrancer.core.cosignature import CosignatureVerifier
from remembrancer.core.errors import (
    ConfigError,
    ConflictError,
    FormatError,
    NotFoundError,
    PeerError,
    PolicyError,
    PushbackError,
    RemembrancerError,
)
from remembrancer.core.jcs import canonicalize, loads_strict, parse_sha256_hex
from remembrancer.core.namespace import NamespaceConfig
from remembrancer.core.note import Note, NoteVerifier, Verifier
from remembrancer.core.record import Record, sign_envelope
from remembrancer.core.rfc6962 import hash_leaf
from remembrancer.core.schema import SchemaRegistry
from remembrancer.core.tlogproof import TlogProof
from remembrancer.core.xns import (
    QUERY_OPERATIONS,
    KnownHead,
    Message,
    VerifiedMessage,
    answer_envelope,
    answer_event_id,
    check_fresh,
    count_cosigners,
    delivery_envelope,
    delivery_event_id,
    verify_message,
)
from remembrancer.federation.ports import Inbox, Outbox, PeerView
from remembrancer.federation.protocol.contents import XnsContent
from remembrancer.log.sequencer import Receipt, Sequencer
from remembrancer.storage.base import FoundEntry

log = logging.getLogger("remembrancer.xns")
SOURCES_SCOPE = "xns-sources"  # origin -> newest source checkpoint accepted in a delivery
MAX_RECORD_IN_ANSWER = 12_288  # record.get includes the record up to this many bytes
POLL_SECONDS = 0.05
ANSWER_WAIT = 10.0  # seconds a delivery view waits for an answer being committed here
MAX_REQUEST_BYTES = 192 * 1024


@dataclass(frozen=True, slots=True)
class InvokeRequest:
    """What an ``invoke`` handler is called with (after the message verified).

    A handler is ``handler(request) -> Mapping`` (plain or ``async``); its
    result, a JSON object of at most 16 KiB canonical, is recorded in the
    answer.  Raising a :class:`RemembrancerError` refuses the invocation
    (``xns_handler_refused``) and nothing is recorded.  Plain handlers run on
    a worker thread.
    """

    source: str
    target: str
    operation: str
    parameters: Mapping[str, Any]
    message: str  # the message's eventHash
    actor: str  # the did:key that signed the message


def echo(request: InvokeRequest) -> dict[str, Any]:
    """The built-in ``echo`` handler: answers with the parameters it was given."""
    return {"echo": dict(request.parameters), "from": request.source}


BUILTIN_HANDLERS: Mapping[str, Callable[[InvokeRequest], Any]] = {"echo": echo}


@dataclass(frozen=True, slots=True)
class Posted:
    """What became of a posted message: ``delivered`` here (``view``: the delivery
    and its answer) or ``relayed`` to the target's home node (``view``: where to
    poll)."""

    outcome: Literal["delivered", "relayed"]
    view: dict[str, Any]


class Messaging:
    """See the module docstring.  One per node; built by the node runtime."""

    def __init__(
        self,
        sequencer: Sequencer,
        *,
        submit: Callable[[Record], Awaitable[Receipt]],
        witnessed: Mapping[str, Sequence[NoteVerifier]] | None = None,
        witnessed_note: Callable[[str], bytes] | None = None,
        relay_witnesses: Sequence[CosignatureVerifier] = (),
        relay_quorum: int = 0,
        schemas: SchemaRegistry | None = None,
        clock: Callable[[], float] = time.time,
        on_rejected: Callable[[str], None] = lambda code: None,
        on_delivered: Callable[[str, str, str], None] = lambda s, t, a: None,
        on_relayed: Callable[[str], None] = lambda target: None,
        handler_timeout: float = 10.0,
    ) -> None:
        self.sequencer = sequencer
        self.store = sequencer.store
        self.key = sequencer.node_key
        self.did = self.key.did
        self.submit = submit
        self.witnessed = {o: list(v) for o, v in (witnessed or {}).items()}
        self.witnessed_note = witnessed_note
        self.relay_witnesses = [w.vkey for w in relay_witnesses]
        self.relay_quorum = relay_quorum
        self.schemas = schemas or sequencer.schemas
        self.clock = clock
        self.on_rejected = on_rejected
        self.on_delivered = on_delivered
        self.on_relayed = on_relayed
        self.handler_timeout = handler_timeout
        # The federation's parts, once attached (None: this node relays nothing).
        self.peers: PeerView | None = None
        self.outbox: Outbox | None = None
        # Messages being delivered here, by event hash: set once the delivery and
        # its answer are both committed (or the attempt failed).
        self._inflight: dict[bytes, asyncio.Event] = {}
        self._accepted: dict[str, tuple[int, bytes] | None] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._handlers: dict[str, Callable[[InvokeRequest], Any]] = dict(BUILTIN_HANDLERS)

    # --- wiring ----------------------------------------------------------------------
    def attach(self, inbox: Inbox, peers: PeerView, outbox: Outbox) -> None:
        """Receive ``xns`` messages from ``inbox``; relay to the peers that
        ``peers`` says host a target, through ``outbox``."""
        self.peers = peers
        self.outbox = outbox
        inbox.add_handler(XnsContent, self.on_xns)
        inbox.add_extension(self)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _namespaces(self) -> Mapping[str, NamespaceConfig]:
        return self.sequencer.namespaces.current()

    # --- the HTTP entry points -----------------------------------------------------
    async def post(self, target: str, body: bytes, wait: float) -> Posted:
        """``POST /v1/namespaces/{target}/messages``: deliver here (outcome
        ``delivered``) or relay to the target's home node (``relayed``).

        ``body`` is ``{"record": {...}, "proof": "<tlog-proof>"}``; without
        ``proof`` the record must be in a log hosted here, and this node
        attaches its proof once the checkpoint carries the cosignatures the
        target needs (the target's policy when it is hosted here, this node's
        witnessing quorum when relaying), waiting at most ``wait`` seconds.
        Every refusal is counted and raised."""
        try:
            record, proof = _parse_request(body)
            ns = self._namespaces().get(target)
            if ns is not None:
                if proof is None:
                    trust = ns.trusted(record.namespace)
                    witnesses = trust.witnesses if trust else ()
                    need = trust.min_cosigners if trust else 0
                    record, proof = await self._own_proof(record, wait, witnesses, need)
                return Posted("delivered", await self.deliver(ns, record, proof))
            if self.peers is not None:
                return Posted("relayed", await self._relay(target, record, proof, wait))
            raise NotFoundError(
                f"namespace {target} is not hosted here and this node is in no federation"
                " to relay through",
                code="xns_target_unknown",
                details={"target": target},
            )
        except RemembrancerError as e:
            self.on_rejected(e.code)
            raise

    async def delivery_view(self, target: str, message_hash: bytes) -> dict[str, Any]:
        """``GET /v1/namespaces/{target}/messages/{eventHash}``: the delivery of a
        message (and its answer), with proofs at the latest checkpoint."""
        if target not in self._namespaces():
            raise NotFoundError(f"namespace {target} is not hosted here", code="namespace_unknown")
        # The delivery is committed before its answer: while this node is still
        # delivering the message (checking it, then both commits), wait for it to
        # finish rather than show the delivery without its answer.
        delivering = self._inflight.get(message_hash)
        if delivering is not None:
            try:
                await asyncio.wait_for(delivering.wait(), ANSWER_WAIT)
            except TimeoutError:
                pass  # still committing: the view shows what is committed now
        found = await asyncio.to_thread(
            self.store.find_event_id, target, delivery_event_id(message_hash)
        )
        if found is None:
            raise NotFoundError(
                f"no delivery of sha256:{message_hash.hex()} in {target}",
                code="xns_delivery_not_found",
            )
        delivery, d_receipt = await asyncio.to_thread(self._stored, target, found.index)
        answer = await asyncio.to_thread(
            self.store.find_event_id, target, answer_event_id(message_hash)
        )
        a = await asyncio.to_thread(self._stored, target, answer.index) if answer else None
        return _view(delivery, d_receipt, *(a or (None, None)))

    def _stored(self, namespace: str, index: int) -> tuple[Record, Receipt]:
        leaf = self.store.read_entries(namespace, index, index + 1)[0]
        record = Record.from_bytes(leaf)
        proof, state = self.sequencer.proof_inclusion(namespace, index)
        receipt = Receipt(record.event_hash_hex, namespace, self.sequencer.origin(namespace),
                          index, state.size, tuple(proof), state.checkpoint)  # fmt: skip
        return record, receipt

    # --- delivery ------------------------------------------------------------------------
    async def deliver(self, ns: NamespaceConfig, record: Record, proof: bytes) -> dict[str, Any]:
        """Verify a message with its proof and record its delivery in ``ns``.

        Raises at the first failed check (nothing is recorded then); returns
        the delivery view (see :func:`_view`)."""
        verified = await asyncio.to_thread(
            functools.partial(verify_message, hosted=self._namespaces(), node_did=self.did),
            record, proof, ns, self.schemas, self._known_logs(),
        )  # fmt: skip
        key = record.event_hash
        if key in self._inflight:
            raise _replayed(ns.name, record, None)
        self._inflight[key] = asyncio.Event()
        try:
            found, heads = await asyncio.to_thread(self._state_for, ns.name, verified)
            if found is not None:
                raise _replayed(ns.name, record, found.index)
            check_fresh(verified.checkpoint, verified.trust, heads)
            result = await self._result(ns, verified)
            now = int(self.clock())
            delivery = sign_envelope(
                delivery_envelope(verified, actor=self.did, timestamp=now, nonce=_nonce()),
                self.key,
            )
            answer = None
            if result is not None:
                env = answer_envelope(verified, delivery, result, actor=self.did,
                                      timestamp=now, nonce=_nonce())  # fmt: skip
                answer = sign_envelope(env, self.key)
            try:
                d_receipt = await self.submit(delivery)
            except RemembrancerError as e:
                if e.code in ("event_id_conflict", "nonce_replayed"):
                    raise _replayed(ns.name, record, None) from e
                raise
            await asyncio.to_thread(self._remember, verified)
            a_receipt = await self.submit(answer) if answer is not None else None
        finally:
            self._inflight.pop(key).set()
        msg = verified.message
        self.on_delivered(msg.source, msg.target, msg.action)
        log.info("delivered %s from %s into %s (%s %s)", msg.record.event_hash_hex, msg.source,
                 msg.target, msg.action, msg.operation)  # fmt: skip
        return _view(delivery, d_receipt, answer, a_receipt)

    def _known_logs(self) -> dict[str, list[NoteVerifier]]:
        """Note keys of the logs this node knows: its own and those it witnesses."""
        known: dict[str, list[NoteVerifier]] = {o: list(v) for o, v in self.witnessed.items()}
        for ns in self._namespaces():
            origin = self.sequencer.origin(ns)
            known.setdefault(origin, []).append(Verifier(origin, self.key.public))
        return known

    def _state_for(
        self, target: str, verified: VerifiedMessage
    ) -> tuple[FoundEntry | None, list[KnownHead]]:
        """A delivery of the message already in ``target``, and the known heads."""
        found = self.store.find_event_id(target, delivery_event_id(verified.message.event_hash))
        return found, self._known_heads(verified)

    def _known_heads(self, verified: VerifiedMessage) -> list[KnownHead]:
        origin, source, cp = verified.origin, verified.message.source, verified.checkpoint
        heads: list[KnownHead] = []
        if source in self._namespaces() and origin == self.sequencer.origin(source):
            head = self.sequencer.head(source)
            heads.append(KnownHead("hosted", head.size if head else 0,
                                   head.root_hash if head else b""))  # fmt: skip
            stored = self.store.checkpoint_at(source, cp.size)
            if stored is not None:
                heads.append(KnownHead("stored", cp.size, _checkpoint(stored.note).root_hash))
        if self.witnessed_note is not None and origin in self.witnessed:
            try:
                cosigned = _checkpoint(self.witnessed_note(origin))
                heads.append(KnownHead("witnessed", cosigned.size, cosigned.root_hash))
            except RemembrancerError:
                pass  # not cosigned yet
        accepted = self._accepted_head(origin)
        if accepted is not None:
            heads.append(KnownHead("accepted", *accepted))
        return heads

    def _accepted_head(self, origin: str) -> tuple[int, bytes] | None:
        """The newest checkpoint of ``origin`` accepted in a delivery (cached: this
        node is the only writer of its state)."""
        if origin not in self._accepted:
            raw = self.store.get_state(SOURCES_SCOPE, origin)
            doc = json.loads(raw) if raw is not None else None
            self._accepted[origin] = (
                (int(doc["size"]), bytes.fromhex(doc["root"])) if doc is not None else None
            )
        return self._accepted[origin]

    def _remember(self, verified: VerifiedMessage) -> None:
        """Keep the newest source checkpoint accepted (compare-and-swap)."""
        cp = verified.checkpoint
        known = self._accepted_head(cp.origin)
        if known is not None and known[0] >= cp.size:
            return
        new = json.dumps({"size": cp.size, "root": cp.root_hash.hex()}).encode()
        for _ in range(8):
            raw = self.store.get_state(SOURCES_SCOPE, cp.origin)
            if raw is not None and int(json.loads(raw)["size"]) >= cp.size:
                self._accepted.pop(cp.origin, None)  # reread next time
                return
            if self.store.put_state(SOURCES_SCOPE, cp.origin, new, expect=raw):
                self._accepted[cp.origin] = (cp.size, cp.root_hash)
                return

    # --- query answers and invoke handlers ----------------------------------------------
    async def _result(
        self, ns: NamespaceConfig, verified: VerifiedMessage
    ) -> dict[str, Any] | None:
        msg = verified.message
        if msg.action == "notify":
            return None
        if msg.action == "query":
            if msg.operation not in QUERY_OPERATIONS:
                raise NotFoundError(
                    f"{ns.name} answers no query {msg.operation!r}; queries are"
                    f" {', '.join(QUERY_OPERATIONS)}",
                    code="xns_operation_unknown",
                    details={"operation": msg.operation, "queries": list(QUERY_OPERATIONS)},
                )
            return await asyncio.to_thread(self._query, ns.name, msg.operation, msg.parameters)
        ref = ns.handlers.get(msg.operation)
        if ref is None:
            raise NotFoundError(
                f"{ns.name} has no handler for {msg.operation!r}",
                code="xns_operation_unknown",
                details={"operation": msg.operation, "handlers": sorted(ns.handlers)},
            )
        return await self._invoke(ref, msg)

    def _query(
        self, namespace: str, operation: str, parameters: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The built-in read-only queries, over the target's own (public) log."""
        if operation == "log.head":
            if parameters:
                raise FormatError("log.head takes no parameters", code="xns_parameters_invalid")
            head = self.sequencer.head(namespace)
            root = head.root_hash if head else _EMPTY_ROOT
            return {"origin": self.sequencer.origin(namespace), "size": head.size if head else 0,
                    "root": "sha256:" + root.hex()}  # fmt: skip
        if set(parameters) != {"eventHash"}:
            raise FormatError("record.get takes exactly {eventHash}", code="xns_parameters_invalid")
        try:
            digest = parse_sha256_hex(parameters["eventHash"])
        except FormatError as e:
            raise FormatError(f"eventHash: {e.message}", code="xns_parameters_invalid") from e
        found = self.store.find_event_hash(namespace, digest)
        out: dict[str, Any] = {"eventHash": parameters["eventHash"], "found": found is not None}
        if found is not None:
            leaf = self.store.read_entries(namespace, found.index, found.index + 1)[0]
            out.update(index=found.index, leafHash="sha256:" + hash_leaf(leaf).hex())
            if len(leaf) <= MAX_RECORD_IN_ANSWER:
                out["record"] = loads_strict(leaf)
            else:
                out["recordOmitted"] = True
        return out

    async def _invoke(self, ref: str, msg: Message) -> dict[str, Any]:
        fn = self._handler(ref)
        request = InvokeRequest(msg.source, msg.target, msg.operation, dict(msg.parameters),
                                msg.record.event_hash_hex, msg.record.actor)  # fmt: skip
        try:
            if inspect.iscoroutinefunction(fn):
                result = await asyncio.wait_for(fn(request), self.handler_timeout)
            else:
                result = await asyncio.wait_for(
                    asyncio.to_thread(fn, request), self.handler_timeout
                )
        except TimeoutError as e:
            raise PushbackError(
                f"the handler {ref} did not answer within {self.handler_timeout} s",
                code="xns_handler_timeout",
                retry_after=1,
            ) from e
        except RemembrancerError as e:
            raise PolicyError(
                f"the handler {ref} refused: {e.message}",
                code="xns_handler_refused",
                details={"cause": e.code, **e.details},
            ) from e
        except Exception as e:
            log.exception("handler %s failed", ref)
            raise RemembrancerError(
                f"the handler {ref} failed: {type(e).__name__}", code="xns_handler_failed"
            ) from e
        if not isinstance(result, Mapping):
            raise RemembrancerError(
                f"the handler {ref} returned {type(result).__name__}, not a JSON object",
                code="xns_handler_failed",
            )
        try:
            canonicalize(dict(result))
        except FormatError as e:
            raise RemembrancerError(
                f"the handler {ref} returned a value that is not JSON: {e.message}",
                code="xns_handler_failed",
            ) from e
        return dict(result)

    def _handler(self, ref: str) -> Callable[[InvokeRequest], Any]:
        fn = self._handlers.get(ref)
        if fn is None:
            module, _, name = ref.partition(":")
            try:
                fn = getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError) as e:
                raise ConfigError(
                    f"the handler {ref} cannot be loaded: {e}", code="xns_handler_unavailable"
                ) from e
            if not callable(fn):
                raise ConfigError(f"{ref} is not callable", code="xns_handler_unavailable")
            self._handlers[ref] = fn
        return fn

    # --- proofs of messages recorded here -------------------------------------------
    async def _own_proof(
        self, record: Record, wait: float, witnesses: Sequence[str], need: int
    ) -> tuple[Record, bytes]:
        """The admitted record and its tlog-proof from this node's log, once its
        checkpoint has ``need`` cosignatures of ``witnesses`` (or ``wait`` passed)."""
        source = record.namespace
        if source not in self._namespaces():
            raise FormatError(
                f"the message has no proof and its source {source} is not hosted here",
                code="xns_proof_missing",
            )
        found = await asyncio.to_thread(self.store.find_event_hash, source, record.event_hash)
        if found is None:
            raise NotFoundError(
                f"the message {record.event_hash_hex} is not in the log of {source}: record it"
                " first",
                code="xns_message_not_recorded",
            )
        leaf = (await asyncio.to_thread(self.store.read_entries, source, found.index,
                                        found.index + 1))[0]  # fmt: skip
        admitted = Record.from_bytes(leaf)  # the signatures as admitted
        origin = self.sequencer.origin(source)
        verifier = Verifier(origin, self.key.public)
        deadline = time.monotonic() + wait
        while True:
            hashes, state = await asyncio.to_thread(
                self.sequencer.proof_inclusion, source, found.index
            )
            proof = TlogProof(found.index, tuple(hashes), state.checkpoint)
            if need <= 0 or time.monotonic() >= deadline:
                break
            have = await asyncio.to_thread(count_cosigners, state.checkpoint, verifier, witnesses)
            if have >= need:
                break
            await asyncio.sleep(POLL_SECONDS)
        return admitted, proof.to_bytes()

    # --- relay ---------------------------------------------------------------------------
    def home_peers(self, target: str) -> list[Any]:
        """Peers whose heartbeats announce a log of ``target`` (origin ``<prefix>/<target>``)."""
        fed = self.peers
        out: list[Any] = []
        if fed is None:
            return out
        for did, seen in sorted(fed.heads.items()):
            if did == fed.self_did:
                continue
            if any(o.rpartition("/")[2] == target for o in seen.get("logs", {})):
                peer = fed.registry.get(did)
                if peer is not None and peer.status == "active":
                    out.append(peer)
        return out

    async def _relay(
        self, target: str, record: Record, proof: bytes | None, wait: float
    ) -> dict[str, Any]:
        msg = Message.from_record(record, self.schemas)
        if msg.target != target:
            raise FormatError(f"the message is for {msg.target}, not {target}",
                              code="xns_target_mismatch")  # fmt: skip
        peers = self.home_peers(target)
        if not peers:
            raise NotFoundError(
                f"no peer announces a log of {target}: it is not hosted here nor, as far as"
                " heartbeats tell, anywhere in the federation",
                code="xns_target_unknown",
                details={"target": target},
            )
        if len(peers) > 1:
            raise ConflictError(
                f"{len(peers)} peers host a log of {target}; deliver to one directly",
                code="xns_target_ambiguous",
                details={"peers": [{"did": p.did, "endpoint": p.endpoint} for p in peers]},
            )
        if proof is None:
            record, proof = await self._own_proof(
                record, wait, self.relay_witnesses, self.relay_quorum
            )
        peer = peers[0]
        content = XnsContent(record.namespace, target, record.envelope(), proof.decode("utf-8"))
        assert self.outbox is not None
        [delivery] = await self.outbox.deliver([peer], content)
        if not delivery.delivered:
            raise PeerError(
                f"relaying to {peer.did} at {peer.endpoint} failed:"
                f" {delivery.message or delivery.code or 'not delivered'}",
                code="xns_relay_failed",
                details={"peer": peer.did, "status": delivery.status, "code": delivery.code},
            )
        self.on_relayed(target)
        endpoint = peer.endpoint.rstrip("/")
        return {
            "status": "relayed",
            "source": record.namespace,
            "target": target,
            "message": {"eventHash": record.event_hash_hex},
            "relay": {"peer": peer.did, "endpoint": endpoint},
            "delivery": f"{endpoint}/v1/namespaces/{target}/messages/{record.event_hash_hex}",
        }

    async def on_xns(self, sender: str, content: XnsContent, raw: bytes) -> None:
        """Federation handler: deliver a relayed message, after the 202 answer."""
        task = asyncio.get_running_loop().create_task(self._deliver_relayed(sender, content))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver_relayed(self, sender: str, content: XnsContent) -> None:
        try:
            ns = self._namespaces().get(content.target)
            if ns is None:
                raise NotFoundError(f"namespace {content.target} is not hosted here",
                                    code="xns_target_unknown")  # fmt: skip
            try:
                record = Record.from_value(content.record)
            except FormatError as e:
                raise FormatError(f"the message record is malformed: {e.message}",
                                  code="xns_record_invalid", details={"cause": e.code}) from e  # fmt: skip
            await self.deliver(ns, record, content.proof.encode("utf-8"))
        except RemembrancerError as e:
            self.on_rejected(e.code)
            log.info("xns message relayed by %s refused: %s", sender, e.explain())
        except Exception:
            self.on_rejected("internal")
            log.exception("xns message relayed by %s failed", sender)


_EMPTY_ROOT = hashlib.sha256(b"").digest()  # RFC 6962: the root of the empty tree


def _parse_request(body: bytes) -> tuple[Record, bytes | None]:
    if len(body) > MAX_REQUEST_BYTES:
        raise FormatError(f"a message request is at most {MAX_REQUEST_BYTES} bytes",
                          code="xns_request_malformed")  # fmt: skip
    try:
        value = loads_strict(body, max_bytes=MAX_REQUEST_BYTES)
    except FormatError as e:
        raise FormatError(
            f"the request is not strict JSON: {e.message}",
            code="xns_request_malformed",
            details={"cause": e.code},
        ) from e
    if (
        not isinstance(value, dict)
        or not isinstance(value.get("record"), dict)
        or not set(value) <= {"record", "proof"}
        or ("proof" in value and not isinstance(value["proof"], str))
    ):
        raise FormatError(
            'the request is {"record": {...}, "proof": "<tlog-proof text>"} (proof optional)',
            code="xns_request_malformed",
        )
    try:
        record = Record.from_value(value["record"])
    except FormatError as e:
        raise FormatError(f"the message record is malformed: {e.message}",
                          code="xns_record_invalid", details={"cause": e.code}) from e  # fmt: skip
    proof = value.get("proof")
    return record, proof.encode("utf-8") if proof is not None else None


def _replayed(namespace: str, record: Record, index: int | None) -> ConflictError:
    return ConflictError(
        f"the message {record.event_hash_hex} was already delivered into {namespace}",
        code="xns_replayed",
        details={
            "eventHash": record.event_hash_hex,
            **({"index": index} if index is not None else {}),
        },
    )


def _nonce() -> str:
    return base64.urlsafe_b64encode(os.urandom(16)).decode("ascii").rstrip("=")


def _checkpoint(note: bytes) -> Checkpoint:
    return Checkpoint.parse(Note.from_bytes(note).text)


def _part(record: Record, receipt: Receipt) -> dict[str, Any]:
    proof = TlogProof(receipt.index, receipt.proof, receipt.checkpoint).to_bytes()
    return {"record": record.envelope(), "receipt": receipt.to_dict(), "proof": proof.decode()}


def _view(
    delivery: Record, receipt: Receipt, answer: Record | None, a_receipt: Receipt | None
) -> dict[str, Any]:
    """What a delivery looks like to a client: the message (read back from the
    delivery record's proof), the delivery and the answer, each with its
    receipt and ``c2sp.org/tlog-proof@v1`` text, ready for ``remembrancer verify``."""
    p = delivery.payload
    proof = TlogProof.parse(p["payload"]["proof"].encode())
    cp = proof.checkpoint
    source = Record.from_bytes(proof.extra or b"")
    out: dict[str, Any] = {
        "status": "delivered",
        "source": p["source"],
        "target": p["target"],
        "action": p["action"],
        "operation": p["payload"]["operation"],
        "message": {
            "eventHash": source.event_hash_hex,
            "origin": cp.origin,
            "index": proof.index,
            "treeSize": cp.size,
        },
        "delivery": _part(delivery, receipt),
        "answer": None,
    }
    if answer is not None and a_receipt is not None:
        out["answer"] = {"result": answer.payload["payload"]["parameters"]["result"],
                         **_part(answer, a_receipt)}  # fmt: skip
    return out


__all__ = ["BUILTIN_HANDLERS", "InvokeRequest", "Messaging", "echo"]
