"""benchmarks/nanochat_gpu.py runs end to end in its CPU dry run (issue 10).

The GPU figures need a GPU; what can be checked here is that the one script a GPU session
will run works: every part, the per-part files, the merged JSON and the Markdown table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from nanochat_support import example_env, shared_cache

pytest.importorskip("torch")
pytest.importorskip("tiktoken")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "nanochat_gpu.py"


def _bench(tmp_path, tmp_path_factory, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path / "results"
    env = example_env(shared_cache(tmp_path_factory))
    env.pop("NANOCHAT_FORCE_CPU")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--out", str(out), *args],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, out


@pytest.mark.slow
def test_dry_run_measures_the_metric_and_sweeps_batch_sizes(tmp_path, tmp_path_factory):
    proc, out = _bench(tmp_path, tmp_path_factory, "--parts", "env,metric,sweep",
                       "--batch-sizes", "8,16")  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    assert results["dry_run"] is True and results["env"]["cuda_available"] in (True, False)
    metric = results["metric"]
    assert metric["ok"] and metric["val_bpb"] > 0 and metric["evaluation_wall_s"] > 0
    rows = results["sweep"]["rows"]
    assert [r["device_batch_size"] for r in rows] == [8, 16]
    assert all(r["ok"] and r["mfu"] > 0 and r["tokens_per_s"] > 0 for r in rows)
    md = (out / "results.md").read_text()
    assert "## MFU against batch size" in md and "| val_bpb |" in md
    assert {p.name for p in out.iterdir()} >= {"part-env.json", "part-metric.json",
                                               "part-sweep.json", "results.md"}  # fmt: skip


@pytest.mark.slow
def test_dry_run_loop_smoke_test_journals_its_experiments(tmp_path, tmp_path_factory):
    _, out = _bench(tmp_path, tmp_path_factory, "--parts", "loop", "--loop-experiments", "1")
    loop = json.loads((out / "part-loop.json").read_text())
    assert loop["exit_code"] == 0, loop["terminal_tail"]
    assert len(loop["statuses"]) == 1 and loop["statuses"][0] in ("keep", "discard", "crash")
    assert "## Research loop smoke test" in (out / "results.md").read_text()


def test_bad_parts_say_what_to_choose(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--parts", "env,speed", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=60, env=dict(os.environ),
    )  # fmt: skip
    assert proc.returncode == 2
    assert "unknown part(s) speed: choose from env, metric, sweep, loop" in proc.stderr
