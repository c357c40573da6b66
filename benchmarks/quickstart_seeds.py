"""The README's quick start, seed by seed: does every seed keep a gain that re-measures?

Usage:
    python benchmarks/quickstart_seeds.py [--seeds default,1,2,...,10] [-n 10] [--jobs 2]
                                          [--loop-args '--autoresearch-workers 2']
                                          [--json out.json] [--keep-output DIR]

For each seed: a fresh git repository holding a copy of example_project/, then
`pytest --autoresearch -n 10 --autoresearch-workers 2` in it (with `--autoresearch-seed S`;
"default" passes none, so the seed is random), exactly as the quick start runs it
(`--loop-args ''` runs one experiment at a time instead). Then the metric test runs once
more on the research branch's head: on this deterministic metric it must give the best
value again. Reported per seed: experiments kept, baseline, best, re-measured value, the
loop's wall time and CPU time (user + system of its process tree), and the load average
when it ended. The data cache is prepared once and shared (the quick start prepares it on
first use; its preparation is not part of the loop's time). --jobs runs seeds side by side:
their wall times then say little, their CPU times still do.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "example_project"
NODE = "tests/test_metric.py::test_train_cpu"
QUICKSTART_ARGS = "--autoresearch-workers 2"  # the README's quick start: two in flight


def git(cwd: Path, *args: str) -> str:
    ident = ["-c", "user.name=bench", "-c", "user.email=bench@example.com"]
    return subprocess.run(["git", *ident, *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout  # fmt: skip


def env_for(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("NANOCHAT_PROFILE", "NANOCHAT_TIME_BUDGET", "NANOCHAT_FLOP_BUDGET",
                "PYTEST_ADDOPTS", "ANTHROPIC_API_KEY", "OPENAI_API_KEY"):  # fmt: skip
        env.pop(key, None)
    env.update(NANOCHAT_CACHE=str(cache), NANOCHAT_FORCE_CPU="1")
    return env


def project(root: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", ".pytest_cache", ".autoresearch", "*.pt")
    dest = Path(shutil.copytree(EXAMPLE, root / "example_project", ignore=ignore))
    git(dest, "init", "-q", "-b", "main")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "the example")
    return dest


def remeasure(dest: Path, env: dict[str, str], ref: str) -> float:
    """The metric on ``ref``'s files, in a separate worktree of the research repository."""
    tree = dest.parent / "remeasure"
    git(dest, "worktree", "add", "-q", "--detach", str(tree), ref)
    out = tree / "metrics.json"
    subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", NODE,
                    f"--metrics-json={out}"], cwd=tree, env=env, capture_output=True,
                   text=True, check=True)  # fmt: skip
    metrics = json.loads(out.read_text())["metrics"]
    return next(m["value"] for m in metrics if m["name"] == "val_bpb")


def one_seed(seed: str, n: int, cache: Path, keep: Path | None, extra: list[str]) -> dict:
    root = Path(tempfile.mkdtemp(prefix=f"quickstart-{seed}-"))
    dest = project(root)
    env = env_for(cache)
    args = [sys.executable, "-m", "pytest", "--autoresearch", "-n", str(n)]
    if seed != "default":
        args += ["--autoresearch-seed", seed]
    args += extra
    t0 = time.monotonic()
    proc = subprocess.Popen(args, cwd=dest, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    out = proc.stdout.read()
    # The loop's process tree: wait4's rusage of this child and what it waited for.
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if keep is not None:
        (keep / f"seed-{seed}.txt").write_text(out)
    kept = re.search(r"experiments: \d+ \(.*?\); kept (\d+)", out)
    base = re.search(r"baseline val_bpb ([0-9.]+)", out)
    best = re.search(r"-> best ([0-9.]+)", out)
    tag = re.search(r"branch: autoresearch/(\S+)", out)
    row = {"seed": seed, "returncode": proc.returncode, "wall_s": round(wall, 1),
           "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
           "kept": int(kept.group(1)) if kept else None,
           "baseline": float(base.group(1)) if base else None,
           "best": float(best.group(1)) if best else None,
           "load": round(os.getloadavg()[0], 1)}  # fmt: skip
    if tag and row["kept"]:
        records = dest / ".autoresearch" / tag.group(1) / "experiments.jsonl"
        lines = [json.loads(x) for x in records.read_text().splitlines() if x.strip()]
        kept_values = [x["objective"] for x in lines
                       if x.get("event") == "experiment" and x.get("status") == "keep"]  # fmt: skip
        row["best_journaled"] = min(kept_values) if kept_values else None
        row["remeasured"] = remeasure(dest, env, f"autoresearch/{tag.group(1)}")
    shutil.rmtree(root, ignore_errors=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="default," + ",".join(str(i) for i in range(1, 11)))
    parser.add_argument("-n", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep-output", type=Path, help="folder for each run's terminal output")
    parser.add_argument(
        "--loop-args",
        default=QUICKSTART_ARGS,
        help=f"the loop's options besides -n and the seed (default: the "
        f"README's, {QUICKSTART_ARGS!r}; '' for one worker)",
    )
    args = parser.parse_args(argv)
    extra = args.loop_args.split()
    cache = Path(tempfile.mkdtemp(prefix="quickstart-cache-"))
    subprocess.run([sys.executable, "-m", "nanochat.prepare"], cwd=EXAMPLE, env=env_for(cache),
                   check=True, capture_output=True)  # fmt: skip
    if args.keep_output:
        args.keep_output.mkdir(parents=True, exist_ok=True)
    seeds = [s.strip() for s in args.seeds.split(",") if s.strip()]
    rows = []
    with ThreadPoolExecutor(args.jobs) as pool:
        for row in pool.map(lambda s: one_seed(s, args.n, cache, args.keep_output, extra), seeds):
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    shutil.rmtree(cache, ignore_errors=True)
    bad = [r["seed"] for r in rows
           if not r["kept"] or r.get("remeasured") != r.get("best_journaled")]  # fmt: skip
    print(f"seeds without a kept gain that re-measures: {bad or 'none'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
