"""Time the nanochat example's evaluation and check that its CPU metric does not move.

Usage:
    python benchmarks/nanochat_cpu.py [--runs 3] [--loaded] [--json out.json]

Each run is one evaluation as the research loop runs it: `pytest tests/test_metric.py::
test_train_cpu tests/test_guards.py` in a copy of example_project/ (offline corpus,
private cache), read back through --metrics-json. Reported per run: wall time and CPU time
(user + system of the whole process tree, which load on a shared machine inflates far less
than wall time), and the metric values, which must be identical run to run. --loaded runs
every other evaluation beside one busy loop per core. The first prepare is timed apart.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "example_project"
NODE = "tests/test_metric.py::test_train_cpu"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def one_run(project: Path, env: dict[str, str], out: Path, loaded: bool = False) -> dict:
    """One evaluation (CPU metric + guards); its figures from the metrics JSON."""
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(os.cpu_count() or 2)] if loaded else []  # fmt: skip
    cpu0, t0 = _children_cpu(), time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "autoresearch", f"--metrics-json={out}",
             "-p", "no:cacheprovider", "-q", NODE, "tests/test_guards.py"],
            cwd=project, env=env, capture_output=True, text=True,
        )  # fmt: skip
        # Read before the busy loops are reaped: their CPU time would count otherwise.
        cpu = _children_cpu() - cpu0
    finally:
        for p in busy:
            p.kill()
            p.wait()
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"the CPU metric failed:\n{proc.stdout[-3000:]}{proc.stderr[-1000:]}")
    report = json.loads(out.read_text())
    values = {m["name"]: m["value"] for m in report["metrics"]}
    test = next(t for t in report["tests"] if t["nodeid"] == NODE)
    return {"session_wall_s": wall, "session_cpu_s": cpu, "loaded": loaded,
            "metric_test_s": test["duration"], **values}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--loaded", action="store_true", help="every other run beside busy loops")
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
        env.pop("NANOCHAT_FLOP_BUDGET", None)
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
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
            loaded = args.loaded and i % 2 == 1
            runs.append(one_run(project, env, Path(tmp) / f"run{i}.json", loaded))
            r = runs[-1]
            print(
                f"run {i + 1}{' (loaded)' if loaded else ''}: val_bpb {r['val_bpb']!r}  "
                f"test_bpb {r['test_bpb']:.6f}  steps {r['num_steps']:.0f}  "
                f"metric {r['metric_test_s']:.1f}s  session {r['session_wall_s']:.1f}s wall, "
                f"{r['session_cpu_s']:.1f}s CPU"
            )
    vals = [r["val_bpb"] for r in runs]
    summary = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpu_count": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0],
        "first_prepare_s": prepare_s,
        "val_bpb_median": statistics.median(vals),
        "val_bpb_stdev": statistics.stdev(vals) if len(vals) > 1 else 0.0,
        "val_bpb_identical": len(set(vals)) == 1,
        "session_cpu_s_median": statistics.median(r["session_cpu_s"] for r in runs),
        "metric_test_s_max": max(r["metric_test_s"] for r in runs),
        "runs": runs,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
