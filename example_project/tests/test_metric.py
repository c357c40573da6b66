"""The metric: train nanochat/train.py in a sandbox, then score the exported model here.

The decisive numbers (val_bpb, test_bpb) come from prepare.evaluate_bpb, which this
process runs on the graph train.py exported (ATen operators and tensors: no Python code).
train.py is never imported into this process, so nothing it does at import or at run time
can change how the score is computed; nothing it prints is read.

Training runs under `run_untrusted`: the data cache (train, validation and holdout splits,
the raw corpus) is hidden from it, so it cannot read the answer key; it gets its training
batches from this process, which counts every token taken. Its budget is checked here, by
what this process measures: FLOPs = tokens served x FLOPs per token of the exported model,
and the CPU time of the whole process tree (CPU profile); the wall clock from its first to
its last batch, and from there to its exit (GPU profile). A run that spends clearly more
than its budget is a failure with the reason, never a score. Speed and memory figures come
from the small stats file train.py writes: they are informative only.

NANOCHAT_TRUST_TRAINER=1 turns all of that off (a plain subprocess that reads the cache and
counts its own budget): for the attack tests' controls, never for research.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
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
TRUSTING = os.environ.get("NANOCHAT_TRUST_TRAINER", "") not in ("", "0")


def _run_trusted(cmd: list[str], env: dict[str, str], timeout: float):
    """The control: a plain subprocess that reads the cache and counts its own budget."""
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"training ran past {timeout:.0f}s: train.py must stop at its budget")
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return proc.returncode, out, None


def _warm_flop_counter() -> threading.Thread:
    """Import what PyTorch's FLOP counter needs (torch._dynamo: about 2 s on one core) in a
    thread, while train.py starts up on the other core: counting the FLOPs of the exported
    model after training then takes milliseconds. Nothing here changes what is measured."""

    def warm() -> None:
        with contextlib.suppress(Exception):  # the count itself will say what is wrong
            import torch._dynamo  # noqa: F401

    thread = threading.Thread(target=warm, name="warm-flop-counter", daemon=True)
    thread.start()
    return thread


def _run_sandboxed(cmd, env, data, budget, wall_limit, out_dir: Path):
    """Training under run_untrusted, fed by the harness; (returncode, log, what it spent)."""
    from pytest_autoresearch import UntrustedError, run_untrusted

    _warm_flop_counter()
    server = prepare.BatchServer(data)
    env = dict(env, **{prepare.STREAM_ENV: "stdin"})
    limits = dict(cwd=ROOT, env=env, input=server.read_fd, network=False, writable=[out_dir],
                  cpu_limit=prepare.cpu_ceiling(budget), wall_limit=wall_limit)  # fmt: skip
    start = time.monotonic()
    try:
        try:
            run = run_untrusted(cmd, hide=[prepare.cache_dir()], **limits)
        except UntrustedError as exc:
            # No namespaces here (macOS, a locked-down container): the budget is still
            # measured, but the data cache stays readable. Said, never silent.
            warnings.warn(f"the data cache is readable by train.py here: {exc}", stacklevel=2)
            run = run_untrusted(cmd, **limits)
    finally:
        served = server.finish()
    log = run.stdout + run.stderr
    if run.status in ("cpu_limit", "wall_limit"):
        pytest.fail(
            f"training was stopped by the harness: it {run.reason} ({budget.describe()} "
            f"budget): train.py must stop when the budget is spent\n{_tail(log)}"
        )
    end = start + run.wall_s
    first = served["first_take"] if served["first_take"] is not None else start
    last = served["last_take"] if served["last_take"] is not None else end
    served.update(seconds=last - first, tail=end - last, cpu_s=run.cpu_s)
    return run.returncode, log, served


def _tail(log: str, lines: int = 30) -> str:
    return "\n".join(log.splitlines()[-lines:])


def train_and_score(profile_name: str, tmp_path: Path, attach=None) -> dict[str, float]:
    """Run one sandboxed training for the profile's budget, check what it spent, score it."""
    t_start = time.monotonic()
    profile = prepare.get_profile(profile_name)
    data = prepare.load_data(profile)  # built (and cached) here, outside the training clock
    ckpt, stats_file = tmp_path / "model.pt", tmp_path / "stats.json"
    env = dict(os.environ, NANOCHAT_PROFILE=profile.name, PYTHONPATH=str(ROOT))
    env.pop(prepare.STREAM_ENV, None)
    # NANOCHAT_TIME_BUDGET / NANOCHAT_FLOP_BUDGET (smoke runs) reach train.py as they are,
    # so baseline and experiments of one run train for the same budget.
    budget = prepare.training_budget(profile)
    wall_limit = profile.max_eval_seconds
    if budget.kind == "time":
        wall_limit = budget.amount * prepare.BUDGET_TOLERANCE + profile.untimed_allowance
        wall_limit += profile.export_allowance + STARTUP_SLACK[profile.name]
    cmd = [sys.executable, "-m", "nanochat.train", "--out", str(ckpt), "--stats", str(stats_file)]
    if TRUSTING:  # only the profile's overall cap: the control measures nothing itself
        returncode, log, spent = _run_trusted(cmd, env, profile.max_eval_seconds)
    else:
        returncode, log, spent = _run_sandboxed(cmd, env, data, budget, wall_limit, tmp_path)
    if attach is not None:
        attach("train_log", log)
    if returncode != 0:
        pytest.fail(f"training exited with status {returncode}:\n{_tail(log)}")
    if not ckpt.exists():
        pytest.fail(f"training finished but saved no model at {ckpt}")

    assert "nanochat.train" not in sys.modules, (
        "train.py was imported into the process that computes val_bpb: its code could change "
        "the score. Import it only in subprocesses; score what it exports."
    )
    device = "cuda" if profile.name == "gpu" else "cpu"
    model = prepare.load_model(ckpt, device)
    if spent is not None:
        spent["flops_per_token"] = prepare.train_flops_per_token(model, profile, device)
        reason = prepare.overspend(budget, profile, spent)
        if reason:
            pytest.fail(reason)
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


def _attach(request):
    """The record_artifact fixture where this pytest-autoresearch has it, else None."""
    try:
        return request.getfixturevalue("record_artifact")
    except pytest.FixtureLookupError:
        return None


@pytest.mark.skipif(
    torch.cuda.is_available() and not os.environ.get("NANOCHAT_FORCE_CPU"),
    reason="CUDA is available, so test_train_gpu measures; set NANOCHAT_FORCE_CPU=1 to run this",
)
@metric(goal=GOALS, unit=UNITS)
def test_train_cpu(tmp_path, request):
    """The tiny CPU configuration: a fixed FLOP budget, so the same code scores the same."""
    return train_and_score("cpu", tmp_path, _attach(request))


@pytest.mark.skipif(
    not torch.cuda.is_available() or bool(os.environ.get("NANOCHAT_FORCE_CPU")),
    reason="no CUDA device: the GPU metric (depth 8, 5-minute budget) needs one; "
    "test_train_cpu measures the CPU configuration instead",
)
@metric(goal=GOALS, unit=UNITS)
def test_train_gpu(tmp_path, request):
    """The full configuration: depth 8, 5-minute budget, one GPU."""
    return train_and_score("gpu", tmp_path, _attach(request))
