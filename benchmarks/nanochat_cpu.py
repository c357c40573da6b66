"""Time the nanochat example's evaluation and check that its CPU metric does not move.

Usage:
    python benchmarks/nanochat_cpu.py [--runs 3] [--loaded] [--json out.json]

Each run is one evaluation as the research loop runs it: `pytest tests/test_metric.py::
test_train_cpu tests/test_guards.py` in a copy of example_project/ (offline corpus,
private cache), read back through --metrics-json. Reported per run: the baseline's val_bpb
(which must be identical run to run), the training seconds, the model FLOP/s (FLOPs per
token of the default model, counted by PyTorch, times the tokens per second) and its share
of the fp32 matmul peak measured in the same run (the metric's `mfu`), the metric test's
and the session's wall time, and the session's CPU time (user + system of the whole
process tree). --loaded runs every other evaluation beside one busy loop per core. The
first prepare is timed apart.
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
REPO = EXAMPLE.parent
FLOPS_PER_TOKEN = (  # of the default model, counted like train.py counts them
    "from nanochat import prepare, train; p = prepare.get_profile('cpu'); "
    "b = max(1, round(train.DEVICE_BATCH_SIZE * p.batch_scale)); "
    "print(train.count_step_flops(train.make_config(p), b) / (b * p.seq_len), b * p.seq_len)"
)


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


def with_flops(run: dict, per_token: float, tokens_per_step: int) -> dict:
    """Training seconds, model FLOP/s and the matmul peak it was measured against."""
    flops_per_s = run["tokens_per_s"] * per_token
    return {
        **run,
        "training_s": run["num_steps"] * tokens_per_step / run["tokens_per_s"],
        "model_flops_per_s": flops_per_s,
        "matmul_peak_flops": flops_per_s / run["mfu"],  # mfu = model FLOP/s / that peak
    }


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
            PYTHONPATH=os.pathsep.join([str(project), str(REPO)]),
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
        counted = subprocess.run(
            [sys.executable, "-c", FLOPS_PER_TOKEN],
            cwd=project, env=env, check=True, capture_output=True, text=True,
        ).stdout.split()  # fmt: skip
        per_token, tokens_per_step = float(counted[0]), int(counted[1])
        runs = []
        for i in range(args.runs):
            loaded = args.loaded and i % 2 == 1
            r = one_run(project, env, Path(tmp) / f"run{i}.json", loaded)
            runs.append(with_flops(r, per_token, tokens_per_step))
            r = runs[-1]
            print(
                f"run {i + 1}{' (loaded)' if loaded else ''}: val_bpb {r['val_bpb']!r}  "
                f"test_bpb {r['test_bpb']:.6f}  steps {r['num_steps']:.0f}  "
                f"training {r['training_s']:.1f}s at {r['model_flops_per_s'] / 1e9:.1f} GFLOP/s "
                f"({100 * r['mfu']:.0f}% of a {r['matmul_peak_flops'] / 1e9:.0f} GFLOP/s matmul)  "
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
        "flops_per_token": per_token,
        "training_s_median": statistics.median(r["training_s"] for r in runs),
        "model_flops_per_s_median": statistics.median(r["model_flops_per_s"] for r in runs),
        "mfu_median": statistics.median(r["mfu"] for r in runs),
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
