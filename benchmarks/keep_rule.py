"""Monte-Carlo check of the keep rule (decide.keep_decision), run against the real functions.

    python benchmarks/keep_rule.py              # full run (about a minute on one core)
    python benchmarks/keep_rule.py --quick      # a fifth of the trials, for a smoke test

Each simulated session follows the loop's protocol exactly (docs/keep-rule.md, "The
loop's protocol"): the baseline is run ``--baseline-runs`` times (default 8); every
experiment is evaluated once and again while the rule says "confirm"; a discarded
candidate's ``noise_groups(runs)`` are pooled into sigma; a keep measures the kept commit
``decision.remeasure`` times afresh, carries ``after_keep(...)`` forward (best, best_runs,
noise groups) and moves the anchor unless the keep was a simplification. Noise has unit
variance, so gains are in sigmas. Results are recorded in docs/keep-rule.md ("Measured").
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
from dataclasses import dataclass, field

from pytest_autoresearch.research.decide import after_keep, keep_decision, noise_groups

GAINS = [0.5 * i for i in range(9)]  # the power curve: 0, 0.5, ..., 4 sigma
ORACLE_DF = 10**6  # "sigma known": the t-quantiles become normal ones


def gauss(rng: random.Random) -> float:
    return rng.gauss(0.0, 1.0)


def student3(rng: random.Random) -> float:
    """Heavy-tailed noise: Student's t with 3 df, scaled to unit variance."""
    chi2 = sum(rng.gauss(0.0, 1.0) ** 2 for _ in range(3))
    return rng.gauss(0.0, 1.0) / math.sqrt(chi2 / 3) / math.sqrt(3.0)


Noise = Callable[[random.Random], float]
Mix = Callable[[random.Random], float]  # draws one proposal's true gain over the best


@dataclass
class Outcome:
    gain: float  # the candidate's true improvement over the true best (sigmas)
    kept: bool
    evals: int  # candidate runs plus the fresh runs after a keep
    index: int = 0
    bias: float = 0.0  # after a keep: carried best minus the true value (negative = flattering)


@dataclass
class Session:
    """The loop's state: best, runs behind it, anchor, pooled noise (as running sums)."""

    rng: random.Random
    noise: Noise = gauss
    baseline_runs: int = 3
    oracle: bool = False
    sigma_scale: float = 1.0  # 0: a deterministic metric (every run of one code agrees)
    anchored: bool = True  # False: simplifications compared with the best only (no anchor)
    truth: float = 0.0  # goal "min": lower is better
    outcomes: list[Outcome] = field(default_factory=list)

    def __post_init__(self) -> None:
        base = [self.run(self.truth) for _ in range(self.baseline_runs)]
        self.best, self.best_runs = sum(base) / len(base), len(base)
        self.anchor = self.best
        self.ss, self.df = 0.0, 0
        self.pool(base)

    def run(self, true_value: float, scale: float | None = None) -> float:
        s = self.sigma_scale if scale is None else scale
        return true_value + s * self.noise(self.rng) if s else true_value

    def pool(self, group: list[float]) -> None:
        # The same sums stats.pooled_noise computes over all groups, kept incrementally.
        if len(group) >= 2:
            m = sum(group) / len(group)
            self.ss += sum((x - m) ** 2 for x in group)
            self.df += len(group) - 1

    def experiment(self, gain: float, lines: tuple[int, int] = (0, 0), scale: float | None = None):
        true_cand = self.truth - gain
        runs = [self.run(true_cand, scale)]
        sigma, df = (1.0, ORACLE_DF) if self.oracle else (math.sqrt(self.ss / self.df), self.df)
        while True:
            d = keep_decision(
                goal="min",
                best=self.best,
                sigma=sigma,
                df=df,
                candidate=runs,
                best_runs=self.best_runs,
                anchor=self.anchor if self.anchored else None,
                lines_added=lines[0],
                lines_removed=lines[1],
            )
            if d.action != "confirm":
                break
            runs.append(self.run(true_cand, scale))
        evals = len(runs)
        if d.action == "keep":
            fresh = [self.run(true_cand, scale) for _ in range(d.remeasure)]
            evals += len(fresh)
            carried = after_keep(d, runs, fresh)
            self.best, self.best_runs = carried.best, carried.best_runs
            for group in carried.noise_groups:
                self.pool(group)
            if not d.simplification:
                self.anchor = self.best
            self.truth = true_cand
            bias = self.best - self.truth
        else:
            bias = 0.0
            for group in noise_groups(runs):
                self.pool(group)
        out = Outcome(gain, d.action == "keep", evals, len(self.outcomes), bias)
        self.outcomes.append(out)
        return out


def greedy(rng: random.Random, gains: list[float], runs: int = 1) -> list[Outcome]:
    """Keep-if-better: keep whenever the mean of ``runs`` runs beats the best so far.

    The baseline is the mean of 3 runs; after that the best is the value that won.
    """
    truth = 0.0
    best = sum(rng.gauss(0, 1) for _ in range(3)) / 3
    out = []
    for i, g in enumerate(gains):
        value = sum(truth - g + rng.gauss(0, 1) for _ in range(runs)) / runs
        kept = value < best
        if kept:
            best, truth = value, truth - g
        out.append(Outcome(g, kept, runs, i))
    return out


# -- proposal mixes --------------------------------------------------------------------------


def background(rng: random.Random) -> float:
    """Most proposals do not help: half change nothing measurable, half are 1 sigma worse."""
    return 0.0 if rng.random() < 0.5 else -1.0


def mix_with(p_real: float, gain: float = 2.0) -> Mix:
    return lambda rng: gain if rng.random() < p_real else background(rng)


def probe_mix(rng: random.Random) -> float:
    """Background plus probes: 18% of proposals have a gain drawn from GAINS."""
    return rng.choice(GAINS) if rng.random() < 0.18 else background(rng)


# -- the tables ------------------------------------------------------------------------------


def kept_rate(outs: list[Outcome], gain: float) -> tuple[float, int]:
    sel = [o for o in outs if abs(o.gain - gain) < 1e-9]
    return (sum(o.kept for o in sel) / len(sel) if sel else math.nan), len(sel)


def power_curve(seed: int, sessions: int, n: int, warmup: int, baseline_runs: int) -> None:
    print(
        f"\n(a) power: kept % by true gain, in {sessions} sessions x {n} experiments of the probe "
        f"mix,\n    experiments after the first {warmup}; baseline {baseline_runs} runs unless said"
    )
    rules: dict[str, list[Outcome]] = {
        "this rule": [],
        "this rule, 3 base": [],
        "oracle (sigma)": [],
        "greedy, 1 run": [],
        "greedy, 2 runs": [],
    }
    for label in rules:
        rng = random.Random(seed)  # the same proposals for every rule
        for _ in range(sessions):
            gains = [probe_mix(rng) for _ in range(n)]
            if label.startswith("greedy"):
                outs = greedy(rng, gains, runs=int(label.split()[1]))
            else:
                runs = 3 if "3 base" in label else baseline_runs
                s = Session(rng, baseline_runs=runs, oracle=label.startswith("oracle"))
                outs = [s.experiment(g) for g in gains]
            rules[label] += outs[warmup:]
    print("  gain (sigma)      " + "".join(f"{g:>7.1f}" for g in GAINS) + "   evals/exp")
    for label, outs in rules.items():
        cells = "".join(f"{100 * kept_rate(outs, g)[0]:6.1f}%" for g in GAINS)
        print(f"  {label:17s} {cells}   {sum(o.evals for o in outs) / len(outs):.3f}")
    counts = ", ".join(str(kept_rate(rules["this rule"], g)[1]) for g in GAINS)
    print(f"  candidates per cell: {counts}")


def pure_noise(seed: int, sessions: int, n: int, baseline_runs: int) -> None:
    print(f"\n(b) pure noise: {sessions} sessions x {n} experiments, nothing has any effect")
    for label, noise in (("normal noise", gauss), ("heavy tails (t3)", student3)):
        rng = random.Random(seed)
        outs = []
        for _ in range(sessions):
            s = Session(rng, noise=noise, baseline_runs=baseline_runs)
            outs += [s.experiment(0.0) for _ in range(n)]
        kept = sum(o.kept for o in outs)
        evals = sum(o.evals for o in outs)
        print(
            f"  {label:17s} kept {kept / len(outs):.3%} ({kept}/{len(outs)}), "
            f"evaluations per experiment {evals / len(outs):.3f}"
        )
    rng = random.Random(seed)
    g = [o for _ in range(sessions) for o in greedy(rng, [0.0] * n)]
    print(f"  greedy keep-if-better kept {sum(o.kept for o in g) / len(g):.3%}")


def mixes(seed: int, sessions: int, n: int, baseline_runs: int) -> None:
    print(
        f"\n(c) sessions: {sessions} x {n} experiments; background = half null, half 1 sigma "
        "worse;\n    p = share of proposals truly better by 2 sigma"
    )
    for p in (0.0, 0.03, 0.05, 0.10, 0.50):
        rng = random.Random(seed)
        outs, progress = [], 0.0
        for _ in range(sessions):
            s = Session(rng, baseline_runs=baseline_runs)
            mix = mix_with(p)
            outs += [s.experiment(mix(rng)) for _ in range(n)]
            progress += -s.truth
        real = [o for o in outs if o.gain > 0]
        null = [o for o in outs if o.gain == 0]
        kept_real = [o for o in real if o.kept]
        share = f"{100 * len(kept_real) / len(real):5.1f}%" if real else "    -"
        bias = f"{sum(o.bias for o in kept_real) / len(kept_real):+.3f}" if kept_real else "    -"
        print(
            f"  p = {p:4.0%}: evaluations/exp {sum(o.evals for o in outs) / len(outs):.3f}; "
            f"real gains kept {share}; null kept {sum(o.kept for o in null) / len(null):.2%}; "
            f"best's bias after a real keep {bias} sigma; progress {progress / sessions:.1f} sigma"
        )


def deterministic(seed: int, trials: int) -> None:
    print(f"\n(d) deterministic baseline (every run agrees), {trials} candidates each")
    cases = (
        ("noisy candidate, no better on average", 0.0, 1.0),
        ("noisy candidate, 2 sigma better", 2.0, 1.0),
        ("deterministic candidate, 0.001 better", 0.001, 0.0),
        ("deterministic candidate, 0.001 worse", -0.001, 0.0),
    )
    for label, gain, scale in cases:
        rng = random.Random(seed)
        kept = evals = 0
        for _ in range(trials):
            s = Session(rng, sigma_scale=0.0)
            o = s.experiment(gain, scale=scale)
            kept += o.kept
            evals += o.evals
        print(f"  {label:40s} kept {kept / trials:6.1%}, evaluations {evals / trials:.2f}")


def simplifications(seed: int, sessions: int, n: int, baseline_runs: int) -> None:
    print(
        f"\n(e) drift: {sessions} sessions x {n} proposals that each remove 5 lines and are "
        "truly worse by w sigma"
    )
    for w in (0.0, 0.25, 0.5):
        for anchored in (True, False):
            rng = random.Random(seed)
            kept = 0
            drift = []
            for _ in range(sessions):
                s = Session(rng, baseline_runs=baseline_runs, anchored=anchored)
                kept += sum(s.experiment(-w, lines=(0, 5)).kept for _ in range(n))
                drift.append(s.truth)
            drift.sort()
            print(
                f"  w = {w:4.2f}, {'anchored' if anchored else 'best only'}: kept "
                f"{kept / (sessions * n):6.2%}; true drift after {n}: mean "
                f"{sum(drift) / len(drift):+.2f} sigma, 95th percentile "
                f"{drift[int(0.95 * len(drift))]:+.2f}, worst {drift[-1]:+.2f}"
            )


def main() -> int:
    ap = argparse.ArgumentParser(description="Monte-Carlo check of the keep rule")
    ap.add_argument("--quick", action="store_true", help="a fifth of the trials (smoke test)")
    ap.add_argument("--seed", type=int, default=20261123)
    ap.add_argument("--baseline-runs", type=int, default=8)
    args = ap.parse_args()
    div = 5 if args.quick else 1
    started = time.perf_counter()
    print(
        f"machine: {platform.machine()} {platform.system()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; seed {args.seed}{' (quick)' if args.quick else ''}"
    )
    b = args.baseline_runs
    power_curve(args.seed, 1500 // div, 60, 10, b)
    pure_noise(args.seed, 500 // div, 200, b)
    mixes(args.seed, 400 // div, 100, b)
    deterministic(args.seed, 20000 // div)
    simplifications(args.seed, 200 // div, 150, b)
    print(f"\nelapsed {time.perf_counter() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
