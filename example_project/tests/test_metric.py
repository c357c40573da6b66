"""The metric: train nanochat/train.py in a subprocess, then score the saved model here.

The decisive numbers (val_bpb, test_bpb) come from prepare.evaluate_bpb, which this
process runs on the checkpoint; nothing train.py prints is read. Speed and memory figures
come from the small stats file train.py writes: they are informative only.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from nanochat import prepare

from pytest_autoresearch import metric

ROOT = Path(__file__).resolve().parents[1]
GOALS = {
    "val_bpb": "min",
    "test_bpb": "min",  # the holdout: reported, never decides
    "peak_vram_gb": "min",
    "mfu": "max",
    "tokens_per_s": "max",
    "num_params_m": "min",
    "num_steps": "max",
}
UNITS = {"val_bpb": "bits/byte", "test_bpb": "bits/byte", "peak_vram_gb": "GB"}
STARTUP_SLACK = {"cpu": 25.0, "gpu": 300.0}  # imports, data loading, compilation, saving
STATS_KEYS = ("tokens_per_s", "mfu", "peak_vram_gb", "num_params_m", "num_steps")


def train_and_score(profile_name: str, tmp_path: Path) -> dict[str, float]:
    """Run one training subprocess for the profile's budget and score its checkpoint."""
    t_start = time.monotonic()
    profile = prepare.get_profile(profile_name)
    data = prepare.load_data(profile)  # built (and cached) here, outside the training clock
    ckpt, stats_file = tmp_path / "model.pt", tmp_path / "stats.json"
    env = dict(os.environ, NANOCHAT_PROFILE=profile.name, PYTHONPATH=str(ROOT))
    env.pop("NANOCHAT_TIME_BUDGET", None)  # the metric always trains for the real budget
    timeout = profile.time_budget + STARTUP_SLACK[profile.name]
    cmd = [sys.executable, "-m", "nanochat.train", "--out", str(ckpt), "--stats", str(stats_file)]
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"training ran past {timeout:.0f}s (budget {profile.time_budget:.0f}s + "
            f"{STARTUP_SLACK[profile.name]:.0f}s start-up): train.py must stop at its budget"
        )
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        pytest.fail(f"training exited with status {proc.returncode}:\n{tail}")
    if not ckpt.exists():
        pytest.fail(f"training finished but saved no model at {ckpt}")

    device = "cuda" if profile.name == "gpu" else "cpu"
    model = prepare.load_model(ckpt, device)
    result = {
        "val_bpb": prepare.evaluate_bpb(model, data, "val", device),
        "test_bpb": prepare.evaluate_bpb(model, data, "holdout", device),
    }
    stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
    for key in STATS_KEYS:
        value = stats.get(key)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            pytest.fail(f"{stats_file.name} has no finite {key!r} (got {value!r})")
        result[key] = float(value)

    elapsed = time.monotonic() - t_start
    assert elapsed < profile.max_eval_seconds, (
        f"the {profile.name} metric took {elapsed:.1f}s, over its {profile.max_eval_seconds:.0f}s "
        "limit: make training or evaluation cheaper"
    )
    return result


@pytest.mark.skipif(
    torch.cuda.is_available() and not os.environ.get("NANOCHAT_FORCE_CPU"),
    reason="CUDA is available, so test_train_gpu measures; set NANOCHAT_FORCE_CPU=1 to run this",
)
@metric(goal=GOALS, unit=UNITS)
def test_train_cpu(tmp_path):
    """The tiny CPU configuration: learns in well under a minute on 2 cores."""
    return train_and_score("cpu", tmp_path)


@pytest.mark.skipif(
    not torch.cuda.is_available() or bool(os.environ.get("NANOCHAT_FORCE_CPU")),
    reason="no CUDA device: the GPU metric (depth 8, 5-minute budget) needs one; "
    "test_train_cpu measures the CPU configuration instead",
)
@metric(goal=GOALS, unit=UNITS)
def test_train_gpu(tmp_path):
    """The full configuration: depth 8, 5-minute budget, one GPU."""
    return train_and_score("gpu", tmp_path)
