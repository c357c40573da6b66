"""ResearchLoop with in-memory fakes: every loop behaviour in milliseconds (no git, no pytest).

The end-to-end tests (test_research_loop.py, test_crash_safety.py) drive the same loop
through git and subprocesses; these pin what the loop itself does with what its
collaborators answer.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fakes import (
    FakeClock,
    FakeRepo,
    MemoryJournal,
    ScriptedEvaluator,
    ScriptedProposer,
    Step,
    fake_settings,
)

from pytest_autoresearch.program.program_md import Program
from pytest_autoresearch.research.loop import LoopError, ResearchLoop

NOISE = (0.0, 0.02, -0.02)  # the baseline's three runs: sigma 0.02


def model(x: float) -> dict[str, str]:
    return {"model.py": f"X = {x!r}\n"}


def loss(files: dict[str, str]) -> float:
    x = float(re.search(r"X = (\S+)", files["model.py"])[1])
    if "SLOWER" in files["model.py"]:
        x += 1
    return abs(x - 3.0)


class Rig:
    """A loop wired to fakes; ``run()`` runs it and returns the LoopResult."""

    def __init__(
        self,
        tmp_path: Path,
        steps: list[Step],
        experiments: int,
        *,
        journal: MemoryJournal | None = None,
        repo: FakeRepo | None = None,
        program: dict | None = None,
        evaluator: dict | None = None,
        **settings,
    ) -> None:
        self.clock = FakeClock()
        self.repo = repo or FakeRepo(model(10.0))
        self.program = Program(
            path=tmp_path / "program.md",
            editable=("model.py",),
            objective="loss",
            baseline_runs=3,
            timeout=60,
            **(program or {}),
        )
        self.evaluate = ScriptedEvaluator(
            self.repo, loss, noise=NOISE, clock=self.clock, **(evaluator or {})
        )
        self.proposer = ScriptedProposer(self.repo, steps)
        self.journal = journal or MemoryJournal()
        self.lines: list[str] = []
        self.records: list[dict] = []
        self.loop = ResearchLoop(
            fake_settings(tmp_path, self.program, experiments, **settings),
            repo=self.repo,
            evaluate=self.evaluate,
            proposer=self.proposer,
            journal=self.journal,
            echo=self.lines.append,
            on_record=self.records.append,
            clock=self.clock,
        )

    def run(self):
        return self.loop.run()

    def statuses(self) -> list[str]:
        return [r["status"] for r in self.journal.of("experiment")]


def test_baseline_then_keep_and_discard(tmp_path: Path) -> None:
    rig = Rig(tmp_path, [Step("X to 5", model(5.0)), Step("X to 20", model(20.0))], 2)
    result = rig.run()
    assert rig.statuses() == ["keep", "discard"]
    [base] = rig.journal.of("baseline")
    assert base["samples"] == pytest.approx([7.0, 7.02, 6.98]) and base["goal"] == "min"
    keep, discard = rig.journal.of("experiment")
    # Kept: the branch moved onto a snapshot of exactly the measured tree.
    assert rig.repo.log() == [keep["commit"], "c0"]
    assert rig.repo.commits[keep["commit"]] == model(5.0)
    assert keep["parent"] == "c0" and keep["best_after"] == pytest.approx(2.0, abs=0.1)
    # Discarded: a dangling snapshot, the tree back to the best.
    assert (
        discard["parent"] == keep["commit"]
        and rig.repo.parents[discard["commit"]] == keep["commit"]
    )
    assert rig.repo.tree == model(5.0)
    # Write-ahead: each decision journaled before its record, the record after.
    kinds = [e["event"] for e in rig.journal.events]
    assert kinds.count("decided") == 2
    assert kinds.index("decided") < kinds.index("experiment")
    assert result.kept == 1 and result.done == result.ran == 2 and not result.failed
    assert [o.status for o in rig.proposer.outcomes] == ["keep", "discard"]
    assert [r["index"] for r in rig.records] == [1, 2]  # on_record saw each one
    # The second proposal saw the first one's result and the new best.
    ctx = rig.proposer.contexts[1]
    assert ctx.history[0].status == "keep" and ctx.best_value == pytest.approx(2.0, abs=0.1)


def test_a_change_outside_the_editable_files_is_rejected_unmeasured(tmp_path: Path) -> None:
    rig = Rig(tmp_path, [Step("edit the test", {"tests/test_metric.py": "cheat"})], 1)
    rig.run()
    assert rig.statuses() == ["rejected"]
    assert len(rig.evaluate.calls) == 3  # the baseline only
    [rec] = rig.journal.of("experiment")
    assert "tests/test_metric.py" in rec["reason"]
    assert rig.repo.tree == model(10.0) and rig.repo.best == "c0"


def test_what_the_evaluation_writes_is_caught(tmp_path: Path) -> None:
    plant = {"conftest.py": "planted"}
    rig = Rig(
        tmp_path,
        [Step("X to 5", model(5.0))],
        1,
        evaluator={"writes": lambda files: plant if files["model.py"] == model(5.0)["model.py"]
                   else {}},
    )  # fmt: skip
    rig.run()
    assert rig.statuses() == ["rejected"]
    assert "conftest.py" in rig.journal.of("experiment")[0]["reason"]
    assert rig.repo.best == "c0" and "conftest.py" not in rig.repo.tree


def test_a_crash_is_repaired_by_the_proposer(tmp_path: Path) -> None:
    rig = Rig(
        tmp_path,
        [Step("X to 5, with a typo", {"model.py": "X = 5.0\nBUG\n"}, repair=model(5.0))],
        1,
        evaluator={"crash": lambda files: "NameError: BUG" if "BUG" in files["model.py"] else None},
    )
    rig.run()
    [rec] = rig.journal.of("experiment")
    assert rec["status"] == "keep" and rig.proposer.repairs == 1
    assert rec["attempts"][0]["status"] == "crash" and "NameError" in rec["attempts"][0]["reason"]
    assert rec["description"].endswith("(repaired)")


def test_a_crash_without_a_repair_is_recorded_and_teaches_no_value(tmp_path: Path) -> None:
    rig = Rig(
        tmp_path,
        [Step("broken", {"model.py": "X = 5.0\nBUG\n"})],
        1,
        evaluator={"crash": lambda files: "NameError: BUG" if "BUG" in files["model.py"] else None},
    )
    rig.run()
    [rec] = rig.journal.of("experiment")
    assert rec["status"] == "crash" and "NameError" in rec["reason"]
    assert rig.proposer.outcomes[0].objective is None  # an optimiser learns no value from it
    assert rig.repo.tree == model(10.0) and rig.repo.parents[rec["commit"]] == "c0"


def test_a_close_call_is_confirmed_with_more_runs(tmp_path: Path) -> None:
    rig = Rig(tmp_path, [Step("nudge X", model(9.97))], 1)  # 0.03 better: 1.5 sigma
    rig.run()
    [rec] = rig.journal.of("experiment")
    assert len(rec["evaluations"]) >= 2 and rec["evaluations"][1]["confirm"] is True
    assert len(rec["samples"]["loss"]) == len(rec["evaluations"])
    assert rec["status"] in ("keep", "discard")


def test_a_failing_baseline_stops_with_its_reason(tmp_path: Path) -> None:
    rig = Rig(tmp_path, [Step()], 1, evaluator={"crash": lambda files: "ImportError: torch"})
    with pytest.raises(LoopError, match="the baseline run failed.*ImportError: torch"):
        rig.run()
    assert rig.journal.of("experiment") == [] and rig.journal.of("end")


def test_proposer_errors_are_recorded_and_fatal_ones_stop(tmp_path: Path) -> None:
    rig = Rig(tmp_path, [Step(error="overloaded"), Step(fatal="bad key")], 5)
    result = rig.run()
    assert rig.statuses() == ["error"]
    assert result.failed and "bad key" in result.stop_reason and result.done == 1


def test_the_cost_cap_stops_before_the_next_proposal(tmp_path: Path) -> None:
    # Each a different change: the loop never measures one change twice (research/dedupe.py).
    steps = [Step(f"X to {x}", model(x), usd=0.6) for x in (20.0, 21.0, 22.0)]
    rig = Rig(tmp_path, steps, 10, max_cost=1.0)
    result = rig.run()
    assert result.done == 2 and "cost cap reached: $1.20 of $1.00" in result.stop_reason


def test_the_time_budget_stops_before_an_experiment_that_would_not_finish(
    tmp_path: Path,
) -> None:
    # The baseline takes 3 x 10 s; each experiment 10 s; 55 s allow two experiments.
    steps = [Step(f"X to {20 + i}", model(20.0 + i)) for i in range(10)]  # all different
    rig = Rig(tmp_path, steps, 10, evaluator={"duration": 10.0}, time_budget=55.0)
    result = rig.run()
    assert result.done == 2 and result.stop_reason.startswith("time budget: 55s")


def test_resume_finishes_a_decided_keep_and_continues(tmp_path: Path) -> None:
    """Killed after the write-ahead 'decided' line of a keep, before the branch moved."""
    first = Rig(tmp_path, [Step("X to 5", model(5.0))], 1)
    first.run()
    [rec] = first.journal.of("experiment")
    # The journal as a kill -9 between journal.decide() and advance_to() leaves it:
    events = [e for e in first.journal.events if e["event"] not in ("experiment", "end")]
    repo = FakeRepo(model(10.0))
    repo.commits[rec["commit"]] = model(5.0)
    repo.parents[rec["commit"]] = "c0"
    repo.tree = model(5.0)  # the kept candidate was still in the tree
    rig = Rig(tmp_path, [Step("X to 20", model(20.0))], 2, journal=MemoryJournal(events),
              repo=repo)  # fmt: skip
    result = rig.run()
    assert rig.repo.best == rec["commit"]  # the branch move finished
    assert [r["index"] for r in rig.journal.of("experiment")] == [1, 2]
    assert rig.statuses() == ["keep", "discard"]
    # No baseline again, experiment 1 not measured again: only experiment 2's runs.
    assert len(rig.evaluate.calls) == len(rig.journal.of("experiment")[1]["evaluations"])
    assert result.kept == 1 and result.done == 2 and result.ran == 1
    assert any("decided (keep) before the last run stopped" in line for line in rig.lines)


def test_resume_refuses_a_branch_moved_by_hand(tmp_path: Path) -> None:
    first = Rig(tmp_path, [Step("X to 5", model(5.0))], 1)
    first.run()
    [rec] = first.journal.of("experiment")
    events = [e for e in first.journal.events if e["event"] not in ("experiment", "end")]
    repo = FakeRepo(model(10.0))
    repo.commits["elsewhere"], repo.parents["elsewhere"] = model(1.0), "c0"
    repo.best = "elsewhere"
    rig = Rig(tmp_path, [Step()], 2, journal=MemoryJournal(events), repo=repo)
    with pytest.raises(LoopError, match="moved by hand"):
        rig.run()
    assert rec["commit"] not in rig.repo.log()


def test_resume_reruns_an_experiment_cut_short_before_its_decision(tmp_path: Path) -> None:
    first = Rig(tmp_path, [Step("X to 5", model(5.0))], 1)
    first.run()
    cut = [e for e in first.journal.events if e["event"] in ("session", "baseline", "start")]
    rig = Rig(tmp_path, [Step("X to 4", model(4.0))], 1, journal=MemoryJournal(cut))
    rig.run()
    assert rig.journal.of("interrupted")[0]["index"] == 1
    [rec] = rig.journal.of("experiment")
    assert rec["index"] == 1 and rec["description"] == "X to 4" and rec["status"] == "keep"
    assert len(rig.evaluate.calls) == len(rec["evaluations"])  # no baseline again
