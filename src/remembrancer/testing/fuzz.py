"""Structure-aware fuzzing for the reliability suite (``tests/reliability``).

A fuzz target is a function that takes the bytes of one input and either
returns (the input was accepted) or raises.  :func:`fuzz` feeds it inputs
made by mutating valid samples (real checkpoints, records, messages,
receipts, archives ...), and fails on the first exception that is not one of
the target's documented error types (by default
:class:`~remembrancer.core.errors.RemembrancerError`), naming the target, the
seed and the input so that the failure can be replayed.

Mutations (:class:`Mutator`) work at three levels:

- bytes: bit flips, interesting bytes, deleted, duplicated, swapped or
  inserted ranges, truncation, splices with another sample, dictionary
  tokens, numbers replaced by boundary values;
- lines (for the line-based formats: notes, tlog-proofs, witness requests);
- JSON values: a member deleted, added or retyped, a number pushed to a
  boundary, a string mutated, a subtree copied elsewhere or nested deeply;
  re-serialised in canonical or in arbitrary form, and optionally passed to a
  ``finish`` step that re-signs it, so that mutated *content* gets past the
  signature checks and reaches the deeper parsers.

A target may come with a soundness *oracle*: a function given every input
the target accepted, which checks it independently of the code under test
(e.g. that an accepted record still verifies under the keys that signed the
original sample, with PyNaCl directly; that an accepted proof still proves
an entry of the original tree under the original checkpoint key).  An
accepted input that fails its oracle is a :class:`UnsoundAcceptance`: the
target said yes to something it should have refused.

How many inputs each target gets is :func:`budget`'s answer: the quick mode
(the default, run by ``make test``) or the long mode, chosen with the
environment variable ``REMEMBRANCER_FUZZ`` (``quick`` or ``long``);
``REMEMBRANCER_FUZZ_SCALE`` multiplies either, and ``REMEMBRANCER_FUZZ_SEED``
changes the seed.  Every run is counted in :data:`COUNTS` (and appended to
the JSON-lines file named by ``REMEMBRANCER_FUZZ_REPORT``), so that a test
session can print the total number of generated inputs.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from remembrancer.core.errors import RemembrancerError
from remembrancer.core.jcs import canonicalize

MODE_ENV = "REMEMBRANCER_FUZZ"
SCALE_ENV = "REMEMBRANCER_FUZZ_SCALE"
SEED_ENV = "REMEMBRANCER_FUZZ_SEED"
REPORT_ENV = "REMEMBRANCER_FUZZ_REPORT"

#: inputs generated per target name in this process (quick or long mode alike)
COUNTS: Counter[str] = Counter()


def mode() -> str:
    """``quick`` (default) or ``long``, from ``$REMEMBRANCER_FUZZ``."""
    value = os.environ.get(MODE_ENV, "quick").strip().lower() or "quick"
    if value not in ("quick", "long"):
        raise ValueError(f"{MODE_ENV} must be quick or long, not {value!r}")
    return value


def budget(quick: int, long: int) -> int:
    """The number of inputs for one target in the current mode (scaled)."""
    scale = float(os.environ.get(SCALE_ENV, "1") or "1")
    return max(1, round((long if mode() == "long" else quick) * scale))


def base_seed() -> int:
    return int(os.environ.get(SEED_ENV, "20251126"))


def count(name: str, inputs: int, seconds: float = 0.0, **extra: Any) -> None:
    """Record ``inputs`` generated inputs for target ``name``."""
    COUNTS[name] += inputs
    path = os.environ.get(REPORT_ENV)
    if path:
        line = {"target": name, "inputs": inputs, "seconds": round(seconds, 3), "mode": mode()}
        line.update(extra)
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line, sort_keys=True) + "\n")


# --- mutations ------------------------------------------------------------------------------

_INTERESTING_BYTES = b'\x00\x01\x7f\x80\xff\n\r\t "\\/{}[],:0-+.eE\xc3\xe2\xf0'
_INTERESTING_NUMBERS = (
    b"0", b"-0", b"1", b"-1", b"00", b"01", b"255", b"256", b"65535", b"65536",
    b"2147483648", b"4294967296", b"9007199254740991", b"9007199254740992",
    b"9223372036854775807", b"9223372036854775808", b"18446744073709551615",
    b"18446744073709551616", b"99999999999999999999999999", b"1e309", b"1.5", b"-1e-7",
    b"1E2", b"NaN", b"Infinity",
)  # fmt: skip
_INTERESTING_VALUES: tuple[Any, ...] = (
    None, True, False, 0, -1, 1, 2**31, 2**53 - 1, 2**53, 2**63, 2**64, -(2**63), 1.5, -0.0,
    1e308, "", " ", "\u0000", "\ud800", "\u2014", "\U0001f600", "a" * 300, "..", "../../etc/passwd",
    "/", "%2e%2e%2f", "sha256:" + "0" * 64, "did:key:z6Mk", [], {}, [None], {"": None},
)  # fmt: skip


@dataclass
class Mutator:
    """Deterministic mutations of valid samples (seeded)."""

    seed: int
    dictionary: Sequence[bytes] = ()
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    # -- bytes --------------------------------------------------------------------------
    def mutate_bytes(self, data: bytes, others: Sequence[bytes] = ()) -> bytes:
        r = self.rng
        out = bytearray(data)
        for _ in range(1 + min(r.getrandbits(3), 5) if r.random() < 0.5 else 1):
            out = self._byte_op(out, others)
        return bytes(out)

    def _byte_op(self, out: bytearray, others: Sequence[bytes]) -> bytearray:
        r = self.rng
        n = len(out)
        op = r.randrange(13)
        if n == 0 and op != 10 and op != 11:
            op = 9
        if op == 0:  # flip one bit
            i = r.randrange(n)
            out[i] ^= 1 << r.randrange(8)
        elif op == 1:  # an interesting byte
            out[r.randrange(n)] = _INTERESTING_BYTES[r.randrange(len(_INTERESTING_BYTES))]
        elif op == 2:  # delete a range
            i = r.randrange(n)
            del out[i : i + 1 + r.randrange(min(32, n - i))]
        elif op == 3:  # duplicate a range
            i = r.randrange(n)
            j = i + 1 + r.randrange(min(64, n - i))
            out[j:j] = out[i:j]
        elif op == 4:  # truncate
            del out[r.randrange(n) :]
        elif op == 5:  # swap two ranges of one length
            k = 1 + r.randrange(min(16, n))
            i, j = r.randrange(n - k + 1), r.randrange(n - k + 1)
            a, b = bytes(out[i : i + k]), bytes(out[j : j + k])
            out[i : i + k], out[j : j + k] = b, a
        elif op == 6:  # replace a run of digits by a boundary number
            digits = [i for i in range(n) if 48 <= out[i] <= 57]
            if digits:
                i = r.choice(digits)
                j = i
                while j < n and 48 <= out[j] <= 57:
                    j += 1
                while i > 0 and 48 <= out[i - 1] <= 57:
                    i -= 1
                out[i:j] = r.choice(_INTERESTING_NUMBERS)
            else:
                out[r.randrange(n)] ^= 0x20
        elif op == 7:  # a line operation
            return bytearray(self._line_op(bytes(out)))
        elif op == 8:  # overwrite a range with random bytes
            i = r.randrange(n)
            k = 1 + r.randrange(min(8, n - i))
            out[i : i + k] = r.randbytes(k)
        elif op == 9:  # insert random or interesting bytes
            i = r.randrange(n + 1)
            ins = (
                r.randbytes(1 + r.randrange(8))
                if r.random() < 0.5
                else bytes([_INTERESTING_BYTES[r.randrange(len(_INTERESTING_BYTES))]])
                * (1 + r.randrange(4))
            )
            out[i:i] = ins
        elif op == 10:  # a dictionary token
            if self.dictionary:
                tok = r.choice(self.dictionary)
                i = r.randrange(n + 1)
                if r.random() < 0.5 and n:
                    out[i : i + len(tok)] = tok
                else:
                    out[i:i] = tok
            else:
                out.append(r.randrange(256))
        elif op == 11:  # splice with another sample
            if others:
                other = r.choice(others)
                i = r.randrange(n + 1)
                j = r.randrange(len(other) + 1)
                out = bytearray(bytes(out[:i]) + other[j:])
            else:
                out += out[: r.randrange(n + 1)]
        else:  # repeat a range many times (bounded growth)
            i = r.randrange(n)
            chunk = bytes(out[i : i + 1 + r.randrange(min(8, n - i))])
            out[i:i] = chunk * (2 + r.randrange(200))
        return out

    def _line_op(self, data: bytes) -> bytes:
        r = self.rng
        lines = data.split(b"\n")
        if len(lines) < 2:
            return data + b"\n"
        op = r.randrange(6)
        i = r.randrange(len(lines))
        if op == 0:
            del lines[i]
        elif op == 1:
            lines.insert(i, lines[r.randrange(len(lines))])
        elif op == 2:
            j = r.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == 3:
            lines.insert(i, b"")
        elif op == 4:
            lines[i] = lines[i] + r.choice((b" ", b"\r", b"\t", b"\x00", b" extra"))
        else:
            lines[i] = b""
        return b"\n".join(lines)

    # -- JSON values ----------------------------------------------------------------------
    def mutate_json(self, value: Any) -> Any:
        """A mutated deep copy of a JSON value (one to three edits)."""
        value = json.loads(json.dumps(value))
        for _ in range(1 + (self.rng.random() < 0.3) + (self.rng.random() < 0.1)):
            value = self._json_op(value)
        return value

    def _paths(self, value: Any) -> list[tuple[Any, Any]]:
        """(container, key) of every node below ``value``, breadth-first, bounded."""
        out: list[tuple[Any, Any]] = []
        todo = [value]
        while todo and len(out) < 2000:
            node = todo.pop()
            items: Any = (
                node.items() if isinstance(node, dict) else enumerate(node)
                if isinstance(node, list) else ()
            )  # fmt: skip
            for k, v in items:
                out.append((node, k))
                if isinstance(v, dict | list):
                    todo.append(v)
        return out

    def _json_op(self, value: Any) -> Any:
        r = self.rng
        paths = self._paths(value)
        if not paths:
            return self._new_value(value)
        parent, key = r.choice(paths)
        old = parent[key]
        op = r.randrange(8)
        if op == 0:  # delete
            del parent[key]
        elif op == 1:  # add a member or an item
            if isinstance(parent, dict):
                parent[r.choice(("extra", "", "type", "x" * 40, str(key) + "_"))] = self._new_value(
                    old
                )
            else:
                parent.insert(r.randrange(len(parent) + 1), self._new_value(old))
        elif op == 2 and isinstance(old, str):  # mutate a string's bytes
            raw = self.mutate_bytes(old.encode("utf-8", "surrogatepass"))
            parent[key] = raw.decode("utf-8", "replace")
        elif op == 3 and isinstance(old, int | float) and not isinstance(old, bool):
            parent[key] = r.choice((old + 1, old - 1, -old, old * 2**20, float(old) + 0.5,
                                    str(old), old + 2**53))  # fmt: skip
        elif op == 4:  # copy another subtree here
            src, k2 = r.choice(paths)
            parent[key] = json.loads(json.dumps(src[k2]))
        elif op == 5:  # nest deeply
            deep: Any = old
            for _ in range(r.choice((2, 8, 70, 200))):
                deep = [deep] if r.random() < 0.5 else {"a": deep}
            parent[key] = deep
        elif op == 6 and isinstance(old, list) and old:  # shrink or grow a list
            if r.random() < 0.5:
                del old[r.randrange(len(old)) :]
            else:
                old.extend(old[: 1 + r.randrange(len(old))] * r.choice((1, 2, 600)))
        else:  # retype
            parent[key] = self._new_value(old)
        return value

    def _new_value(self, old: Any) -> Any:
        r = self.rng
        if r.random() < 0.7:  # copied: later edits must not change (or nest) the constant
            return copy.deepcopy(r.choice(_INTERESTING_VALUES))
        if isinstance(old, str):
            return old * r.choice((0, 2, 100))
        if isinstance(old, dict):
            return list(old.values())
        if isinstance(old, list):
            return {str(i): v for i, v in enumerate(old)}
        return [old]

    def serialize(self, value: Any) -> bytes:
        """Canonical JSON most of the time (formats that demand it), else any JSON."""
        r = self.rng
        if r.random() < 0.75:
            try:
                return canonicalize(value)
            except (RemembrancerError, ValueError, TypeError, RecursionError):
                pass
        try:
            return json.dumps(
                value,
                sort_keys=r.random() < 0.5,
                ensure_ascii=r.random() < 0.5,
                indent=r.choice((None, None, 1)),
            ).encode("utf-8", "surrogatepass")
        except (ValueError, RecursionError):
            return b"[]"


# --- the loop ---------------------------------------------------------------------------------


class FuzzFailure(AssertionError):
    """A target raised an exception outside its documented error types."""


class UnsoundAcceptance(FuzzFailure):
    """A target accepted an input that its soundness oracle refuses."""


@dataclass
class FuzzResult:
    name: str
    inputs: int = 0
    accepted: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def rejected(self) -> int:
        return self.inputs - self.accepted

    def summary(self) -> str:
        top = ", ".join(f"{c} {n}" for c, n in self.codes.most_common(4))
        return (
            f"{self.name}: {self.inputs} inputs ({self.accepted} accepted) in "
            f"{self.seconds:.1f} s; top refusals: {top}"
        )


Target = Callable[[bytes], object]
#: checks an accepted input independently of the target; raises (any exception) if unsound
Oracle = Callable[[bytes], object]


def fuzz(
    name: str,
    target: Target,
    samples: Sequence[bytes],
    n: int,
    *,
    json_level: bool = False,
    lines: bool = False,
    finish: Callable[[Any], bytes] | None = None,
    allowed: tuple[type[BaseException], ...] = (RemembrancerError,),
    dictionary: Sequence[bytes] = (),
    seed: int | None = None,
    check_samples: bool = True,
    oracle: Oracle | None = None,
) -> FuzzResult:
    """Feed ``n`` inputs made from ``samples`` to ``target``.

    Every sample must be accepted (``check_samples``), so that the mutations
    start from valid inputs.  With ``json_level`` the samples are JSON and
    half the inputs are JSON-level mutations, serialised by ``finish`` when
    given (e.g. to re-sign) or else by :meth:`Mutator.serialize`.  ``lines``
    weights line operations for line-based formats.  Raises
    :class:`FuzzFailure` on the first exception not in ``allowed``, and
    :class:`UnsoundAcceptance` on the first accepted input that ``oracle``
    refuses (the valid samples must pass the oracle too).
    """
    if not samples:
        raise ValueError(f"{name}: no samples")
    s = (base_seed() if seed is None else seed) ^ _stable(name)
    mut = Mutator(s, dictionary)
    result = FuzzResult(name)
    decoded = [_json_or_none(x) for x in samples] if json_level else []
    if check_samples:
        for i, sample in enumerate(samples):
            try:
                target(sample)
            except BaseException as e:
                raise FuzzFailure(
                    f"{name}: valid sample {i} is refused: {type(e).__name__}: {e}\n"
                    f"sample: {sample[:400]!r}"
                ) from e
            if oracle is not None:
                try:
                    oracle(sample)
                except Exception as e:
                    raise FuzzFailure(
                        f"{name}: valid sample {i} fails the soundness oracle (the oracle is"
                        f" wrong): {type(e).__name__}: {e}\nsample: {sample[:400]!r}"
                    ) from e
    started = time.perf_counter()
    r = mut.rng
    for i in range(n):
        pick = r.randrange(len(samples))
        roll = r.random()
        data: bytes
        if roll < 0.03:
            data = samples[pick]
        elif json_level and roll < 0.55 and decoded[pick] is not None:
            value = mut.mutate_json(decoded[pick])
            if finish is not None:
                try:
                    data = finish(value)
                except (RemembrancerError, ValueError, TypeError, RecursionError, KeyError):
                    data = mut.serialize(value)
            else:
                data = mut.serialize(value)
        elif lines and roll < 0.4:
            data = mut._line_op(samples[pick])
        else:
            data = mut.mutate_bytes(samples[pick], samples)
        try:
            target(data)
            result.accepted += 1
            if oracle is not None:
                _check_oracle(name, oracle, data, i, s)
        except UnsoundAcceptance:
            result.inputs = i + 1
            count(name, i + 1, time.perf_counter() - started)
            raise
        except allowed as e:
            result.codes[str(getattr(e, "code", type(e).__name__))] += 1
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt):
                raise
            result.inputs = i + 1
            count(name, i + 1, time.perf_counter() - started)
            kept = _keep_failure(name, data)
            raise FuzzFailure(
                f"{name}: input {i} (seed {s}) raised {type(e).__name__}: {e}\n"
                f"input ({len(data)} bytes, saved as {kept}): {data[:300]!r}\n"
                + "".join(traceback.format_exception(e)[-6:])
            ) from e
    result.inputs = n
    result.seconds = time.perf_counter() - started
    count(name, n, result.seconds, accepted=result.accepted)
    return result


def _check_oracle(name: str, oracle: Oracle, data: bytes, i: int, seed: int) -> None:
    try:
        oracle(data)
    except Exception as e:
        kept = _keep_failure(name, data)
        raise UnsoundAcceptance(
            f"{name}: input {i} (seed {seed}) was accepted but fails the soundness oracle:"
            f" {type(e).__name__}: {e}\ninput ({len(data)} bytes, saved as {kept}):"
            f" {data[:300]!r}"
        ) from e


def _keep_failure(name: str, data: bytes) -> str:
    """Save a failing input for replay (``$REMEMBRANCER_FUZZ_FAILURES`` or the temp dir)."""
    directory = os.environ.get("REMEMBRANCER_FUZZ_FAILURES") or tempfile.gettempdir()
    path = os.path.join(directory, f"fuzz-failure-{name}-{hashlib.sha256(data).hexdigest()[:16]}")
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError:
        return "(not saved)"
    return path


def _json_or_none(sample: bytes) -> Any:
    """A sample's JSON value, or None for a sample that is not JSON (byte mutations only)."""
    try:
        return json.loads(sample)
    except ValueError:
        return None


def _stable(name: str) -> int:
    """A process-independent hash of a target name (``hash()`` is salted)."""
    h = 0
    for ch in name.encode():
        h = (h * 131 + ch) & 0xFFFFFFFF
    return h
