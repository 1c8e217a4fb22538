"""The README's quick start, run as written: on a clean copy of the checkout,
`make run` creates its own .venv from nothing and completes the main job.

(`make test` is what runs this suite; CI runs it from the README too.)
This takes a minute or two (a fresh virtual environment), so it runs under
CI or with RUN_SLOW=1.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


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


@pytest.mark.skipif(
    not (os.environ.get("CI") or os.environ.get("RUN_SLOW")),
    reason="builds a fresh .venv (set RUN_SLOW=1, or CI)",
)
def test_make_run_from_a_clean_copy(tmp_path: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    copy = tmp_path / "checkout"
    for name in files:
        src = ROOT / name
        if src.is_file():
            dest = copy / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIRTUAL_ENV")}
    env["PATH"] = ":".join(p for p in env["PATH"].split(":") if ".venv" not in p)
    proc = subprocess.run(["make", "run", "ARGS=--records 40"], cwd=copy, capture_output=True, text=True,
                          timeout=1500, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (copy / ".venv" / "bin" / "remembrancer").exists()
    assert "verified offline" in proc.stdout
    # The command it prints works as printed.
    line = next(x for x in proc.stdout.splitlines() if "remembrancer verify" in x)
    command = line.split("check it yourself: ", 1)[1]
    check = subprocess.run(
        f".venv/bin/{command}", shell=True, cwd=copy, capture_output=True, text=True, env=env
    )
    assert check.returncode == 0 and check.stdout.startswith("OK:"), check.stderr
