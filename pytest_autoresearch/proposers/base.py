"""The one small interface every proposer implements.

A proposer edits the working tree (only files the program marks editable) and
says what it did. It never decides, commits or measures: the loop does that.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from pytest_autoresearch.program.program_md import Program


class ProposerError(Exception):
    """This proposal failed (no edit made, a request refused...); the loop records it and goes on.

    ``cost`` is what the failed attempt spent: the loop bills it at once (the cost cap
    sees it), so a run of failures cannot spend past ``--autoresearch-max-cost``.
    """

    def __init__(self, message: str = "", cost: Cost | None = None) -> None:
        super().__init__(message)
        self.cost = cost if cost is not None else Cost()


class ProposerUnavailable(ProposerError):
    """Transient: the service is overloaded, failing (5xx), slow or unreachable; try later.

    The loop journals no experiment for it: it backs off and proposes the same experiment
    again, until ``--autoresearch-outage`` has passed without a proposal, then stops
    cleanly (a later run resumes). An outage never consumes the experiment budget.
    ``retry_after``: the seconds the service asked for (its Retry-After), if it said.
    """

    def __init__(
        self, message: str = "", cost: Cost | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, cost)
        self.retry_after = retry_after


class ProposerFatal(Exception):
    """The proposer cannot work at all (bad key, nothing to tune); the loop stops cleanly."""


@dataclass
class Cost:
    """Tokens and dollars one proposal cost (zero for offline proposers)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    usd: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        return Cost(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.usd + other.usd,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PastExperiment:
    """One line of history a proposer may learn from (built from the journal)."""

    index: int
    description: str
    status: str  # keep | discard | crash | rejected | error
    objective: float | None  # the candidate's value, None when it produced none
    delta: float | None  # improvement over the best at the time (positive = better)
    reason: str  # the decision's reason, or the crash reason
    params: dict[str, float] | None = None  # what a numeric optimiser set, if any
    # The lab notebook an LLM sees (proposers/prompt.py): every metric's median, the
    # change as a diff, and the end of a failed run's log.
    metrics: dict[str, float] | None = None
    diff: str = ""
    log_tail: str = ""
    # The hybrid proposer: which half made it ("llm" | "optuna"), and the earlier
    # experiment whose change it re-tried on top of the best (its numbers tuned), if any.
    made_by: str = ""
    builds_on: int | None = None
    # Texts its tests attached (record_artifact: a training log), {name, test, text, cut}.
    artifacts: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class Failure:
    """Why an evaluation failed, handed to ``Proposer.repair``."""

    status: str  # crash | timeout | guard
    reason: str
    log_tail: str  # the last lines of the pytest subprocess output


@dataclass(frozen=True)
class CheckResult:
    """What a check of the current proposal found (the guards and program.md's ``smoke:``
    run in the evaluation's sandbox, with a time limit). Never a measurement: nothing is
    decided on it."""

    passed: bool
    summary: str  # one line: "3 passed in 1.2s", "tests/test_guard.py::test_x failed: ..."
    output: str  # the end of the test output, secrets scrubbed
    seconds: float = 0.0


@dataclass
class ProposalContext:
    """Everything a proposer may know when it proposes."""

    root: Path  # the directory program.md's globs are relative to (pytest's rootdir)
    program: Program
    editable_files: list[str]  # resolved, relative posix paths
    objective: str
    goal: str  # "min" | "max"
    best_value: float
    baseline_value: float
    noise: float  # the noise floor, in the objective's units
    history: list[PastExperiment]
    experiment: int  # 1-based index of the experiment being proposed
    total: int
    state_dir: Path  # .autoresearch/<tag>/: a proposer may keep state here (resumable)
    metrics: dict[str, float] = field(default_factory=dict)  # the best commit's other metrics
    # What other workers are measuring right now (K workers): not worth proposing again.
    in_flight: list[str] = field(default_factory=list)
    # How long an experiment has taken so far (None before the first): an LLM proposer
    # caches its prompt for an hour rather than five minutes when experiments are long.
    seconds_per_experiment: float | None = None
    # Proposals for this experiment sent back unmeasured: each repeated an earlier or
    # in-flight experiment (research/dedupe.py); one line each, with the earlier result.
    sent_back: list[str] = field(default_factory=list)
    # What the baseline's tests attached with record_artifact (its last run), shown while
    # fewer than a few experiments have training signals of their own.
    baseline_artifacts: tuple[dict[str, Any], ...] = ()
    # Runs the guards (and program.md's smoke: tests) on the checkout as it stands now, in
    # the evaluation's sandbox; None when the loop offers no check (no guards or smoke).
    check: Callable[[], CheckResult] | None = None


@dataclass
class Proposal:
    """What a proposer did to the working tree, for the record."""

    description: str
    params: dict[str, float] | None = None
    cost: Cost = field(default_factory=Cost)
    extra: dict[str, Any] = field(default_factory=dict)  # proposer-specific, JSON-serialisable


@dataclass(frozen=True)
class Outcome:
    """What became of a proposal, told back to the proposer."""

    status: str  # keep | discard | crash | rejected | error
    objective: float | None
    reason: str


@runtime_checkable
class Proposer(Protocol):
    """Edits editable files in ``ctx.root`` in place and describes the change."""

    name: str

    def propose(self, ctx: ProposalContext) -> Proposal:
        """Make one change. Raise ProposerError to skip, ProposerFatal to stop."""
        ...

    def repair(self, ctx: ProposalContext, failure: Failure) -> Proposal | None:
        """Try to fix the current change after a crash or failed guard; None gives up."""
        ...

    def observe(self, ctx: ProposalContext, proposal: Proposal, outcome: Outcome) -> None:
        """Learn from the outcome (Optuna tells its study; LLMs keep memory)."""
        ...

    def close(self) -> None:
        """Release clients, flush state."""
        ...
