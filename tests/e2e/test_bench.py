"""`python -m bench --quick`, as CI runs it (part of `make test`).

Every suite runs to its end at small sizes within a bounded time, writes its
tables (ratios and absolute budgets apart) and its rows as JSON, says which
goals quick sizes cannot meet, and exits with the verdict of its own rows: 1
exactly when a goal it checks is missed, each named on stderr.

Whether this machine met every goal today is the benchmark's report, not an
assertion here: a test never asserts timings (and ratios on a shared
two-core machine move near their goals).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from remembrancer.testing.browser import chromium_path

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_the_quick_benchmarks_run_and_exit_with_their_own_verdict(tmp_path: Path) -> None:
    if chromium_path() is None:
        pytest.skip("the explorer benchmark needs Chromium at /usr/bin/chromium")
    help_text = subprocess.run([sys.executable, "-m", "bench", "--help"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout  # fmt: skip
    suites = set(re.search(r"suites:\s*([\w,\s]+)", help_text).group(1).replace("\n", "").replace(" ", "").split(","))  # type: ignore[union-attr]  # fmt: skip
    assert {"merkle", "records", "storage", "node", "explorer"} <= suites
    out, rows_file = tmp_path / "BENCHMARKS.md", tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out), "--json", str(rows_file)],
        cwd=ROOT, capture_output=True, text=True, timeout=1400,
    )  # fmt: skip
    assert proc.returncode in (0, 1), proc.stderr[-4000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
    doc = json.loads(rows_file.read_text())
    assert doc["quick"] is True and set(doc["suites"]) == suites
    rows = [(suite, r) for suite, rs in doc["suites"].items() for r in rs]
    assert all(rs for rs in doc["suites"].values()), "a suite with no rows"
    # The exit status is the rows' verdict: 1 exactly when a checked goal is missed.
    missed = [(s, r) for s, r in rows if r["checked"] and r["met"] is False]
    assert proc.returncode == (1 if missed else 0), (proc.returncode, missed)
    for suite, r in missed:
        assert f"goal missed: {suite}: {r['name']}" in proc.stderr
    # The goals quick sizes cannot meet are shown, named, and not checked.
    unchecked = [(s, r) for s, r in rows if r["goal"] is not None and not r["checked"]]
    assert unchecked and all(r["full_only"] for _, r in unchecked)
    for suite, r in unchecked:
        assert f"not checked with --quick: {suite}: {r['name']}" in proc.stderr
    # Ratios and absolute budgets are separate tables; constants never pose as ratios.
    for _, r in rows:
        assert r["kind"] in ("ratio", "budget", "info")
        if r["kind"] == "budget":
            assert "ratio" not in r and r["better"] in ("lower", "higher")
    text = out.read_text()
    assert "| ratio (same run) |" in text and "| absolute budget |" in text
    assert "## Goals not checked with --quick" in text
    assert text.count("(quick sizes)") == len(suites)
