"""Monte-Carlo check of the keep rule (decide.keep_decision), run against the real functions.

    python benchmarks/keep_rule.py              # full run
    python benchmarks/keep_rule.py --quick      # a tenth of the trials, for a smoke test

Each simulated session mimics the research loop: the baseline is run 3 times, every
experiment is evaluated once, a "confirm" decision buys one more run, a candidate's runs
are pooled into the noise estimate once there are two, and a keep carries the candidate's
mean forward as the new best. Noise has unit variance, so every number is in noise sigmas.
Results are recorded in docs/benchmarks.md ("The keep rule").
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from pytest_autoresearch.decide import keep_decision, noise_runs
from pytest_autoresearch.stats import pooled_noise

Noise = Callable[[random.Random], float]


def gauss(rng: random.Random) -> float:
    return rng.gauss(0.0, 1.0)


def student3(rng: random.Random) -> float:
    """Heavy-tailed noise: Student's t with 3 df, scaled to unit variance."""
    chi2 = sum(rng.gauss(0.0, 1.0) ** 2 for _ in range(3))
    return rng.gauss(0.0, 1.0) / math.sqrt(chi2 / 3) / math.sqrt(3.0)


@dataclass
class Outcome:
    gain: float  # the candidate's true improvement over the true best (sigmas)
    kept: bool
    runs: int


def session(
    rng: random.Random,
    n: int,
    *,
    effect: Callable[[int], float] = lambda i: 0.0,
    noise: Noise = gauss,
    baseline_runs: int = 3,
) -> tuple[list[Outcome], float]:
    """Run ``n`` experiments (``effect(i)``: experiment i's true gain); outcomes and total gain."""
    true_best = 0.0  # goal "min": lower is better
    base = [true_best + noise(rng) for _ in range(baseline_runs)]
    best, best_runs = sum(base) / len(base), len(base)
    groups = [base]
    out = []
    for i in range(n):
        gain = effect(i)
        true_cand = true_best - gain
        runs = [true_cand + noise(rng)]
        est = pooled_noise(groups)
        while True:
            dec = keep_decision(
                goal="min",
                best=best,
                sigma=est.sigma,
                df=est.df,
                candidate=runs,
                best_runs=best_runs,
            )
            if dec.action != "confirm":
                break
            runs.append(true_cand + noise(rng))
        groups.append(noise_runs(runs))
        kept = dec.action == "keep"
        if kept:
            best, best_runs, true_best = dec.new_best, max(1, dec.runs - 1), true_cand
        out.append(Outcome(gain, kept, len(runs)))
    return out, -true_best


def greedy_pure_noise(rng: random.Random, n: int, trials: int) -> float:
    """Greedy single-run keeping (keep whatever beats the best value so far) on pure noise."""
    kept = 0
    for _ in range(trials):
        best = rng.gauss(0.0, 1.0)
        for _ in range(n):
            x = rng.gauss(0.0, 1.0)
            if x < best:
                best, kept = x, kept + 1
    return kept / (n * trials)


def harmonic(n: int) -> float:
    return math.fsum(1.0 / k for k in range(1, n + 1))


def main() -> int:
    ap = argparse.ArgumentParser(description="Monte-Carlo check of the keep rule")
    ap.add_argument("--quick", action="store_true", help="a tenth of the trials (smoke test)")
    ap.add_argument("--seed", type=int, default=20261123)
    args = ap.parse_args()
    div = 10 if args.quick else 1
    rng = random.Random(args.seed)
    started = time.perf_counter()
    print(
        f"machine: {platform.machine()} {platform.system()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; seed {args.seed}{' (quick)' if args.quick else ''}"
    )

    n, trials = 200, 1000 // div
    print(f"\n(a) pure noise: {trials} sessions x {n} experiments, 3 baseline runs")
    for label, noise in (("normal noise", gauss), ("heavy-tailed (t3)", student3)):
        outs = [o for _ in range(trials) for o in session(rng, n, noise=noise)[0]]
        kept = sum(o.kept for o in outs)
        runs = sum(o.runs for o in outs)
        print(
            f"  {label:18s} kept {kept / len(outs):.3%} ({kept}/{len(outs)}), "
            f"runs per experiment {runs / len(outs):.3f}"
        )
    g = greedy_pure_noise(rng, n, trials)
    h = (harmonic(n + 1) - 1) / n
    print(f"  greedy single-run  kept {g:.3%} (H(n+1)-1)/n = {h:.3%} for n = {n}")

    reps = 2000 // div
    print(
        f"\n(b) one real improvement after w null experiments: P(kept), runs it cost ({reps} each)"
    )
    print("     w   gain 1 sigma          gain 2 sigma          gain 3 sigma")
    for warmup in (0, 10, 50):
        cells = []
        for gain in (1.0, 2.0, 3.0):
            kept = runs = 0
            for _ in range(reps):
                outs, _ = session(rng, warmup + 1, effect=lambda i, w=warmup, g=gain: g * (i == w))
                kept += outs[-1].kept
                runs += outs[-1].runs
            cells.append(f"{kept / reps:6.1%} ({runs / reps:.2f} runs)")
        print(f"  {warmup:4d}   " + "   ".join(cells))

    n, trials = 200, 300 // div
    print(f"\n(c) mixed sessions: {n} experiments, 10% of proposals truly better by g sigma")
    for gain in (1.0, 2.0):
        offered = kept_real = kept_false = runs = 0
        total = 0.0
        for _ in range(trials):
            outs, progress = session(rng, n, effect=lambda i, g=gain: g * (rng.random() < 0.1))
            offered += sum(o.gain > 0 for o in outs)
            kept_real += sum(o.kept and o.gain > 0 for o in outs)
            kept_false += sum(o.kept and o.gain == 0 for o in outs)
            runs += sum(o.runs for o in outs)
            total += progress
        print(
            f"  g = {gain:.0f}: kept {kept_real / offered:.1%} of real improvements, "
            f"{kept_false / (trials * n - offered):.3%} of null ones; "
            f"true progress {total / trials:.1f} sigma per session; "
            f"runs per experiment {runs / (trials * n):.3f}"
        )
    print(f"\nelapsed {time.perf_counter() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
