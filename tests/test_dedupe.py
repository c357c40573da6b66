"""No experiment measured twice: the normalised diff, the patch re-applier, and the loop
sending a repeat back to the proposer unmeasured (in-memory fakes; the real loop's check
is in test_hybrid_loop.py)."""

from __future__ import annotations

import re
from pathlib import Path

from fakes import FakeClock, FakeRepo, MemoryJournal, ScriptedEvaluator, fake_settings

from pytest_autoresearch.program.program_md import Program
from pytest_autoresearch.proposers import patch
from pytest_autoresearch.proposers.base import Proposal
from pytest_autoresearch.research.dedupe import Seen, normalise, same_change
from pytest_autoresearch.research.loop import ResearchLoop
from pytest_autoresearch.research.sent_back import MAX_SENT_BACK


def diff(path: str, old: list[str], new: list[str], at: int = 1, context: str = "") -> str:
    ctx = [f" {context}"] if context else []
    body = ctx + [f"-{x}" for x in old] + [f"+{x}" for x in new]
    n_old, n_new = len(ctx) + len(old), len(ctx) + len(new)
    return f"--- a/{path}\n+++ b/{path}\n@@ -{at},{n_old} +{at},{n_new} @@\n" + "\n".join(body)


def test_the_same_change_anywhere_with_other_spacing_or_comments_is_a_duplicate():
    a = diff("m.py", ["LR = 0.02"], ["LR = 0.04  # faster"], at=3, context="# knobs")
    b = diff("m.py", ["LR   = 0.02"], ["LR = 0.04  # try a higher LR", "", "# note"], at=9)
    assert normalise(a) == normalise(b)
    assert same_change(normalise(a), normalise(b)) == "duplicate"
    # A '#' inside a string is code, not a comment.
    s1 = diff("m.py", ["X = 'a'"], ["X = 'a#b'"])
    s2 = diff("m.py", ["X = 'a'"], ["X = 'a#c'"])
    assert same_change(normalise(s1), normalise(s2)) is None


def test_numbers_within_a_thousandth_are_a_near_duplicate_and_further_apart_are_not():
    base = normalise(diff("m.py", ["LR = 0.02"], ["LR = 0.04"]))
    near = normalise(diff("m.py", ["LR = 0.02"], ["LR = 0.04003"]))
    apart = normalise(diff("m.py", ["LR = 0.02"], ["LR = 0.0404"]))
    other_file = normalise(diff("n.py", ["LR = 0.02"], ["LR = 0.04"]))
    other_code = normalise(diff("m.py", ["LR = 0.02"], ["LR = min(0.04, 1)"]))
    assert same_change(base, near) == "near-duplicate"
    assert same_change(base, apart) is None
    assert same_change(base, other_file) is None and same_change(base, other_code) is None
    assert same_change(normalise(""), normalise("")) is None  # no change repeats nothing


def test_seen_matches_on_the_same_parent_only_and_checks_what_is_in_flight():
    seen = Seen()
    change = diff("m.py", ["X = 1"], ["X = 2"])
    seen.add("c1", change, {"index": 1})
    assert seen.find("c1", change) == ("duplicate", {"index": 1})
    assert seen.find("c2", change) is None  # a newer best: a re-try, not a repeat
    other = diff("m.py", ["X = 1"], ["X = 5"])
    assert seen.find("c1", other) is None
    assert seen.find("c1", other, also=[("c1", other, {"index": 7})]) == (
        "duplicate",
        {"index": 7},
    )


def test_a_change_is_re_applied_on_a_best_that_moved_and_a_conflict_says_so():
    old = "A = 1\nB = 2\n\n\ndef f():\n    return A + B\n"
    change = (
        "--- a/m.py\n+++ b/m.py\n@@ -4,3 +4,4 @@\n \n def f():\n-    return A + B\n"
        "+    return A * B * C\n+C = 3\n"
    )
    moved = "# header\nA = 5\nB = 2\n\n\ndef f():\n    return A + B\n"
    out = patch.apply({"m.py": moved}, change)
    assert out == {"m.py": "# header\nA = 5\nB = 2\n\n\ndef f():\n    return A * B * C\nC = 3\n"}
    assert patch.apply({"m.py": old.replace("A + B", "A - B")}, change) is None
    assert patch.apply({}, change) is None  # the file is gone
    created = "--- /dev/null\n+++ b/new.py\n@@ -0,0 +1,2 @@\n+X = 1\n+Y = 2\n"
    assert patch.apply({}, created) == {"new.py": "X = 1\nY = 2\n"}


def model(x: float) -> dict[str, str]:
    return {"model.py": f"X = {x!r}\n"}


def loss(files: dict[str, str]) -> float:
    return abs(float(re.search(r"X = (\S+)", files["model.py"])[1]) - 3.0)


class Repeater:
    """Experiment 1 sets X to 20; every later one sets X to 20 again until told it repeats,
    then, if ``learns``, something new (X to 3)."""

    name = "repeater"

    def __init__(self, repo: FakeRepo, learns: bool) -> None:
        self.repo, self.learns = repo, learns
        self.contexts: list = []
        self.outcomes: list = []

    def propose(self, ctx):
        self.contexts.append(ctx)
        if self.learns and ctx.sent_back:
            self.repo.tree.update(model(3.0))
            return Proposal("X to 3")
        self.repo.tree.update(model(20.0))
        return Proposal("X to 20" if ctx.experiment == 1 else "X to 20, again")

    def repair(self, ctx, failure):
        return None

    def observe(self, ctx, proposal, outcome):
        self.outcomes.append((ctx.experiment, outcome))

    def close(self):
        pass


def run_loop(tmp_path: Path, learns: bool, experiments: int = 2):
    clock = FakeClock()
    repo = FakeRepo(model(10.0))
    program = Program(
        path=tmp_path / "program.md", editable=("model.py",), objective="loss",
        baseline_runs=3, timeout=60,
    )  # fmt: skip
    evaluate = ScriptedEvaluator(repo, loss, noise=(0.0, 0.02, -0.02), clock=clock)
    proposer = Repeater(repo, learns)
    journal = MemoryJournal()
    lines: list[str] = []
    loop = ResearchLoop(
        fake_settings(tmp_path, program, experiments), repo=repo, evaluate=evaluate,
        proposer=proposer, journal=journal, echo=lines.append, clock=clock,
    )  # fmt: skip
    result = loop.run()
    return result, journal, evaluate, proposer, lines


def test_a_repeat_is_sent_back_unmeasured_and_the_next_proposal_is_measured(tmp_path: Path):
    result, journal, evaluate, proposer, lines = run_loop(tmp_path, learns=True)
    recs = journal.of("experiment")
    assert [(r["index"], r["status"], r["description"]) for r in recs] == [
        (1, "discard", "X to 20"),
        (2, "keep", "X to 3"),
    ]
    # 3 baseline runs, experiment 1 once, experiment 2's keep measured (and re-measured):
    # the repeat of experiment 1 never reached the evaluator.
    measured = [files["model.py"] for files in evaluate.calls]
    assert measured.count("X = 20.0\n") == 1
    assert result.done == 2  # the repeat cost no experiment of -n
    (dup,) = journal.of("duplicate")
    assert dup["index"] == 2 and dup["of"] == 1 and dup["kind"] == "duplicate"
    # The proposer was told, with the earlier result, and asked again for experiment 2.
    assert (2, "duplicate") in [(i, o.status) for i, o in proposer.outcomes]
    told = [o for i, o in proposer.outcomes if o.status == "duplicate"][0]
    assert told.objective == recs[0]["objective"]
    again = proposer.contexts[-1]
    assert again.experiment == 2 and len(again.sent_back) == 1
    assert "'X to 20, again' is the same change as #1 (discard, loss 17" in again.sent_back[0]
    assert any("sent back, not measured" in line for line in lines)
    # One "start" for experiment 2, however many proposals it took.
    assert [e["index"] for e in journal.of("start")] == [1, 2]


def test_a_proposer_that_only_repeats_itself_ends_the_experiment_as_an_error(tmp_path: Path):
    result, journal, evaluate, proposer, _ = run_loop(tmp_path, learns=False)
    recs = journal.of("experiment")
    assert [r["status"] for r in recs] == ["discard", "error"]
    assert f"repeated earlier experiments {MAX_SENT_BACK + 1} times" in recs[1]["reason"]
    assert len(journal.of("duplicate")) == MAX_SENT_BACK + 1
    assert len(evaluate.calls) == 3 + 1  # the baseline and experiment 1 only
    assert evaluate.repo.tree == model(10.0)  # the checkout is back at the best
