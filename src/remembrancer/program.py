"""How a user at this shell runs the ``remembrancer`` command that is running now.

Commands the program prints for the user to paste (``make run``'s proof
checks, ``init``'s next step, the CLI's hints) must work as printed.  When the
command is installed in a virtual environment that is not active (the README's
``make run`` builds ``.venv/`` and never activates it), the bare name is not on
``PATH``; :func:`invocation` then gives the path of the script instead,
relative to the current directory when it lies below it.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

NAME = "remembrancer"


def invocation(cwd: Path | None = None) -> str:
    """``remembrancer`` if that name on ``PATH`` is this installation, else a path
    to this installation's script (``.venv/bin/remembrancer``), else
    ``python -m remembrancer.cli``."""
    here = Path(cwd) if cwd is not None else Path.cwd()
    script = Path(sys.executable).parent / NAME
    found = shutil.which(NAME)
    if found is not None and script.exists() and _same(Path(found), script):
        return NAME
    if script.exists():
        try:
            rel = os.path.relpath(script, here)
        except ValueError:  # another drive (Windows)
            rel = str(script)
        if rel.startswith(".."):
            return str(script)
        return rel if os.sep in rel else f".{os.sep}{rel}"
    if found is not None:
        return NAME
    return f"{sys.executable} -m remembrancer.cli"


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or os.path.samefile(a, b)
    except OSError:
        return False
