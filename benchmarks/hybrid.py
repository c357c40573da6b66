"""Hybrid vs LLM-only vs Optuna-only at equal budgets, on a seeded synthetic landscape.

**The "LLM" here is a script, a stand-in for an LLM, not a model.** It proposes changes of
structure from a fixed catalogue of ideas; each idea brings in a new knob whose first value
is a plausible but poor guess (as an LLM's constants often are). Once the catalogue is
spent it does what an LLM tends to do next: it re-tries a discarded idea with another
guessed value, or nudges a constant by a guessed factor. It never sees the landscape.

The landscape (``value``; lower is better, noise sigma ``NOISE`` per run):

- three existing knobs (LR, WD, WARMUP), each a bowl in log10 space around its optimum:
  ``a * log10(v / opt)^2``; tuning them well gains about 0.15;
- twelve ideas per seed; an idea present in the file changes the value by
  ``-g * (1 - (d / 0.35)^2)``, where ``d = |log10(scale / opt)|`` is how far its knob is from
  its optimum. Eight ideas are good (``g`` 0.03 to 0.12), four are duds (``g`` = -0.02:
  worse whatever the knob). The script's first value is 0.5 to 1.0 decades off for nine
  ideas in ten (so the idea, measured as proposed, is worse than without it), and within
  0.15 decades for the rest.

Each run goes through the real loop (``ResearchLoop``: baseline, noise, the keep rule with
its confirmation runs), the real Optuna proposer (TPE, its study on disk) and the real
hybrid proposer; only the repository (in memory, real unified diffs) and the measurement
(the formula above) are stood in for. The gain is the noise-free value of the baseline
minus that of the final best.

    python benchmarks/hybrid.py                     # budgets 50 and 200, seeds 1-5
    python benchmarks/hybrid.py --budgets 50 --seeds 1 2 3
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from fakes import FakeClock, FakeRepo, MemoryJournal, fake_settings  # noqa: E402

from pytest_autoresearch.program.program_md import Program  # noqa: E402
from pytest_autoresearch.proposers.base import Proposal, ProposerError  # noqa: E402
from pytest_autoresearch.proposers.hybrid import HybridProposer  # noqa: E402
from pytest_autoresearch.proposers.optuna import OptunaProposer  # noqa: E402
from pytest_autoresearch.research.loop import ResearchLoop  # noqa: E402
from pytest_autoresearch.sandbox.evaluate import Evaluation, MetricValue  # noqa: E402

MODEL = "model.py"
NOISE = 0.003
WIDTH = 0.35  # decades: an idea's knob this far from its optimum cancels its gain
KNOBS = {  # name: (start, optimum, weight per decade^2, int?)
    "LR": (0.3, 0.05, 0.1, False),
    "WD": (0.001, 0.01, 0.05, False),
    "WARMUP": (40, 10, 0.1, True),
}
IDEAS = 12
START = """\
# A model whose structure and numbers are being researched (synthetic).
LR = 0.3
WD = 0.001
WARMUP = 40

# -- ideas below --
"""


def catalogue(seed: int) -> list[dict]:
    """The seed's ideas: gain, knob optimum and the script's first guess for it."""
    rng = random.Random(f"ideas:{seed}")
    ideas = []
    good = set(rng.sample(range(IDEAS), 8))
    for j in range(IDEAS):
        opt = 10 ** rng.uniform(-2, 1)
        if rng.random() < 0.1:
            off = rng.uniform(-0.15, 0.15)
        else:
            off = rng.choice((-1, 1)) * rng.uniform(0.5, 1.0)
        ideas.append(
            {
                "j": j,
                "gain": rng.uniform(0.03, 0.12) if j in good else -0.02,
                "opt": opt,
                "first": float(f"{opt * 10**off:.3g}"),
            }
        )
    return ideas


def knob_values(source: str) -> dict[str, float]:
    return {
        k: float(v) for k, v in re.findall(r"^([A-Z_0-9]+) = ([-+0-9.e]+)", source, re.MULTILINE)
    }


def true_value(source: str, ideas: list[dict]) -> float:
    """The landscape, without noise."""
    knobs = knob_values(source)
    value = 1.0
    for name, (_start, opt, weight, _int) in KNOBS.items():
        v = max(knobs.get(name, opt), 1e-12)
        value += weight * math.log10(v / opt) ** 2
    for idea in ideas:
        j = idea["j"]
        if f"USE_IDEA_{j} = True" not in source:
            continue
        scale = max(knobs.get(f"IDEA_{j}_SCALE", idea["first"]), 1e-12)
        d = abs(math.log10(scale / idea["opt"]))
        value -= idea["gain"] * (1 - (d / WIDTH) ** 2) if idea["gain"] > 0 else idea["gain"]
    return value


def idea_block(j: int, scale: float) -> str:
    """The idea's lines; its knob carries a range a decade either side of the guess, as the
    hybrid asks the LLM to write (the LLM-only loop ignores the comment)."""
    low, high = f"{scale / 10:.3g}", f"{scale * 10:.3g}"
    return (
        f"USE_IDEA_{j} = True\n"
        f"IDEA_{j}_SCALE = {scale!r}  # idea {j}'s new knob; search: log {low}..{high}\n"
    )


class ScriptedStructure:
    """The stand-in for an LLM: ideas from the catalogue first, then guesses."""

    name = "scripted-llm"

    def __init__(self, ideas: list[dict], seed: int) -> None:
        self.ideas = ideas
        self.rng = random.Random(f"llm:{seed}")
        self.order = list(range(IDEAS))
        self.rng.shuffle(self.order)
        self.tried: set[int] = set()

    def propose(self, ctx) -> Proposal:
        path = Path(ctx.root) / MODEL
        source = path.read_text()
        fresh = [j for j in self.order if j not in self.tried and f"USE_IDEA_{j} =" not in source]
        if fresh:
            j = fresh[0]
            self.tried.add(j)
            path.write_text(source + idea_block(j, self.ideas[j]["first"]))
            return Proposal(f"idea {j}", extra={})
        absent = [j for j in self.order if f"USE_IDEA_{j} =" not in source]
        if absent and self.rng.random() < 0.5:
            j = self.rng.choice(absent)
            guess = float(f"{self.ideas[j]['first'] * 10 ** self.rng.uniform(-1, 1):.3g}")
            path.write_text(source + idea_block(j, guess))
            return Proposal(f"idea {j} again, scale {guess}", extra={})
        knobs = knob_values(source)
        name = self.rng.choice(sorted(knobs))
        old = knobs[name]
        new = old * 10 ** self.rng.uniform(-0.7, 0.7)
        new_text = str(max(1, round(new))) if name == "WARMUP" else f"{new:.3g}"
        if new_text == re.search(rf"^{name} = (\S+)", source, re.MULTILINE)[1]:
            raise ProposerError("the same value again")
        source = re.sub(rf"^{name} = \S+", f"{name} = {new_text}", source, flags=re.MULTILINE)
        path.write_text(source)
        return Proposal(f"{name} -> {new_text}", extra={})

    def repair(self, ctx, failure):
        return None

    def observe(self, ctx, proposal, outcome) -> None:
        pass

    def close(self) -> None:
        pass


class DiffRepo(FakeRepo):
    """The in-memory repository with real unified diffs, as git would record them."""

    def diff_text(self) -> str:
        base = self.commits[self.best]
        return "".join(
            "".join(
                difflib.unified_diff(
                    base.get(p, "").splitlines(True),
                    self.tree.get(p, "").splitlines(True),
                    f"a/{p}",
                    f"b/{p}",
                    n=2,
                )
            )
            for p in self._changed()
        )


class OnDisk:
    """Real proposers edit files on disk; the fake repository holds them in memory."""

    def __init__(self, inner, repo: FakeRepo, root: Path) -> None:
        self.inner, self.repo, self.root, self.name = inner, repo, root, inner.name

    def _around(self, call, *args):
        for rel, body in self.repo.tree.items():
            (self.root / rel).write_text(body)
        try:
            return call(*args)
        finally:
            for rel in self.repo.tree:
                self.repo.tree[rel] = (self.root / rel).read_text()

    def propose(self, ctx):
        return self._around(self.inner.propose, ctx)

    def repair(self, ctx, failure):
        return self._around(self.inner.repair, ctx, failure)

    def observe(self, ctx, proposal, outcome):
        self.inner.observe(ctx, proposal, outcome)

    def close(self):
        self.inner.close()


def run(strategy: str, budget: int, seed: int) -> dict:
    ideas = catalogue(seed)
    noise = random.Random(f"noise:{seed}:{strategy}:{budget}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / MODEL).write_text(START)
        repo = DiffRepo({MODEL: START})
        program = Program(
            path=root / "program.md", editable=(MODEL,), objective="value", baseline_runs=4
        )
        if strategy == "optuna":
            inner = OptunaProposer(seed=seed)
        elif strategy == "llm":
            inner = ScriptedStructure(ideas, seed)
        else:
            inner = HybridProposer(ScriptedStructure(ideas, seed), OptunaProposer(seed=seed))

        def evaluate(metric_args, guard_args, timeout) -> Evaluation:
            v = true_value(repo.tree[MODEL], ideas) + noise.gauss(0, NOISE)
            metric = MetricValue("value", v, [v], "min", None, None)
            return Evaluation("ok", {"value": metric}, guards_passed=True, duration=1.0)

        settings = fake_settings(root, program, budget, repair_attempts=0)
        settings.record_dir.mkdir(parents=True)
        journal = MemoryJournal()
        loop = ResearchLoop(
            settings, repo=repo, proposer=OnDisk(inner, repo, root), journal=journal,
            evaluate=evaluate, echo=lambda line: None, clock=FakeClock(),
        )  # fmt: skip
        loop.run()
        inner.close()
        recs = journal.of("experiment")
        final = repo.commits[repo.best][MODEL]
        gain = true_value(START, ideas) - true_value(final, ideas)
        by = {}
        for r in recs:
            half = r.get("made_by") or strategy
            by.setdefault(half, [0, 0])
            by[half][0] += 1
            by[half][1] += r["status"] == "keep"
        return {
            "gain": gain,
            "kept": sum(r["status"] == "keep" for r in recs),
            "experiments": len(recs),
            "duplicates": len(journal.of("duplicate")),
            "by": by,
            "ideas_kept": sum(f"USE_IDEA_{i['j']} = True" in final for i in ideas if i["gain"] > 0),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    args = parser.parse_args()
    print(f"machine: {platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}")  # fmt: skip
    for budget in args.budgets:
        means = {}
        for strategy in ("llm", "optuna", "hybrid"):
            t0 = time.perf_counter()
            results = [run(strategy, budget, seed) for seed in args.seeds]
            gains = [r["gain"] for r in results]
            means[strategy] = statistics.mean(gains)
            extra = ""
            if strategy == "hybrid":
                llm = sum(r["by"].get("llm", [0, 0])[0] for r in results) / len(results)
                opt = sum(r["by"].get("optuna", [0, 0])[0] for r in results) / len(results)
                extra = f"; llm made {llm:.1f}, optuna {opt:.1f} experiments on average"
            print(
                f"budget {budget:>3} {strategy:<7} gain mean {means[strategy]:.4f} "
                f"(per seed {', '.join(f'{g:.3f}' for g in gains)}); kept "
                f"{statistics.mean(r['kept'] for r in results):.1f}, good ideas in the best "
                f"{statistics.mean(r['ideas_kept'] for r in results):.1f}, duplicates sent back "
                f"{sum(r['duplicates'] for r in results)}{extra} "
                f"[{time.perf_counter() - t0:.0f}s]"
            )
        best_other = max(means["llm"], means["optuna"])
        ratio = means["hybrid"] / best_other if best_other > 0 else math.inf
        print(f"budget {budget:>3}: hybrid / better of the two = {ratio:.2f}x")


if __name__ == "__main__":
    main()
