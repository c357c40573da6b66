"""Loop overhead per experiment, and keep rate on a pure-noise objective, through the real loop.

Builds a throwaway git project whose metric returns at once (or pure noise), runs
``pytest --autoresearch`` on it with the built-in Optuna proposer, and reads the
journal: per-experiment wall time split into propose / evaluate / the rest.

    python benchmarks/loop_overhead.py                 # overhead, 30 experiments
    python benchmarks/loop_overhead.py --noise -n 100  # keep rate on pure noise
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONSTANT_METRIC = """
from pytest_autoresearch import metric
import knobs

@metric(goal="min")
def test_loss():
    return (knobs.A - 3.0) ** 2 + (knobs.B - 0.5) ** 2
"""

NOISE_METRIC = """
import random
from pytest_autoresearch import metric
import knobs

@metric(goal="min")
def test_loss():
    knobs.A, knobs.B  # the knobs do nothing: any "improvement" is luck
    return 1.0 + random.gauss(0.0, 0.01)
"""


def make_project(root: Path, noise: bool) -> None:
    files = {
        "program.md": "---\neditable: ['knobs.py']\nobjective: loss\n---\nTune A and B.\n",
        "pytest.ini": "[pytest]\ntestpaths = tests\npythonpath = .\n",
        "knobs.py": "A = 1.0  # search: -10..10\nB = 0.2  # search: 0.01..1\n",
        "tests/test_loss.py": NOISE_METRIC if noise else CONSTANT_METRIC,
        ".gitignore": ".autoresearch/\n__pycache__/\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    for cmd in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "-c", "user.email=b@x", "-c", "user.name=b", "add", "-A"],
        ["git", "-c", "user.email=b@x", "-c", "user.name=b", "commit", "-qm", "init"],
    ):
        subprocess.run(cmd, cwd=root, check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=30, help="experiments")
    ap.add_argument("--noise", action="store_true", help="pure-noise objective (keep rate)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_project(root, args.noise)
        t0 = time.perf_counter()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "--autoresearch",
                "-n",
                str(args.n),
                "--autoresearch-tag",
                "bench",
                "--autoresearch-proposer",
                "optuna",
                "--autoresearch-seed",
                str(args.seed),
                "-q",
            ],
            cwd=root,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:])
            raise SystemExit(f"the loop failed with exit code {proc.returncode}")
        recs = [
            json.loads(line)
            for line in (root / ".autoresearch/bench/experiments.jsonl").read_text().splitlines()
        ]
        exps = [r for r in recs if r.get("event") == "experiment"]
    totals = [r["durations"]["total"] for r in exps]
    evals = [r["durations"]["evaluate"] for r in exps]
    props = [r["durations"]["propose"] for r in exps]
    rest = [t - e - p for t, e, p in zip(totals, evals, props, strict=True)]
    kept = sum(r["status"] == "keep" for r in exps)
    print(f"machine: {platform.node()} {platform.machine()} python {platform.python_version()}")
    print(
        f"experiments: {len(exps)}  whole run: {wall:.1f}s  kept: {kept} ({kept / len(exps):.1%})"
    )
    print(
        f"per experiment, median: total {statistics.median(totals):.3f}s = "
        f"propose {statistics.median(props):.3f}s + evaluate (pytest subprocess) "
        f"{statistics.median(evals):.3f}s"
        f" + loop (git, scope, journal) {statistics.median(rest):.3f}s"
    )
    evaluations = sum(len(r.get("evaluations", [])) for r in exps)
    print(f"evaluations per experiment: {evaluations / len(exps):.2f}")


if __name__ == "__main__":
    main()
