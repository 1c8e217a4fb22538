"""Collaborative anchoring: rail transactions per epoch (issue: collaborative anchoring).

Run ``python -m bench.collab`` (``--quick`` for fewer epochs).

A federation of N = 3 real node processes with M = 2 namespaces each, every
log growing in every epoch, anchors to the development TSA (and, when anvil
is installed, to a real anvil).  The rail transactions are counted where they
happen: tokens the TSA issued, transactions the nodes' accounts sent.  The
same workload runs twice, ``independent`` and ``collaborative``; the row's
ratio is independent / collaborative transactions per epoch, and the goal is
N x M = 6 (one anchor per target per epoch instead of one per log).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.common import Row
from bench.common import row as _row
from remembrancer.anchoring.rfc3161.devtsa import DevTsa, DevTsaServer
from remembrancer.cli.client import api_json
from remembrancer.demo.anvil import find_anvil, start_anvil
from remembrancer.demo.procs import (
    NodeProcess,
    anchor_to_evm,
    anchor_to_tsa,
    free_port,
    init_node,
    wire_federation,
    wire_witnessing,
)
from remembrancer.demo.records import example_record

NAMESPACES = ("dao:vaultmesh", "fin:clearing")
N_NODES = 3
EPOCH = 3


def _append(nodes: list[NodeProcess], i: int) -> None:
    now = int(time.time())
    jobs = [(n, ns) for n in nodes for ns in NAMESPACES]
    with ThreadPoolExecutor(len(jobs)) as pool:
        list(pool.map(lambda j: api_json("POST", f"{j[0].url}/v1/namespaces/{j[1]}/records",
                                         example_record(j[1], i, timestamp=now).leaf), jobs))  # fmt: skip


def _anchored(nodes: list[NodeProcess], size: int, target: str) -> bool:
    for n in nodes:
        for ns in NAMESPACES:
            receipts = api_json("GET", f"{n.url}/v1/namespaces/{ns}/anchors")["receipts"]
            if not any(r["size"] >= size and any(a["target"] == target and a["status"] == "verified"
                                                 for a in r["anchors"]) for r in receipts):  # fmt: skip
                return False
    return True


def _run(tmp: Path, strategy: str, epochs: int, target: str,
         wire_rail: Callable[[NodeProcess, int], None], count: Callable[[], int]) -> int:  # fmt: skip
    """Rail transactions for ``epochs`` epochs in which every log grows."""
    nodes = [
        init_node(tmp / f"{strategy}-n{i}", origin_prefix=f"n{i}.bench") for i in range(N_NODES)
    ]
    for i, n in enumerate(nodes):
        wire_rail(n, i)
    wire_witnessing(nodes)
    wire_federation(nodes, quorum=N_NODES, anchor_strategy=strategy, epoch_seconds=EPOCH,
                    heartbeat_seconds=1)  # fmt: skip
    for n in nodes:
        n.start()
    try:
        before = count()
        for e in range(epochs):
            now = time.time()
            time.sleep((int(now // EPOCH) + 1) * EPOCH - now + 0.1)  # just after an epoch starts
            _append(nodes, e)
            deadline = time.monotonic() + 4 * EPOCH + 20
            while not _anchored(nodes, e + 1, target):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{strategy}: epoch {e} was not anchored in time")
                time.sleep(0.2)
        time.sleep(EPOCH)  # nothing more may follow: the logs stopped growing
        return count() - before
    finally:
        for n in nodes:
            n.stop()


def _compare(tmp: Path, epochs: int, target: str, label: str,
             wire_rail: Callable[[NodeProcess, int], None], count: Callable[[], int]) -> Row:  # fmt: skip
    independent = _run(tmp, "independent", epochs, target, wire_rail, count) / epochs
    collaborative = _run(tmp, "collaborative", epochs, target, wire_rail, count) / epochs
    per_epoch = N_NODES * len(NAMESPACES)
    return _row(f"{N_NODES} nodes x {len(NAMESPACES)} namespaces, {epochs} epochs of {EPOCH} s, {label}: "
                f"rail transactions per epoch, independent / collaborative (goal N x M = {per_epoch})",
                independent, collaborative, per_epoch, "tx/epoch")  # fmt: skip


def run(quick: bool) -> list[Row]:
    epochs = 2 if quick else 4
    rows = []
    with tempfile.TemporaryDirectory(prefix="rv-bench-collab-") as d:
        tmp = Path(d)
        dev = DevTsa(tmp / "tsa")
        with DevTsaServer(dev) as tsa:

            def tsa_rail(n: NodeProcess, _: int) -> None:
                anchor_to_tsa(n, tsa.url, tmp / "tsa" / "ca.pem", every="1s")

            rows.append(_compare(tmp / "tsa-run", epochs, "rfc3161:tsa", "development TSA (tokens)",
                                 tsa_rail, lambda: dev.issued))  # fmt: skip
        binary = find_anvil()
        if binary is not None:
            from eth_account import Account

            chain = start_anvil(binary, free_port(), tmp / "anvil.log")
            try:
                accounts = [Account.create() for _ in range(N_NODES)]
                for a in accounts:
                    chain.rpc("anvil_setBalance", a.address, hex(10**20))

                def evm_rail(n: NodeProcess, i: int) -> None:
                    anchor_to_evm(n, chain.url, "0x" + bytes(accounts[i].key).hex(),
                                  chain_id=chain.chain_id)  # fmt: skip

                def sent() -> int:
                    return sum(int(chain.rpc("eth_getTransactionCount", a.address, "latest"), 16)
                               for a in accounts)  # fmt: skip

                rows.append(_compare(tmp / "evm-run", epochs, f"eip155:{chain.chain_id}",
                                     "anvil (transactions)", evm_rail, sent))  # fmt: skip
            finally:
                chain.stop()
    return rows


if __name__ == "__main__":
    from bench.common import format_rows

    parser = argparse.ArgumentParser(prog="python -m bench.collab", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    quick = parser.parse_args().quick
    print(format_rows(run(quick), quick))
