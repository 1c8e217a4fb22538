"""The demo's traffic: records fed at a steady rate, and cross-namespace messages.

A :class:`Feeder` thread submits signed records to one node at a fixed rate
(pushback waits as the node asks; an unreachable node is retried every
second, never in a burst).  :func:`send_message` does what ``remembrancer
namespace message`` does, over HTTP only, along the fixed :data:`ROUTES`.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from remembrancer.core.errors import PeerError
from remembrancer.core.record import Record
from remembrancer.core.xns import MESSAGE_SCHEMA
from remembrancer.demo.keys import demo_key
from remembrancer.demo.procs import NodeProcess
from remembrancer.demo.readings import Api, DemoApiError
from remembrancer.demo.records import EXAMPLE_WITNESSES, make_record
from remembrancer.demo.workload import Workload

RETRYABLE_XNS = ("xns_cosignatures_missing", "xns_proof_stale")


FEED_TIMEOUT = 5.0  # seconds per submitted record before the node counts as unreachable


class Feeder(threading.Thread):
    """Submits records to one node at a steady ``rate`` (records per second)
    until ``stop`` is set.  Pushback (429/503) waits as the node asks; an
    unreachable node is retried every second."""

    def __init__(self, name: str, url: str, rate: float, workload: Workload,
                 stop: threading.Event, on_admitted: Callable[[str, Record, dict[str, Any]], None]) -> None:  # fmt: skip
        super().__init__(name=f"feed-{name}", daemon=True)
        self.node, self.url, self.rate, self.workload = name, url, rate, workload
        self.stop_event, self.on_admitted = stop, on_admitted
        self.admitted = 0
        self.pushback = 0
        self.unreachable = 0
        self.refused: Counter[str] = Counter()

    def run(self) -> None:
        api = Api(timeout=FEED_TIMEOUT)
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        try:
            while not self.stop_event.is_set():
                delay = next_at - time.monotonic()
                if delay > 0 and self.stop_event.wait(delay):
                    break
                next_at = max(next_at + interval, time.monotonic() - 1.0)  # no bursts after a stall
                record = self.workload.next()
                url = f"{self.url}/v1/namespaces/{record.namespace}/records"
                try:
                    r = api.request("POST", url, record.leaf)
                except PeerError:
                    self.unreachable += 1
                    self.stop_event.wait(1.0)
                    continue
                if r.status_code == 200:
                    self.admitted += 1
                    self.on_admitted(self.node, record, r.json())
                elif r.status_code in (429, 503):
                    self.pushback += 1
                    self.stop_event.wait(min(5.0, float(r.headers.get("Retry-After") or 1)))
                else:
                    try:
                        code = r.json()["error"]["code"]
                    except (ValueError, KeyError, TypeError):
                        code = f"http_{r.status_code}"
                    self.refused[code] += 1
        finally:
            api.close()


@dataclass(frozen=True, slots=True)
class Route:
    """One cross-namespace message: from ``source`` on node ``src`` to
    ``target`` on node ``dst`` (indexes into the nodes)."""

    src: int
    source: str
    dst: int
    target: str
    action: str
    operation: str
    parameters: dict[str, Any]


ROUTES = (
    Route(0, "dao:vaultmesh", 1, "fin:clearing", "notify", "status.update",
          {"status": "completed", "proposal": "VMP-alpha-0"}),
    Route(1, "fin:clearing", 2, "dao:vaultmesh", "query", "log.head", {}),
    Route(2, "dao:vaultmesh", 0, "fin:clearing", "invoke", "ping", {"hello": "from gamma"}),
)  # fmt: skip


def send_message(api: Api, src: NodeProcess, dst: NodeProcess, route: Route,
                 deadline: float) -> tuple[Record, dict[str, Any]]:  # fmt: skip
    """What ``remembrancer namespace message --url SRC --to-url DST`` does:
    record the message in the source log (signed by the demo actor and the
    source's demo witnesses), fetch its tlog-proof, deliver it to the target's
    node; a proof refused for missing cosignatures or as stale is fetched
    again until ``deadline``.  Returns the message and the delivery view."""
    witnesses = [demo_key(a) for a in EXAMPLE_WITNESSES[route.source]]
    payload = {"source": route.source, "target": route.target, "action": route.action,
               "payload": {"operation": route.operation, "parameters": route.parameters}}  # fmt: skip
    record = make_record(route.source, MESSAGE_SCHEMA, payload, demo_key("did:vm:actor:demo"),
                         witnesses, timestamp=int(time.time()), event_id=str(uuid.uuid4()))  # fmt: skip
    receipt = api.post(f"{src.url}/v1/namespaces/{route.source}/records", record.leaf)
    proof_url = (f"{src.url}/v1/namespaces/{route.source}/proofs/inclusion"
                 f"?index={receipt['index']}&format=tlog-proof")  # fmt: skip
    while True:
        proof = api.text(proof_url)
        body = json.dumps({"record": record.envelope(), "proof": proof}).encode()
        try:
            view: dict[str, Any] = api.post(
                f"{dst.url}/v1/namespaces/{route.target}/messages", body
            )
            return record, view
        except DemoApiError as e:
            if e.code not in RETRYABLE_XNS or time.monotonic() > deadline:
                raise
        time.sleep(0.3)
