"""In-process fakes of the loop's collaborators (DESIGN.md "Fakes first").

``ResearchLoop`` takes its repository, evaluator, proposer and journal as arguments; these
stand-ins keep everything in memory so loop behaviours are tested in milliseconds. The real
parts are tested on their own against real things (test_vcs, test_evaluate, test_journal).

- ``FakeRepo``: a research branch of dict-of-files commits and a working tree (a dict).
- ``ScriptedEvaluator``: a metric computed from the working tree, plus scripted noise,
  crashes and things an evaluation writes; returns real ``evaluate.Evaluation`` objects.
- ``ScriptedProposer``: step k edits the tree as experiment k's script says.
- ``MemoryJournal``: the journal's events in a list; ``load()`` reads them back like
  ``journal.Journal.load`` does (records, baseline, decided, unfinished).
- ``FakeClock``: time that moves only when told (the evaluator advances it).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pytest_autoresearch.proposers.base import Cost, Proposal, ProposerError, ProposerFatal
from pytest_autoresearch.research.journal import JournalState
from pytest_autoresearch.research.records import LoopSettings
from pytest_autoresearch.sandbox.evaluate import Evaluation, MetricValue

Files = dict[str, str]


def fake_settings(tmp_path: Any, program: Any, experiments: int, **settings: Any) -> LoopSettings:
    """The LoopSettings of a fake session in ``tmp_path`` (tag "fake", scripted proposer)."""
    return LoopSettings(
        root=tmp_path,
        program=program,
        tag="fake",
        experiments=experiments,
        metric_args=["tests/test_metric.py::test_loss"],
        record_dir=tmp_path / ".autoresearch" / "fake",
        proposer_name="scripted",
        **settings,
    )


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeRepo:
    """The subset of ``vcs.ResearchRepo`` the loop calls, over in-memory commits."""

    branch = "autoresearch/fake"

    def __init__(self, files: Files) -> None:
        self.commits: dict[str, Files] = {"c0": dict(files)}
        self.parents: dict[str, str | None] = {"c0": None}
        self.messages: dict[str, str] = {"c0": "start"}
        self.best = "c0"
        self.tree: Files = dict(files)
        self.calls: list[str] = []
        self._ids = itertools.count(1)

    # -- what the loop calls ----------------------------------------------------------------

    def head(self) -> str:
        return self.best

    def fingerprint(self) -> Files:
        return dict(self.tree)

    def learn_baseline_outputs(self, before: Files) -> None:
        self.calls.append("learn_baseline_outputs")

    def out_of_scope(
        self,
        is_editable: Callable[[str], bool] | None = None,
        *,
        after: str = "proposal",
        since: Files | None = None,
    ) -> list[str]:
        bad = [f"{p} (modified)" for p in self._changed() if not (is_editable or bool)(p)]
        if since is not None:  # what the evaluation itself changed, editable or not
            changed = {p for p in set(since) | set(self.tree) if since.get(p) != self.tree.get(p)}
            bad += [f"{p} (changed by the evaluation)" for p in sorted(changed)]
        return bad

    def changed_files(self) -> list[str]:
        return self._changed()

    def diff_text(self) -> str:
        base = self.commits[self.best]
        out = []
        for p in self._changed():
            out.append(f"--- a/{p}\n+++ b/{p}\n-{base.get(p, '')}\n+{self.tree.get(p, '')}\n")
        return "".join(out)

    def lines_changed(self) -> tuple[int, int]:
        n = len(self._changed())
        return n, n

    def snapshot(self, message: str) -> str:
        sha = f"c{next(self._ids)}"
        self.commits[sha] = dict(self.tree)
        self.parents[sha] = self.best
        self.messages[sha] = message
        self.calls.append(f"snapshot {sha}")
        return sha

    def advance_to(self, sha: str) -> None:
        if self.parents.get(sha) != self.best:
            raise AssertionError(f"{sha} is not on top of {self.best}")
        self.best = sha
        self.tree = dict(self.commits[sha])
        self.calls.append(f"advance_to {sha}")

    def restore(self) -> list[str]:
        changed = self._changed()
        self.tree = dict(self.commits[self.best])
        self.calls.append("restore")
        return changed

    def load(self, sha: str) -> None:
        """``sha``'s files into the working tree; the branch stays where it is."""
        self.tree = dict(self.commits[sha])
        self.calls.append(f"load {sha}")

    def recommit(self, sha: str, message: str) -> str:
        if self.parents.get(sha) != self.best:
            raise AssertionError(f"{sha} is not on top of {self.best}")
        new = f"c{next(self._ids)}"
        self.commits[new] = dict(self.commits[sha])
        self.parents[new] = self.best
        self.messages[new] = message
        return new

    def rebased(self, sha: str, message: str) -> str | None:
        """``sha``'s change on the best; None when a changed file differs there (a conflict)."""
        old, best = self.commits[self.parents[sha]], self.commits[self.best]
        change = {p: self.commits[sha].get(p) for p in set(old) | set(self.commits[sha])}
        change = {p: v for p, v in change.items() if v != old.get(p)}
        if any(best.get(p) != old.get(p) for p in change):
            return None
        new = f"c{next(self._ids)}"
        files = {**best, **{p: v for p, v in change.items() if v is not None}}
        self.commits[new] = {p: v for p, v in files.items() if change.get(p, v) is not None}
        self.parents[new] = self.best
        self.messages[new] = message
        return new

    def diff_of(self, sha: str) -> str:
        base, files = self.commits[self.parents[sha]], self.commits[sha]
        return "".join(
            f"--- a/{p}\n+++ b/{p}\n-{base.get(p, '')}\n+{files.get(p, '')}\n"
            for p in sorted(set(base) | set(files))
            if base.get(p) != files.get(p)
        )

    # -- helpers for tests ------------------------------------------------------------------

    def _changed(self) -> list[str]:
        base = self.commits[self.best]
        return sorted(p for p in set(base) | set(self.tree) if base.get(p) != self.tree.get(p))

    def log(self) -> list[str]:
        """The branch from the tip back to the start, as commit ids."""
        out, sha = [], self.best
        while sha is not None:
            out.append(sha)
            sha = self.parents[sha]
        return out


def evaluation(value: float | None, *, status: str = "ok", metric: str = "loss",
               goal: str = "min", reason: str = "", duration: float = 1.0,
               guards_failed: Iterable[str] = ()) -> Evaluation:  # fmt: skip
    """A real Evaluation with one metric (what evaluate.evaluate would return)."""
    failed = list(guards_failed)
    metrics = {}
    if value is not None or status == "ok":
        metrics[metric] = MetricValue(metric, value, [] if value is None else [value], goal,
                                      None, None if value is not None else "no value")  # fmt: skip
    return Evaluation(
        status=status,
        metrics=metrics,
        guards_passed=not failed,
        failed_guards=failed,
        duration=duration,
        returncode=0 if status == "ok" else 1,
        log_tail="" if status == "ok" else f"E   {reason}",
        reason=reason,
    )


class ScriptedEvaluator:
    """``metric(files)`` plus the next offset of ``noise``; ``crash(files)`` -> reason or None.

    ``writes(files)`` returns {path: text} the evaluation itself writes into the tree (a
    hostile experiment). Each call advances ``clock`` by ``duration`` seconds.
    """

    def __init__(
        self,
        repo: FakeRepo,
        metric: Callable[[Files], float],
        *,
        noise: Iterable[float] = (0.0,),
        crash: Callable[[Files], str | None] = lambda files: None,
        writes: Callable[[Files], Files] = lambda files: {},
        clock: FakeClock | None = None,
        duration: float = 1.0,
    ) -> None:
        self.repo = repo
        self.metric = metric
        self.noise = itertools.cycle(list(noise))
        self.crash = crash
        self.writes = writes
        self.clock = clock
        self.duration = duration
        self.calls: list[Files] = []

    def __call__(self, metric_args: Any, guard_args: Any, timeout: float) -> Evaluation:
        files = dict(self.repo.tree)
        self.calls.append(files)
        if self.clock is not None:
            self.clock.advance(self.duration)
        self.repo.tree.update(self.writes(files))
        why = self.crash(files)
        if why:
            return evaluation(None, status="crash", reason=why, duration=self.duration)
        return evaluation(self.metric(files) + next(self.noise), duration=self.duration)


@dataclass
class Step:
    """One scripted experiment: files to write, or a proposer error."""

    description: str = "a change"
    write: Files = field(default_factory=dict)
    repair: Files | None = None  # written by repair() after a failed evaluation
    error: str = ""  # ProposerError: the experiment is recorded as "error"
    fatal: str = ""  # ProposerFatal: the loop stops
    usd: float = 0.0
    params: dict[str, float] | None = None


class ScriptedProposer:
    """Step k of ``steps`` is experiment k (1-based, cycling); records what it was told."""

    name = "scripted"

    def __init__(self, repo: FakeRepo, steps: list[Step]) -> None:
        self.repo = repo
        self.steps = steps
        self.contexts: list[Any] = []
        self.outcomes: list[Any] = []
        self.repairs = 0
        self.closed = False

    def _step(self, ctx: Any) -> Step:
        return self.steps[(ctx.experiment - 1) % len(self.steps)]

    def propose(self, ctx: Any) -> Proposal:
        self.contexts.append(ctx)
        step = self._step(ctx)
        if step.fatal:
            raise ProposerFatal(step.fatal)
        if step.error:
            raise ProposerError(step.error)
        self.repo.tree.update(step.write)
        return Proposal(step.description, params=step.params, cost=Cost(usd=step.usd))

    def repair(self, ctx: Any, failure: Any) -> Proposal | None:
        step = self._step(ctx)
        if step.repair is None:
            return None
        self.repairs += 1
        self.repo.tree.update(step.repair)
        return Proposal(step.description + " (repaired)")

    def observe(self, ctx: Any, proposal: Proposal, outcome: Any) -> None:
        self.outcomes.append(outcome)

    def close(self) -> None:
        self.closed = True


class MemoryJournal:
    """``journal.Journal``'s interface over a list of events (no files, no fsync)."""

    def __init__(self, events: list[dict[str, Any]] | None = None) -> None:
        self.events: list[dict[str, Any]] = list(events or [])

    def write(self, event: str, **fields: Any) -> None:
        self.events.append(copy.deepcopy({"event": event, **fields}))

    def decide(self, rec: dict[str, Any]) -> None:
        self.write("decided", index=rec.get("index"), record=rec)

    def record(self, rec: dict[str, Any]) -> None:
        if any(e["event"] == "experiment" and e["index"] == rec["index"] for e in self.events):
            raise ValueError(f"experiment {rec['index']} is already recorded")
        self.events.append(copy.deepcopy({"event": "experiment", **rec}))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == kind]

    def load(self) -> JournalState:
        state = JournalState()
        started: set[int] = set()
        finished: set[int] = set()
        decided: dict[int, dict[str, Any]] = {}
        for ev in self.events:
            kind = ev["event"]
            if kind == "session":
                state.sessions += 1
            elif kind == "baseline":
                state.baseline = ev
            elif kind == "start":
                started.add(ev["index"])
                decided.pop(ev["index"], None)
            elif kind == "decided" and ev["index"] not in finished:
                decided[ev["index"]] = ev["record"]
            elif kind == "experiment" and ev["index"] not in finished:
                finished.add(ev["index"])
                state.records.append(ev)
        state.decided = [decided[i] for i in sorted(decided) if i not in finished]
        pending = sorted(started - finished - set(decided))
        state.unfinished = pending[-1] if pending else None
        state.pending = pending
        state.highest = max(started | finished | set(decided), default=0)
        return copy.deepcopy(state)


class FakeExecutor:
    """K simulated workers measuring commits of a FakeRepo, in simulated time.

    A trial starts when a worker is free and finishes ``duration(files)`` seconds later;
    ``as_completed`` yields the earliest to finish (ties: the first submitted), measuring
    the trial's commit with ``metric`` plus the next ``noise``. ``writes(files)`` says what
    a run writes into its checkout, ``{path: "new" | "modified"}``.
    """

    kind = "fake"

    def __init__(
        self,
        repo: FakeRepo,
        metric: Callable[[Files], float],
        capacity: int = 2,
        *,
        noise: Iterable[float] = (0.0,),
        duration: Callable[[Files], float] = lambda files: 1.0,
        crash: Callable[[Files], str | None] = lambda files: None,
        writes: Callable[[Files], dict[str, str]] = lambda files: {},
        lost: Callable[[Any], str] = lambda trial: "",
    ) -> None:
        self.repo = repo
        self.metric = metric
        self.capacity = capacity
        self.noise = itertools.cycle(list(noise))
        self.duration = duration
        self.crash = crash
        self.writes = writes
        self.lost = lost
        self.now = 0.0
        self.free = [0.0] * capacity  # when each worker is next free
        self.running: list[tuple[float, int, int, Any]] = []  # (end, order, worker, trial)
        self.order = itertools.count()
        self.trials: list[Any] = []
        self.closed = False

    def submit(self, trial: Any) -> None:
        assert not self.closed
        self.trials.append(trial)
        files = self.repo.commits[trial.snapshot_sha or trial.parent_sha]
        worker = min(range(self.capacity), key=lambda i: self.free[i])
        start = max(self.now, self.free[worker])
        end = start + self.duration(files) * trial.runs
        self.free[worker] = end
        self.running.append((end, next(self.order), worker, trial))

    def as_completed(self, timeout: float | None = None):
        from pytest_autoresearch.executors.base import TrialResult

        while self.running and not self.closed:
            self.running.sort(key=lambda r: (r[0], r[1]))
            end, _, worker, trial = self.running.pop(0)
            self.now = max(self.now, end)
            files = self.repo.commits[trial.snapshot_sha or trial.parent_sha]
            result = TrialResult(trial.id, worker=f"w{worker}", host="fakehost")
            result.error = self.lost(trial)
            for _ in range(0 if result.error else trial.runs):
                why = self.crash(files)
                ev = (
                    evaluation(None, status="crash", reason=why)
                    if why
                    else evaluation(self.metric(files) + next(self.noise))
                )
                wrote = self.writes(files)
                result.evaluations.append(ev)
                result.changed.append(sorted(wrote))
                result.created.append(sorted(p for p, k in wrote.items() if k == "new"))
                result.started.append(1.7e9 + self.now)
            yield result

    def shutdown(self) -> None:
        self.closed = True
        self.running.clear()
