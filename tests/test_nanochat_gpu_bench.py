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
def test_dry_run_of_every_part(tmp_path, tmp_path_factory):
    """env, metric, a one-size sweep and a one-experiment loop: the smallest whole run."""
    _, out = _bench(tmp_path, tmp_path_factory, "--batch-sizes", "8", "--loop-experiments", "1")
    results = json.loads((out / "results.json").read_text())
    assert results["dry_run"] is True and results["env"]["cuda_available"] in (True, False)
    metric = results["metric"]
    assert metric["ok"] and metric["val_bpb"] > 0 and metric["evaluation_wall_s"] > 0
    (row,) = results["sweep"]["rows"]
    assert row["device_batch_size"] == 8 and row["ok"] and row["mfu"] > 0
    loop = results["loop"]
    assert loop["exit_code"] == 0, loop["terminal_tail"]
    assert len(loop["statuses"]) == 1 and loop["statuses"][0] in ("keep", "discard", "crash")
    md = (out / "results.md").read_text()
    for heading in ("## Metric", "## MFU against batch size", "## Research loop smoke test"):
        assert heading in md
    assert {p.name for p in out.iterdir()} >= {f"part-{p}.json" for p in
                                               ("env", "metric", "sweep", "loop")}  # fmt: skip


def test_bad_parts_say_what_to_choose(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--parts", "env,speed", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=60, env=dict(os.environ),
    )  # fmt: skip
    assert proc.returncode == 2
    assert "unknown part(s) speed: choose from env, metric, sweep, loop" in proc.stderr
