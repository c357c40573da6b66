"""``@metric``: a test that returns a number, and the Measurement it becomes.

The decorator tags the function with a ``MetricSpec`` and wraps it so that what
it returns is validated and handed to the plugin instead of to pytest (no
``PytestReturnNotNoneWarning``). Called outside a pytest session, the wrapped
function simply returns what the body returns. Standard library only: this
module is imported with the package.

API::

    metric(goal, *, unit=None, name=None, repeat=1)   # decorator
    Measurement                                         # one metric's samples and outcome
    MetricError                                         # a bad value, a bad declaration
    check_goal(goal, where) / check_value(name, value) -> float
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

GOALS = ("min", "max")
F = TypeVar("F", bound=Callable[..., Any])


class MetricError(Exception):
    """A metric value or declaration that cannot be used; the message says how to fix it."""


# -- validation ----------------------------------------------------------------------------


def check_goal(goal: object, where: str) -> str:
    """Return ``goal`` if it is 'min' or 'max', else raise MetricError naming ``where``."""
    if goal in GOALS:
        return str(goal)
    hint = ""
    if isinstance(goal, str):
        low = goal.strip().lower()
        if low.startswith("min") or low in ("lower", "down", "less"):
            hint = " (did you mean 'min'?)"
        elif low.startswith("max") or low in ("higher", "up", "more"):
            hint = " (did you mean 'max'?)"
    return _raise(
        f"{where}: goal must be 'min' (smaller is better) or 'max' (larger is better), "
        f"got {goal!r}{hint}"
    )


def check_name(name: object, where: str) -> str:
    """Return ``name`` if it can name a metric (a non-empty string without whitespace)."""
    if not isinstance(name, str) or not name or any(c.isspace() for c in name):
        _raise(
            f"{where}: a metric name must be a non-empty string without spaces, got {name!r} "
            "(e.g. 'val_bpb' or 'latency_ms')"
        )
    return name  # type: ignore[return-value]


def check_value(name: str, value: object, verb: str = "returned") -> float:
    """Return ``value`` as a finite float, or raise MetricError saying what is wrong with it."""
    prefix = f"metric {name!r} {verb}"
    if value is None:
        _raise(
            f"{prefix} None: a metric test must return its value "
            "(e.g. `return elapsed_ms`), or use the record_metric fixture"
        )
    if isinstance(value, bool):
        _raise(
            f"{prefix} {value!r}, a bool, not a measurement: return a number, "
            "and use `assert` for pass/fail checks"
        )
    if isinstance(value, (str, bytes)):
        _raise(
            f"{prefix} {value!r}, a {type(value).__name__}, not a number: "
            "return the number itself (e.g. float(text))"
        )
    if not isinstance(value, numbers.Real) and not hasattr(value, "__float__"):
        _raise(
            f"{prefix} a {type(value).__name__} ({_short(value)}), not a number: "
            "return an int or float (for a tensor, .item())"
        )
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        _raise(
            f"{prefix} a {type(value).__name__} ({_short(value)}) that cannot be "
            f"converted to a float ({exc}): return a single number"
        )
    if not math.isfinite(number):
        _raise(f"{prefix} {number!r}, which is not finite: a metric must be a finite number")
    return number


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _raise(message: str) -> NoReturn:
    raise MetricError(message)


def median(samples: list[float]) -> float:
    """The middle sample (mean of the two middle ones for an even count)."""
    ordered = sorted(samples)
    mid = len(ordered) // 2
    return float(ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2)


def format_value(value: float) -> str:
    """About 6 significant digits, without an exponent for everyday magnitudes."""
    size = abs(value)
    if size == 0 or not 1e-4 <= size < 1e15:
        return f"{value:.6g}"
    decimals = max(0, 5 - math.floor(math.log10(size)))
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


# -- the measurement -----------------------------------------------------------------------


@dataclass
class Measurement:
    """One metric of one test: its samples, direction and outcome (the metrics-JSON entry)."""

    name: str
    goal: str
    unit: str | None = None
    samples: list[float] = field(default_factory=list)
    nodeid: str = ""
    duration: float = 0.0
    outcome: str = "passed"  # passed | failed | error
    error: str | None = None

    @property
    def value(self) -> float | None:
        """The median of the samples; None when the test did not produce a valid value."""
        if self.outcome != "passed" or not self.samples:
            return None
        return median(self.samples)

    def as_dict(self) -> dict[str, Any]:
        """The metrics-JSON form (keys per docs/architecture.md)."""
        return {
            "name": self.name,
            "value": self.value,
            "samples": list(self.samples),
            "unit": self.unit,
            "goal": self.goal,
            "nodeid": self.nodeid,
            "duration": self.duration,
            "outcome": self.outcome,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Measurement:
        """Rebuild from the metrics-JSON form (``value`` is derived, so it is not read)."""
        return cls(
            name=str(data["name"]),
            goal=str(data["goal"]),
            unit=data.get("unit"),
            samples=[float(s) for s in data.get("samples") or []],
            nodeid=str(data.get("nodeid", "")),
            duration=float(data.get("duration") or 0.0),
            outcome=str(data.get("outcome", "passed")),
            error=data.get("error"),
        )


# -- the decorator -------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricSpec:
    """What ``@metric`` declared: metric names (before any param id) with goal and unit."""

    goals: dict[str, str]  # name -> "min" | "max"
    units: dict[str, str | None]
    repeat: int
    multi: bool  # the body returns a dict of several metrics

    def names(self, param_id: str | None = None) -> list[str]:
        """Declared names, with ``[param_id]`` appended for a parametrized test."""
        return [qualify(n, param_id) for n in self.goals]


def qualify(name: str, param_id: str | None) -> str:
    """``latency`` -> ``latency[small]`` in a parametrized test, so names stay unique."""
    return f"{name}[{param_id}]" if param_id else name


class Recorder:
    """Collects one test item's samples; the plugin makes one per metric test run."""

    def __init__(self, spec: MetricSpec | None, param_id: str | None) -> None:
        self.spec = spec
        self.param_id = param_id
        self.measurements: dict[str, Measurement] = {}
        if spec is not None:
            for base, goal in spec.goals.items():
                name = qualify(base, param_id)
                self.measurements[name] = Measurement(name, goal, spec.units.get(base))

    def record(
        self, name: str, value: object, goal: str, unit: str | None = None, verb: str = "returned"
    ) -> float:
        """Validate and keep one sample of ``name`` (a repeated name adds a sample)."""
        number = check_value(name, value, verb)
        found = self.measurements.get(name)
        if found is None:
            self.measurements[name] = Measurement(name, goal, unit, [number])
        elif found.goal != goal or (unit is not None and found.unit not in (None, unit)):
            _raise(
                f"metric {name!r} was already recorded in this test with goal={found.goal!r}, "
                f"unit={found.unit!r}; now goal={goal!r}, unit={unit!r}: use one goal and unit"
            )
        else:
            found.samples.append(number)
            found.unit = found.unit or unit
        return number

    def fail(self, problems: dict[str, str]) -> NoReturn:
        """Mark each named metric failed with its message, and stop the test."""
        for name, message in problems.items():
            self.measurements[name].outcome = "failed"
            self.measurements[name].error = message
        raise MetricError("; ".join(dict.fromkeys(problems.values())))

    def take_return(self, returned: object) -> None:
        """Validate what the decorated body returned and record it."""
        spec = self.spec
        assert spec is not None
        names = {base: qualify(base, self.param_id) for base in spec.goals}
        if not spec.multi:
            ((base, name),) = names.items()
            try:
                self.record(name, returned, spec.goals[base], spec.units.get(base))
            except MetricError as exc:
                self.fail({name: str(exc)})
            return
        declared = ", ".join(spec.goals)
        if not isinstance(returned, Mapping):
            self.fail(
                dict.fromkeys(
                    names.values(),
                    f"metrics {declared} returned {_short(returned)} (a {type(returned).__name__})"
                    f": a test with goal={{...}} must return a dict with the keys {declared}",
                )
            )
        extra = [k for k in returned if k not in spec.goals]
        if extra:
            self.fail(
                dict.fromkeys(
                    names.values(),
                    f"returned key(s) {', '.join(map(repr, extra))} with no goal: add them to "
                    f"@metric(goal={{...}}) or drop them (declared: {declared})",
                )
            )
        problems = {}
        for base, name in names.items():
            if base not in returned:
                problems[name] = f"metric {name!r} is declared but missing from the dict"
                continue
            try:
                self.record(name, returned[base], spec.goals[base], spec.units.get(base))
            except MetricError as exc:
                problems[name] = str(exc)
        if problems:
            self.fail(problems)


# The recorder of the metric test now running (set by the plugin from its setup on).
_active: Recorder | None = None


def activate(recorder: Recorder | None) -> None:
    """Make ``recorder`` receive what decorated tests return (None to stop)."""
    global _active
    _active = recorder


def metric(
    goal: str | Mapping[str, str] | Callable[..., Any] | None = None,
    *,
    unit: str | Mapping[str, str] | None = None,
    name: str | None = None,
    repeat: int = 1,
) -> Callable[[F], F]:
    """Turn a test into a measurement: it returns a finite number (or a dict of them).

    ``goal`` is required: ``"min"`` or ``"max"``, or ``{"name": "min", ...}`` for a test that
    returns several metrics as a dict. ``name`` defaults to the function name without its
    ``test_`` prefix; ``repeat=N`` runs the body N times and keeps every sample.
    """
    goals, multi = _declared_goals(goal, name, repeat)

    def decorate(func: F) -> F:
        if multi:
            gs = goals
        else:
            base = name or _default_name(func)
            gs = {base: goals[""]}
        spec = MetricSpec(gs, _units(unit, gs), repeat, multi)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            __tracebackhide__ = True
            recorder = _active
            if recorder is None or recorder.spec is not spec:
                return func(*args, **kwargs)  # called directly, outside a metric test run
            for _ in range(spec.repeat):
                returned = func(*args, **kwargs)
                try:
                    recorder.take_return(returned)
                except MetricError as exc:
                    # Raised afresh here so the traceback ends at the test, not in our code.
                    raise MetricError(str(exc)) from None
            return None

        wrapper._autoresearch_metric = spec  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def _declared_goals(goal: Any, name: str | None, repeat: int) -> tuple[dict[str, str], bool]:
    """@metric's arguments checked: ({name or "": goal}, whether a dict of goals was given)."""
    if callable(goal) and not isinstance(goal, Mapping):
        _raise(
            f"@metric on {getattr(goal, '__name__', goal)!r} needs a goal: write "
            "@metric(goal='min') or @metric(goal='max')"
        )
    if goal is None:
        _raise("@metric needs a goal: @metric(goal='min') or @metric(goal='max')")
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        _raise(f"@metric(repeat=...) must be a whole number of runs, 1 or more; got {repeat!r}")
    multi = isinstance(goal, Mapping)
    if multi:
        if name is not None:
            _raise(
                "@metric(goal={...}, name=...): with several metrics the dict keys are the "
                "names; drop name="
            )
        if not goal:
            _raise("@metric(goal={}) declares no metrics: give {'name': 'min' or 'max', ...}")
        goals = {
            check_name(k, "@metric(goal={...})"): check_goal(v, f"@metric goal for {k!r}")
            for k, v in goal.items()
        }
    else:
        goals = {"": check_goal(goal, "@metric(goal=...)")}
        if name is not None:
            check_name(name, "@metric(name=...)")
    return goals, multi


def spec_of(func: object) -> MetricSpec | None:
    """The MetricSpec ``@metric`` attached to ``func`` (or its bound method's function)."""
    return getattr(getattr(func, "__func__", func), "_autoresearch_metric", None)


def _default_name(func: Callable[..., Any]) -> str:
    base = getattr(func, "__name__", "metric")
    return base[len("test_") :] if base.startswith("test_") and len(base) > 5 else base


def _units(unit: str | Mapping[str, str] | None, goals: dict[str, str]) -> dict[str, str | None]:
    if unit is None or isinstance(unit, str):
        return {n: unit or None for n in goals}
    if not isinstance(unit, Mapping):
        _raise(f"@metric(unit=...) must be a string or a dict of strings, got {unit!r}")
    unknown = [k for k in unit if k not in goals]
    if unknown:
        _raise(
            f"@metric(unit={{...}}) names {', '.join(map(repr, unknown))}, which have no goal "
            f"(declared: {', '.join(goals)})"
        )
    return {n: unit.get(n) for n in goals}
