"""ResearchLoop with K fake workers: K experiments in flight, decided one result at a time.

The keep semantics of docs/parallel.md, pinned in milliseconds: a candidate overtaken by a
keep is re-based when its change still applies and is promising, discarded when it was no
better than its own parent, and ``stale`` when its change no longer applies; two candidates
are never both kept on one parent. test_parallel_loop.py runs the same through git,
worktrees and pytest subprocesses.
"""

from __future__ import annotations

import re
from pathlib import Path

from fakes import FakeExecutor, FakeRepo, MemoryJournal, ScriptedProposer, Step, fake_settings

from pytest_autoresearch.program.program_md import Program
from pytest_autoresearch.research.loop import ResearchLoop

NOISE = (0.0, 0.02, -0.02)


def files(x: float = 10.0, y: float = 5.0) -> dict[str, str]:
    return {"model.py": f"X = {x!r}\n", "other.py": f"Y = {y!r}\n"}


def value(name: str, text: str | None) -> float:
    return float(re.search(rf"{name} = (\S+)", text or "")[1])


def loss(tree: dict[str, str]) -> float:
    return abs(value("X", tree.get("model.py")) - 3.0) + abs(value("Y", tree.get("other.py")) - 1)


class Rig:
    def __init__(
        self,
        tmp_path: Path,
        steps: list[Step],
        experiments: int,
        *,
        workers: int = 2,
        journal: MemoryJournal | None = None,
        repo: FakeRepo | None = None,
        executor: dict | None = None,
    ) -> None:
        self.repo = repo or FakeRepo(files())
        self.program = Program(
            path=tmp_path / "program.md",
            editable=("model.py", "other.py"),
            objective="loss",
            baseline_runs=3,
            timeout=60,
        )
        self.executor = FakeExecutor(self.repo, loss, workers, noise=NOISE, **(executor or {}))
        self.proposer = ScriptedProposer(self.repo, steps)
        self.journal = journal or MemoryJournal()
        self.lines: list[str] = []
        self.loop = ResearchLoop(
            fake_settings(tmp_path, self.program, experiments),
            executor=self.executor,
            repo=self.repo,
            proposer=self.proposer,
            journal=self.journal,
            echo=self.lines.append,
        )

    def run(self):
        return self.loop.run()

    def records(self) -> dict[int, dict]:
        return {r["index"]: r for r in self.journal.of("experiment")}


def assert_one_keep_per_parent(rig: Rig) -> None:
    """The branch is a chain of the kept commits, each on top of the one kept before."""
    kept = [r for r in rig.journal.of("experiment") if r["status"] == "keep"]
    chain = rig.repo.log()  # tip first
    assert len(chain) == len(kept) + 1
    parents = [r["parent"] for r in kept]
    assert len(set(parents)) == len(parents)  # never two keeps on one parent
    for rec in kept:
        assert rig.repo.parents[rec["commit"]] == rec["parent"]


def test_two_in_flight_and_the_overtaken_one_is_rebased_and_kept(tmp_path: Path) -> None:
    rig = Rig(
        tmp_path,
        [
            Step("x to 3", write={"model.py": "X = 3.0\n"}),
            Step("y to 1", write={"other.py": "Y = 1.0\n"}),
        ],
        experiments=2,
    )
    result = rig.run()
    recs = rig.records()
    assert [recs[i]["status"] for i in (1, 2)] == ["keep", "keep"]
    assert result.best == 0.0 and result.kept == 2
    # Both were proposed on the start commit, so one of them was re-based onto the other.
    rebased = [r for r in recs.values() if r.get("rebased")]
    assert len(rebased) == 1
    assert rebased[0]["earlier"][0]["parent"] == "c0"
    assert rebased[0]["parent"] != "c0"
    assert any(e["kind"] == "rebase" for e in rebased[0]["evaluations"])
    assert rig.repo.tree == files(3.0, 1.0)
    assert_one_keep_per_parent(rig)
    # The two proposals were in flight together: the second was told about the first.
    assert rig.proposer.contexts[1].in_flight == ["x to 3"]
    assert {t.parent_sha for t in rig.executor.trials[3:5]} == {"c0"}


def test_a_change_that_no_longer_applies_is_stale(tmp_path: Path) -> None:
    rig = Rig(
        tmp_path,
        [
            Step("x to 3", write={"model.py": "X = 3.0\n"}),
            Step("x to 4", write={"model.py": "X = 4.0\n"}),
        ],
        experiments=2,
    )
    rig.run()
    statuses = sorted(r["status"] for r in rig.records().values())
    assert statuses == ["keep", "stale"]
    stale = next(r for r in rig.records().values() if r["status"] == "stale")
    assert "does not apply" in stale["reason"]
    assert rig.repo.tree == files(3.0, 5.0)
    assert_one_keep_per_parent(rig)


def test_an_overtaken_change_no_better_than_its_parent_is_discarded_unmeasured(
    tmp_path: Path,
) -> None:
    rig = Rig(
        tmp_path,
        [
            Step("x to 3", write={"model.py": "X = 3.0\n"}),
            Step("y worse", write={"other.py": "Y = 9.0\n"}),
        ],
        experiments=2,
        # The worse change takes longer: it finishes after the keep has moved the best.
        executor={"duration": lambda tree: 20.0 if "9.0" in tree["other.py"] else 1.0},
    )
    rig.run()
    worse = rig.records()[2]
    assert worse["status"] == "discard"
    assert "no better than its parent" in worse["reason"]
    assert not worse.get("rebased")
    assert len(worse["evaluations"]) == 1  # not measured again on the new best


def test_what_a_run_writes_in_its_checkout_is_judged_by_the_controller(tmp_path: Path) -> None:
    def writes(tree: dict[str, str]) -> dict[str, str]:
        out = {"out/log.txt": "new"}  # the unchanged code writes it too: an output
        if "HACK" in tree["model.py"]:
            out["tests/test_metric.py"] = "modified"
        if "PLANT" in tree["model.py"]:
            out["conftest.py"] = "new"
        return out

    rig = Rig(
        tmp_path,
        [
            Step("hack", write={"model.py": "X = 3.0  # HACK\n"}),
            Step("plant", write={"model.py": "X = 3.0  # PLANT\n"}),
            Step("honest", write={"other.py": "Y = 1.0\n"}),
        ],
        experiments=3,
        workers=1,
        executor={"writes": writes},
    )
    rig.run()
    recs = rig.records()
    assert recs[1]["status"] == "rejected"
    assert "tests/test_metric.py (changed by the evaluation)" in recs[1]["reason"]
    assert recs[2]["status"] == "rejected"
    assert "conftest.py (new code file" in recs[2]["reason"]
    assert recs[3]["status"] == "keep"
    assert rig.repo.tree == files(10.0, 1.0)


def test_a_crash_is_repaired_with_two_workers_on_top_of_a_keep_made_meanwhile(
    tmp_path: Path,
) -> None:
    broken = Step("x broken", write={"model.py": "X = BROKEN\n"}, repair={"model.py": "X = 3.0\n"})
    rig = Rig(
        tmp_path,
        [broken, Step("y to 1", write={"other.py": "Y = 1.0\n"})],
        experiments=2,
        executor={
            "crash": lambda tree: "NameError: BROKEN" if "BROKEN" in tree["model.py"] else None,
            # The broken run is slow: "y to 1" is kept before its crash comes back.
            "duration": lambda tree: 3.0 if "BROKEN" in tree["model.py"] else 1.0,
        },
    )
    result = rig.run()
    recs = rig.records()
    assert [recs[i]["status"] for i in (1, 2)] == ["keep", "keep"]
    assert rig.proposer.repairs == 1
    assert [a["status"] for a in recs[1]["attempts"]] == ["crash"]
    assert "NameError: BROKEN" in recs[1]["attempts"][0]["log_tail"]
    # Re-based onto the keep made meanwhile, then put in the checkout for the proposer.
    assert recs[1]["parent"] == recs[2]["commit"] and recs[1]["earlier"][0]["parent"] == "c0"
    assert any(call.startswith("load ") for call in rig.repo.calls)
    assert recs[1]["description"] == "x broken (repaired)"
    assert result.best == 0.0 and rig.repo.tree == files(3.0, 1.0)
    assert_one_keep_per_parent(rig)


def test_a_lost_worker_is_a_crash_with_its_reason_and_the_run_goes_on(tmp_path: Path) -> None:
    rig = Rig(
        tmp_path,
        [
            Step("x to 3", write={"model.py": "X = 3.0\n"}),
            Step("y", write={"other.py": "Y = 1.0\n"}),
        ],
        experiments=2,
        executor={
            "lost": lambda t: "worker w1 was lost (node died) 2 times" if t.id == "1.4" else ""
        },
    )
    rig.run()
    recs = rig.records()
    assert recs[1]["status"] == "crash"
    assert "worker w1 was lost" in recs[1]["reason"]
    assert recs[2]["status"] == "keep"


def test_resume_runs_every_experiment_cut_short_once_with_its_own_index(tmp_path: Path) -> None:
    steps = [Step(f"y to {v}", write={"other.py": f"Y = {v}\n"}) for v in (4.0, 3.0, 2.0, 1.0)]
    first = Rig(tmp_path, steps, experiments=4)
    first.run()
    events = first.journal.events
    # Cut the journal back as a kill -9 would leave it with 3 and 4 in flight: their starts
    # are written, their records are not.
    cut = [e for e in events if not (e["event"] in ("experiment", "decided") and e["index"] >= 3)]
    cut = [e for e in cut if e["event"] != "end"]
    repo = FakeRepo(files())
    kept = [e for e in cut if e["event"] == "experiment" and e["status"] == "keep"]
    for rec in kept:  # the branch as it was: the keeps of 1 and 2
        repo.commits[rec["commit"]] = first.repo.commits[rec["commit"]]
        repo.parents[rec["commit"]] = rec["parent"]
        repo.advance_to(rec["commit"])
    repo._ids = iter(range(100, 200))
    again = Rig(tmp_path, steps, experiments=4, journal=MemoryJournal(cut), repo=repo)
    again.run()
    indices = [e["index"] for e in again.journal.of("experiment")]
    assert sorted(indices) == [1, 2, 3, 4]
    assert any("experiment 3 was cut short" in line for line in again.lines)
    assert any("experiment 4 was cut short" in line for line in again.lines)
    assert [e["index"] for e in again.journal.of("interrupted")] == [3, 4]


def test_at_most_capacity_in_flight_and_the_count_is_exact(tmp_path: Path) -> None:
    steps = [Step(f"x {v}", write={"model.py": f"X = {v}\n"}) for v in (9.0, 8.0, 7.0, 6.0, 5.0)]
    rig = Rig(tmp_path, steps, experiments=5, workers=3)
    result = rig.run()
    assert sorted(rig.records()) == [1, 2, 3, 4, 5]
    assert result.done == 5 and result.ran == 5
    assert max(len(c.in_flight) for c in rig.proposer.contexts) == 2  # 3 in flight at most
    assert_one_keep_per_parent(rig)
    session = rig.journal.of("session")[0]
    assert session["workers"] == 3 and session["executor"] == "fake"
