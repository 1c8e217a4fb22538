"""``anchoring.btc.<network>`` settings, validated when they are read."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from remembrancer.anchoring.btc.ots import DEFAULT_MAX_OTS_BYTES
from remembrancer.core.errors import ConfigError

Mode = Literal["ots", "op_return"]


DEFAULT_CALENDARS: tuple[str, ...] = (
    "https://a.pool.opentimestamps.org",
    "https://b.pool.opentimestamps.org",
    "https://a.pool.eternitywall.com",
    "https://ots.btc.catallaxy.com",
)
# Calendars a pending attestation may send us to for an upgrade (glob on the
# host, as python-opentimestamps' DEFAULT_CALENDAR_WHITELIST).
DEFAULT_CALENDAR_WHITELIST: tuple[str, ...] = (
    "https://*.calendar.opentimestamps.org",
    "https://*.calendar.eternitywall.com",
    "https://*.calendar.catallaxy.com",
)
DEFAULT_TIMEOUT = 10.0


DEFAULT_MAX_CALENDAR_RESPONSE = 10_000  # python-opentimestamps' own limit
DEFAULT_MAX_RPC_RESPONSE = 8 * 1024 * 1024


_KNOWN_SETTINGS = frozenset(
    {
        "mode",
        "confirmations",
        "calendars",
        "min_calendars",
        "calendar_whitelist",
        "bitcoin_rpc",
        "headers_file",
        "timeout",
        "max_ots_bytes",
        "max_calendar_response",
        "max_rpc_response",
        "upgrade",
        "fee_rate",
    }
)


@dataclass(frozen=True, slots=True)
class BitcoinRailSettings:
    """``anchoring.btc.<network>`` settings (see the module docstring)."""

    mode: Mode = "ots"
    confirmations: int = 1  # the least depth this node accepts for any anchor of the target
    calendars: tuple[str, ...] = DEFAULT_CALENDARS
    min_calendars: int | None = None  # default: min(2, len(calendars))
    calendar_whitelist: tuple[str, ...] = DEFAULT_CALENDAR_WHITELIST
    bitcoin_rpc: str | None = None
    headers_file: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    max_ots_bytes: int = DEFAULT_MAX_OTS_BYTES
    max_calendar_response: int = DEFAULT_MAX_CALENDAR_RESPONSE
    max_rpc_response: int = DEFAULT_MAX_RPC_RESPONSE
    upgrade: bool = True  # ask calendars for upgrades while verifying
    fee_rate: float | None = None  # sat/vB, passed to fundrawtransaction

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any]) -> BitcoinRailSettings:
        def bad(message: str) -> ConfigError:
            return ConfigError(f"anchoring.btc: {message}", code="btc_config_invalid")

        unknown = sorted(set(settings) - _KNOWN_SETTINGS)
        if unknown:
            raise bad(f"unknown setting(s) {', '.join(unknown)}")
        mode = settings.get("mode", "ots")
        if mode not in ("ots", "op_return"):
            raise bad("mode must be 'ots' or 'op_return'")

        def url_list(key: str, default: tuple[str, ...]) -> tuple[str, ...]:
            value = settings.get(key, default)
            if isinstance(value, str) or not isinstance(value, list | tuple):
                raise bad(f"{key} must be a list of URLs")
            for url in value:
                if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in (
                    "http",
                    "https",
                ):
                    raise bad(f"{key}: {url!r} is not an http(s) URL")
            return tuple(value)

        def positive(key: str, default: float, kind: type = int) -> Any:
            value = settings.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise bad(f"{key} must be a positive number")
            if kind is int and not isinstance(value, int):
                raise bad(f"{key} must be an integer")
            return kind(value)

        calendars = url_list("calendars", DEFAULT_CALENDARS)
        min_calendars = settings.get("min_calendars")
        if min_calendars is not None and (
            isinstance(min_calendars, bool)
            or not isinstance(min_calendars, int)
            or not 1 <= min_calendars <= len(calendars)
        ):
            raise bad("min_calendars must be between 1 and the number of calendars")
        for key in ("bitcoin_rpc", "headers_file"):
            if settings.get(key) is not None and not isinstance(settings.get(key), str):
                raise bad(f"{key} must be a string")
        upgrade = settings.get("upgrade", True)
        if not isinstance(upgrade, bool):
            raise bad("upgrade must be true or false")
        fee_rate = settings.get("fee_rate")
        if fee_rate is not None:
            fee_rate = positive("fee_rate", 1.0, float)
        confirmations = settings.get("confirmations", 1)
        if (
            isinstance(confirmations, bool)
            or not isinstance(confirmations, int)
            or confirmations < 1
        ):
            raise bad("confirmations must be an integer >= 1")
        out = cls(
            mode=mode,
            confirmations=confirmations,
            calendars=calendars,
            min_calendars=min_calendars,
            calendar_whitelist=url_list("calendar_whitelist", DEFAULT_CALENDAR_WHITELIST),
            bitcoin_rpc=settings.get("bitcoin_rpc"),
            headers_file=settings.get("headers_file"),
            timeout=positive("timeout", DEFAULT_TIMEOUT, float),
            max_ots_bytes=positive("max_ots_bytes", DEFAULT_MAX_OTS_BYTES),
            max_calendar_response=positive("max_calendar_response", DEFAULT_MAX_CALENDAR_RESPONSE),
            max_rpc_response=positive("max_rpc_response", DEFAULT_MAX_RPC_RESPONSE),
            upgrade=upgrade,
            fee_rate=fee_rate,
        )
        if out.mode == "op_return" and not out.bitcoin_rpc:
            raise bad("mode op_return needs bitcoin_rpc")
        if not out.bitcoin_rpc and not out.headers_file:
            raise bad("verification needs headers: set headers_file or bitcoin_rpc")
        return out
