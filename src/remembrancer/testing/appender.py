"""A process that appends signed records under load and reports each
acknowledgement on stdout, one JSON line per receipt, flushed before the
next batch is submitted.  The crash tests ``kill -9`` it at random moments.

    python -m remembrancer.testing.appender STORE_URL NODE_KEY_FILE
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from importlib import resources

import yaml

from remembrancer.core.namespace import parse_namespaces
from remembrancer.demo.keys import demo_key
from remembrancer.demo.records import ledger_payload, make_record
from remembrancer.log.namespaces import StaticNamespaces
from remembrancer.log.sequencer import Sequencer
from remembrancer.node.keyfile import read_key_file
from remembrancer.storage import open_store


async def run(url: str, key_file: str) -> None:
    doc = yaml.safe_load(
        resources.files("remembrancer.examples").joinpath("namespaces.yaml").read_text()
    )
    store = open_store(url)
    seq = Sequencer(
        store, read_key_file(key_file), "crash.test", StaticNamespaces(parse_namespaces(doc))
    )
    actor = demo_key("did:vm:actor:demo")
    witnesses = [
        demo_key("did:vm:arbiter:prod-us-east-1"),
        demo_key("did:vm:arbiter:prod-eu-west-1"),
    ]
    out = sys.stdout
    i = 0
    while True:
        now = int(time.time())
        recs = [
            make_record("dao:vaultmesh", "ledger.append@1.0.0", ledger_payload(i + k, 120), actor, witnesses, timestamp=now)
            for k in range(200)
        ]  # fmt: skip
        i += len(recs)
        for coro in asyncio.as_completed([seq.submit(r.leaf) for r in recs]):
            r = await coro
            out.write(json.dumps({"index": r.index, "eventHash": r.event_hash, "size": r.size,
                                  "checkpoint": r.checkpoint.decode()}) + "\n")  # fmt: skip
        out.flush()


if __name__ == "__main__":
    asyncio.run(run(sys.argv[1], sys.argv[2]))
