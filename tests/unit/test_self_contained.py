"""A clone of the repository is all a user has: nothing may reach outside it.

The public test vectors live in ``tests/vectors/``; no tracked file may read
the team's ``shared/`` folder beside the checkout, or a machine-specific path.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Spelled in pieces so that this file does not match itself.
SIBLING = ".." + "/shared"
MACHINE_PATHS = ("/" + "work/", "/" + "farm/", "/tmp/" + "bash_jobs")


def _tracked_files() -> list[Path]:
    """Files git tracks (or, in an export without ``.git``, every file but caches)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30
        ).stdout
        names = [n for n in out.decode().split("\0") if n]
        if names:
            return [ROOT / n for n in names if (ROOT / n).is_file()]
    except (OSError, subprocess.CalledProcessError):
        pass
    skip = {".git", ".venv", "__pycache__", ".cache", "node_modules", "demo-data",
            ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis"}  # fmt: skip
    found = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in skip and not d.endswith(".egg-info")]
        found += [Path(folder) / f for f in files]
    return found


def _text(path: Path) -> str | None:
    data = path.read_bytes()
    if b"\0" in data[:4096]:
        return None
    return data.decode("utf-8", errors="replace")


def test_the_vectors_are_in_the_repository() -> None:
    vectors = ROOT / "tests" / "vectors"
    assert len(list((vectors / "rfc6962" / "inclusion").rglob("*.json"))) >= 90
    assert len(list((vectors / "rfc6962" / "consistency").rglob("*.json"))) >= 90
    assert (vectors / "signed-note" / "c2sp-example.json").is_file()
    readme = (vectors / "README.md").read_text()
    assert "transparency-dev/merkle" in readme and "Apache-2.0" in readme
    assert (vectors / "rfc6962" / "LICENSE").is_file()


def test_no_tracked_file_reads_outside_the_checkout() -> None:
    offenders = []
    for path in _tracked_files():
        text = _text(path)
        if text is None:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if SIBLING in line or any(m in line for m in MACHINE_PATHS):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:120]}")
    assert offenders == []
