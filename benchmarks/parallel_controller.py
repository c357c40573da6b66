"""The real parallel controller (``ResearchLoop``) at K = 1, 2, 8 and 64 simulated workers.

``benchmarks/parallel.py --simulate`` models the controller; this drives the real one:
``pytest_autoresearch.research.loop.ResearchLoop`` with the real keep rule, stale policy and
journal logic, over the in-memory fakes of ``tests/fakes.py`` (a repository of dict
commits, an executor of K workers in simulated time, evaluations of ~1 time unit with a
lognormal spread). The project has ten knobs, one file each; a proposal rewrites one knob.

Two objectives, sigma = 1:

- ``noise``: no change does anything; every keep is a false keep. The false-keep rate per
  experiment must stay under the keep rule's budget whatever K.
- ``gains``: 10% of proposals are real 2-sigma gains (a knob set to a good value).

Reported per K: experiments per time unit, evaluations per experiment, how many candidates
were re-based or went stale, and keeps (false ones for ``noise``).

    python benchmarks/parallel_controller.py --experiments 1000
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fakes import FakeExecutor, FakeRepo, MemoryJournal  # noqa: E402

from pytest_autoresearch.program.program_md import Program  # noqa: E402
from pytest_autoresearch.proposers.base import Proposal  # noqa: E402
from pytest_autoresearch.research.loop import (
    LoopSettings,  # noqa: E402
    ResearchLoop,  # noqa: E402
)

KNOBS = 10


class RandomProposer:
    """Rewrites one knob per proposal: a real gain with probability ``gain_rate``."""

    name = "random"

    def __init__(self, repo: FakeRepo, rng: random.Random, gain_rate: float) -> None:
        self.repo, self.rng, self.gain_rate = repo, rng, gain_rate
        self.count = 0

    def propose(self, ctx) -> Proposal:
        self.count += 1
        knob = self.rng.randrange(KNOBS)
        good = self.rng.random() < self.gain_rate
        self.repo.tree[f"k{knob}.py"] = f"V = {'GOOD' if good else 'NULL'}{self.count}\n"
        return Proposal(f"k{knob} {'good' if good else 'null'} #{self.count}")

    def repair(self, ctx, failure):
        return None

    def observe(self, ctx, proposal, outcome) -> None:
        pass

    def close(self) -> None:
        pass


def true_value(files: dict[str, str]) -> float:
    return -2.0 * sum(bool(re.search(r"GOOD", text)) for text in files.values())


def run(k: int, experiments: int, gain_rate: float, seed: int) -> dict:
    rng = random.Random(seed)
    repo = FakeRepo({f"k{i}.py": "V = START\n" for i in range(KNOBS)})
    executor = FakeExecutor(
        repo,
        true_value,
        k,
        noise=[rng.gauss(0, 1) for _ in range(20_000)],
        duration=lambda files: rng.lognormvariate(0, 0.3),
    )
    journal = MemoryJournal()
    root = Path(tempfile.mkdtemp(prefix="bench-controller-"))  # empty: globs stay cheap
    program = Program(
        path=root / "program.md",
        editable=tuple(f"k{i}.py" for i in range(KNOBS)),
        objective="loss",
        baseline_runs=8,
        timeout=60,
    )
    loop = ResearchLoop(
        LoopSettings(
            root=root,
            program=program,
            tag="sim",
            experiments=experiments,
            metric_args=["m"],
            record_dir=root / "sim",
            proposer_name="random",
        ),
        executor=executor,
        repo=repo,
        proposer=RandomProposer(repo, rng, gain_rate),
        journal=journal,
        echo=lambda line: None,
    )
    loop.run()
    recs = journal.of("experiment")
    base_time = 8 / k  # roughly what the baseline took; left out of the throughput
    evals = sum(len(r["evaluations"]) for r in recs)
    return {
        "k": k,
        "per_time": len(recs) / max(executor.now - base_time, 1e-9),
        "evals_per_exp": evals / len(recs),
        "rebased": sum(bool(r.get("rebased")) for r in recs) / len(recs),
        "stale": sum(r["status"] == "stale" for r in recs) / len(recs),
        "keeps": sum(r["status"] == "keep" for r in recs),
        "experiments": len(recs),
        "true_best": true_value(repo.commits[repo.best]),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiments", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", default="1,2,8,64")
    args = ap.parse_args()
    ks = [int(x) for x in args.workers.split(",")]
    for name, rate in (("noise", 0.0), ("gains", 0.1)):
        print(f"\nobjective: {name} ({args.experiments} experiments per K, seed {args.seed})")
        print(f"{'K':>4}{'exp/time':>10}{'speed-up':>10}{'evals/exp':>11}{'re-based':>10}"
              f"{'stale':>8}{'keeps':>7}{'keeps/exp':>11}{'true best':>11}")  # fmt: skip
        base = None
        for k in ks:
            r = run(k, args.experiments, rate, args.seed)
            base = base or r["per_time"]
            print(f"{k:>4}{r['per_time']:>10.2f}{r['per_time'] / base:>9.1f}x"
                  f"{r['evals_per_exp']:>11.2f}{r['rebased']:>10.3f}{r['stale']:>8.3f}"
                  f"{r['keeps']:>7}{r['keeps'] / r['experiments']:>11.4f}"
                  f"{r['true_best']:>11.1f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
