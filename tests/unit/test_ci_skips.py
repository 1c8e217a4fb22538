"""Under CI every skip is a failure: the hook in tests/conftest.py, exercised on
a small suite of its own (pytest in a subprocess, with this repository's
conftest.py beside it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"
SUITE = """
import pytest

def test_runs():
    assert True

def test_skips_at_run_time():
    pytest.skip("the thing this test needs is absent")

@pytest.mark.skipif(True, reason="a skipif mark")
def test_marked():
    pass

@pytest.mark.xfail(reason="known bug", strict=True)
def test_expected_failure():
    assert False
"""
IMPORTORSKIP = """
import pytest
pytest.importorskip("a_module_nobody_has", reason="an extra is not installed")

def test_never_collected():
    pass
"""


def run_suite(tmp_path: Path, ci: str | None, name: str) -> subprocess.CompletedProcess[str]:
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    (tmp_path / "test_suite.py").write_text(SUITE)
    (tmp_path / "test_extra.py").write_text(IMPORTORSKIP)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider", "-p", "no:schemathesis",
         "-p", "no:hypothesispytest", "-p", "no:anyio", "--rootdir",
         str(tmp_path), "-c", os.devnull, str(tmp_path / name)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("ci", ["true", "yes"])
def test_under_ci_every_skip_fails_and_says_why(tmp_path: Path, ci: str) -> None:
    out = run_suite(tmp_path, ci, "test_suite.py")
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    for reason in ("the thing this test needs is absent", "a skipif mark"):
        assert f"skipped under CI, where every test must run: {reason}" in text, text
    # a skip at run time fails the test, a skipif mark (decided at setup) errors it
    assert "1 failed, 1 passed, 1 xfailed, 1 error" in text, text
    # A module-level importorskip: the module cannot be collected, which stops the run.
    out = run_suite(tmp_path, ci, "test_extra.py")
    text = out.stdout + out.stderr
    assert out.returncode != 0, text
    assert "skipped under CI, where every test must run: an extra is not installed" in text, text


@pytest.mark.parametrize("ci", [None, "false"])
def test_outside_ci_a_skip_stays_a_skip(tmp_path: Path, ci: str | None) -> None:
    out = run_suite(tmp_path, ci, "test_suite.py")
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert "1 passed, 2 skipped, 1 xfailed" in text, text
    out = run_suite(tmp_path, ci, "test_extra.py")
    assert out.returncode == 5 and "1 skipped" in out.stdout, out.stdout  # 5: no tests ran
