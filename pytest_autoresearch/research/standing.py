"""Where the run stands: the best so far, the noise, the history, what was spent.

Built from the baseline, then from every finished experiment (live, or read back from
the journal on resume): the same ``learn`` either way, so a resumed run stands exactly
where the killed one stood. Pure bookkeeping: no git, no files, no proposer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from pytest_autoresearch.metrics import stats
from pytest_autoresearch.proposers.base import Cost, PastExperiment
from pytest_autoresearch.research import decide


@dataclass
class Standing:
    goal: str = "min"
    goals: dict[str, str] = field(default_factory=dict)
    baseline: float = math.nan
    best: float = math.nan
    best_runs: int = 1
    # The best as of the last keep that was a real gain, not a simplification: a chain of
    # "equal but simpler" keeps may not drift away from it (decide.keep_decision).
    anchor: float = math.nan
    best_metrics: dict[str, float] = field(default_factory=dict)
    baseline_metrics: dict[str, float] = field(default_factory=dict)
    # What the baseline's tests attached (record_artifact: a training log), its last run's:
    # experiment 1 is proposed knowing how the unchanged code trains.
    baseline_artifacts: tuple[dict[str, Any], ...] = ()
    # Groups of repeated runs of one code version (the baseline, confirmed candidates):
    # the spread within a group is noise; differences between groups are not.
    noise_groups: list[list[float]] = field(default_factory=list)
    history: list[PastExperiment] = field(default_factory=list)
    cost: Cost = field(default_factory=Cost)
    kept: int = 0
    done: int = 0
    durations: list[float] = field(default_factory=list)

    @property
    def noise(self) -> stats.NoiseEstimate:
        return stats.pooled_noise(self.noise_groups)

    @property
    def sigma(self) -> float:
        return self.noise.sigma if self.noise_groups else 0.0

    def best_state(self) -> tuple[float, int, float]:
        """(best, its runs, anchor): what a candidate proposed now is judged against."""
        return (self.best, self.best_runs, self.anchor)

    def set_baseline(self, values: list[float], per_metric: dict[str, list[float]]) -> None:
        self.noise_groups = [values]
        self.best_runs = len(values)
        self.baseline = self.best = self.anchor = stats.mean(values)
        self.baseline_metrics = {k: stats.mean(v) for k, v in per_metric.items()}
        self.best_metrics = dict(self.baseline_metrics)

    def resume(self, base: dict[str, Any]) -> None:
        """From the journaled baseline line (records follow through ``learn``)."""
        self.goal = base["goal"]
        self.goals = dict(base.get("goals") or {})
        self.baseline = self.best = self.anchor = base["value"]
        self.best_runs = len(base["samples"])
        self.noise_groups = [list(base["samples"])]
        self.baseline_metrics = dict(base.get("metrics") or {})
        self.best_metrics = dict(self.baseline_metrics)
        self.baseline_artifacts = tuple(base.get("artifacts") or ())

    def learn(self, rec: dict[str, Any]) -> None:
        """Take in one finished experiment (live or read back from the journal)."""
        self.done += 1
        self.history.append(
            PastExperiment(
                index=rec["index"],
                description=rec.get("description", ""),
                status=rec["status"],
                objective=rec.get("objective"),
                delta=rec.get("improvement"),
                reason=rec.get("reason", ""),
                params=rec.get("params"),
                metrics=rec.get("metrics") or None,
                diff=rec.get("diff") or "",
                log_tail=rec.get("log_tail") or "",
                made_by=rec.get("made_by") or "",
                builds_on=rec.get("builds_on"),
                artifacts=tuple(rec.get("artifacts") or ()),
            )
        )
        self.cost = self.cost + Cost(**(rec.get("cost") or {}))
        runs = rec.get("runs") or []
        if rec["status"] == "keep":
            self.kept += 1
            kept = rec.get("kept") or {}
            self.best = rec["best_after"]
            self.best_runs = kept.get("best_runs") or max(1, len(runs) - 1)
            self.noise_groups.extend(kept.get("noise_groups") or decide.noise_groups(runs))
            if not kept.get("simplification"):
                self.anchor = self.best
            self.best_metrics = dict(rec.get("metrics") or {})
        elif runs:
            self.noise_groups.extend(decide.noise_groups(runs))
        total = (rec.get("durations") or {}).get("total")
        if total:
            self.durations.append(total)

    def decide(self, rec: dict, best: tuple[float, int, float], min_delta: Any) -> decide.Decision:
        """The keep rule for ``rec`` against a best given as (value, its runs, anchor)."""
        value, best_runs, anchor = best
        noise = self.noise
        return decide.keep_decision(
            goal=self.goal,
            best=value,
            sigma=noise.sigma,
            df=noise.df,
            candidate=rec["runs"],
            best_runs=best_runs,
            min_delta=min_delta,
            lines_added=rec["lines_added"],
            lines_removed=rec["lines_removed"],
            max_runs=decide.MAX_RUNS,
            anchor=anchor,
        )
