"""One source of truth for the JavaScript verifier: ``clients/js/verify.js``
is the npm package ``remembrancer-verify`` and the file the explorer serves at
``/explorer/static/verify.js``.  The Python package holds a symbolic link to it
(setuptools puts the file itself into wheels and sdists), so no copy can drift.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from remembrancer.explorer import pages

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "clients" / "js"
STATIC = ROOT / "src" / "remembrancer" / "explorer" / "static" / "verify.js"


def test_the_explorer_serves_the_package_module_itself() -> None:
    assert STATIC.is_symlink(), (
        "explorer/static/verify.js must link to clients/js/verify.js, not copy it"
    )
    assert STATIC.resolve() == (PACKAGE / "verify.js").resolve()
    assert pages.static_file("verify.js") == (PACKAGE / "verify.js").read_bytes()
    assert "verify.js" in pages.STATIC_FILES


def test_the_npm_package_is_self_contained() -> None:
    meta = json.loads((PACKAGE / "package.json").read_text())
    assert meta["name"] == "remembrancer-verify"
    assert meta["type"] == "module"
    assert not meta.get("dependencies") and not meta.get("devDependencies")
    assert meta["engines"]["node"] == ">=20"
    assert meta["exports"]["."] == "./verify.js"
    for name, target in meta["bin"].items():
        path = PACKAGE / target
        assert path.is_file() and not path.is_symlink(), name
        assert path.read_text().startswith("#!/usr/bin/env node\n")
        assert os.access(path, os.X_OK), f"{target} must be executable"
        assert target in meta["files"]
    assert "verify.js" in meta["files"]
    # npm leaves symbolic links out of a package: the module must be a real file there.
    assert (PACKAGE / "verify.js").is_file() and not (PACKAGE / "verify.js").is_symlink()
    assert meta["scripts"]["test"] == "node --test test/*.test.js"


@pytest.mark.slow  # builds a wheel and an sdist
def test_wheels_and_sdists_carry_the_file_not_the_link(tmp_path: Path) -> None:
    """Built from a checkout whose link is kept as a link, the distributions
    hold the module's bytes (what `pip install .` from a clone gets)."""
    names = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    src = tmp_path / "checkout"
    for name in names:
        path = ROOT / name
        dest = src / name
        if path.is_symlink() or path.is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest, follow_symlinks=False)
    assert (src / STATIC.relative_to(ROOT)).is_symlink()
    out = tmp_path / "dist"
    # An isolated build, as pip does it: the build backend pyproject.toml asks for.
    proc = subprocess.run([sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(out), str(src)],
                          cwd=src, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    module = (PACKAGE / "verify.js").read_bytes()
    wheel = zipfile.ZipFile(next(out.glob("*.whl")))
    assert wheel.read("remembrancer/explorer/static/verify.js") == module
    with tarfile.open(next(out.glob("*.tar.gz"))) as sdist:
        member = next(m for m in sdist.getmembers() if m.name.endswith("explorer/static/verify.js"))
        assert member.isfile()
        data = sdist.extractfile(member)
        assert data is not None and data.read() == module
