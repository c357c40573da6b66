"""The proposer unavailable (API overloaded, down): the loop backs off and proposes the same
experiment again, never journals it as done, stops cleanly after the outage allowance, and
counts every token a failed attempt spent toward the cost cap at once. With in-memory fakes
(tests/fakes.py) and a fake clock: milliseconds."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from fakes import MemoryJournal, Step
from test_loop_unit import Rig, model

from pytest_autoresearch.proposers.base import Cost, ProposerError, ProposerUnavailable
from pytest_autoresearch.research import run_state


class Flaky:
    """Wraps the rig's scripted proposer: the first ``down`` proposals raise ``error``."""

    def __init__(self, rig: Rig, down: int, error: Exception) -> None:
        self.rig, self.down, self.error, self.calls = rig, down, error, 0
        self.inner = rig.proposer
        rig.loop.proposer = self
        self.slept: list[float] = []
        rig.loop.sleep = self._sleep

    def _sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.rig.clock.advance(seconds)

    def propose(self, ctx):
        self.calls += 1
        if self.calls <= self.down:
            self.rig.repo.tree.update(model(99.0))  # a half-made edit, left behind
            raise self.error
        return self.inner.propose(ctx)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_an_outage_costs_no_experiment_and_backs_off_with_jitter(tmp_path: Path) -> None:
    rig = Rig(tmp_path, [Step("X to 5", model(5.0))], 1)
    flaky = Flaky(rig, 5, ProposerUnavailable("overloaded (529)", Cost(input_tokens=10, usd=0.5)))
    result = rig.run()
    assert rig.statuses() == ["keep"] and result.done == 1 and not result.failed
    assert flaky.calls == 6
    # 1, 2, 4, 8, 16 s, each drawn between half and all of it.
    assert len(flaky.slept) == 5
    for n, wait in enumerate(flaky.slept):
        assert 2**n / 2 <= wait <= 2**n
    # Journaled once as started, never as an error; the half-made edits were undone.
    assert [e["index"] for e in rig.journal.of("start")] == [1]
    [rec] = rig.journal.of("experiment")
    assert rec["commit"] in rig.repo.log() and "99.0" not in rig.repo.tree["model.py"]
    # The failed attempts' tokens are billed with the experiment.
    assert rec["cost"]["usd"] == pytest.approx(2.5) and rec["cost"]["input_tokens"] == 50
    assert any("proposer unavailable (overloaded (529))" in line for line in rig.lines)
    assert "  proposer available again after 5 failure(s)" in rig.lines


def test_the_servers_retry_after_is_followed(tmp_path: Path) -> None:
    rig = Rig(tmp_path, [Step("X to 5", model(5.0))], 1)
    flaky = Flaky(rig, 2, ProposerUnavailable("rate limit", retry_after=7.0))
    rig.run()
    assert flaky.slept == [7.0, 7.0] and rig.statuses() == ["keep"]


def test_a_long_outage_stops_cleanly_and_a_later_run_resumes(tmp_path: Path) -> None:
    journal = MemoryJournal()
    rig = Rig(tmp_path, [Step("X to 5", model(5.0))], 2, journal=journal, outage=60.0)
    flaky = Flaky(rig, 1000, ProposerUnavailable("the API is down"))
    result = rig.run()
    assert not result.failed and result.done == 0
    assert result.stop_reason.startswith("the proposer was unavailable for 60s")
    assert "run the same command again to resume" in result.stop_reason
    assert sum(flaky.slept) == pytest.approx(60.0) and rig.statuses() == []
    assert rig.repo.tree == model(10.0)
    # The next run proposes experiment 1 again and finishes both.
    again = Rig(tmp_path, [Step("X to 5", model(5.0)), Step("X to 4", model(4.0))], 2,
                journal=journal)  # fmt: skip
    assert again.run().done == 2
    assert [r["index"] for r in journal.of("experiment")] == [1, 2]


def test_failed_attempts_count_toward_the_cost_cap_at_once(tmp_path: Path) -> None:
    rig = Rig(tmp_path, [Step("X to 5", model(5.0))], 3, max_cost=1.0)
    flaky = Flaky(rig, 1000, ProposerUnavailable("overloaded", Cost(usd=0.4)))
    result = rig.run()
    assert flaky.calls == 3  # $1.20 spent: no fourth attempt
    assert result.stop_reason.startswith("cost cap reached: $1.20")


def test_a_proposal_error_bills_its_cost_on_the_error_record(tmp_path: Path) -> None:
    rig = Rig(tmp_path, [Step("X to 5", model(5.0))], 2)
    Flaky(rig, 1, ProposerError("the model made no edit", Cost(output_tokens=7, usd=0.25)))
    rig.run()
    assert rig.statuses() == ["error", "keep"]
    error = rig.journal.of("experiment")[0]
    assert error["cost"]["usd"] == 0.25 and error["cost"]["output_tokens"] == 7


def test_backoff_doubles_to_its_cap() -> None:
    rng = random.Random(1)
    waits = [run_state.backoff(n, rng) for n in range(1, 15)]
    assert all(w <= run_state.BACKOFF_CAP for w in waits)
    assert waits[-1] >= run_state.BACKOFF_CAP / 2 and waits[0] <= run_state.BACKOFF_FIRST


def test_with_two_workers_results_are_handled_while_backing_off(tmp_path: Path) -> None:
    from test_parallel_unit import Rig as ParallelRig

    rig = ParallelRig(
        tmp_path,
        [Step("x to 3", write={"model.py": "X = 3.0\n"}),
         Step("y to 1", write={"other.py": "Y = 1.0\n"})],
        experiments=2,
    )  # fmt: skip
    inner, calls, in_flight_at_sleep = rig.proposer, [], []

    class OnceDown:
        def __getattr__(self, name):
            return getattr(inner, name)

        def propose(self, ctx):
            calls.append(ctx.experiment)
            if calls.count(2) == 1 and ctx.experiment == 2:
                raise ProposerUnavailable("overloaded")
            return inner.propose(ctx)

    rig.loop.proposer = OnceDown()
    rig.loop.sleep = lambda seconds: in_flight_at_sleep.append(len(rig.loop.pending))
    result = rig.run()
    assert sorted(r["index"] for r in rig.journal.of("experiment")) == [1, 2]
    assert "error" not in [r["status"] for r in rig.journal.of("experiment")]
    assert result.done == 2 and calls.count(2) == 2
    assert all(n == 0 for n in in_flight_at_sleep)  # never slept with a result to handle


def test_an_outage_during_a_repair_spends_no_repair_attempt(tmp_path: Path) -> None:
    rig = Rig(
        tmp_path,
        [Step("X to 5, with a typo", {"model.py": "X = 5.0\nBUG\n"}, repair=model(5.0))],
        1,
        evaluator={"crash": lambda files: "NameError: BUG" if "BUG" in files["model.py"] else None},
        repair_attempts=1,
    )
    inner, down = rig.proposer, [2]
    slept: list[float] = []

    class RepairDown:
        def __getattr__(self, name):
            return getattr(inner, name)

        def repair(self, ctx, failure):
            if down[0]:
                down[0] -= 1
                rig.repo.tree["model.py"] = "half a fix"
                raise ProposerUnavailable("overloaded", Cost(usd=0.5))
            return inner.repair(ctx, failure)

    rig.loop.proposer = RepairDown()
    rig.loop.sleep = lambda seconds: slept.append(seconds)
    rig.run()
    [rec] = rig.journal.of("experiment")
    assert rec["status"] == "keep" and len(rec["attempts"]) == 1 and len(slept) == 2
    assert rec["cost"]["usd"] == pytest.approx(1.0)
    assert "half a fix" not in rec["diff"]
