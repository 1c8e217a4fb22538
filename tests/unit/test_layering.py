"""DESIGN.md section 2: dependencies point downwards only; the core is pure."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "remembrancer"

# Lower index = lower layer. A layer may import from its own rank or below.
RANK = {
    "core": 0,
    "net": 1,  # the bounded HTTP client every outbound call uses
    "configfile": 1,  # strict YAML and typed settings for the configuration files
    "storage": 2,
    "log": 3,
    "anchoring": 4,
    "federation": 5,
    "explorer": 6,
    "node": 7,
    "demo": 8,  # `remembrancer demo`: product code built on real processes; never testing/
    "testing": 9,  # test harnesses: may use every layer but the CLI
    "cli": 10,
}
# Product code never depends on test helpers: the CLI ranks above testing/ only
# so that nothing below it can use the CLI; it must not import testing/ either.
NOT_FROM_TESTING = ("cli",)
# The core may use the standard library and these third-party packages only.
CORE_THIRD_PARTY = {"nacl", "rfc8785", "jsonschema_rs", "msgspec"}
CORE_FORBIDDEN_STDLIB = {
    "socket", "subprocess", "sqlite3", "asyncio", "http", "urllib", "time",
    "threading", "random", "shutil", "tempfile",
}  # fmt: skip


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against the package
                package = path.relative_to(SRC.parent).with_suffix("").parts[: -node.level]
                names.append(".".join((*package, node.module or "")).rstrip("."))
            elif node.module:
                names.append(node.module)
    return names


def _layer_files() -> list[tuple[str, Path]]:
    out = []
    for layer in RANK:
        for path in sorted((SRC / layer).rglob("*.py")):
            out.append((layer, path))
    return out


def test_every_layer_package_exists() -> None:
    for layer in RANK:
        assert (SRC / layer / "__init__.py").is_file(), layer


@pytest.mark.parametrize(("layer", "path"), _layer_files(), ids=lambda v: str(v))
def test_imports_point_downwards(layer: str, path: Path) -> None:
    for name in _imports(path):
        parts = name.split(".")
        if parts[0] != "remembrancer" or len(parts) < 2 or parts[1] not in RANK:
            continue
        assert RANK[parts[1]] <= RANK[layer], f"{path.relative_to(SRC)} imports {name}"


@pytest.mark.parametrize("layer", NOT_FROM_TESTING)
def test_product_code_never_imports_test_helpers(layer: str) -> None:
    offenders = [
        f"{path.relative_to(SRC)} imports {name}"
        for path in sorted((SRC / layer).rglob("*.py"))
        for name in _imports(path)
        if name == "remembrancer.testing" or name.startswith("remembrancer.testing.")
    ]
    assert not offenders, offenders


# One HTTP client (remembrancer.net.http: bounded, one failure classification);
# no hand-written urllib clients in product code (test harnesses may).
HAND_WRITTEN_HTTP = ("urllib.request", "urllib.error", "http.client")


@pytest.mark.parametrize("layer", [layer for layer in RANK if layer != "testing"])
def test_outbound_http_goes_through_the_one_client(layer: str) -> None:
    offenders = [
        f"{path.relative_to(SRC)} imports {name}"
        for path in sorted((SRC / layer).rglob("*.py"))
        for name in _imports(path)
        if name in HAND_WRITTEN_HTTP or name.startswith(tuple(f"{m}." for m in HAND_WRITTEN_HTTP))
    ]
    assert not offenders, offenders


def test_core_is_pure() -> None:
    offenders = []
    for path in sorted((SRC / "core").rglob("*.py")):
        for name in _imports(path):
            top = name.split(".")[0]
            if top == "remembrancer":
                if not name.startswith("remembrancer.core"):
                    offenders.append(f"{path.name}: {name}")
            elif top in CORE_FORBIDDEN_STDLIB or (
                top not in CORE_THIRD_PARTY and not _is_stdlib(top)
            ):
                offenders.append(f"{path.name}: {name}")
    assert not offenders, offenders


# The core does no file I/O: no file or package-data reads, no writes.
CORE_FILE_MODULES = {"os", "io", "pathlib", "glob", "fcntl", "mmap", "importlib"}
FILE_CALLS = {"open", "read_text", "read_bytes", "write_text", "write_bytes", "iterdir",
              "unlink", "mkdir", "rename", "replace", "fsync", "fchmod", "chmod", "makedirs"}  # fmt: skip


def _file_io(path: Path) -> list[str]:
    found = [f"imports {name}" for name in _imports(path)
             if name.split(".")[0] in CORE_FILE_MODULES]  # fmt: skip
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call):
            f = node.func
            name = (
                f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            )
            # str.replace and the like take arguments a file call never has: only
            # a bare open() or a method call on something that is not a str literal
            if name == "open" and isinstance(f, ast.Name):
                found.append(f"line {node.lineno}: open()")
            elif name in FILE_CALLS - {"open", "replace"} and isinstance(f, ast.Attribute):
                found.append(f"line {node.lineno}: .{name}()")
    return found


def test_core_does_no_file_io() -> None:
    offenders = {
        str(path.relative_to(SRC)): found
        for path in sorted((SRC / "core").rglob("*.py"))
        if (found := _file_io(path))
    }
    assert not offenders, offenders


def test_the_file_io_check_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom pathlib import Path\n"
                   "def f(p):\n    with open(p) as h:\n        return Path(p).read_text()\n")  # fmt: skip
    found = _file_io(bad)
    assert len(found) == 4, found


# datetime is allowed for parsing dates; reading the clock is not.
CLOCK_READS = ("datetime.now", "datetime.utcnow", "date.today", "time.time", "monotonic(")


def test_core_never_reads_the_clock() -> None:
    for path in sorted((SRC / "core").rglob("*.py")):
        text = path.read_text()
        for needle in CLOCK_READS:
            assert needle not in text, f"{path.name} reads the clock ({needle})"


def _is_stdlib(name: str) -> bool:
    import sys

    return name in sys.stdlib_module_names or name == "__future__"


def test_layering_check_detects_a_violation(tmp_path: Path) -> None:
    # The checker itself must be able to fail.
    bad = tmp_path / "bad.py"
    bad.write_text("from remembrancer.node import app\nimport socket\n")
    names = _imports(bad)
    assert "remembrancer.node" in names and "socket" in names


# --- HTTP statuses live in node/ ------------------------------------------------------
# Only the node speaks HTTP as a server: core, log, anchoring and federation raise
# errors (code, message, evidence) or return outcomes, and node/statuses.py maps them
# to statuses.  The explorer's routes module is an HTTP layer too (an APIRouter the
# node mounts, with the node's status mapping handed in); the rest of explorer/ is
# not.  Clients may read a status they received (comparisons are not flagged).
HTTP_LAYERS = ("node", "explorer/routes.py")
HTTP_SERVER_IMPORTS = ("fastapi", "starlette", "http.server", "http.HTTPStatus", "werkzeug")
# A second, stand-alone server that is not the node: the development TSA
# (`remembrancer tsa serve`, RFC 3161 over HTTP) answers its own few statuses.
HTTP_STATUS_EXEMPT = {"anchoring/rfc3161/devtsa.py": "the dev TSA's own HTTP server"}
_ANSWER_CALLS = ("send", "response", "reply", "served", "answer", "status")


def _is_status(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) is int and 100 <= node.value <= 599


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _http_statuses(path: Path) -> list[str]:
    """Where ``path`` imports an HTTP server framework or produces an HTTP status:
    a status table (a dict of two or more status values), a ``status``/``status_code``
    argument or variable set to one, a returned ``(status, ...)`` tuple, an answer
    built from one (``Reply(202, ...)``, ``send_response(404)``), ``HTTPException``."""
    found = [f"imports {name}" for name in _imports(path) if name.startswith(HTTP_SERVER_IMPORTS)]
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if (
            isinstance(node, ast.ImportFrom)
            and node.module == "http"
            and any(alias.name == "HTTPStatus" for alias in node.names)
        ):
            found.append(f"line {line}: imports http.HTTPStatus")
        if isinstance(node, ast.Name | ast.Attribute) and "HTTPException" in _name(node):
            found.append(f"line {line}: HTTPException")
        elif isinstance(node, ast.Dict) and sum(map(_is_status, node.values)) >= 2:
            found.append(f"line {line}: a table of HTTP statuses")
        elif (
            isinstance(node, ast.keyword)
            and "status" in (node.arg or "")
            and _is_status(node.value)
        ):
            found.append(f"line {line}: {node.arg}={node.value.value}")  # type: ignore[attr-defined]
        elif isinstance(node, ast.Assign) and _is_status(node.value):
            for target in node.targets:
                if "status" in _name(target).lower():
                    found.append(f"line {line}: {_name(target)} = {node.value.value}")  # type: ignore[attr-defined]
        elif (
            isinstance(node, ast.Return)
            and isinstance(node.value, ast.Tuple)
            and node.value.elts
            and _is_status(node.value.elts[0])
        ):
            found.append(f"line {line}: returns an HTTP status")
        elif (
            isinstance(node, ast.Call)
            and node.args
            and _is_status(node.args[0])
            and any(word in _name(node.func).lower() for word in _ANSWER_CALLS)
        ):
            found.append(f"line {line}: {_name(node.func)}({node.args[0].value}, ...)")  # type: ignore[attr-defined]
    return found


def _outside_http_layers() -> list[Path]:
    http = [SRC / p for p in HTTP_LAYERS]
    out = []
    for layer in RANK:
        if layer in ("testing", "demo", "cli"):  # test fakes and clients, above the node
            continue
        for path in sorted((SRC / layer).rglob("*.py")):
            if any(path == h or h in path.parents for h in http):
                continue
            if str(path.relative_to(SRC)) in HTTP_STATUS_EXEMPT:
                continue
            out.append(path)
    return out


def test_http_statuses_only_in_node() -> None:
    offenders = {
        str(path.relative_to(SRC)): found
        for path in _outside_http_layers()
        if (found := _http_statuses(path))
    }
    assert not offenders, offenders


def test_the_http_status_check_can_fail(tmp_path: Path) -> None:
    # Each of the shapes the check must see, as they were before node/statuses.py.
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from starlette.exceptions import HTTPException\n"
        "STATUS_FOR_CODE = {'malformed': 400, 'stale': 422}\n"
        "async def post(ok):\n"
        "    if ok:\n"
        "        return 200, {}\n"
        "    return 202, {}\n"
        "def error_reply(err):\n"
        "    status = 503\n"
        "    return Reply(500, {}, b'')\n"
        "def f():\n"
        "    raise HTTPException(status_code=404)\n"
    )
    found = _http_statuses(bad)
    assert len(found) == 8, found  # import, table, 2 returns, status=, Reply(), raise + kw
    exempt = SRC / "anchoring/rfc3161/devtsa.py"
    assert _http_statuses(exempt), "the exemption is stale: drop it"
    # A client reading a status it received is fine.
    good = tmp_path / "good.py"
    good.write_text("def ok(r):\n    return r.status_code == 200 or r.status in (429, 503)\n")
    assert _http_statuses(good) == []
