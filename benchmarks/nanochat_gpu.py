"""The whole GPU measurement of the nanochat example, in one call (issue 10).

Usage:
    python benchmarks/nanochat_gpu.py --out gpu-results          # everything, ~25 min on an H100
    python benchmarks/nanochat_gpu.py --out gpu-results --parts env,metric   # ~8 min
    python benchmarks/nanochat_gpu.py --out gpu-results --parts sweep        # ~7 min
    python benchmarks/nanochat_gpu.py --out gpu-results --parts loop         # ~9 min
    python benchmarks/nanochat_gpu.py --dry-run --out /tmp/dry               # the same on CPU

Parts (each writes part-<name>.json in --out; results.json and results.md are rebuilt from
every part there, so parts can run in separate calls of a time-limited machine):
    env     torch / CUDA / driver / device, SDPA backends, the peak FLOP/s MFU divides by
    metric  the GPU metric test as the research loop runs it (pytest -m metric, 5-minute
            budget): val_bpb, test_bpb, MFU, tokens/s, peak memory, steps, and the wall time
            of the whole evaluation
    sweep   MFU, tokens/s, peak memory and compile time over DEVICE_BATCH_SIZE (a short
            wall-clock budget each)
    loop    `pytest --autoresearch` for a few experiments with NANOCHAT_TIME_BUDGET short, in
            a throwaway git repository: statuses, durations, and GPU memory left in use after

Everything runs on a copy of example_project/; nothing here is edited. --dry-run uses the
CPU profile with tiny FLOP budgets: it checks the script, not the hardware.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "example_project"
PARTS = ("env", "metric", "sweep", "loop")


def _copy_example(dest: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", ".pytest_cache", ".autoresearch", "*.pt")
    return Path(shutil.copytree(EXAMPLE, dest / "example_project", ignore=ignore))


def _env(args, project: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(project), OMP_WAIT_POLICY="PASSIVE")
    for key in ("NANOCHAT_TIME_BUDGET", "NANOCHAT_FLOP_BUDGET", "PYTEST_ADDOPTS"):
        env.pop(key, None)
    if args.data:
        env["NANOCHAT_DATA"] = args.data
    if args.dry_run:
        env.update(NANOCHAT_FORCE_CPU="1", NANOCHAT_PROFILE="cpu")
    else:
        env["NANOCHAT_PROFILE"] = "gpu"
    return env


def _budget(args, seconds: float) -> dict[str, str]:
    """A short budget: wall clock on the GPU, FLOPs (a few steps) in a dry run."""
    return (
        {"NANOCHAT_FLOP_BUDGET": "2e10"} if args.dry_run else {"NANOCHAT_TIME_BUDGET": str(seconds)}
    )


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> tuple[int, str, float]:
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - t0


# -----------------------------------------------------------------------------
# Parts


def part_env(args, project: Path) -> dict:
    import torch

    info = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "commit": _git_commit(),
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        sys.path.insert(0, str(project))
        from nanochat import prepare

        props = torch.cuda.get_device_properties(0)
        info.update(
            device=torch.cuda.get_device_name(0),
            capability=".".join(map(str, torch.cuda.get_device_capability(0))),
            memory_gb=round(props.total_memory / 1e9, 1),
            cudnn=torch.backends.cudnn.version(),
            sdpa_flash=torch.backends.cuda.flash_sdp_enabled(),
            sdpa_cudnn=torch.backends.cuda.cudnn_sdp_enabled(),
            sdpa_efficient=torch.backends.cuda.mem_efficient_sdp_enabled(),
            peak_flops=prepare.peak_flops("cuda"),
            peak_flops_source="datasheet"
            if prepare.datasheet_peak_flops(torch.cuda.get_device_name(0))
            else "measured",
        )
        smi = shutil.which("nvidia-smi")
        if smi:
            query = "--query-gpu=driver_version,power.limit,clocks.max.sm"
            out = subprocess.run(
                [smi, query, "--format=csv,noheader"], capture_output=True, text=True
            )
            info["nvidia_smi"] = out.stdout.strip()
    elif not args.dry_run:
        raise SystemExit(
            "nanochat_gpu: no CUDA device here; run on a GPU machine, or check the script "
            "with --dry-run (CPU profile, tiny budgets)"
        )
    return info


def _git_commit() -> str | None:
    proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=EXAMPLE, capture_output=True,
                          text=True)  # fmt: skip
    return proc.stdout.strip() or None


def part_metric(args, project: Path) -> dict:
    """The metric test exactly as the loop runs it, then one direct run for compile time."""
    env = _env(args, project)
    if args.dry_run:
        env.update(_budget(args, 0))
    node = (
        "tests/test_metric.py::test_train_cpu"
        if args.dry_run
        else "tests/test_metric.py::test_train_gpu"
    )
    out = project.parent / "metric.json"
    cmd = [sys.executable, "-m", "pytest", "-p", "autoresearch", f"--metrics-json={out}",
           "-p", "no:cacheprovider", "-q", node]  # fmt: skip
    code, log, wall = _run(cmd, project, env, timeout=1200)
    if code != 0:
        return {"ok": False, "wall_s": wall, "log_tail": log[-3000:]}
    report = json.loads(out.read_text())
    metrics = {m["name"]: m["value"] for m in report["metrics"]}
    return {"ok": True, "evaluation_wall_s": wall, **metrics}


def _train_once(args, project: Path, extra: dict[str, str], tag: str) -> dict:
    env = {**_env(args, project), **extra}
    stats = project.parent / f"stats-{tag}.json"
    cmd = [sys.executable, "-m", "nanochat.train", "--out", str(project.parent / f"{tag}.pt"),
           "--stats", str(stats)]  # fmt: skip
    code, log, wall = _run(cmd, project, env, timeout=1200)
    if code != 0:
        return {"ok": False, "wall_s": wall, "log_tail": log[-2000:]}
    return {"ok": True, "process_wall_s": wall, **json.loads(stats.read_text())}


def part_sweep(args, project: Path) -> dict:
    """MFU against DEVICE_BATCH_SIZE, each a short run (compilation excluded from its clock)."""
    train_py = project / "nanochat" / "train.py"
    original = train_py.read_text()
    rows = []
    try:
        for batch in args.batch_sizes:
            train_py.write_text(
                re.sub(
                    r"^DEVICE_BATCH_SIZE = \d+",
                    f"DEVICE_BATCH_SIZE = {batch}",
                    original,
                    count=1,
                    flags=re.M,
                )  # fmt: skip
            )
            run = _train_once(args, project, _budget(args, args.sweep_budget), f"b{batch}")
            keep = ("ok", "mfu", "tokens_per_s", "peak_vram_gb", "num_steps", "warmup_seconds",
                    "training_seconds", "process_wall_s", "log_tail")  # fmt: skip
            rows.append({"device_batch_size": batch, **{k: run[k] for k in keep if k in run}})
    finally:
        train_py.write_text(original)
    return {"budget_s": None if args.dry_run else args.sweep_budget, "rows": rows}


def part_loop(args, project: Path) -> dict:
    """A short research loop in a throwaway repository; GPU memory in use afterwards."""
    repo = project
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "config", "user.name", "bench"],
                ["git", "config", "user.email", "bench@localhost"], ["git", "add", "-A"],
                ["git", "commit", "-q", "-m", "example"]):  # fmt: skip
        subprocess.run(cmd, cwd=repo, check=True, capture_output=True)
    env = {**_env(args, project), **_budget(args, args.loop_budget)}
    cmd = [sys.executable, "-m", "pytest", "-p", "autoresearch", "--autoresearch", "-n",
           str(args.loop_experiments),
           "--autoresearch-seed", "0", "--autoresearch-tag", "gpubench",
           "-p", "no:cacheprovider"]  # fmt: skip
    code, log, wall = _run(cmd, repo, env, timeout=3600)
    journal = repo / ".autoresearch" / "gpubench" / "experiments.jsonl"
    events = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()] \
        if journal.exists() else []  # fmt: skip
    experiments = [e for e in events if e.get("event") == "experiment"]
    result = {
        "exit_code": code,
        "wall_s": wall,
        "statuses": [e.get("status") for e in experiments],
        "evaluate_s": [
            round((e.get("durations") or {}).get("evaluate", 0.0), 1) for e in experiments
        ],
        "terminal_tail": log[-2500:],
    }
    try:
        import torch

        if torch.cuda.is_available():
            free, total = torch.cuda.mem_get_info()
            result["gpu_memory_in_use_after_gb"] = round((total - free) / 1e9, 2)
    except Exception as exc:  # a report, not a failure: say what happened
        result["gpu_memory_in_use_after_gb"] = f"unknown ({exc})"
    return result


# -----------------------------------------------------------------------------
# Results


def markdown(results: dict) -> str:
    env = results.get("env", {})
    lines = [f"# nanochat on {env.get('device', env.get('cpu', '?'))}"
             f"{' (dry run, CPU)' if results.get('dry_run') else ''}", "",
             f"Date {env.get('date', '?')}, torch {env.get('torch', '?')}, CUDA {env.get('cuda')}, "
             f"commit {str(env.get('commit'))[:10]}.", ""]  # fmt: skip
    metric = results.get("metric")
    if metric:
        lines += ["## Metric (as the research loop runs it)", "", "| figure | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in metric.items() if k != "log_tail"]
        lines.append("")
    sweep = results.get("sweep")
    if sweep:
        lines += ["## MFU against batch size", "",
                  "| DEVICE_BATCH_SIZE | MFU | tokens/s | peak GB | steps | compile s |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for r in sweep["rows"]:
            lines.append(f"| {r['device_batch_size']} | {_fmt(r.get('mfu'))} | "
                         f"{_fmt(r.get('tokens_per_s'))} | {_fmt(r.get('peak_vram_gb'))} | "
                         f"{r.get('num_steps')} | {_fmt(r.get('warmup_seconds'))} |")  # fmt: skip
        lines.append("")
    loop = results.get("loop")
    if loop:
        lines += ["## Research loop smoke test", "",
                  f"exit code {loop['exit_code']}, {loop['wall_s']:.0f}s, statuses "
                  f"{loop['statuses']}, evaluations {loop['evaluate_s']} s, GPU memory in use "
                  f"after: {loop.get('gpu_memory_in_use_after_gb')} GB", "",
                  "```", loop["terminal_tail"].strip()[-1500:], "```", ""]  # fmt: skip
    return "\n".join(lines)


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("nanochat-gpu-results"))
    parser.add_argument("--parts", default=",".join(PARTS), help=f"some of {','.join(PARTS)}")
    parser.add_argument("--dry-run", action="store_true", help="CPU profile, tiny budgets")
    parser.add_argument("--data", default=None, help="NANOCHAT_DATA for every run")
    parser.add_argument("--batch-sizes", default=None, help="sweep, e.g. 32,64,128")
    parser.add_argument("--sweep-budget", type=float, default=60.0, help="seconds per sweep run")
    parser.add_argument("--loop-budget", type=float, default=30.0, help="seconds per experiment")
    parser.add_argument("--loop-experiments", type=int, default=3)
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(
            f"unknown part(s) {', '.join(sorted(unknown))}: choose from {', '.join(PARTS)}"
        )
    default_sizes = "8,16" if args.dry_run else "32,64,128"
    args.batch_sizes = [int(b) for b in (args.batch_sizes or default_sizes).split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    runners = {"env": part_env, "metric": part_metric, "sweep": part_sweep, "loop": part_loop}
    for name in parts:
        with tempfile.TemporaryDirectory(prefix=f"nanochat-{name}-") as tmp:
            t0 = time.monotonic()
            print(f"nanochat_gpu: {name} ...", flush=True)
            result = runners[name](args, _copy_example(Path(tmp)))
            print(f"nanochat_gpu: {name} done in {time.monotonic() - t0:.0f}s", flush=True)
        (args.out / f"part-{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    results = {"dry_run": args.dry_run}
    for name in PARTS:
        path = args.out / f"part-{name}.json"
        if path.exists():
            results[name] = json.loads(path.read_text())
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "results.md").write_text(markdown(results) + "\n")
    print((args.out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
