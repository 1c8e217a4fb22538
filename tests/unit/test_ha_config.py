"""``ha`` in node.yaml (node/config.py): off by default, and refused where it cannot work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from remembrancer.core.errors import ConfigError
from remembrancer.node.config import parse_node_file

PG = "postgresql://db.example/remembrancer"
URL = "http://10.0.0.1:8080"


def _parse(**doc: Any) -> Any:
    return parse_node_file({"origin_prefix": "ha.test", **doc}, source="node.yaml", base=Path("."))


def test_off_by_default_even_on_postgresql() -> None:
    assert _parse(storage=PG).ha.enabled is False


def test_on_with_its_defaults() -> None:
    ha = _parse(storage=PG, ha={"enabled": True, "advertise_url": URL + "/"}).ha
    assert (ha.lease_seconds, ha.renew_every, ha.advertise_url) == (10.0, 2.5, URL)


@pytest.mark.parametrize(
    ("doc", "code", "says"),
    [
        ({"ha": {"enabled": True, "advertise_url": URL}}, "ha_needs_postgres", "'sqlite://'"),
        ({"storage": "memory://", "ha": {"enabled": True, "advertise_url": URL}},
         "ha_needs_postgres", "storage on PostgreSQL"),
        ({"storage": PG, "ha": {"enabled": True}}, "config_invalid", "advertise_url"),
        ({"storage": PG, "ha": {"enabled": True, "advertise_url": "ftp://x"}}, "config_invalid",
         "ha.advertise_url"),
        ({"storage": PG, "ha": {"enabled": True, "advertise_url": URL, "lease_seconds": 2,
                                "renew_seconds": 1.5}}, "config_invalid", "at most half"),
        ({"storage": PG, "ha": {"enabled": True, "advertise_url": URL, "lease_seconds": 0.1}},
         "config_invalid", "ha.lease_seconds"),
        ({"storage": PG, "ha": {"enabled": "yes", "advertise_url": URL}}, "config_invalid",
         "ha.enabled"),
        ({"storage": PG, "federation": {"file": "federation.yaml"},
          "ha": {"enabled": True, "advertise_url": URL}}, "ha_unsupported", "federation"),
    ],
)  # fmt: skip
def test_refused_with_one_clear_line(doc: dict[str, Any], code: str, says: str) -> None:
    with pytest.raises(ConfigError) as e:
        _parse(**doc)
    assert e.value.code == code and says in e.value.message and "\n" not in e.value.message
