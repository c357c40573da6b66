"""decide: the keep rule on literal numbers, plus a small seeded simulation of pure noise."""

from __future__ import annotations

import random

import pytest

from pytest_autoresearch.decide import (
    ALPHA,
    center,
    constraint_violations,
    keep_decision,
    noise_runs,
)
from pytest_autoresearch.program import Constraint
from pytest_autoresearch.stats import pooled_noise

# A typical session: best 1.000 from 3 baseline runs, noise 0.01 known with 10 df.
BASE = {"goal": "min", "best": 1.0, "sigma": 0.01, "df": 10, "best_runs": 3}


def test_a_small_first_run_gain_is_discarded_as_noise() -> None:
    d = keep_decision(candidate=[0.995], **BASE)
    assert d.action == "discard"
    assert d.improvement == pytest.approx(0.005)
    assert d.reason.startswith("within noise: improved 0.005 <= floor")
    assert d.new_best is None


def test_a_promising_first_run_is_confirmed_then_kept_at_the_confirmed_value() -> None:
    first = keep_decision(candidate=[0.975], **BASE)
    assert first.action == "confirm"
    assert "confirming" in first.reason and first.floor > 0.025
    second = keep_decision(candidate=[0.975, 0.982], **BASE)
    assert second.action == "confirm"  # two confirmation runs by default
    final = keep_decision(candidate=[0.975, 0.982, 0.978], **BASE)
    assert final.action == "keep", final.reason
    assert final.reason == "improved 0.02167 > floor 0.02114 (3 runs, noise ±0.009241)"
    # The lucky first run is left out of the value carried forward.
    assert final.new_best == pytest.approx(0.98)
    assert final.runs == 3 and final.df == 12


def test_a_confirmation_that_regresses_is_discarded() -> None:
    final = keep_decision(candidate=[0.975, 1.004, 0.998], **BASE)
    assert final.action == "discard"
    assert final.reason.startswith("within noise")


def test_a_huge_first_run_gain_is_kept_without_confirmation() -> None:
    d = keep_decision(candidate=[0.9], **{**BASE, "df": 40})
    assert d.action == "keep" and d.runs == 1 and d.new_best == 0.9


def test_confirmed_true_makes_the_second_run_final() -> None:
    d = keep_decision(candidate=[0.96, 0.962], confirmed=True, **BASE)
    assert d.action == "keep"
    assert d.new_best == pytest.approx(0.962)


def test_worse_or_equal_says_so() -> None:
    assert keep_decision(candidate=[1.02], **BASE).reason.startswith("no better: worse by 0.02")
    assert keep_decision(candidate=[1.0], **BASE).reason.startswith("no better: equal")


def test_max_goal_mirrors_min() -> None:
    d = keep_decision(candidate=[1.025, 1.018, 1.022], **{**BASE, "goal": "max"})
    assert d.action == "keep" and d.improvement == pytest.approx(0.0216667, abs=1e-6)
    assert keep_decision(candidate=[0.975], **{**BASE, "goal": "max"}).action == "discard"


def test_min_delta_raises_the_floor() -> None:
    runs = [0.975, 0.982, 0.978]
    assert keep_decision(candidate=runs, **BASE).action == "keep"
    d = keep_decision(candidate=runs, min_delta=0.01, **BASE)
    assert d.action == "discard" and d.floor > 0.01


def test_few_baseline_runs_demand_more_evidence() -> None:
    # The same numbers with sigma from only 3 runs (2 df): the t-quantile is far larger.
    runs = [0.975, 0.982, 0.978]
    assert keep_decision(candidate=runs, **BASE).action == "keep"
    assert keep_decision(candidate=runs, **{**BASE, "df": 2}).action == "discard"


def test_fewer_lines_within_noise_is_kept_as_a_simplification() -> None:
    first = keep_decision(candidate=[1.004], lines_added=2, lines_removed=30, **BASE)
    assert first.action == "confirm" and "28 fewer lines" in first.reason
    d = keep_decision(candidate=[1.004, 1.001, 1.002], lines_added=2, lines_removed=30, **BASE)
    assert d.action == "keep" and d.reason.startswith("simplification: 28 fewer lines")
    assert d.new_best == pytest.approx(1.0015)
    # Clearly worse is not rescued by being shorter.
    worse = keep_decision(candidate=[1.004, 1.02, 1.03], lines_removed=30, **BASE)
    assert worse.action == "discard"
    # More lines than removed is no simplification.
    assert keep_decision(candidate=[1.004], lines_added=5, lines_removed=1, **BASE).action == (
        "discard"
    )


def test_a_deterministic_metric_keeps_any_real_improvement() -> None:
    d = keep_decision(goal="min", best=4.0, sigma=0.0, df=2, best_runs=3, candidate=[3.9])
    assert d.action == "keep" and "no noise" in d.reason
    assert keep_decision(goal="min", best=4.0, sigma=0.0, candidate=[4.0]).action == "discard"


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
        keep_decision(goal="down", best=float("inf"), sigma=-1.0, df=0, candidate=[1.0])
    msg = str(exc.value)
    assert "goal must be 'min' or 'max'" in msg and "best must be" in msg
    assert "sigma must be" in msg and "df must be >= 1" in msg


def test_helpers_for_the_loop() -> None:
    assert center([1.0, 2.0, 6.0]) == 3.0
    assert noise_runs([0.9, 1.0, 1.1]) == [1.0, 1.1]


def _session(rng: random.Random, n: int, gain: float) -> tuple[int, int]:
    """A loop-like session on unit noise: (experiments kept, runs spent)."""
    base = [rng.gauss(0, 1) for _ in range(3)]
    best, best_runs, groups, truth = sum(base) / 3, 3, [base], 0.0
    kept = runs_spent = 0
    for _ in range(n):
        true_value = truth - gain
        runs = [true_value + rng.gauss(0, 1)]
        est = pooled_noise(groups)
        while True:
            d = keep_decision(
                goal="min",
                best=best,
                sigma=est.sigma,
                df=est.df,
                candidate=runs,
                best_runs=best_runs,
            )
            if d.action != "confirm":
                break
            runs.append(true_value + rng.gauss(0, 1))
        groups.append(noise_runs(runs))
        runs_spent += len(runs)
        if d.action == "keep":
            kept += 1
            best, best_runs, truth = d.new_best, d.runs - 1 or 1, true_value
    return kept, runs_spent


def test_pure_noise_does_not_ratchet() -> None:
    rng = random.Random(7)
    kept = spent = 0
    for _ in range(60):
        k, s = _session(rng, 50, 0.0)
        kept += k
        spent += s
    # 3000 experiments: the rule's budget is ALPHA (1%); greedy keeping would be ~15% here.
    assert kept / 3000 <= ALPHA
    assert spent / 3000 < 1.5  # confirmation is rare on noise


def test_a_real_three_sigma_gain_is_usually_found() -> None:
    rng = random.Random(11)
    kept = sum(_session(rng, 20, 3.0)[0] > 0 for _ in range(100))
    assert kept >= 80
