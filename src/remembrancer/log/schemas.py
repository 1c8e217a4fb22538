"""The payload schemas bundled with the package (``remembrancer/core/schemas/*.json``).

Reading them is I/O (package data), so it lives here, above the pure core:
:func:`bundled_schemas` builds the core's
:class:`~remembrancer.core.schema.SchemaRegistry` from the documents, keyed
by ``name@version``.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from remembrancer.core.schema import SchemaRegistry

__all__ = ["bundled_documents", "bundled_schemas"]


def bundled_documents() -> dict[str, dict[str, Any]]:
    """The bundled schema documents keyed by ``name@version``."""
    out: dict[str, dict[str, Any]] = {}
    folder = resources.files("remembrancer.core").joinpath("schemas")
    for item in folder.iterdir():
        if item.name.endswith(".json"):
            out[item.name[: -len(".json")]] = json.loads(item.read_text(encoding="utf-8"))
    return out


def bundled_schemas() -> SchemaRegistry:
    """A registry of every bundled schema."""
    return SchemaRegistry(bundled_documents())
