"""The metric: train nanochat/train.py in a subprocess, then score the exported model here.

The decisive numbers (val_bpb, test_bpb) come from prepare.evaluate_bpb, which this
process runs on the graph train.py exported (ATen operators and tensors: no Python code).
train.py is never imported into this process, so nothing it does at import or at run time
can change how the score is computed; nothing it prints is read. Speed and memory figures
come from the small stats file train.py writes: they are informative only.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
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
STATS_KEYS = ("tokens_per_s", "mfu", "peak_vram_gb", "num_steps")


def _run_training(cmd: list[str], env: dict[str, str], timeout: float):
    """The training process in a session of its own; whatever it leaves running is killed."""
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    finally:
        # A child that forked a helper must not outlive the run and touch the result.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def train_and_score(profile_name: str, tmp_path: Path) -> dict[str, float]:
    """Run one training subprocess for the profile's budget and score its checkpoint."""
    t_start = time.monotonic()
    profile = prepare.get_profile(profile_name)
    data = prepare.load_data(profile)  # built (and cached) here, outside the training clock
    ckpt, stats_file = tmp_path / "model.pt", tmp_path / "stats.json"
    env = dict(os.environ, NANOCHAT_PROFILE=profile.name, PYTHONPATH=str(ROOT))
    # NANOCHAT_TIME_BUDGET / NANOCHAT_FLOP_BUDGET (smoke runs) reach train.py as they are,
    # so baseline and experiments of one run train for the same budget. A time budget is
    # enforced here; a FLOP budget is counted by train.py, and this wall-clock cap stops a
    # run that ignores it (or is simply far too slow).
    budget = prepare.training_budget(profile)
    timeout = profile.max_eval_seconds
    if budget.kind == "time":
        timeout = budget.amount + STARTUP_SLACK[profile.name]
    cmd = [sys.executable, "-m", "nanochat.train", "--out", str(ckpt), "--stats", str(stats_file)]
    try:
        returncode, output = _run_training(cmd, env, timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"training ran past {timeout:.0f}s ({budget.describe()} budget): "
            "train.py must stop at its budget"
        )
    if returncode != 0:
        tail = "\n".join(output.splitlines()[-30:])
        pytest.fail(f"training exited with status {returncode}:\n{tail}")
    if not ckpt.exists():
        pytest.fail(f"training finished but saved no model at {ckpt}")

    assert "nanochat.train" not in sys.modules, (
        "train.py was imported into the process that computes val_bpb: its code could change "
        "the score. Import it only in subprocesses; score what it exports."
    )
    device = "cuda" if profile.name == "gpu" else "cpu"
    model = prepare.load_model(ckpt, device)
    result = {
        "val_bpb": prepare.evaluate_bpb(model, data, "val", device),
        "test_bpb": prepare.evaluate_bpb(model, data, "holdout", device),
        "num_params_m": model.num_params / 1e6,  # counted in the graph, not taken from stats
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
    """The tiny CPU configuration: a fixed FLOP budget, so the same code scores the same."""
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
