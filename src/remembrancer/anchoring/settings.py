"""The typed settings of the anchoring rails (``anchoring:`` in node.yaml).

::

    anchoring:
      rfc3161:
        tsa: {url: "https://tsa.example/", trust_bundle: tsa-ca.pem}
      eip155:
        "31337": {rpc: "http://127.0.0.1:8545", key_file: keys/evm.key}
      btc:
        mainnet: {headers_file: headers.txt, confirmations: 6}

One strict model per rail (:class:`Rfc3161Settings`, :class:`EvmSettings`,
:class:`BtcSettings`), each the single home of its defaults and bounds;
:class:`AnchoringSettings` holds them by scheme and target name (``tsa``
names match the cadence's target names, chain ids are decimal, Bitcoin
networks are ``mainnet``, ``testnet`` or ``regtest``).  A rail's
``from_config`` takes its validated model (or a plain mapping, validated
here first).  Errors are one line naming the key path, what was expected
and what was found (:mod:`remembrancer.configfile`); their code is the
rail's: ``rfc3161_config_invalid``, ``evm_config_invalid``,
``btc_config_invalid``.  The docs/anchoring.md tables are compared with
these models by a test.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from cryptography import x509
from pydantic import (
    BeforeValidator,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from remembrancer.configfile import (
    ConfigPath,
    DefaultText,
    Expect,
    HttpUrl,
    Placeholder,
    Settings,
    config_error,
    invalid,
)

RAIL_CODES = {
    "rfc3161": "rfc3161_config_invalid",
    "eip155": "evm_config_invalid",
    "btc": "btc_config_invalid",
}
MAX_RAIL_TIMEOUT = 600.0  # seconds one request to a TSA, chain node or calendar may take
MAX_CONFIRMATIONS = 1_000_000
NETWORKS = ("mainnet", "testnet", "regtest")

# Bitcoin defaults (the calendars python-opentimestamps' client uses).
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
DEFAULT_MAX_OTS_BYTES = 100 * 1024
DEFAULT_MAX_CALENDAR_RESPONSE = 10_000  # python-opentimestamps' own limit
DEFAULT_MAX_RPC_RESPONSE = 8 * 1024 * 1024

_OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_TSA_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")  # the name part of a cadence target
_CHAIN_ID = re.compile(r"^[1-9][0-9]{0,31}$")


def _matching(pattern: re.Pattern[str], expected: str) -> BeforeValidator:
    def check(value: Any) -> str:
        if type(value) is not str or not pattern.match(value):
            raise invalid(expected)
        return value

    return BeforeValidator(check)


def _one_or_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _oid(value: Any) -> str:
    if type(value) is not str or not _OID.match(value):
        raise invalid("a dotted OID")
    try:
        x509.ObjectIdentifier(value)
    except ValueError:
        raise invalid("a dotted OID") from None
    return value


Oid = Annotated[str, Expect("a dotted OID"), BeforeValidator(_oid)]
Address = Annotated[
    str,
    Expect("a 0x-prefixed 20-byte address"),
    _matching(_ADDRESS, "a 0x-prefixed 20-byte address"),
]
EnvName = Annotated[
    str,
    Expect("an environment variable name"),
    _matching(_ENV_NAME, "an environment variable name"),
]
Seconds = Annotated[float, Field(gt=0, le=MAX_RAIL_TIMEOUT)]
Confirmations = Annotated[int, Field(ge=1, le=MAX_CONFIRMATIONS)]
UrlList = Annotated[tuple[HttpUrl, ...], Expect("a list of http(s) URLs"), Field(strict=False)]
Bytes = Annotated[int, Field(ge=1, le=64 << 20)]


class Rfc3161Settings(Settings):
    """``anchoring.rfc3161.<name>``: one RFC 3161 time-stamp authority."""

    base_dir: ConfigPath | None = None
    url: HttpUrl | None = None
    trust_bundle: ConfigPath
    policy_oid: Oid | None = None
    pinned_cert: ConfigPath | None = None
    timeout: Seconds = DEFAULT_TIMEOUT


GasPolicy = Literal["auto", "eip1559", "legacy"]


class EvmSettings(Settings):
    """``anchoring.eip155."<chain id>"``: one EVM chain."""

    rpc: HttpUrl
    key_file: ConfigPath | None = None
    key_env: EnvName | None = None
    to: Address | None = None
    senders: Annotated[
        tuple[Address, ...],
        Expect("a list of 0x-prefixed 20-byte addresses"),
        BeforeValidator(_one_or_list),
        Field(strict=False),
    ] = ()
    confirmations: Confirmations = 1
    timeout: Seconds = 10.0
    receipt_wait: Annotated[float, Field(ge=0, le=MAX_RAIL_TIMEOUT)] = 5.0
    gas_price: GasPolicy = "auto"
    max_fee_gwei: Annotated[float, Field(gt=0, le=1_000_000)] | None = None
    gas_limit: Annotated[int, Field(ge=21_000, le=100_000_000)] | None = None

    @model_validator(mode="after")
    def _one_key_source(self) -> EvmSettings:
        if self.key_file is not None and self.key_env is not None:
            raise invalid("key_file or key_env, not both", "both")
        return self


class BtcSettings(Settings):
    """``anchoring.btc.<network>``: Bitcoin through OpenTimestamps or OP_RETURN."""

    mode: Literal["ots", "op_return"] = "ots"
    confirmations: Confirmations = 1  # the least depth this node accepts for any anchor
    calendars: Annotated[UrlList, DefaultText("the 4 public calendars")] = DEFAULT_CALENDARS
    min_calendars: Annotated[
        int, Expect("an integer from 1 to the number of calendars"),
        DefaultText("min(2, number of calendars)"),
    ] | None = None  # fmt: skip
    calendar_whitelist: Annotated[UrlList, DefaultText("the public calendar pools' hosts")] = (
        DEFAULT_CALENDAR_WHITELIST
    )
    bitcoin_rpc: HttpUrl | None = None
    headers_file: ConfigPath | None = None
    timeout: Seconds = DEFAULT_TIMEOUT
    max_ots_bytes: Bytes = DEFAULT_MAX_OTS_BYTES
    max_calendar_response: Bytes = DEFAULT_MAX_CALENDAR_RESPONSE
    max_rpc_response: Bytes = DEFAULT_MAX_RPC_RESPONSE
    upgrade: bool = True  # ask calendars for upgrades while verifying
    fee_rate: Annotated[float, Field(gt=0, le=100_000)] | None = None  # sat/vB

    @field_validator("min_calendars", mode="after")
    @classmethod
    def _reachable(cls, value: int | None, info: ValidationInfo) -> int | None:
        calendars = info.data.get("calendars", DEFAULT_CALENDARS)
        if value is not None and not 1 <= value <= len(calendars):
            raise invalid(f"an integer from 1 to {len(calendars)} (the number of calendars)")
        return value

    @model_validator(mode="after")
    def _usable(self) -> BtcSettings:
        if self.mode == "op_return" and not self.bitcoin_rpc:
            raise invalid("bitcoin_rpc with mode op_return", "no bitcoin_rpc")
        if not self.bitcoin_rpc and not self.headers_file:
            raise invalid("headers_file or bitcoin_rpc (verification needs headers)", "neither")
        return self


RailSettings = Rfc3161Settings | EvmSettings | BtcSettings
MODELS: dict[str, type[RailSettings]] = {
    "rfc3161": Rfc3161Settings,
    "eip155": EvmSettings,
    "btc": BtcSettings,
}


def _names_as_str(value: Any) -> Any:
    """Target names are keys: ``31337:`` unquoted is the chain id "31337"."""
    if isinstance(value, dict):
        return {(str(k) if type(k) is int else k): v for k, v in value.items()}
    return _null_is_empty(value)


def _null_is_empty(value: Any) -> Any:
    return {} if value is None else value


TsaName = Annotated[str, _matching(_TSA_NAME, "a name of 1 to 64 letters, digits, '.', '_' or '-'")]
ChainId = Annotated[str, _matching(_CHAIN_ID, "a decimal chain id")]
Network = Annotated[str, _matching(re.compile(r"^(mainnet|testnet|regtest)$"),
                                   "mainnet, testnet or regtest")]  # fmt: skip


class AnchoringSettings(Settings):
    """``anchoring:``: the rails by scheme and target name."""

    rfc3161: Annotated[
        dict[TsaName, Rfc3161Settings], Placeholder("<name>"), Expect("a mapping of TSA names to settings"),
        BeforeValidator(_names_as_str),
    ] = Field(default_factory=dict)  # fmt: skip
    eip155: Annotated[
        dict[ChainId, EvmSettings], Placeholder("<chain id>"), Expect("a mapping of chain ids to settings"),
        BeforeValidator(_names_as_str),
    ] = Field(default_factory=dict)  # fmt: skip
    btc: Annotated[
        dict[Network, BtcSettings], Placeholder("<network>"), Expect("a mapping of networks to settings"),
        BeforeValidator(_names_as_str),
    ] = Field(default_factory=dict)  # fmt: skip

    @classmethod
    def parse(
        cls, raw: Any, *, source: str | None = None, base: Path | None = None
    ) -> AnchoringSettings:
        """Validate an ``anchoring`` mapping; relative paths resolve against ``base``."""
        try:
            return cls.model_validate(
                _null_is_empty(raw), context={"base": base} if base is not None else None
            )
        except ValidationError as e:
            raise config_error(
                e, cls, source=source, prefix=("anchoring",), code=rail_error_code
            ) from None

    def by_scheme(self) -> dict[str, Mapping[str, RailSettings]]:
        return {"rfc3161": self.rfc3161, "eip155": self.eip155, "btc": self.btc}

    def get(self, scheme: str, name: str) -> RailSettings | None:
        return self.by_scheme().get(scheme, {}).get(name)

    def targets(self) -> list[str]:
        return [f"{s}:{n}" for s, names in self.by_scheme().items() for n in names]

    def files(self) -> list[tuple[str, Path]]:
        """The files the rails read, as (role, path): ``anchoring`` for trust
        bundles and pinned certificates, ``anchoring_key`` for signing keys."""
        out: list[tuple[str, Path]] = []
        for settings in self.rfc3161.values():
            out.append(("anchoring", settings.trust_bundle))
            if settings.pinned_cert is not None:
                out.append(("anchoring", settings.pinned_cert))
        for evm in self.eip155.values():
            if evm.key_file is not None:
                out.append(("anchoring_key", evm.key_file))
        return out


def rail_error_code(path: tuple[Any, ...], reason: str) -> str:
    if len(path) >= 3 and path[1] in RAIL_CODES:
        return RAIL_CODES[path[1]]
    return "config_key_unknown" if reason == "unknown_key" else "config_invalid"


M = TypeVar("M", Rfc3161Settings, EvmSettings, BtcSettings)


def rail_settings(target: str, settings: M | Mapping[str, Any], model: type[M]) -> M:
    """``settings`` as ``model``: as given when already validated, else validated
    now (a plain mapping, e.g. from ``remembrancer anchor verify``'s options)."""
    if isinstance(settings, model):
        return settings
    scheme, _, name = target.partition(":")
    try:
        return model.model_validate(settings)
    except ValidationError as e:
        raise config_error(
            e, model, prefix=("anchoring", scheme, name), code=rail_error_code
        ) from None
