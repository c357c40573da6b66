"""What one evaluation of the bundled example costs through the loop, lean and not.

Usage:
    python benchmarks/example_eval.py [--rounds 4] [--json out.json]

Two fresh git repositories hold a copy of example_project/: one as it is (program.md says
`lean: true`, so evaluations load only our plugin) and one without that line (every
installed pytest plugin is imported by every evaluation). Each round runs
`pytest --autoresearch -n 1 --autoresearch-seed 1` once in each, interleaved, so drift in
the machine's load hits both alike (in the order A B, then B A, and so on), and reads the
seconds the loop prints for each baseline run and for the experiment (which includes its
proposal), and the CPU time (user + system) of the loop's whole process tree: 3
evaluations and the loop itself. On a shared VM the wall clock can change twofold within
minutes; the CPU time is the steadier figure. The data cache is prepared once and shared.
The figures depend on what is installed: the difference is what the plugins cost each
evaluation, paid again by every run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from quickstart_seeds import EXAMPLE, env_for, git, project

ARMS = ("lean", "all plugins")


def make_arm(root: Path, arm: str) -> Path:
    dest = project(root / arm.replace(" ", "-"))
    if arm == "all plugins":
        program = dest / "program.md"
        text, n = re.subn(r"^lean: true\n", "", program.read_text(), flags=re.M)
        if n != 1:
            raise SystemExit("example_project/program.md has no 'lean: true' line to take out")
        program.write_text(text)
        git(dest, "commit", "-q", "-am", "every plugin in evaluations")
    return dest


def one_run(dest: Path, env: dict[str, str], tag: str) -> dict:
    args = [sys.executable, "-m", "pytest", "--autoresearch", "-n", "1",
            "--autoresearch-seed", "1", "--autoresearch-tag", tag, "-p", "no:randomly"]  # fmt: skip
    proc = subprocess.Popen(args, cwd=dest, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)  # the loop's tree: what it waited for counts
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"the loop failed in {dest}:\n{out[-3000:]}")
    baseline = [
        float(s) for s in re.findall(r"baseline \d+/\d+: val_bpb \S+\s+\(([0-9.]+)s\)", out)
    ]
    experiment = re.search(r"^\[1/1\] .*\s(\d+)s$", out, flags=re.M)
    lean_line = next((line for line in out.splitlines() if line.startswith("lean:")), None)
    return {
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "baseline_s": baseline,
        "experiment_s": float(experiment.group(1)) if experiment else None,
        "lean_line": lean_line,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="example-eval-"))
    cache = root / "cache"
    env = env_for(cache)
    subprocess.run([sys.executable, "-m", "nanochat.prepare"], cwd=EXAMPLE, env=env,
                   check=True, capture_output=True)  # fmt: skip
    repos = {arm: make_arm(root, arm) for arm in ARMS}
    runs: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    for i in range(args.rounds):
        for arm in ARMS if i % 2 == 0 else ARMS[::-1]:
            run = one_run(repos[arm], env, f"r{i}")
            runs[arm].append(run)
            print(json.dumps({"round": i, "arm": arm, **run,
                              "load": round(os.getloadavg()[0], 1)}), flush=True)  # fmt: skip
    summary = {}
    for arm in ARMS:
        baseline = [s for run in runs[arm] for s in run["baseline_s"]]
        cpu = [run["cpu_s"] for run in runs[arm]]
        summary[arm] = {"baseline_runs": baseline, "median_s": statistics.median(baseline),
                        "experiments_s": [run["experiment_s"] for run in runs[arm]],
                        "cpu_s": cpu, "median_cpu_s": statistics.median(cpu)}  # fmt: skip
        print(
            f"{arm:12s} baseline runs {', '.join(f'{s:.1f}' for s in baseline)} s "
            f"(median {summary[arm]['median_s']:.1f} s); experiments "
            f"{', '.join(str(s) for s in summary[arm]['experiments_s'])} s; CPU per loop "
            f"run (3 evaluations) {', '.join(f'{s:.1f}' for s in cpu)} s"
        )
    lean, full = summary["lean"], summary["all plugins"]
    print(
        f"lean / all plugins: wall {lean['median_s'] / full['median_s']:.2f} "
        f"({full['median_s'] - lean['median_s']:.1f} s less per evaluation), CPU "
        f"{lean['median_cpu_s'] / full['median_cpu_s']:.2f} "
        f"({(full['median_cpu_s'] - lean['median_cpu_s']) / 3:.1f} s less per evaluation)"
    )
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "summary": summary}, indent=1))
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
