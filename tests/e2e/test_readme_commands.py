"""The README's quick start, run as written: on a clean copy of the checkout,
`make run` creates its own .venv from nothing and runs the main job, a local
federation of three nodes, for a bounded time.

While it runs, the API and the explorer of every node show records, cosigned
checkpoints, verified anchors, final federation receipts and a delivered
cross-namespace message; it then stops cleanly (exit 0) and keeps its data;
the commands it printed check its proof files; a second start extends the
same logs and stops cleanly on SIGINT.

(`make test` is what runs this suite; CI runs it from the README too.)
This takes a few minutes (a fresh virtual environment): it is marked
``slow``, and has a timeout of its own.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from remembrancer.demo.anvil import find_anvil
from remembrancer.demo.localfed import FEDERATION_ID
from remembrancer.testing.democheck import (
    check_delivery,
    check_explorer,
    wait_for,
    wait_until_live,
)

ROOT = Path(__file__).resolve().parents[2]
EXPLORER_LINE = re.compile(r"^\s+(alpha|beta|gamma)\s+explorer (http://\S+)/explorer\b")


def quick_start_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "the README's quick start has no sh block"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_quick_start_is_exactly_two_commands() -> None:
    assert quick_start_commands() == ["make run", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


class Running:
    """A command whose output is collected line by line as it runs."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)  # fmt: skip
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def saw(self, text: str) -> bool:
        if self.proc.poll() is not None and not any(text in x for x in self.lines):
            raise AssertionError(f"exited {self.proc.returncode}:\n" + self.output()[-4000:])
        return any(text in x for x in self.lines)

    def output(self) -> str:
        return "\n".join(self.lines)

    def finish(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.reader.join(10)
            assert self.proc.stdout is not None
            self.proc.stdout.close()
        return code


@pytest.fixture(scope="module")
def clean_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clone of the repository in an empty folder (nothing beside it: no
    ``shared/``, no ``.venv``, no ``.cache``).  A real ``git clone`` when the
    working tree has no uncommitted changes (as in CI); otherwise a copy of the
    files a clone of the working tree would have."""
    copy = tmp_path_factory.mktemp("empty") / "checkout"
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.strip()  # fmt: skip
    if not dirty:
        subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(copy)],
                       check=True, timeout=300)  # fmt: skip
        return copy
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    for name in files:
        src = ROOT / name
        if src.is_file():
            dest = copy / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
    return copy


def fresh_shell_env() -> dict[str, str]:
    """The environment of a user's shell: no virtual environment active, no anvil set."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("VIRTUAL_ENV") and k not in ("REMEMBRANCER_ANVIL", "PYTEST_ADDOPTS")}  # fmt: skip
    env["PATH"] = ":".join(p for p in env["PATH"].split(":") if ".venv" not in p)
    return env


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_make_run_from_a_clean_copy(clean_copy: Path) -> None:
    copy = clean_copy
    assert not (copy.parent / "shared").exists() and len(list(copy.parent.iterdir())) == 1
    env = fresh_shell_env()
    # A fresh machine: the copy has no .cache/npm, so anvil is found only on PATH.
    anvil_on_path = shutil.which("anvil", path=env["PATH"]) is not None

    run = Running(["make", "run", "ARGS=--duration 90"], copy, env)
    try:
        wait_for(lambda: run.saw("Where to look:") and run.saw("gamma  explorer"), 1500,
                 "the federation up (after the .venv is built)")  # fmt: skip
        urls = [m.group(2) for x in run.lines if (m := EXPLORER_LINE.match(x))]
        assert len(urls) == 3, run.output()
        if not anvil_on_path:
            assert run.saw("anvil is not installed: EVM anchoring is skipped")
        live = wait_until_live(urls, timeout=75)
        assert all(n >= 1 for n in live.cosigners.values()) and live.delivered >= 1
        wait_for(lambda: run.saw("proof files are in"), 75, "the proof files")
        check_delivery(urls, copy / "demo-data" / "proofs" / "message" / "message.json")
        for url in urls:
            check_explorer(url, urls, FEDERATION_ID)
    finally:
        code = run.finish(300)
    out = run.output()
    assert code == 0, out[-4000:]
    assert "every node exited cleanly" in out and "Data kept in demo-data" in out, out[-2000:]
    assert (copy / ".venv" / "bin" / "remembrancer").exists()
    assert (copy / "demo-data" / "nodes" / "alpha" / "node.yaml").exists()
    # The commands it printed work as printed, pasted in the checkout after it
    # stopped: the venv is not active, so they name .venv/bin/remembrancer.
    commands = [x.strip()[2:] for x in run.lines if x.strip().startswith("$ ")]
    assert len(commands) >= 5, out
    for command in commands:
        assert command.startswith(".venv/bin/remembrancer "), command
        check = subprocess.run(command, shell=True, cwd=copy, capture_output=True, text=True,
                               env=env, timeout=120)  # fmt: skip
        assert check.returncode == 0, (command, check.stdout, check.stderr)
    state = json.loads((copy / "demo-data" / "demo.json").read_text())
    sizes = {k: v["size"] for k, v in state["checkpoints"].items()}

    # A second start (now with anvil, when this machine has it) extends the
    # same logs; Ctrl-C (SIGINT) stops it cleanly.
    anvil = find_anvil()
    if anvil:
        env["REMEMBRANCER_ANVIL"] = anvil
    again = Running([".venv/bin/remembrancer", "demo"], copy, env)
    try:
        wait_for(lambda: again.saw("grew consistently"), 180, "the logs extended consistently")
        assert again.saw("Restarting a local federation")
        if anvil:
            assert again.saw("anvil up at")
    finally:
        again.proc.send_signal(signal.SIGINT)
        code = again.finish(120)
    out = again.output()
    assert code == 0, out[-3000:]
    assert "SIGINT: stopping" in out and "every node exited cleanly" in out, out[-3000:]
    state = json.loads((copy / "demo-data" / "demo.json").read_text())
    assert state["runs"] == 2
    assert all(state["checkpoints"][k]["size"] > v for k, v in sizes.items())


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_unit_tests_pass_in_a_clean_clone_through_make_test(clean_copy: Path) -> None:
    """The README's test command, run in a clone with nothing beside it: the
    suite needs nothing outside the checkout (the vectors are in tests/vectors)."""
    env = fresh_shell_env()
    proc = subprocess.run(["make", "test", "PYTEST_ARGS=tests/unit -q -p no:cacheprovider"],
                          cwd=clean_copy, env=env, capture_output=True, text=True, timeout=1700)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    summary = re.search(r"(\d+) passed", out)
    assert summary and int(summary.group(1)) > 500, out[-2000:]
    assert "skipped" not in out.splitlines()[-1], out[-2000:]
    assert (clean_copy / ".venv" / "bin" / "pytest").exists()
