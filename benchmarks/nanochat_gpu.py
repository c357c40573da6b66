"""Benchmark the nanochat example's full configuration: MFU, tokens/s, peak memory, val_bpb.

Usage:
    python benchmarks/nanochat_gpu.py                          # GPU profile, 300 s budget
    python benchmarks/nanochat_gpu.py --device cpu --budget 5  # smoke run of the same path
    python benchmarks/nanochat_gpu.py --json out.json

It trains example_project/nanochat/train.py in a subprocess for the budget (as the
metric test does), then scores the checkpoint with the harness's evaluate_bpb here.
The CUDA run uses the "gpu" profile (depth 8, seq 2048, vocab 8192, bf16, torch.compile);
--device cpu uses the tiny "cpu" profile so the whole path can be checked anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "example_project"


def run(device: str, budget: float | None, data: str | None) -> dict:
    """Train once for the budget, score the checkpoint, return every figure."""
    import torch

    sys.path.insert(0, str(EXAMPLE))
    from nanochat import prepare

    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            "nanochat_gpu: no CUDA device here; run on a GPU machine, or smoke-test the same "
            "path with --device cpu --budget 5"
        )
    profile = prepare.get_profile("gpu" if device == "cuda" else "cpu")
    env = dict(os.environ, NANOCHAT_PROFILE=profile.name, PYTHONPATH=str(EXAMPLE))
    if data:
        env["NANOCHAT_DATA"] = data
        os.environ["NANOCHAT_DATA"] = data
    if budget is not None:
        env["NANOCHAT_TIME_BUDGET"] = str(budget)
    t0 = time.monotonic()
    prepared = prepare.load_data(profile)
    prepare_s = time.monotonic() - t0

    with tempfile.TemporaryDirectory(prefix="nanochat-bench-") as tmp:
        ckpt, stats_file = Path(tmp) / "model.pt", Path(tmp) / "stats.json"
        t1 = time.monotonic()
        cmd = [sys.executable, "-m", "nanochat.train", "--out", ckpt, "--stats", stats_file]
        proc = subprocess.run(cmd, cwd=EXAMPLE, env=env, text=True, capture_output=True)
        train_wall = time.monotonic() - t1
        if proc.returncode != 0:
            raise SystemExit(f"training failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        stats = json.loads(stats_file.read_text())
        t2 = time.monotonic()
        model = prepare.load_model(ckpt, device)
        val = prepare.evaluate_bpb(model, prepared, "val", device)
        test = prepare.evaluate_bpb(model, prepared, "holdout", device)
        eval_s = time.monotonic() - t2

    return {
        "device": torch.cuda.get_device_name()
        if device == "cuda"
        else platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "profile": profile.name,
        "data": prepared.source,
        "budget_s": stats["time_budget"],
        "val_bpb": val,
        "test_bpb": test,
        "uniform_bpb": prepare.uniform_bpb(prepared),
        "mfu": stats["mfu"],
        "tokens_per_s": stats["tokens_per_s"],
        "peak_vram_gb": stats["peak_vram_gb"],
        "num_params_m": stats["num_params_m"],
        "num_steps": stats["num_steps"],
        "training_s": stats["training_seconds"],
        "train_process_wall_s": train_wall,
        "prepare_s": prepare_s,
        "eval_s": eval_s,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--budget", type=float, default=None, help="seconds (default: profile's)")
    parser.add_argument("--data", default=None, help="stdlib | tinyshakespeare | tinystories")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    # Before torch loads: OpenMP threads that spin while waiting stall on shared cores.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    figures = run(args.device, args.budget, args.data)
    width = max(map(len, figures))
    for key, value in figures.items():
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        print(f"{key:<{width}}  {shown}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
