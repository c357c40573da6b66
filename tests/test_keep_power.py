"""The keep rule's power at the same safety (issue 8, items 1-2; issue 12, items 8 and 13).

Fast checks: the design's numbers, then small seeded simulations of research sessions that
follow the loop's protocol (decide's module docstring) against the real functions, with
unit noise so gains are in sigmas. benchmarks/keep_rule.py runs the same protocol with far
more trials; its figures are in docs/keep-rule.md. Thresholds here are the issue's targets,
loosened only by about two Monte-Carlo standard errors where the benchmark sits close.
"""

from __future__ import annotations

import math
import random

import pytest

from pytest_autoresearch.metrics.stats import t_quantile
from pytest_autoresearch.research.decide import (
    ALPHA,
    BASELINE_RUNS,
    after_keep,
    keep_decision,
    noise_groups,
)

KNOWN = 10**6  # degrees of freedom that make sigma "known"


class Session:
    """One simulated research session, doing what the loop does with each decision."""

    def __init__(self, rng: random.Random, *, noise: float = 1.0, anchored: bool = True) -> None:
        self.rng, self.noise, self.anchored = rng, noise, anchored
        self.truth = 0.0  # goal "min"
        base = [self.run(0.0) for _ in range(BASELINE_RUNS)]
        self.best, self.best_runs = sum(base) / len(base), len(base)
        self.anchor = self.best
        self.ss, self.df = 0.0, 0
        self.pool([base])
        self.evals = 0
        self.biases: list[float] = []

    def run(self, true_value: float, noise: float | None = None) -> float:
        s = self.noise if noise is None else noise
        return true_value + s * self.rng.gauss(0.0, 1.0) if s else true_value

    def pool(self, groups: list[list[float]]) -> None:
        """What stats.pooled_noise computes over all the groups, kept as running sums."""
        for g in groups:
            m = sum(g) / len(g)
            self.ss += sum((x - m) ** 2 for x in g)
            self.df += len(g) - 1

    def sigma(self) -> tuple[float, int]:
        return math.sqrt(self.ss / self.df), self.df

    def experiment(
        self, gain: float, *, lines_removed: int = 0, noise: float | None = None
    ) -> bool:
        true_value = self.truth - gain
        runs = [self.run(true_value, noise)]
        sigma, df = self.sigma()
        while True:
            d = keep_decision(
                goal="min",
                best=self.best,
                sigma=sigma,
                df=df,
                candidate=runs,
                best_runs=self.best_runs,
                anchor=self.anchor if self.anchored else None,
                lines_removed=lines_removed,
            )
            if d.action != "confirm":
                break
            runs.append(self.run(true_value, noise))
        self.evals += len(runs)
        if d.action != "keep":
            self.pool(noise_groups(runs))
            return False
        fresh = [self.run(true_value, noise) for _ in range(d.remeasure)]
        self.evals += len(fresh)
        carried = after_keep(d, runs, fresh)
        self.best, self.best_runs = carried.best, carried.best_runs
        self.pool(carried.noise_groups)
        if not d.simplification:
            self.anchor = self.best
        self.truth = true_value
        self.biases.append(self.best - self.truth)
        return True


def background(rng: random.Random) -> float:
    """Most proposals do not help: half change nothing, half are 1 sigma worse."""
    return 0.0 if rng.random() < 0.5 else -1.0


def kept_share(seed: int, sessions: int, gain: float, warmup: int = 10) -> float:
    """P(kept) of a candidate truly ``gain`` better, after ``warmup`` background proposals."""
    rng = random.Random(seed)
    kept = 0
    for _ in range(sessions):
        s = Session(rng)
        for _ in range(warmup):
            s.experiment(background(rng))
        kept += s.experiment(gain)
    return kept / sessions


# -- the design, on literal numbers ----------------------------------------------------------


def test_the_last_look_is_nearly_the_oracle_test() -> None:
    # Sigma known (huge df), best from 6 runs, 8 candidate runs: the last look's floor is
    # the one-sided normal test at 0.85%, i.e. 2.387 standard errors of sqrt(1/8 + 1/6).
    runs = [-1.3] * 8
    d = keep_decision(goal="min", best=0.0, sigma=1.0, df=KNOWN, candidate=runs, best_runs=6)
    assert d.floor == pytest.approx(2.387 * math.sqrt(1 / 8 + 1 / 6), abs=2e-3)
    assert d.action == "keep"  # 1.3 sigma > 1.289: a true 2 sigma gain clears it easily


def test_a_first_run_one_sigma_better_goes_on_a_worse_one_stops() -> None:
    args = {"goal": "min", "best": 0.0, "sigma": 1.0, "df": KNOWN, "best_runs": 6}
    assert keep_decision(candidate=[-1.0], **args).action == "confirm"
    assert keep_decision(candidate=[-0.8], **args).action == "discard"  # 0.8 se < screen 0.8
    assert keep_decision(candidate=[0.5], **args).action == "discard"
    # Three sigma on the first run is not enough to keep at once (0.05% share), 3.9 is.
    assert keep_decision(candidate=[-3.0], **args).action == "confirm"
    assert keep_decision(candidate=[-3.9], **args).action == "keep"
    assert t_quantile(1 - 0.0005, KNOWN) * math.sqrt(1 + 1 / 6) == pytest.approx(3.55, abs=0.01)


# -- seeded simulations ----------------------------------------------------------------------


def test_pure_noise_is_kept_at_most_alpha() -> None:
    rng = random.Random(1)
    kept = 0
    for _ in range(30):
        s = Session(rng)
        kept += sum(s.experiment(0.0) for _ in range(100))
    assert kept / 3000 <= ALPHA  # benchmark: 0.1%; greedy keep-if-better: 2.5%


def test_a_two_sigma_gain_is_kept_three_times_in_four() -> None:
    # Target 75%; the benchmark's probe mix: 79%. Here at the 11th experiment of a session
    # of background proposals, with few degrees of freedom behind sigma yet: 77%.
    assert kept_share(2, 400, 2.0) >= 0.72


def test_a_one_sigma_gain_is_kept_one_time_in_five() -> None:
    # Target 20%; the benchmark's probe mix: 20%; here, early in a session: 17%.
    assert kept_share(3, 500, 1.0) >= 0.15


def test_a_session_with_few_real_gains_costs_at_most_1_6_evaluations_each() -> None:
    rng = random.Random(4)
    evals = n = real = kept_real = 0
    for _ in range(80):
        s = Session(rng)
        for _ in range(100):
            gain = 2.0 if rng.random() < 0.03 else background(rng)
            k = s.experiment(gain)
            real += gain > 0
            kept_real += k and gain > 0
        evals += s.evals
        n += 100
    # Target 1.6 for this mix (docs/keep-rule.md says why 3%); the benchmark measures 1.535
    # over 40,000 experiments; sessions vary, and this sample's standard error is ~0.03.
    assert evals / n <= 1.65
    assert kept_real / real >= 0.6  # includes the first experiments, before sigma is known


def test_the_carried_best_is_not_flattered_by_the_winners_curse() -> None:
    rng = random.Random(5)
    biases: list[float] = []
    for _ in range(150):
        s = Session(rng)
        for _ in range(30):
            s.experiment(2.0 if rng.random() < 0.3 else background(rng))
        biases += s.biases
    assert len(biases) > 300
    # Carrying the lucky runs that won the test would be ~ -0.3 sigma here.
    assert abs(sum(biases) / len(biases)) < 0.08


def noisy_on_deterministic(seed: int, gain: float, noise: float, trials: int) -> tuple[float, int]:
    rng = random.Random(seed)
    kept = least_evals = 0
    least_evals = 10**9
    for _ in range(trials):
        s = Session(rng, noise=0.0)  # every baseline run agrees exactly
        if s.experiment(gain, noise=noise):
            kept += 1
            least_evals = min(least_evals, s.evals)
    return kept / trials, least_evals


def test_a_noisy_candidate_on_a_deterministic_baseline_is_never_kept_on_luck() -> None:
    # The old rule kept such a candidate half the time (every lucky first run).
    rate, least = noisy_on_deterministic(6, 0.0, 1.0, 3000)
    assert rate <= ALPHA
    if rate:
        assert least >= 8  # a noisy candidate is only ever kept at the last look


def test_a_deterministic_candidate_that_reproduces_is_kept() -> None:
    rate, least = noisy_on_deterministic(7, 0.001, 0.0, 50)
    assert rate == 1.0 and least == 2  # one run, one run that reproduces it
    assert noisy_on_deterministic(8, -0.001, 0.0, 50)[0] == 0.0


def drift(anchored: bool, worse_by: float, sessions: int = 40, n: int = 60) -> list[float]:
    rng = random.Random(9)
    out = []
    for _ in range(sessions):
        s = Session(rng, anchored=anchored)
        for _ in range(n):
            s.experiment(-worse_by, lines_removed=5)
        out.append(s.truth)
    return out


def test_simplifications_cannot_walk_the_objective_away() -> None:
    anchored, best_only = drift(True, 0.25), drift(False, 0.25)
    # Each kept simplification is no worse than the last real gain's value, so the drift is
    # bounded by that value's own noise and does not grow with the number of steps.
    assert sum(anchored) / len(anchored) < 1.0 and max(anchored) <= 2.0
    assert sum(anchored) < sum(best_only)


@pytest.mark.parametrize("gain", [0.0, 1.0, 2.0])
def test_the_oracle_is_no_better_than_the_rule_by_much(gain: float) -> None:
    """Knowing sigma exactly would help little: the rule learns it as it goes."""
    rule = kept_share(10, 300, gain)

    def oracle_session(rng: random.Random) -> Session:
        s = Session(rng)
        s.sigma = lambda: (1.0, KNOWN)  # type: ignore[method-assign]
        return s

    rng = random.Random(10)
    kept = 0
    for _ in range(300):
        s = oracle_session(rng)
        for _ in range(10):
            s.experiment(background(rng))
        kept += s.experiment(gain)
    assert rule >= kept / 300 - 0.08


# -- through the real loop -------------------------------------------------------------------


def _keep_loop():
    """benchmarks/keep_loop.py: the noisy toy project and the session runner."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "keep_loop.py"
    spec = importlib.util.spec_from_file_location("keep_loop", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_real_two_sigma_gains_are_kept_through_the_real_loop(tmp_path) -> None:
    """A noisy toy (sigma 0.5), every other proposal a real 2 sigma gain, 10 experiments.

    Half a minute. The toy's noise is a seeded stream (the n-th evaluation draws the n-th
    number), so the session is the same on every run: with unseeded noise the bars below
    failed in about 6% of simulated sessions (2 of 5 gains kept: 5%), and CI met one. Seeds
    0-3 kept 3, 5, 5, 2 of 5 gains (15 of 20, the rule's power of about 80%) and 0 nulls,
    with 5, 7, 9, 5 runs for the five nulls (each proposal numbered, so that a re-proposed
    gain is a new experiment, not a repeat sent back); the old rule kept 1 of 30 such gains,
    and benchmarks/keep_loop.py -n 60 (fresh entropy) kept 48 of 60 in two sessions. The
    bars stay loose so a change of the rule that still keeps most gains passes whatever the
    stream.
    """
    kl = _keep_loop()
    root = kl.make_project(tmp_path, x=10.0, baseline_runs=BASELINE_RUNS, seed=0)
    proc = kl.run_session(root, 10, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    s = kl.summarise(root)
    assert s["baseline_runs"] == BASELINE_RUNS
    (gains, gains_kept, gain_evals), (nulls, nulls_kept, null_evals) = s["gain"], s["null"]
    drawn = len(list((tmp_path / "noise-draws").iterdir()))
    assert drawn == BASELINE_RUNS + gain_evals + null_evals  # each evaluation its own number
    assert (gains, nulls) == (5, 5)
    assert gains_kept >= 3
    assert nulls_kept == 0
    # Changes that do nothing are mostly dropped after one run (81% per null in a simulation
    # with the real decide functions); one that runs to the last look costs 8, so measuring
    # every null to the end would cost 40.
    assert null_evals <= 20
