"""``remembrancer demo``'s supervisor with real processes (the development
TSA, anvil when installed, three nodes), bounded to well under a minute.

The first run is driven in-process (a test sets its stop event); while it
runs, the API and the explorer show records on all three nodes, cosigned
checkpoints, verified anchors, final federation receipts and a delivered
cross-namespace message, and the commands it prints check its proof files.
The second start is the real command, stopped with SIGINT: it finds the
same nodes, proves each log grew consistently, still verifies an EVM anchor
of the first run (anvil's chain was saved), and exits 0 with its data kept.
"""

from __future__ import annotations

import itertools
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from remembrancer.demo.localfed import EVM_TARGET, FEDERATION_ID, NAMES, TSA_TARGET
from remembrancer.demo.procs import cli
from remembrancer.demo.supervisor import DemoOptions, DemoSummary, Supervisor
from remembrancer.testing.democheck import (
    check_delivery,
    check_explorer,
    get_json,
    wait_for,
    wait_until_live,
)


def _first_run(data: Path, tmp_path: Path) -> tuple[DemoSummary, list[str], Path | None]:
    lines: list[str] = []
    sup = Supervisor(DemoOptions(data=data, base_port=0, records_per_second=24, progress_seconds=2,
                                 message_seconds=4), echo=lines.append)  # fmt: skip
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["summary"] = sup.run()
        except BaseException as e:
            outcome["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    evm_file = None
    try:
        wait_for(lambda: sup.ready.is_set() or "error" in outcome, 90, "the federation up")
        assert "error" not in outcome, outcome
        urls = [n.url for n in sup.nodes]
        evm = sup.fed is not None and sup.fed.anvil is not None
        targets = (TSA_TARGET, EVM_TARGET) if evm else (TSA_TARGET,)
        live = wait_until_live(urls, targets=targets, timeout=60)
        assert all(live.cosigners[u] >= 1 for u in urls) and live.delivered >= 1
        wait_for(lambda: {"message", "federation_receipt"} <= set(sup.files), 60, "proof files")
        check_delivery(urls, data / "proofs" / "message" / "message.json")
        for url in urls:
            check_explorer(url, urls, FEDERATION_ID)
        # The printed commands check the files offline.
        for command in sup.commands():
            out = cli(*shlex.split(command)[1:])  # exit 0, or it raises
            assert out.stdout.startswith("OK:") or "\nverified " in "\n" + out.stdout, out.stdout
            assert "failed" not in out.stdout, (command, out.stdout)
        assert any("proof files are in" in line for line in lines)
        if evm:  # an EVM anchor of this run, to verify again after a restart
            receipts = get_json(f"{urls[0]}/v1/namespaces/dao:vaultmesh/anchors?limit=500")
            with_evm = [r for r in receipts["receipts"]
                        if any(a["target"] == EVM_TARGET and a["status"] == "verified"
                               for a in r["anchors"])]  # fmt: skip
            assert with_evm
            evm_file = tmp_path / "evm-anchor-receipt.json"
            evm_file.write_text(json.dumps(with_evm[0]))
    finally:
        sup.stop.set()
        thread.join(90)
    assert "error" not in outcome, outcome.get("error")
    return outcome["summary"], lines, evm_file


def test_demo_runs_keeps_its_data_and_extends_it(tmp_path: Path) -> None:
    data = tmp_path / "demo-data"
    summary, lines, evm_file = _first_run(data, tmp_path)
    assert all(summary.exit_codes[n] == 0 for n in NAMES), summary.exit_codes
    assert all(summary.admitted[n] > 0 for n in NAMES) and summary.messages_sent >= 1
    assert any(line.startswith("stopped after") and "every node exited cleanly" in line
               for line in lines)  # fmt: skip
    state = json.loads((data / "demo.json").read_text())
    first_sizes = {k: v["size"] for k, v in state["checkpoints"].items()}
    assert len(first_sizes) == 6 and all(first_sizes.values())
    assert not (data / "children.json").exists()  # nothing left running

    # The second start: the command itself, stopped by SIGINT.
    proc = subprocess.Popen(
        [sys.executable, "-m", "remembrancer.cli", "demo", "--data", str(data), "--base-port", "0",
         "--records-per-second", "24", "--progress-seconds", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(iter(proc.stdout.readline, "")),  # type: ignore[union-attr]
                              daemon=True)  # fmt: skip
    reader.start()
    try:
        wait_for(lambda: any("grew consistently" in x for x in output) or proc.poll() is not None,
                 90, "the logs proven to extend the first run's checkpoints")  # fmt: skip
        assert proc.poll() is None, "".join(output)
        assert any("Restarting a local federation" in x for x in output)
        assert any("logs of the previous run are back" in x for x in output)
        if evm_file is not None:
            anvil_url = (
                next(x for x in output if "anvil up at " in x).split("anvil up at ")[1].split()[0]
            )
            out = cli("anchor", "verify", str(evm_file), "--evm-rpc", anvil_url,
                      "--target", EVM_TARGET)  # fmt: skip
            assert out.stdout.startswith("verified") and EVM_TARGET in out.stdout

        # Stopped in its steady state: once every log has grown past the first run's
        # checkpoint in the state the demo saves at each progress line.
        def all_grown() -> bool:
            try:
                saved = json.loads((data / "demo.json").read_text())["checkpoints"]
            except (OSError, ValueError, KeyError):
                return False
            return all(int(saved.get(k, {}).get("size", 0)) > v for k, v in first_sizes.items())

        wait_for(lambda: all_grown() or proc.poll() is not None, 90,
                 "every log grown past the first run's checkpoint")  # fmt: skip
        assert proc.poll() is None, "".join(output)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(90)
        finally:
            if proc.poll() is None:
                proc.kill()
        reader.join(10)
        proc.stdout.close()  # type: ignore[union-attr]
    text = "".join(output)
    assert code == 0, text[-3000:]
    assert "SIGINT: stopping" in text and "every node exited cleanly" in text, text[-2000:]
    state = json.loads((data / "demo.json").read_text())
    assert state["runs"] == 2
    assert all(state["checkpoints"][k]["size"] > v for k, v in first_sizes.items())


def test_a_second_supervisor_on_the_same_data_is_refused(tmp_path: Path) -> None:
    import fcntl

    data = tmp_path / "d"
    data.mkdir()
    with open(data / ".lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("12345\n")
        held.flush()
        out = cli("demo", "--data", str(data), "--duration", "1", check=False)
    assert out.returncode == 2 and "demo_running" in out.stderr and "12345" in out.stderr
    assert not (data / "nodes").exists()


def test_a_frozen_node_stalls_neither_the_others_feed_nor_the_progress(tmp_path: Path) -> None:
    """A node frozen with SIGSTOP (it neither answers nor closes connections): the
    other nodes keep being fed, and a progress line keeps coming every
    ``progress_seconds``, showing the frozen node as not answering."""
    progress = 2.0
    stamped: list[tuple[float, str]] = []
    sup = Supervisor(DemoOptions(data=tmp_path / "demo-data", base_port=0, records_per_second=24,
                                 progress_seconds=progress, message_seconds=600, use_anvil=False),
                     echo=lambda line: stamped.append((time.monotonic(), line)))  # fmt: skip
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["summary"] = sup.run()
        except BaseException as e:
            outcome["error"] = e

    def progress_lines(after: float) -> list[tuple[float, str]]:
        return [(t, x) for t, x in list(stamped) if t > after and "| anchors verified" in x]

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    frozen = None
    try:
        wait_for(lambda: sup.ready.is_set() or "error" in outcome, 90, "the federation up")
        assert "error" not in outcome, outcome
        wait_for(lambda: all(f.admitted > 0 for f in sup.feeders), 60, "every node fed")
        frozen = sup.nodes[1]
        assert frozen.proc is not None
        os.kill(frozen.proc.pid, signal.SIGSTOP)
        at = time.monotonic()
        fed_before = {n: sum(f.admitted for f in sup.feeders if f.node == n) for n in NAMES}
        wait_for(
            lambda: len(progress_lines(at)) >= 6, 60, "six progress lines while beta is frozen"
        )
        lines = progress_lines(at)
        fed_after = {n: sum(f.admitted for f in sup.feeders if f.node == n) for n in NAMES}
    finally:
        if frozen is not None and frozen.proc is not None:
            os.kill(frozen.proc.pid, signal.SIGCONT)
        sup.stop.set()
        thread.join(120)
    assert "error" not in outcome, outcome.get("error")
    times = [at] + [t for t, _ in lines]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Before the fix, a frozen node held each reading for its 15 s timeouts (~30 s a line).
    assert max(gaps) < 2 * progress + 1.5, (gaps, [x for _, x in lines])
    assert "beta ? (not answering)" in lines[-1][1], lines[-1][1]
    # While beta was frozen, alpha and gamma went on admitting records.
    for name in (NAMES[0], NAMES[2]):
        assert fed_after[name] > fed_before[name] + 10, (fed_before, fed_after)
