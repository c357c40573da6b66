"""Time the nanochat example's CPU metric and measure its run-to-run noise.

Usage:
    python benchmarks/nanochat_cpu.py [--runs 3] [--json out.json]

Each run is the real thing: `pytest tests/test_metric.py::test_train_cpu` in a copy of
example_project/ (offline corpus, private cache), read back through --metrics-json. The
first run also builds the cache; its prepare time is reported on its own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "example_project"
NODE = "tests/test_metric.py::test_train_cpu"


def one_run(project: Path, env: dict[str, str], out: Path) -> dict:
    """One pytest session of the CPU metric; its figures from the metrics JSON."""
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "autoresearch", f"--metrics-json={out}",
         "-p", "no:cacheprovider", "-q", NODE],
        cwd=project, env=env, capture_output=True, text=True,
    )  # fmt: skip
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"the CPU metric failed:\n{proc.stdout[-3000:]}{proc.stderr[-1000:]}")
    report = json.loads(out.read_text())
    values = {m["name"]: m["value"] for m in report["metrics"]}
    test = next(t for t in report["tests"] if t["nodeid"] == NODE)
    return {"session_wall_s": wall, "metric_test_s": test["duration"], **values}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    with tempfile.TemporaryDirectory(prefix="nanochat-cpu-") as tmp:
        project = Path(
            shutil.copytree(
                EXAMPLE,
                Path(tmp) / "example_project",
                ignore=shutil.ignore_patterns("__pycache__", "*.pt"),
            )
        )
        env = dict(
            os.environ,
            NANOCHAT_CACHE=str(Path(tmp) / "cache"),
            NANOCHAT_DATA="stdlib",
            NANOCHAT_FORCE_CPU="1",
            PYTHONPATH=str(project),
        )
        env.pop("NANOCHAT_TIME_BUDGET", None)
        t0 = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "nanochat.prepare"],
            cwd=project,
            env=env,
            check=True,
            capture_output=True,
        )
        prepare_s = time.monotonic() - t0
        runs = []
        for i in range(args.runs):
            runs.append(one_run(project, env, Path(tmp) / f"run{i}.json"))
            r = runs[-1]
            print(
                f"run {i + 1}: val_bpb {r['val_bpb']:.4f}  test_bpb {r['test_bpb']:.4f}  "
                f"steps {r['num_steps']:.0f}  metric {r['metric_test_s']:.1f}s  "
                f"session {r['session_wall_s']:.1f}s"
            )
    vals = [r["val_bpb"] for r in runs]
    summary = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpu_count": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0],
        "first_prepare_s": prepare_s,
        "val_bpb_median": statistics.median(vals),
        "val_bpb_stdev": statistics.stdev(vals) if len(vals) > 1 else 0.0,
        "metric_test_s_max": max(r["metric_test_s"] for r in runs),
        "runs": runs,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
