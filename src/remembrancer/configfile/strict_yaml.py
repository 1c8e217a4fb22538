"""Strict YAML for configuration files (see :mod:`remembrancer.configfile`).

At most 1 MiB per file, a repeated key refused (with both lines), at most
:data:`MAX_YAML_NODES` nodes once aliases are expanded (a "billion laughs"
document or a cyclic alias is refused before anything walks it), YAML 1.2
booleans only (``true``/``false``; ``yes``, ``no``, ``on``, ``off`` are
strings), and every error on one line with its line and column.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from remembrancer.core.errors import ConfigError

MAX_CONFIG_BYTES = 1 << 20
MAX_YAML_NODES = 1_000_000  # a 1 MiB file without aliases cannot reach it
_BOOL_TAG = "tag:yaml.org,2002:bool"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and reads YAML 1.2 booleans only."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:
                    continue  # unhashable: SafeLoader's own error names it
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        None, None,
                        f"duplicate key {key!r} (first at line {first + 1})",
                        key_node.start_mark,
                    )  # fmt: skip
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)  # type: ignore[arg-type]


_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _expanded_nodes(root: yaml.Node) -> int:
    """Nodes of the document with every alias expanded (a cycle counts as too many)."""
    sizes: dict[int, int] = {}
    too_many = MAX_YAML_NODES + 1

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        sizes[key] = too_many  # in progress: meeting it again is a cycle
        total = 1
        if isinstance(node, yaml.SequenceNode):
            children: list[yaml.Node] = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        for child in children:
            total += size(child)
            if total > MAX_YAML_NODES:
                total = too_many
                break
        sizes[key] = total
        return total

    return size(root)


def parse_yaml(data: bytes, source: str) -> Any:
    """The document in ``data`` (see the module docstring); ConfigError naming ``source``."""
    loader: _StrictLoader | None = None
    try:
        loader = _StrictLoader(data)
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_nodes(node) > MAX_YAML_NODES:
            raise ConfigError(
                f"{source}: more than {MAX_YAML_NODES} YAML nodes once aliases are expanded",
                code="config_too_large",
                details={"file": source},
            )
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = " ".join(str(e.problem or e.context or "syntax error").split())
        raise ConfigError(
            f"{source}: not valid YAML{where}: {what}",
            code="config_yaml_invalid",
            details={"file": source, **({"line": mark.line + 1} if mark else {})},
        ) from None
    except yaml.YAMLError as e:
        what = " ".join(str(e).split())
        raise ConfigError(
            f"{source}: not valid YAML: {what}", code="config_yaml_invalid",
            details={"file": source},
        ) from None  # fmt: skip
    except RecursionError:
        raise ConfigError(
            f"{source}: not valid YAML: nested too deeply",
            code="config_yaml_invalid",
            details={"file": source},
        ) from None
    finally:
        if loader is not None:
            loader.dispose()


def read_yaml(path: str | Path, *, max_bytes: int = MAX_CONFIG_BYTES) -> Any:
    """Read and parse a configuration file of at most ``max_bytes``."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise ConfigError(
            f"{p}: cannot read: {e.strerror or e}",
            code="config_unreadable",
            details={"file": str(p)},
        ) from e
    if len(data) > max_bytes:
        raise ConfigError(
            f"{p}: larger than {max_bytes} bytes",
            code="config_too_large",
            details={"file": str(p)},
        )
    return parse_yaml(data, str(p))
