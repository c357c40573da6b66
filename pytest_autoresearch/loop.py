"""The research loop: baseline, then propose -> scope check -> evaluate -> decide -> record.

It knows nothing of pytest internals, HTTP or subprocess details: everything it
works with is handed in (see ``ResearchLoop.__init__``), so tests drive it with
small fakes and the real parts are tested on their own.
"""

from __future__ import annotations

import datetime
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pytest_autoresearch import decide
from pytest_autoresearch.proposers.base import (
    Cost,
    Failure,
    Outcome,
    PastExperiment,
    Proposal,
    ProposalContext,
    Proposer,
    ProposerError,
    ProposerFatal,
)

# The baseline gets a generous timeout when program.md sets none: it is what the
# per-experiment timeout is derived from.
BASELINE_TIMEOUT = 3600.0


class LoopError(Exception):
    """The loop cannot start or go on; the message says why and what to do."""


class Evaluator(Protocol):
    def __call__(self, metric_args: Sequence[str], guard_args: Sequence[str], timeout: float): ...


@dataclass
class LoopSettings:
    root: Path  # pytest's rootdir: program.md globs are relative to it
    program: Any  # program.Program
    tag: str
    experiments: int  # the total to reach, counting journaled ones of a resumed run
    metric_args: list[str]  # node ids of the collected metric tests
    record_dir: Path
    max_cost: float | None = None
    repair_attempts: int = 2
    proposer_name: str = ""


@dataclass
class LoopResult:
    baseline: float
    best: float
    goal: str
    kept: int
    done: int  # experiments journaled in total for this tag
    ran: int  # experiments run by this call
    stop_reason: str
    branch: str
    record_dir: Path
    holdout_baseline: float | None = None
    holdout_best: float | None = None
    cost: Cost = field(default_factory=Cost)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _better(goal: str, old: float, new: float) -> float:
    """How much better ``new`` is than ``old`` in the objective's direction."""
    return old - new if goal == "min" else new - old


class ResearchLoop:
    """Runs experiments until the count, the cost cap, Ctrl-C or a fatal proposer error."""

    def __init__(
        self,
        settings: LoopSettings,
        *,
        repo: Any,  # vcs.ResearchRepo
        evaluate: Evaluator,
        proposer: Proposer,
        journal: Any,  # journal.Journal
        echo: Callable[[str], None] = print,
        on_record: Callable[[dict], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.s = settings
        self.program = settings.program
        self.repo = repo
        self.evaluate = evaluate
        self.proposer = proposer
        self.journal = journal
        self.echo = echo
        self.on_record = on_record or (lambda rec: None)
        self.clock = clock
        self.goal = "min"
        self.best = math.nan
        self.baseline = math.nan
        self.sigma = 0.0
        self.best_samples: list[float] = []
        self.best_metrics: dict[str, float] = {}
        self.baseline_metrics: dict[str, float] = {}
        self.timeout = float(self.program.timeout or BASELINE_TIMEOUT)
        self.history: list[PastExperiment] = []
        self.cost = Cost()
        self.kept = 0
        self.done = 0
        self.durations: list[float] = []

    # -- the whole run ------------------------------------------------------------------

    def run(self) -> LoopResult:
        ran = 0
        stop_reason = f"reached {self.s.experiments} experiments"
        state = self.journal.load()
        self.journal.write("session", tag=self.s.tag, proposer=self.s.proposer_name,
                           experiments=self.s.experiments, started=_now())
        try:
            self._restore_state(state)
            if state.baseline is None:
                self._measure_baseline()
            if state.unfinished is not None:
                self.journal.write("interrupted", index=state.unfinished, at=_now())
                self.echo(f"experiment {state.unfinished} was interrupted last time; running it again")
            while self.done < self.s.experiments:
                if self.s.max_cost is not None and self.cost.usd >= self.s.max_cost:
                    stop_reason = (
                        f"cost cap reached: ${self.cost.usd:.2f} of ${self.s.max_cost:.2f}"
                    )
                    break
                try:
                    self._experiment(self.done + 1)
                except ProposerFatal as exc:
                    stop_reason = f"proposer stopped: {exc}"
                    self.repo.restore()
                    self.echo(f"stopping: {exc}")
                    break
                ran += 1
        except KeyboardInterrupt:
            self.repo.restore()
            stop_reason = "interrupted (Ctrl-C)"
            self.journal.write("interrupted", index=self.done + 1, at=_now())
            raise
        finally:
            self.journal.write("end", reason=stop_reason, done=self.done, at=_now())
            self.result = LoopResult(
                baseline=self.baseline,
                best=self.best,
                goal=self.goal,
                kept=self.kept,
                done=self.done,
                ran=ran,
                stop_reason=stop_reason,
                branch=getattr(self.repo, "branch", ""),
                record_dir=self.s.record_dir,
                holdout_baseline=self.baseline_metrics.get(self.program.holdout or ""),
                holdout_best=self.best_metrics.get(self.program.holdout or ""),
                cost=self.cost,
            )
        return self.result

    def _restore_state(self, state: Any) -> None:
        """Pick up a resumed run: the baseline, best value, noise, history and cost."""
        if state.baseline is None:
            return
        base = state.baseline
        self.goal = base["goal"]
        self.baseline = base["value"]
        self.sigma = base["sigma"]
        self.baseline_metrics = dict(base.get("metrics") or {})
        self.best, self.best_samples = self.baseline, list(base["samples"])
        self.best_metrics = dict(self.baseline_metrics)
        if base.get("timeout"):
            self.timeout = float(base["timeout"])
        for rec in state.records:
            self._remember(rec)
        self.done = len(state.records)
        self.echo(
            f"resuming {self.s.tag}: {self.done} experiments done, best "
            f"{self.program.objective} {self.best:.6g} (baseline {self.baseline:.6g})"
        )

    def _remember(self, rec: dict) -> None:
        self.history.append(
            PastExperiment(
                index=rec["index"],
                description=rec.get("description", ""),
                status=rec["status"],
                objective=rec.get("objective"),
                delta=rec.get("improvement"),
                reason=rec.get("reason", ""),
                params=rec.get("params"),
            )
        )
        self.cost = self.cost + Cost(**(rec.get("cost") or {}))
        if rec["status"] == "keep":
            self.kept += 1
            self.best = rec["best_after"]
            self.best_samples = list(rec.get("confirm_samples") or rec["samples"].get(self.program.objective, []))
            self.best_metrics = dict(rec.get("metrics") or {})
        if rec.get("durations", {}).get("total"):
            self.durations.append(rec["durations"]["total"])

    # -- baseline -----------------------------------------------------------------------

    def _measure_baseline(self) -> None:
        runs = self.program.baseline_runs
        objective = self.program.objective
        samples: list[float] = []
        metric_samples: dict[str, list[float]] = {}
        slowest = 0.0
        self.echo(f"measuring the baseline {runs} times to estimate the noise of {objective}")
        for i in range(runs):
            ev = self.evaluate(self.s.metric_args, self.program.guards, self.timeout)
            if ev.status != "ok" or not ev.guards_passed:
                why = ev.reason if ev.status != "ok" else "guards failed: " + ", ".join(ev.failed_guards)
                raise LoopError(
                    f"the baseline run failed ({why}); fix the unmodified code first: nothing "
                    f"was changed.\n--- last lines of the output ---\n{ev.log_tail}"
                )
            if i == 0:
                goals = {name: m.goal for name, m in ev.metrics.items()}
                self.program.check_metrics(goals)
                self.goal = goals[objective]
            value = ev.metrics[objective].value
            if value is None or not math.isfinite(value):
                raise LoopError(f"the baseline's {objective} is {value}; fix the metric first")
            samples.extend(ev.metrics[objective].samples or [value])
            for name, m in ev.metrics.items():
                if m.value is not None:
                    metric_samples.setdefault(name, []).append(m.value)
            slowest = max(slowest, ev.duration)
            self.echo(f"  baseline {i + 1}/{runs}: {objective} {value:.6g}  ({ev.duration:.1f}s)")
        self.sigma = decide.noise_sigma(samples)
        self.baseline = self.best = decide.center(samples)
        self.best_samples = samples
        self.baseline_metrics = {k: decide.center(v) for k, v in metric_samples.items()}
        self.best_metrics = dict(self.baseline_metrics)
        if not self.program.timeout:
            # Room for a slower candidate, but a hang is caught in minutes, not hours.
            self.timeout = max(30.0, 3.0 * slowest)
        self.journal.write(
            "baseline",
            commit=self.repo.head(),
            objective=objective,
            goal=self.goal,
            samples=samples,
            sigma=self.sigma,
            value=self.baseline,
            metrics=self.baseline_metrics,
            timeout=self.timeout,
            at=_now(),
        )
        self.echo(
            f"baseline {objective} {self.baseline:.6g} ± {self.sigma:.2g} (noise sigma, "
            f"{len(samples)} samples); goal: {self.goal}; timeout per experiment {self.timeout:.0f}s"
        )

    # -- one experiment -----------------------------------------------------------------

    def _context(self, index: int) -> ProposalContext:
        return ProposalContext(
            root=self.s.root,
            program=self.program,
            editable_files=self.program.editable_files(self.s.root),
            objective=self.program.objective,
            goal=self.goal,
            best_value=self.best,
            baseline_value=self.baseline,
            noise=self.sigma,
            history=list(self.history),
            experiment=index,
            total=self.s.experiments,
            state_dir=self.s.record_dir,
            metrics=dict(self.best_metrics),
        )

    def _experiment(self, index: int) -> None:
        started, t0 = _now(), self.clock()
        parent = self.repo.head()
        self.journal.write("start", index=index, parent=parent, at=started)
        ctx = self._context(index)
        rec: dict[str, Any] = {
            "index": index,
            "total": self.s.experiments,
            "commit": "",
            "parent": parent,
            "description": "",
            "objective": None,
            "best_before": self.best,
            "best_after": self.best,
            "improvement": None,
            "noise": self.sigma,
            "metrics": {},
            "samples": {},
            "guards": {"passed": None, "failed": []},
            "proposer": self.s.proposer_name,
            "params": None,
            "diff": "",
            "lines_added": 0,
            "lines_removed": 0,
            "cost": Cost().as_dict(),
            "attempts": [],
            "log_tail": None,
            "started": started,
        }
        try:
            proposal = self.proposer.propose(ctx)
        except ProposerError as exc:
            self.repo.restore()
            self._finish(rec, ctx, None, "error", f"proposer error: {exc}", t0, propose_s=self.clock() - t0)
            return
        except ProposerFatal:
            self.journal.write("aborted", index=index, at=_now())
            raise
        propose_s = self.clock() - t0
        rec["description"] = proposal.description
        rec["params"] = proposal.params
        cost = proposal.cost
        rec.update(self._diff_fields())

        rejected = self._scope_violation("the proposal")
        if rejected:
            self.repo.restore()
            rec["cost"] = cost.as_dict()
            self._finish(rec, ctx, proposal, "rejected", rejected, t0, propose_s)
            return
        if not self.repo.changed_files():
            rec["cost"] = cost.as_dict()
            self._finish(rec, ctx, proposal, "discard", "the proposal changed nothing", t0, propose_s)
            return

        ev, failure = self._evaluate_candidate(rec)
        attempt = 0
        while failure is not None and attempt < self.s.repair_attempts and failure.status != "rejected":
            attempt += 1
            rec["attempts"].append(
                {"status": failure.status, "reason": failure.reason, "log_tail": failure.log_tail,
                 "diff": rec["diff"]}
            )
            try:
                fixed = self.proposer.repair(ctx, failure)
            except ProposerError as exc:
                rec["attempts"][-1]["repair_error"] = str(exc)
                fixed = None
            if fixed is None:
                break
            cost = cost + fixed.cost
            rec["description"] = fixed.description or rec["description"]
            rec.update(self._diff_fields())
            rejected = self._scope_violation(f"repair attempt {attempt}")
            if rejected:
                failure = Failure("rejected", rejected, "")
                break
            ev, failure = self._evaluate_candidate(rec)
        rec["cost"] = cost.as_dict()
        eval_s = self.clock() - t0 - propose_s

        if failure is not None:
            status = "rejected" if failure.status == "rejected" else "crash"
            if failure.status == "guard":
                status = "discard"
            rec["log_tail"] = failure.log_tail or None
            self._snapshot_and_restore(rec, f"{status}: {rec['description']}")
            self._finish(rec, ctx, proposal, status, failure.reason, t0, propose_s, eval_s)
            return

        # A valid measurement: constraints, then the noise-aware rule.
        broken = self._broken_constraints(ev)
        if broken:
            self._snapshot_and_restore(rec, f"discard: {rec['description']}")
            self._finish(rec, ctx, proposal, "discard", broken, t0, propose_s, eval_s)
            return
        samples = list(rec["samples"][self.program.objective])
        verdict = self._decide(samples, rec)
        if verdict.action == "confirm":
            self.echo(f"  [{index}] close to the noise floor: confirming ({verdict.reason})")
            ev2, failure2 = self._evaluate_candidate(rec, confirm=True)
            if failure2 is None:
                confirm = list(ev2.metrics[self.program.objective].samples or [ev2.metrics[self.program.objective].value])
                rec["confirm_samples"] = confirm
                verdict = self._decide(samples + confirm, rec, confirmed=True)
            else:
                verdict = decide.Decision("discard", f"confirmation run failed: {failure2.reason}", None, None)
        eval_s = self.clock() - t0 - propose_s
        rec["improvement"] = verdict.improvement
        rec["decision"] = verdict.action
        if verdict.action == "keep":
            old = self.best
            self.best = verdict.new_best
            rec["best_after"] = self.best
            message = (
                f"{rec['description']}\n\n{self.program.objective}: {old:.6g} -> {self.best:.6g} "
                f"(experiment {index}, {verdict.reason})"
            )
            rec["commit"] = self.repo.commit(message)
            self.best_metrics = dict(rec["metrics"])
            self.best_samples = list(rec.get("confirm_samples") or samples)
            self.kept += 1
            self._finish(rec, ctx, proposal, "keep", verdict.reason, t0, propose_s, eval_s)
        else:
            self._snapshot_and_restore(rec, f"discard: {rec['description']}")
            self._finish(rec, ctx, proposal, "discard", verdict.reason, t0, propose_s, eval_s)

    def _decide(self, samples: list[float], rec: dict, confirmed: bool = False):
        return decide.keep_decision(
            goal=self.goal,
            best=self.best,
            sigma=self.sigma,
            candidate=samples,
            min_delta=self.program.min_delta,
            confirmed=confirmed,
            lines_removed=max(0, rec["lines_removed"] - rec["lines_added"]),
        )

    def _evaluate_candidate(self, rec: dict, confirm: bool = False):
        """Run the tests on the candidate; returns (evaluation, failure or None)."""
        ev = self.evaluate(self.s.metric_args, self.program.guards, self.timeout)
        rec.setdefault("evaluations", []).append(
            {"status": ev.status, "duration": ev.duration, "confirm": confirm}
        )
        rejected = self._scope_violation("the evaluation")
        if rejected:
            return ev, Failure("rejected", rejected, ev.log_tail)
        if ev.status != "ok":
            return ev, Failure(ev.status, ev.reason, ev.log_tail)
        objective = ev.metrics.get(self.program.objective)
        if objective is None or objective.value is None or not math.isfinite(objective.value):
            why = (objective.error if objective is not None else None) or "no value"
            return ev, Failure("crash", f"{self.program.objective}: {why}", ev.log_tail)
        for name, m in ev.metrics.items():
            if m.value is not None:
                if confirm:
                    # The record's metrics are the medians of all runs of this candidate.
                    rec["samples"].setdefault(name, []).extend(m.samples or [m.value])
                    rec["metrics"][name] = decide.center(rec["samples"][name])
                else:
                    rec["samples"][name] = list(m.samples or [m.value])
                    rec["metrics"][name] = m.value
        rec["objective"] = rec["metrics"][self.program.objective]
        rec["guards"] = {"passed": ev.guards_passed, "failed": list(ev.failed_guards)}
        if not ev.guards_passed:
            return ev, Failure("guard", "guards failed: " + ", ".join(ev.failed_guards), ev.log_tail)
        return ev, None

    def _broken_constraints(self, ev: Any) -> str:
        broken = []
        for c in self.program.constraints:
            m = ev.metrics.get(c.metric)
            if m is None or m.value is None:
                broken.append(f"{c.text} (no value)")
            elif not c.holds(m.value):
                broken.append(f"{c.text} (got {m.value:.6g})")
        return ("constraint broken: " + "; ".join(broken)) if broken else ""

    def _scope_violation(self, what: str) -> str:
        outside = self.repo.out_of_scope(self.program.is_editable)
        if not outside:
            return ""
        shown = ", ".join(outside[:5]) + (f" and {len(outside) - 5} more" if len(outside) > 5 else "")
        return f"{what} changed files outside the editable globs: {shown}"

    def _diff_fields(self) -> dict[str, Any]:
        added, removed = self.repo.lines_changed()
        return {"diff": self.repo.diff_text(), "lines_added": added, "lines_removed": removed}

    def _snapshot_and_restore(self, rec: dict, message: str) -> None:
        try:
            rec["commit"] = self.repo.snapshot(message)
        finally:
            self.repo.restore()

    def _finish(
        self,
        rec: dict,
        ctx: ProposalContext,
        proposal: Proposal | None,
        status: str,
        reason: str,
        t0: float,
        propose_s: float,
        eval_s: float = 0.0,
    ) -> None:
        total = self.clock() - t0
        rec["status"] = status
        rec["reason"] = reason
        rec.setdefault("decision", status)
        rec["durations"] = {"propose": round(propose_s, 3), "evaluate": round(eval_s, 3),
                            "total": round(total, 3)}
        rec["finished"] = _now()
        self.journal.record(rec)
        self.done += 1
        self.durations.append(total)
        self._remember_after(rec)
        if proposal is not None:
            self.proposer.observe(ctx, proposal, Outcome(status, rec["objective"], reason))
        self.on_record(rec)
        self.echo(self._line(rec))

    def _remember_after(self, rec: dict) -> None:
        self.history.append(
            PastExperiment(rec["index"], rec["description"], rec["status"], rec["objective"],
                           rec["improvement"], rec["reason"], rec["params"])
        )
        self.cost = self.cost + Cost(**rec["cost"])

    def _line(self, rec: dict) -> str:
        from pytest_autoresearch import report

        remaining = self.s.experiments - self.done
        avg = sum(self.durations) / len(self.durations) if self.durations else 0.0
        return report.format_line(rec, objective=self.program.objective, noise=self.sigma,
                                  eta_seconds=remaining * avg)
