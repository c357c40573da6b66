"""decide: the keep rule on literal numbers (the power simulation is in test_keep_power.py)."""

from __future__ import annotations

import pytest

from pytest_autoresearch.program.program_md import Constraint
from pytest_autoresearch.research.decide import (
    ALPHA,
    ALPHA_EARLY,
    ALPHA_FIRST_RUN,
    LOOKS,
    MAX_RUNS,
    REMEASURE_RUNS,
    after_keep,
    baseline_runs_left,
    center,
    code_lines_changed,
    constraint_violations,
    keep_decision,
    noise_groups,
)

# A typical session: best 1.000 from 6 runs, noise 0.01 known with 10 df.
BASE = {"goal": "min", "best": 1.0, "sigma": 0.01, "df": 10, "best_runs": 6}
# A candidate truly about 0.015 (1.5 sigma) better, run by run.
GOOD = [0.985, 0.982, 0.99, 0.984, 0.979, 0.988, 0.983, 0.986]


def test_the_looks_and_their_shares_of_alpha() -> None:
    assert LOOKS == (1, 3, 8) and MAX_RUNS == 8
    # The shares are a plain sum: no more than ALPHA of pure-noise candidates is kept.
    assert ALPHA_FIRST_RUN + ALPHA_EARLY < ALPHA == 0.01


def test_a_small_first_run_gain_is_discarded_as_noise() -> None:
    d = keep_decision(candidate=[0.995], **BASE)
    assert d.action == "discard"
    assert d.improvement == pytest.approx(0.005)
    assert d.reason == "within noise: improved 0.005 <= floor 0.04954 (1 run, noise ±0.01)"
    assert d.new_best is None and d.remeasure == 0


def test_a_promising_candidate_runs_to_the_last_look_and_is_kept() -> None:
    actions = [keep_decision(candidate=GOOD[:n], **BASE) for n in range(1, 9)]
    assert [d.action for d in actions] == ["confirm"] * 7 + ["keep"]
    assert actions[0].reason.startswith("promising: improved 0.015, floor 0.04954; confirming")
    # Between looks there is no test at all: nothing selects on those runs.
    assert actions[1].reason == "confirming: run 2 of 3" and actions[1].floor is None
    assert actions[4].reason == "confirming: run 5 of 8"
    final = actions[-1]
    assert final.reason == "improved 0.01538 > floor 0.01229 (8 runs, noise ±0.008477)"
    # Sigma pools the session's 10 df with the blocks between looks (1 + 4 df).
    assert final.df == 15
    # Without fresh runs, the first (screened, lucky) run is left out of the carried value.
    assert final.new_best == pytest.approx(sum(GOOD[1:]) / 7)
    # Seven confirmation runs are already behind it: four fresh ones (six after fewer runs).
    assert final.remeasure == REMEASURE_RUNS - 2


def test_a_clear_gain_is_kept_at_the_middle_look_and_a_huge_one_at_once() -> None:
    d = keep_decision(candidate=[0.97, 0.975, 0.968], **BASE)
    assert d.action == "keep" and d.reason.startswith("improved 0.029 > floor 0.02746 (3 runs")
    assert d.remeasure == REMEASURE_RUNS
    huge = keep_decision(candidate=[0.95], **BASE)
    assert huge.action == "keep" and huge.new_best == 0.95 and huge.remeasure == REMEASURE_RUNS


def test_a_candidate_that_fades_is_dropped_at_the_next_look() -> None:
    d = keep_decision(candidate=[0.985, 1.01, 1.0], **BASE)
    assert d.action == "discard" and d.reason.startswith("within noise: improved 0.001667")


def test_confirmed_true_makes_any_look_the_last() -> None:
    runs = [0.97, 0.975, 0.968]
    d = keep_decision(candidate=runs, confirmed=True, **BASE)
    # The last look's share (0.85%) gives a lower floor than the middle look's (0.1%).
    assert d.action == "keep" and d.floor == pytest.approx(0.01917, abs=1e-5)
    assert keep_decision(candidate=[0.99, 1.0], confirmed=True, **BASE).action == "discard"


def test_after_keep_carries_the_confirmation_and_fresh_runs_never_the_first() -> None:
    runs = [0.97, 0.975, 0.968]
    d = keep_decision(candidate=runs, **BASE)
    fresh = [0.973, 0.971, 0.972, 0.974, 0.970, 0.972]
    carried = after_keep(d, runs, fresh)
    assert carried.best == pytest.approx(sum(runs[1:] + fresh) / 8)
    assert carried.best_runs == 8
    assert carried.noise_groups == [[0.975, 0.968], fresh]
    # No fresh run came (they failed): the decision's value, the runs behind it.
    alone = after_keep(d, runs, [])
    assert (alone.best, alone.best_runs) == (pytest.approx(0.9715), 2)
    huge = keep_decision(candidate=[0.95], **BASE)
    assert after_keep(huge, [0.95], []).best_runs == 1
    with pytest.raises(ValueError, match="needs a keep decision"):
        after_keep(keep_decision(candidate=[1.02], **BASE), [1.02], [])


def test_noise_groups_are_the_blocks_between_looks() -> None:
    assert noise_groups(GOOD) == [GOOD[1:3], GOOD[3:8]]
    assert noise_groups(GOOD[:5]) == [GOOD[1:3]]  # the unfinished block is not pooled
    assert noise_groups([0.9]) == [] and noise_groups([0.9, 0.8]) == []


def test_worse_or_equal_says_so() -> None:
    assert keep_decision(candidate=[1.02], **BASE).reason.startswith("no better: worse by 0.02")
    assert keep_decision(candidate=[1.0], **BASE).reason.startswith("no better: equal")


def test_max_goal_mirrors_min() -> None:
    up = [2 - x for x in GOOD]
    d = keep_decision(candidate=up, **{**BASE, "goal": "max"})
    assert d.action == "keep" and d.improvement == pytest.approx(0.015375)
    assert keep_decision(candidate=[0.975], **{**BASE, "goal": "max"}).action == "discard"


def test_min_delta_raises_the_floor() -> None:
    assert keep_decision(candidate=GOOD, **BASE).action == "keep"
    d = keep_decision(candidate=GOOD, min_delta=0.005, **BASE)
    assert d.action == "discard" and d.floor > 0.017


def test_few_degrees_of_freedom_demand_more_evidence() -> None:
    runs = [0.97, 0.975, 0.968]
    assert keep_decision(candidate=runs, **BASE).action == "keep"
    assert keep_decision(candidate=runs, **{**BASE, "df": 1}).action == "confirm"


def test_a_simplification_is_kept_when_no_worse_than_the_best_and_the_anchor() -> None:
    equal = [1.004, 0.999, 1.0, 0.998, 1.001, 0.999, 1.0, 0.998]  # mean of all 0.99988
    first = keep_decision(candidate=equal[:1], lines_removed=30, lines_added=2, **BASE)
    assert first.action == "confirm" and "28 fewer lines, looks equal" in first.reason
    d = keep_decision(candidate=equal, lines_removed=30, lines_added=2, **BASE)
    assert d.action == "keep" and d.simplification
    assert d.reason.startswith("simplification: 28 fewer lines, no worse than the best")
    # The anchor (the best before earlier simplifications) is 0.999: this one is worse than
    # it, so a chain of "equal within noise" steps cannot walk the objective away.
    anchored = keep_decision(candidate=equal, lines_removed=30, anchor=0.999, **BASE)
    assert anchored.action == "discard"
    # Worse than the best in point estimate is never kept for being shorter.
    worse = [x + 0.002 for x in equal]
    assert keep_decision(candidate=worse, lines_removed=30, **BASE).action == "discard"
    # More lines than removed is no simplification: dropped after the first run.
    assert keep_decision(candidate=[1.004], lines_added=5, lines_removed=1, **BASE).action == (
        "discard"
    )
    # A real improvement is not a simplification, whatever its line count.
    assert not keep_decision(candidate=GOOD, lines_removed=9, **BASE).simplification


def test_a_deterministic_metric_keeps_a_candidate_that_reproduces() -> None:
    det = {"goal": "min", "best": 4.0, "sigma": 0.0, "df": 2, "best_runs": 6}
    first = keep_decision(candidate=[3.9], **det)
    assert first.action == "confirm" and first.deterministic
    assert first.reason == "improved 0.1 (no noise so far); confirming it reproduces"
    d = keep_decision(candidate=[3.9, 3.9], **det)
    assert d.action == "keep" and d.new_best == 3.9 and d.remeasure == 0
    assert d.reason == "improved 0.1 > min_delta 0 (reproduced exactly, 2 runs, no noise)"
    assert keep_decision(candidate=[4.0], **det).action == "discard"
    assert keep_decision(candidate=[4.1], **det).reason.startswith("no better: worse by 0.1")
    # Only one run allowed: a deterministic improvement is kept at once.
    assert keep_decision(candidate=[3.9], max_runs=1, **det).action == "keep"
    simpler = keep_decision(candidate=[4.0, 4.0], lines_removed=3, **det)
    assert simpler.action == "keep" and simpler.simplification


def test_a_noisy_candidate_on_a_deterministic_best_is_never_kept_on_one_lucky_run() -> None:
    det = {"goal": "min", "best": 4.0, "sigma": 0.0, "df": 2, "best_runs": 6}
    lucky = keep_decision(candidate=[3.5], **det)
    assert lucky.action == "confirm"  # not kept: one run cannot tell luck from a change
    d = keep_decision(candidate=[3.5, 4.7], **det)  # not reproduced, and no better on average
    assert d.action == "discard" and "from this candidate alone" in d.reason
    # Truly better and noisy: tested on its own spread at the last look.
    runs = [3.5, 3.6, 3.4, 3.55, 3.45, 3.5, 3.6, 3.4]
    for n in range(2, 8):
        assert keep_decision(candidate=runs[:n], **det).action == "confirm"
    final = keep_decision(candidate=runs, **det)
    assert final.action == "keep" and final.remeasure == REMEASURE_RUNS
    assert final.new_best == pytest.approx(sum(runs[1:]) / 7) and final.df == 6


def test_failed_guards_and_constraints_discard_with_the_reason() -> None:
    d = keep_decision(candidate=[0.5], failed_guards=["tests/test_model.py::test_shapes"], **BASE)
    assert (d.action, d.reason) == ("discard", "guard failed: tests/test_model.py::test_shapes")
    v = keep_decision(
        candidate=[0.5], violations=["peak_vram_gb <= 60 (peak_vram_gb = 61)"], **BASE
    )
    assert v.action == "discard" and v.reason.startswith("constraint violated: peak_vram_gb")
    assert keep_decision(candidate=[float("nan")], **BASE).reason == "no finite objective value"
    assert keep_decision(candidate=[], **BASE).action == "discard"


def test_constraint_violations_reads_program_constraints() -> None:
    cs = [
        Constraint("peak_vram_gb", "<=", 60.0, "peak_vram_gb <= 60"),
        Constraint("mfu", ">", 0.3, "mfu > 0.3"),
    ]
    assert constraint_violations(cs, {"peak_vram_gb": 59.5, "mfu": 0.4}) == []
    assert constraint_violations(cs, {"peak_vram_gb": 61.25, "mfu": None}) == [
        "peak_vram_gb <= 60 (peak_vram_gb = 61.25)",
        "mfu > 0.3 (no value for mfu)",
    ]


def test_bad_arguments_are_refused_with_every_problem_named() -> None:
    with pytest.raises(ValueError) as exc:
        keep_decision(
            goal="down", best=float("inf"), sigma=-1.0, df=0, candidate=[1.0], anchor=float("nan")
        )
    msg = str(exc.value)
    assert "goal must be 'min' or 'max'" in msg and "best must be" in msg
    assert "sigma must be" in msg and "df must be >= 1" in msg and "anchor must be" in msg


def test_the_baseline_stops_early_only_when_three_runs_agree_exactly() -> None:
    assert baseline_runs_left([]) == 8
    assert baseline_runs_left([1.0, 1.0]) == 6  # two may agree by chance on a coarse metric
    assert baseline_runs_left([1.0, 1.0, 1.0]) == 0  # deterministic: more runs teach nothing
    assert baseline_runs_left([1.0, 1.0, 1.1]) == 5
    assert baseline_runs_left([1.0, 1.1], wanted=2) == 0  # program.md's baseline_runs rules


def test_center_is_the_mean() -> None:
    assert center([1.0, 2.0, 6.0]) == 3.0


DIFF = """\
diff --git a/train.py b/train.py
index 1111111..2222222 100644
--- a/train.py
+++ b/train.py
@@ -1,9 +1,6 @@
 import math
-# the learning rate, tuned by hand
-
-LR = 0.1  # inline comments do not make a line comment-only
+LR = 0.2
{blank}
-    # an indented comment
-def unused():
-    return 1
+x = 1
 y = 2
\\ No newline at end of file
diff --git a/notes.md b/notes.md
--- a/notes.md
+++ b/notes.md
@@ -1,3 +1,3 @@
-# A heading is text here
-
---- a removed line that starts with two dashes
+++ an added line that starts with two pluses
 tail
""".format(blank=" ")  # a context line holding only a space


def test_code_lines_changed_ignores_blank_and_comment_lines() -> None:
    # train.py: removed LR, def, return (3); added LR and x (2). notes.md: 2 removed, 1 added.
    assert code_lines_changed(DIFF) == (3, 5)
    assert code_lines_changed("") == (0, 0)
    only_comments = "--- a/m.py\n+++ b/m.py\n@@ -1,3 +1,1 @@\n-# one\n-\n-   # two\n+# three\n"
    assert code_lines_changed(only_comments) == (0, 0)
    new_file = "--- /dev/null\n+++ b/new.py\n@@ -0,0 +1,2 @@\n+A = 1\n+# doc\n"
    assert code_lines_changed(new_file) == (1, 0)
    gone = "--- a/old.py\n+++ /dev/null\n@@ -1,2 +0,0 @@\n-A = 1\n-# doc\n"
    assert code_lines_changed(gone) == (0, 1)
