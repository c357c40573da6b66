"""The loop's bookkeeping between experiments: indices, budgets, the baseline, resume.

A part of ``ResearchLoop`` (research/loop.py) kept in its own file: what the run knows
(``Standing``), which experiment comes next, whether another may start, and how a
journaled run is picked up again after Ctrl-C or kill -9.
"""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

from pytest_autoresearch.program.budget import time_left_allows
from pytest_autoresearch.proposers.base import Cost
from pytest_autoresearch.research.records import LoopError, LoopResult, now
from pytest_autoresearch.research.standing import Standing

# Without a timeout in program.md the baseline may take up to this long; the
# per-experiment timeout is then derived from how long the baseline took.
BASELINE_TIMEOUT = 3600.0

# While the proposer is unavailable (the API overloaded, failing or unreachable after the
# SDK's own quick retries), the loop waits before proposing the same experiment again:
# what the service's Retry-After asked for when it said, else 1 s, 2 s, 4 s ... doubling
# up to 5 minutes, each wait drawn between half and all of that ("equal jitter", so that
# many runs hit by one outage do not retry in step). After
# OUTAGE seconds without a proposal (--autoresearch-outage) the run stops cleanly; the
# experiment was never journaled as done, so the next run proposes it again.
OUTAGE = 1800.0
BACKOFF_FIRST = 1.0
BACKOFF_CAP = 300.0


def backoff(tries: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after the ``tries``-th failure in a row (1-based)."""
    ceiling = min(BACKOFF_CAP, BACKOFF_FIRST * 2 ** max(0, tries - 1))
    return ceiling * (0.5 + 0.5 * (rng or random).random())


class RunState:
    """Mixed into ``ResearchLoop``: the state that outlives one experiment."""

    def _init_state(self: Any) -> None:
        self.st = Standing()
        self.timeout = float(self.program.timeout or BASELINE_TIMEOUT)
        self.result: LoopResult | None = None
        self.ran = 0  # experiments finished by this call
        self.next_index = 1
        self.rerun: list[int] = []  # experiments cut short last time: run again first
        self.outputs: set[str] = set()  # paths the unchanged code writes (workers' checkouts)
        self._trial_ids = itertools.count(1)
        self._stopping: tuple[str, bool] | None = None  # (why, failed) once no more may start
        self._proposing: int | None = None  # the experiment being proposed or repaired
        # The proposer unavailable: since when, failures in a row, when to try again, and
        # what the failed attempts of each waiting experiment spent (billed with it).
        self._outage_since: float | None = None
        self._outage_tries = 0
        self._retry_at = 0.0
        self._waiting: dict[int, Cost] = {}

    @property
    def done(self) -> int:
        return self.st.done

    @property
    def noise(self) -> Any:
        return self.st.noise

    def _next_index(self: Any) -> int:
        """The next experiment's index: one cut short last time first, then a new one."""
        if self.rerun:
            return self.rerun.pop(0)
        index = self.next_index
        self.next_index += 1
        return index

    def _stop_reason(self: Any, started: float) -> str | None:
        """Why no further experiment may start (cost cap, time budget), or None."""
        cost = self.spent()
        if self.s.max_cost is not None and cost.usd >= self.s.max_cost:
            return f"cost cap reached: ${cost.usd:.2f} of ${self.s.max_cost:.2f}"
        budget = self.s.time_budget
        elapsed = self.clock() - started
        per = [d / self.capacity for d in self.st.durations]  # K in flight finish K times as often
        if budget is not None and not time_left_allows(elapsed, per, budget):
            return (
                f"time budget: {budget:.0f}s, and the next experiment would not finish "
                f"in the {max(0.0, budget - elapsed):.0f}s left"
            )
        return None

    def spent(self: Any) -> Cost:
        """Every token spent so far: finished experiments, those in flight, failed attempts."""
        cost = self.st.cost
        for cand in {id(c): c for c in self.pending.values()}.values():
            cost = cost + cand.cost
        for waiting in self._waiting.values():
            cost = cost + waiting
        return cost

    def _learn(self: Any, rec: dict) -> None:
        self.st.learn(rec)

    # -- the proposer unavailable: back off, propose the same experiment again ------------

    def _unavailable(self: Any, exc: Exception) -> None:
        """A transient failure: wait (or let in-flight results come back), or stop."""
        now = self.clock()
        if self._outage_since is None:
            self._outage_since = now
        self._outage_tries += 1
        limit = self.s.outage if self.s.outage is not None else OUTAGE
        down = now - self._outage_since
        if down >= limit:
            self._stopping = (
                f"the proposer was unavailable for {down:.0f}s (--autoresearch-outage "
                f"{limit:.0f}s): {exc}; run the same command again to resume",
                False,
            )
            return
        # The service's own Retry-After when it gave one, else the jittered back-off.
        hint = getattr(exc, "retry_after", None)
        wait = min(BACKOFF_CAP, hint) if hint is not None else backoff(self._outage_tries)
        wait = min(wait, limit - down)
        self._retry_at = now + wait
        self.echo(
            f"  proposer unavailable ({exc}); trying again in {wait:.0f}s "
            f"(failure {self._outage_tries}, down {down:.0f}s of {limit:.0f}s allowed)"
        )

    def _outage_allows(self: Any) -> bool:
        """Whether to propose now; with nothing in flight, sleeps out the back-off first."""
        wait = self._retry_at - self.clock()
        if wait <= 0:
            return True
        if self.pending:
            return False  # handle what comes back meanwhile; try again after it
        self.sleep(wait)
        return True

    def _outage_over(self: Any) -> None:
        if self._outage_since is not None:
            self.echo(f"  proposer available again after {self._outage_tries} failure(s)")
        self._outage_since, self._outage_tries, self._retry_at = None, 0, 0.0

    # -- the baseline's values ----------------------------------------------------------

    def _take_baseline_run(
        self: Any, ev: Any, values: list[float], per_metric: dict[str, list[float]], where: str
    ) -> None:
        st = self.st
        if not values:
            st.goals = {name: m.goal for name, m in ev.metrics.items()}
            self.program.check_metrics(st.goals)
            st.goal = st.goals[self.objective]
        value = ev.metrics[self.objective].value
        if value is None or not math.isfinite(value):
            raise LoopError(f"the baseline's {self.objective} is {value}; fix the metric first")
        values.append(value)
        self.st.baseline_artifacts = tuple(getattr(ev, "artifacts", None) or ())
        for name, m in ev.metrics.items():
            if m.value is not None:
                per_metric.setdefault(name, []).append(m.value)
        self.echo(
            f"  baseline {len(values)}/{self.program.baseline_runs}: {self.objective} "
            f"{value:.6g}  ({ev.duration:.1f}s{where})"
        )
        self.faults.at("baseline")

    def _set_baseline(
        self: Any, values: list[float], per_metric: dict[str, list[float]], slowest: float
    ) -> None:
        st = self.st
        st.set_baseline(values, per_metric)
        if not self.program.timeout:
            # Room for a slower candidate, but a hang is caught in minutes, not hours.
            self.timeout = max(30.0, 3.0 * slowest)
        noise = st.noise
        self.journal.write(
            "baseline",
            commit=self.repo.head(),
            objective=self.objective,
            goal=st.goal,
            goals=st.goals,
            samples=values,
            sigma=noise.sigma,
            value=st.baseline,
            metrics=st.baseline_metrics,
            artifacts=list(st.baseline_artifacts),
            timeout=self.timeout,
            at=now(),
        )
        self.echo(
            f"baseline {self.objective} {st.baseline:.6g}, noise ±{noise.sigma:.2g} "
            f"(sigma over {len(values)} runs); goal {st.goal}; "
            f"timeout {self.timeout:.0f}s per evaluation"
        )

    # -- resume -------------------------------------------------------------------------

    def _resume(self: Any, state: Any) -> None:
        """Pick up a journaled run: baseline, best, noise, history and cost."""
        base = state.baseline
        self.st.resume(base)
        self.timeout = float(base.get("timeout") or self.timeout)
        for rec in state.records:
            self._learn(rec)
        for rec in state.decided:
            self._settle_decided(rec)
        for index in state.pending:
            self.journal.write("interrupted", index=index, at=now())
            self.echo(f"experiment {index} was cut short last time; running it again")
        self.rerun = list(state.pending)
        self.echo(
            f"resuming {self.s.tag}: {self.done} experiments done, best {self.objective} "
            f"{self.st.best:.6g} (baseline {self.st.baseline:.6g})"
        )

    def _settle_decided(self: Any, rec: dict) -> None:
        """Finish an experiment whose decision was journaled but whose record was not.

        The write-ahead line holds the whole record, so nothing is measured again: a keep
        whose branch move did not happen is moved now; a discard's tree was restored by
        the repository's start. Then the record is written as if the run had not stopped.
        """
        index = rec["index"]
        if rec["status"] == "keep":
            head = self.repo.head()
            if head == rec["parent"]:
                self.repo.advance_to(rec["commit"])
            elif head != rec["commit"]:
                raise LoopError(
                    f"experiment {index} was kept as {rec['commit'][:12]} on top of "
                    f"{rec['parent'][:12]}, but {self.repo.branch} is at {head[:12]}: the branch "
                    "was moved by hand. Reset it to one of those commits, or use a new tag"
                )
        self.repo.restore()
        self.journal.record(rec)
        self._learn(rec)
        self.on_record(rec)
        self.echo(f"experiment {index} was decided ({rec['status']}) before the last run stopped")
        self.echo(self._line(rec))

    def _line(self: Any, rec: dict) -> str:
        from pytest_autoresearch.reporting import report

        remaining = self.s.experiments - self.done
        durations = self.st.durations
        avg = sum(durations) / len(durations) if durations else 0.0
        eta = remaining * avg / self.capacity
        return report.format_line(rec, objective=self.objective, eta_seconds=eta)
