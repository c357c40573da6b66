"""What a research run learned, read from the journal's records (so it works on resume too).

API
---
param_effects(records, goal) -> list[ParamEffect]
    per tuned parameter (``rec["params"]``): start and best value, how often it moved, how the
    objective moved when it did, and Optuna's importance when there are enough trials
idea_groups(records, goal) -> list[IdeaGroup]
    experiments without params (LLM runs) grouped by the first words of their description
learned_lines(records, goal, dec) -> list[str]          a few lines for the terminal summary
learned_markdown(records, goal, dec) -> list[str]       the report.md section

Optuna is imported only to compute importances, and only with enough trials.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MIN_TRIALS_FOR_IMPORTANCE",
    "IdeaGroup",
    "ParamEffect",
    "idea_groups",
    "learned_lines",
    "learned_markdown",
    "param_effects",
]

# Below this, an importance estimate is mostly noise: show the plain spread instead.
MIN_TRIALS_FOR_IMPORTANCE = 20
_CHANGE = re.compile(r"(?:^|,\s*)(?P<name>[^\s,]+) (?P<old>[^\s,]+) -> (?P<new>[^\s,]+)")
# The hybrid proposer's tuned experiments: "#3 on the best, tuned: X 2.0 -> 0.63 (the idea)"
# and "#3 tuned on: X 0.63 -> 0.4". The prefix and the idea in brackets are not changes.
_HYBRID_PREFIX = re.compile(r"^#\d+ (?:on the best, tuned|tuned on): ")
_IDEA_SUFFIX = re.compile(r" \(.*\)$")
_FILLER = {"a", "an", "the", "to", "of", "and", "in", "on", "for", "with", "by", "from", "try"}
_WORD = re.compile(r"[a-z0-9_.+\-]+")


@dataclass
class ParamEffect:
    """One tuned parameter: where it started, where it ended, what moving it did."""

    name: str
    start: float | None  # its value before the first experiment changed it
    best: float | None  # its value in the best (last kept) configuration
    goal: str = "min"
    # The objective minus the best at the time, in each experiment that moved it (with a
    # value); ``alone`` when it was the only parameter moved, so the change is its own.
    deltas: list[float] = field(default_factory=list)
    alone: list[float] = field(default_factory=list)
    importance: float | None = None  # Optuna's share (0..1); None when not computed

    @property
    def changed(self) -> bool:
        return self.start is not None and self.best is not None and self.start != self.best

    def extremes(self, deltas: list[float]) -> tuple[float, float] | None:
        """(most favourable, least favourable) of ``deltas``, None when empty."""
        if not deltas:
            return None
        ordered = sorted(deltas, reverse=self.goal == "max")  # best first
        return ordered[0], ordered[-1]


@dataclass
class IdeaGroup:
    """Experiments whose descriptions start alike: one line of thought."""

    label: str
    indices: list[int] = field(default_factory=list)
    kept: int = 0
    failed: int = 0  # crash, rejected, error
    best_improvement: float | None = None  # positive = better, as the loop records it
    files: set[str] = field(default_factory=set)


def _changes(rec: dict[str, Any]) -> str:
    """The "NAME OLD -> NEW, ..." part of a record's description."""
    text = str(rec.get("description", ""))
    if _HYBRID_PREFIX.match(text):
        text = _IDEA_SUFFIX.sub("", _HYBRID_PREFIX.sub("", text, count=1))
    return text


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _number(text: str) -> float | None:
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _told(rec: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """The changes a record's description names ({NAME: OLD}) and the params it moved.

    The optuna proposer describes its changes as "NAME OLD -> NEW, ...": OLD is the best
    value at the time. Any other description: every parameter counts as moved."""
    told = {m["name"]: m["old"] for m in _CHANGE.finditer(_changes(rec))}
    params = rec["params"]
    return told, [n for n in params if n in told] if told else list(params)


def _best_values(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Each parameter's value in the best configuration: the keeps replayed in the order
    they were kept (the journal's), each setting the numbers its description names.

    Not simply the last keep's params: with several workers a change proposed on an older
    best is re-based onto a newer one and kept there, and its params still hold the older
    best's other numbers. A description that names no change sets them all."""
    values: dict[str, Any] = {}
    for rec in records:
        if rec.get("status") != "keep":
            continue
        _, moved = _told(rec)
        values.update({n: rec["params"][n] for n in moved})
    return values


def param_effects(records: Sequence[dict[str, Any]], goal: str) -> list[ParamEffect]:
    """Per parameter, most important (or most moving) first; [] when no record has params."""
    with_params = [r for r in records if isinstance(r.get("params"), dict) and r["params"]]
    if not with_params:
        return []
    names = list(dict.fromkeys(k for r in with_params for k in r["params"]))
    effects = {name: ParamEffect(name, None, None, goal) for name in names}
    for rec in sorted(with_params, key=lambda r: r.get("index", 0)):
        told, moved = _told(rec)
        value, before = rec.get("objective"), rec.get("best_before")
        for name in moved:
            effect = effects[name]
            if effect.start is None and name in told:
                effect.start = _number(told[name])
            if _finite(value) and _finite(before):
                effect.deltas.append(value - before)
                if len(moved) == 1:
                    effect.alone.append(value - before)
    best_values = _best_values(with_params)
    for name, effect in effects.items():
        if effect.start is None:
            # Never named as changed: it kept the value every record shows.
            values = {r["params"][name] for r in with_params if name in r["params"]}
            effect.start = next(iter(values)) if len(values) == 1 else None
        best = best_values.get(name)
        effect.best = best if _finite(best) else effect.start
    for name, share in _importances(with_params, goal).items():
        effects[name].importance = share

    def rank(e: ParamEffect) -> tuple[float, float]:
        span = e.extremes(e.alone or e.deltas)
        return (-(e.importance or 0.0), -abs(span[1] - span[0]) if span else 0.0)

    return sorted(effects.values(), key=rank)


def _importances(records: Sequence[dict[str, Any]], goal: str) -> dict[str, float]:
    """Optuna's parameter importances over the records with a value, {} when too few."""
    valued = [r for r in records if _finite(r.get("objective"))]
    if len(valued) < MIN_TRIALS_FOR_IMPORTANCE:
        return {}
    common = set(valued[0]["params"]).intersection(*(r["params"] for r in valued[1:]))
    columns = {n: [r["params"][n] for r in valued] for n in sorted(common)}
    columns = {n: v for n, v in columns.items() if all(_finite(x) for x in v) and len(set(v)) >= 2}
    if len(columns) < 2:
        return {}  # one moving parameter has all the importance by definition: say nothing
    try:
        import optuna
        from optuna.distributions import FloatDistribution, IntDistribution
    except ImportError:
        return {}
    distributions: dict[str, Any] = {}
    for name, values in columns.items():
        low, high = min(values), max(values)
        if all(isinstance(x, int) for x in values):
            distributions[name] = IntDistribution(int(low), int(high))
        else:
            log = low > 0 and high / low >= 100  # spans orders of magnitude: compare on log
            distributions[name] = FloatDistribution(float(low), float(high), log=log)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "experimental" notices on older Optuna
            study = optuna.create_study(direction="maximize" if goal == "max" else "minimize")
            for rec in valued:
                study.add_trial(
                    optuna.trial.create_trial(
                        params={n: rec["params"][n] for n in columns},
                        distributions=distributions,
                        value=float(rec["objective"]),
                    )
                )
            evaluator = _evaluator(len(valued))
            found = optuna.importance.get_param_importances(
                study, evaluator=evaluator, params=list(columns)
            )
    except (ImportError, ValueError, RuntimeError, ZeroDivisionError):
        return {}  # an evaluator that needs scikit-learn, or values it cannot split
    return {n: float(v) for n, v in found.items() if _finite(v)}


def _evaluator(trials: int) -> Any:
    """PED-ANOVA: needs no scikit-learn and is deterministic (Optuna's default from 4.x).

    It asks how differently each parameter is spread in the best trials than over its
    whole range (global, not local: the proposer moves one to three parameters at a time,
    so near the best most trials share most values, and a local comparison ranks the
    parameters that were left alone). At least five best trials, so one lucky trial
    does not decide.
    """
    from optuna import importance

    cls = getattr(importance, "PedAnovaImportanceEvaluator", None)
    return cls(target_quantile=max(0.1, 5 / trials), evaluate_on_local=False) if cls else None


def idea_groups(records: Sequence[dict[str, Any]], goal: str = "min") -> list[IdeaGroup]:
    """Experiments without params, grouped by the first two words of their description."""
    groups: dict[str, IdeaGroup] = {}
    for rec in records:
        if (isinstance(rec.get("params"), dict) and rec["params"]) or not rec.get("description"):
            continue  # a tuned trial, or a proposal that never came (counted elsewhere)
        label = _idea(str(rec.get("description", "")))
        group = groups.setdefault(label, IdeaGroup(label))
        group.indices.append(rec.get("index", 0))
        status = rec.get("status")
        group.kept += status == "keep"
        group.failed += status in ("crash", "rejected", "error")
        gain = rec.get("improvement")
        if _finite(gain) and (group.best_improvement is None or gain > group.best_improvement):
            group.best_improvement = gain
        group.files.update(_files(str(rec.get("diff") or "")))
    return sorted(
        groups.values(),
        key=lambda g: (-g.kept, -(g.best_improvement or -math.inf), -len(g.indices), g.label),
    )


def _idea(description: str) -> str:
    words = [w for w in _WORD.findall(description.lower()) if w not in _FILLER]
    return " ".join(words[:2]) or "(no description)"


def _files(diff: str) -> list[str]:
    return [line[6:].strip() for line in diff.splitlines() if line.startswith("+++ b/")]


def _value(x: Any) -> str:
    return f"{x:.4g}" if _finite(x) else "?"


def _signed(x: float | None, dec: int) -> str:
    return f"{(round(x, dec) or 0.0):+.{dec}f}" if x is not None else "-"


def _span(e: ParamEffect, deltas: list[float], dec: int) -> str:
    span = e.extremes(deltas)
    return f"{_signed(span[0], dec)} .. {_signed(span[1], dec)}" if span else "-"


def _best_text(e: ParamEffect) -> str:
    if e.changed:
        return f"{_value(e.start)} -> {_value(e.best)}"
    return f"{_value(e.best)} (unchanged)" if e.best is not None else "?"


def _moves(e: ParamEffect, dec: int) -> str:
    """``moved 10x, 3 alone: -0.23 .. +0.12`` (alone when it was, else with the others)."""
    if not e.deltas:
        return "never moved with a value"
    span, how = e.extremes(e.alone), f"{len(e.alone)} alone"
    if span is None:
        span, how = e.extremes(e.deltas), "always with others"
    assert span is not None
    return f"moved {len(e.deltas)}x, {how}: {_signed(span[0], dec)} .. {_signed(span[1], dec)}"


def learned_lines(
    records: Sequence[dict[str, Any]], goal: str, dec: int, top: int = 5
) -> list[str]:
    """A few terminal lines: the parameters that mattered, or the ideas that were tried."""
    effects = param_effects(records, goal)
    lines: list[str] = []
    if effects:
        valued = sum(1 for r in records if r.get("params") and _finite(r.get("objective")))
        imp = any(e.importance is not None for e in effects)
        lines.append(
            "learned per parameter (start -> best"
            + (f", importance over {valued} trials" if imp else "")
            + ", objective change when moved: best .. worst):"
        )
        shown = effects[:top]
        width = max(len(e.name) for e in shown)
        values = max(len(_best_text(e)) for e in shown)
        for e in shown:
            share = f"  {100 * e.importance:3.0f}%" if e.importance is not None else ""
            lines.append(f"  {e.name:<{width}}  {_best_text(e):<{values}}{share}  {_moves(e, dec)}")
        if len(effects) > top:
            lines.append(f"  ... {len(effects) - top} more in report.md")
    groups = idea_groups(records, goal)
    if groups and any(len(g.indices) > 1 for g in groups):
        shown = ", ".join(f"{g.label!r} {len(g.indices)} tried/{g.kept} kept" for g in groups[:top])
        lines.append(f"ideas (by first words): {shown}")
    return lines


def learned_markdown(records: Sequence[dict[str, Any]], goal: str, dec: int) -> list[str]:
    """The report.md section "What was learned" (empty when there is nothing to say)."""
    effects = param_effects(records, goal)
    groups = idea_groups(records, goal)
    if not effects and not groups:
        return []
    out = ["## What was learned", ""]
    if effects:
        valued = sum(1 for r in records if r.get("params") and _finite(r.get("objective")))
        better = "negative" if goal == "min" else "positive"
        out += [
            "### Parameters",
            "",
            "_start -> best: the value before the first change and in the best kept version. "
            "importance: Optuna's `get_param_importances` over the "
            f"{valued} experiments with a value (computed from {MIN_TRIALS_FOR_IMPORTANCE} "
            "on, with two or more parameters that moved); it says which parameters set the "
            "best trials apart, not in which direction. change: the objective minus the best "
            f"at the time ({better} is better), in the experiments that moved it alone (its "
            "own effect) and in all that moved it (mixed with the others moved alongside)._",
            "",
            "| parameter | start -> best | importance | moved | alone | change alone "
            "(best .. worst) | change, all moves (best .. worst) |",
            "|---|---|---|---|---|---|---|",
        ]
        for e in effects:
            share = f"{100 * e.importance:.1f}%" if e.importance is not None else "-"
            out.append(
                f"| `{e.name}` | {_best_text(e)} | {share} | {len(e.deltas)} | {len(e.alone)} | "
                f"{_span(e, e.alone, dec)} | {_span(e, e.deltas, dec)} |"
            )
        out.append("")
    if groups:
        out += [
            "### Ideas",
            "",
            "_Experiments grouped by the first two words of their description "
            "(a rough grouping: the same idea worded differently lands apart)._",
            "",
            "| idea | experiments | kept | failed | best improvement | files |",
            "|---|---|---|---|---|---|",
        ]
        for g in groups:
            numbers = ", ".join(f"#{i}" for i in g.indices[:8])
            numbers += ", ..." if len(g.indices) > 8 else ""
            files = ", ".join(f"`{f}`" for f in sorted(g.files)) or "-"
            out.append(
                f"| {g.label.replace('|', '/')} | {len(g.indices)} ({numbers}) | {g.kept} | "
                f"{g.failed} | {_signed(g.best_improvement, dec)} | {files} |"
            )
        out.append("")
    return out
