"""Record load over real HTTP, for fault tests: threads that submit fresh
records to a node and keep every acknowledgement (an HTTP 200 receipt).

A record counts as acknowledged only when its receipt arrived; everything
else (a refusal, a reset connection, a timeout) is counted by kind in
``refused``, and the record is not expected in the log.
"""

from __future__ import annotations

import http.client
import itertools
import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from remembrancer.demo.records import example_record


@dataclass(frozen=True, slots=True)
class Ack:
    event_hash: str
    index: int
    size: int  # the tree size of the receipt's checkpoint
    checkpoint: str


class RecordLoad:
    """``threads`` threads submitting ``namespace`` records to ``url`` until stopped
    (several URLs: each submission to the next, as a round-robin load balancer would)."""

    def __init__(
        self, url: str | Sequence[str], *, namespace: str = "dao:vaultmesh", threads: int = 3,
        timeout: float = 15,
    ) -> None:  # fmt: skip
        self.urls = [u.rstrip("/") for u in ([url] if isinstance(url, str) else url)]
        self.url = self.urls[0]
        self.namespace = namespace
        self.timeout = timeout
        self.acked: list[Ack] = []
        self.refused: Counter[str] = Counter()
        self.errors: list[dict[str, Any]] = []  # error bodies seen (the last 200)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._counter = itertools.count(int(time.time() * 1000) % 10**9)
        self._turn = itertools.count()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> RecordLoad:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            if t.is_alive():
                t.join(self.timeout + 5)

    def acks(self) -> int:
        with self._lock:
            return len(self.acked)

    def refusals(self, prefix: str = "") -> int:
        """How many submissions were refused so far whose kind starts with ``prefix``
        (``"503"``, ``"transport"``, ...)."""
        with self._lock:
            return sum(n for kind, n in self.refused.items() if kind.startswith(prefix))

    def wait_for_acks(self, n: int, timeout: float = 60) -> None:
        """Until ``n`` more records than now are acknowledged (AssertionError after ``timeout``)."""
        target = self.acks() + n
        deadline = time.monotonic() + timeout
        while self.acks() < target:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"only {self.acks()} of {target} records acknowledged; refused: "
                    f"{dict(self.refused)}; last errors: {self.errors[-3:]}"
                )
            time.sleep(0.05)

    def _run(self) -> None:
        while not self._stop.is_set():
            url = self.urls[next(self._turn) % len(self.urls)]
            target = f"{url}/v1/namespaces/{self.namespace}/records"
            rec = example_record(self.namespace, next(self._counter), timestamp=int(time.time()))
            req = urllib.request.Request(
                target, data=rec.leaf, headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as r:
                    receipt = json.loads(r.read())
                ack = Ack(receipt["eventHash"], receipt["index"], receipt["treeSize"],
                          receipt["checkpoint"])  # fmt: skip
                with self._lock:
                    self.acked.append(ack)
            except urllib.error.HTTPError as e:
                try:
                    body = json.loads(e.read())
                    code = str(body["error"]["code"])
                except (ValueError, KeyError, TypeError, OSError):
                    body, code = {}, "?"
                with self._lock:
                    self.refused[f"{e.code} {code}"] += 1
                    self.errors = [*self.errors[-199:], body]
                time.sleep(0.05)
            except (
                OSError,
                ValueError,
                http.client.HTTPException,
            ) as e:  # refused, reset, timed out, torn answer
                with self._lock:
                    self.refused[f"transport {type(e).__name__}"] += 1
                time.sleep(0.05)
