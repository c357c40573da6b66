"""What the loop is given and gives back, and one experiment's record as it fills in.

``LoopSettings`` in, ``LoopResult`` out; ``new_record`` is the dict journaled for one
experiment (experiments.jsonl); ``take`` adds one evaluation's values to it or raises
``Failed`` (a crash, a failed guard, a violated constraint, no value).
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_autoresearch.metrics import stats
from pytest_autoresearch.proposers.base import Cost, Failure
from pytest_autoresearch.research import decide


class LoopError(Exception):
    """The loop cannot start or go on; the message says why and what to do."""


class Failed(Exception):
    """An evaluation that produced no usable objective value (crash, timeout, guard, scope)."""

    def __init__(
        self, status: str, reason: str, log_tail: str = "", *, repairable: bool = True
    ) -> None:
        super().__init__(reason)
        self.failure = Failure(status, reason, log_tail)
        # False when the code is not at fault (a lost worker): nothing for a repair to fix.
        self.repairable = repairable and status != "rejected"

    @property
    def status(self) -> str:
        """The experiment's status when nothing repairs it: rejected, discard or crash."""
        return {"rejected": "rejected", "guard": "discard"}.get(self.failure.status, "crash")


@dataclass
class LoopSettings:
    root: Path  # pytest's rootdir: program.md globs are relative to it
    program: Any  # program_md.Program
    tag: str
    experiments: int  # the total to reach, counting journaled ones of a resumed run
    metric_args: list[str]  # node ids of the collected metric tests
    record_dir: Path
    max_cost: float | None = None
    repair_attempts: int = 2
    proposer_name: str = ""
    fault: str | None = None  # FAULT_ENV's value: where to kill the loop (tests only)
    time_budget: float | None = None  # seconds for this run; no experiment starts past it
    eval_args: tuple[str, ...] = ()  # more pytest arguments for every evaluation (lean)
    eval_env: dict[str, str] = field(default_factory=dict)  # more environment (lean)
    # Seconds the proposer may stay unavailable (API overloaded, down) before the run
    # stops cleanly; --autoresearch-outage (run_state.OUTAGE by default).
    outage: float | None = None
    # The check tool (research/checks.py): runs pytest args in the checkout through the
    # evaluation's launcher, ``check(args, timeout) -> Evaluation``; None offers no check.
    check: Any = None


@dataclass
class LoopResult:
    """How the run ended, for the summary and report."""

    objective: str
    goal: str
    baseline: float
    best: float
    sigma: float
    kept: int
    done: int  # experiments journaled in total for this tag
    ran: int  # experiments run by this call
    stop_reason: str
    branch: str
    record_dir: Path
    holdout: str | None = None
    holdout_baseline: float | None = None
    holdout_best: float | None = None
    holdout_goal: str | None = None
    cost: Cost = field(default_factory=Cost)
    interrupted: bool = False
    failed: bool = False  # stopped by an error (the session exits non-zero)
    workers: int | None = None  # experiments in flight at once, when run by an executor


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def iso(timestamp: float) -> str:
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc)
    return moment.isoformat(timespec="seconds")


def new_record(index: int, total: int, parent: str, best: float, sigma: float, proposer: str):
    """The record of experiment ``index`` before anything is proposed."""
    return {
        "index": index,
        "total": total,
        "commit": "",
        "parent": parent,
        "description": "",
        "objective": None,
        "best_before": best,
        "best_after": best,
        "improvement": None,
        "noise": sigma,
        "metrics": {},
        "samples": {},
        "runs": [],
        "guards": {"passed": None, "failed": []},
        "proposer": proposer,
        "params": None,
        "diff": "",
        "lines_added": 0,
        "lines_removed": 0,
        "cost": Cost().as_dict(),
        "attempts": [],
        "evaluations": [],
        "log_tail": None,
        "started": now(),
    }


def forget_values(rec: dict[str, Any]) -> None:
    """A new version of the candidate (a repair, a re-base): measured from scratch."""
    rec.update(runs=[], samples={}, metrics={}, objective=None)
    rec.pop("_values", None)
    rec.pop("artifacts", None)


def take(rec: dict[str, Any], ev: Any, objective: str, constraints: Any) -> None:
    """Add one evaluation's values to ``rec``, or raise Failed (crash, guard, constraint).

    The texts its tests attached (``record_artifact``: a training log) are kept whatever
    the outcome, the newest run's: a crashed run's log says most.
    """
    if getattr(ev, "artifacts", None):
        rec["artifacts"] = list(ev.artifacts)
    if ev.status != "ok":
        raise Failed(ev.status, ev.reason, ev.log_tail)
    value = ev.metrics.get(objective)
    if value is None or value.value is None or not math.isfinite(value.value):
        why = (value.error if value is not None else None) or "no value reported"
        raise Failed("crash", f"{objective}: {why}", ev.log_tail)
    rec["guards"] = {"passed": ev.guards_passed, "failed": list(ev.failed_guards)}
    if not ev.guards_passed:
        raise Failed("guard", "guard failed: " + ", ".join(ev.failed_guards), ev.log_tail)
    rec["runs"].append(value.value)
    for name, m in ev.metrics.items():
        if m.value is not None:
            rec["samples"].setdefault(name, []).extend(m.samples or [m.value])
            rec.setdefault("_values", {}).setdefault(name, []).append(m.value)
            rec["metrics"][name] = stats.mean(rec["_values"][name])
    rec["objective"] = stats.mean(rec["runs"])
    violations = decide.constraint_violations(constraints, rec["metrics"])
    if violations:
        raise Failed("guard", "constraint violated: " + "; ".join(violations), ev.log_tail)


def shown(paths: list[str], limit: int = 5) -> str:
    """The first ``limit`` of ``paths`` and how many more."""
    more = len(paths) - limit
    return ", ".join(paths[:limit]) + (f" and {more} more" if more > 0 else "")
