"""The bundled nanochat example, run the way a user runs it: its own pytest session.

A copy of example_project/ runs its guard tests and its CPU metric (the real budget) in a
real pytest subprocess, offline, with a fresh data cache; the metric must come back through
the metrics JSON, learn (val_bpb well below an untrained model's) and stay inside its time.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from nanochat_support import EXAMPLE, copy_example, example_env

CPU_METRIC_LIMIT = 120.0  # seconds for training + scoring on 2 shared cores (profile's cap)
METRICS = ("val_bpb", "test_bpb", "peak_vram_gb", "mfu", "tokens_per_s", "num_params_m")


@pytest.mark.slow
def test_example_guards_and_cpu_metric(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("tiktoken")
    project = copy_example(tmp_path)
    env = example_env(tmp_path / "cache", NANOCHAT_DATA="stdlib")
    out = tmp_path / "metrics.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "autoresearch", f"--metrics-json={out}",
         "-p", "no:cacheprovider", "-q"],
        cwd=project, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    log = proc.stdout[-4000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, log
    report = json.loads(out.read_text())

    tests = {t["nodeid"]: t for t in report["tests"]}
    guards = [t for node, t in tests.items() if node.startswith("tests/test_guards.py")]
    assert len(guards) >= 10 and all(t["outcome"] == "passed" for t in guards), log
    assert tests["tests/test_metric.py::test_train_cpu"]["outcome"] == "passed", log
    assert tests["tests/test_metric.py::test_train_gpu"]["outcome"] == "skipped", log

    metrics = {m["name"]: m for m in report["metrics"]}
    for name in METRICS:
        assert metrics[name]["outcome"] == "passed", metrics[name]
        assert math.isfinite(metrics[name]["value"]), metrics[name]
    assert metrics["val_bpb"]["goal"] == "min" and metrics["mfu"]["goal"] == "max"
    assert metrics["num_steps"]["value"] >= 100  # the FLOP budget buys 136 steps
    assert metrics["peak_vram_gb"]["value"] == 0.0  # CPU: no device memory to report

    # "Learns": far below a model that spreads its bets evenly over the vocabulary.
    uniform = float(
        subprocess.run(
            [sys.executable, "-c",
             "from nanochat import prepare; print(prepare.uniform_bpb(prepare.load_data()))"],
            cwd=project, env=example_env(tmp_path / "cache", project, NANOCHAT_DATA="stdlib"),
            capture_output=True,
            text=True, check=True, timeout=120,
        ).stdout
    )  # fmt: skip
    assert 3.0 < uniform < 12.0
    val_bpb = metrics["val_bpb"]["value"]
    assert val_bpb < 0.8 * uniform, f"val_bpb {val_bpb:.3f} vs untrained {uniform:.3f}"
    assert val_bpb <= 2.7, f"the CPU demo should learn to 2.7 bits per byte, got {val_bpb:.4f}"
    assert abs(metrics["test_bpb"]["value"] - val_bpb) < 0.5 * val_bpb  # same model, other text

    duration = tests["tests/test_metric.py::test_train_cpu"]["duration"]
    assert duration < CPU_METRIC_LIMIT, f"the CPU metric took {duration:.1f}s"


def test_example_program_md_is_a_valid_program():
    from pytest_autoresearch.program.program_md import load_program

    program = load_program(EXAMPLE / "program.md", EXAMPLE)
    assert program.editable_files(EXAMPLE) == ["nanochat/train.py"]
    assert (program.objective, program.holdout) == ("val_bpb", "test_bpb")
    assert program.guards == ("tests/test_guards.py",)
    assert [c.text for c in program.constraints] == ["peak_vram_gb <= 70"]
    assert "simpler is better" in program.instructions.lower()


def test_example_hyperparameters_are_tunable_constants():
    from pytest_autoresearch.proposers.constants import find_constants

    source = (EXAMPLE / "nanochat" / "train.py").read_text()
    found = {c.name: c for c in find_constants(source, "nanochat/train.py")}
    for name in ("DEPTH", "MATRIX_LR", "EMBEDDING_LR", "WARMDOWN_RATIO", "DEVICE_BATCH_SIZE"):
        assert name in found and not (found[name].hint and found[name].hint.frozen), name
    assert found["HEAD_DIM"].hint.frozen and found["SEED"].hint.frozen
