"""core/frozen.py: the positional maker builds the very object the dataclass's
own constructor builds, and it stays frozen."""

from __future__ import annotations

import dataclasses

import pytest

from remembrancer.core.frozen import positional_maker
from remembrancer.core.record import Record
from remembrancer.demo.keys import demo_key
from remembrancer.demo.records import ledger_payload, make_record
from remembrancer.log.sequencer import Receipt


def _fields(obj: object) -> dict[str, object]:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", [Record, Receipt])
def test_the_maker_builds_what_the_constructor_builds(cls: type) -> None:
    record = make_record("dao:vaultmesh", "ledger.append@1.0.0", ledger_payload(1),
                         demo_key("did:vm:actor:demo"), [], timestamp=1_700_000_000)  # fmt: skip
    sample = record if cls is Record else Receipt("sha256:" + "0" * 64, "dao:x", "o/dao:x", 3, 4,
                                                  (b"h" * 32,), b"note\n", (), True)  # fmt: skip
    values = _fields(sample)
    made = positional_maker(cls)(*values.values())
    assert type(made) is cls and made == cls(**values) and _fields(made) == values
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.namespace = "other"


def test_the_maker_refuses_what_it_cannot_build_faithfully() -> None:
    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked:
        a: int

        def __post_init__(self) -> None:
            raise ValueError

    for cls in (NoSlots, Checked, int):
        with pytest.raises(TypeError):
            positional_maker(cls)
