"""The example's CPU metric is deterministic (issue 8, item 3).

The CPU profile trains for a fixed budget of model FLOPs with a fixed thread count and a
seeded data order, so the same code gives the same val_bpb to the last digit whether the
machine is idle or busy. Here one run has the cores to itself and in the other every
training step shares them with busy loops; the numbers must be equal, not close.

The busy loops run while the training process does (from its start to its exit, export
included), not through the whole session: pytest's start, the imports and the cached data
decide nothing, and busy loops around them only took the cores from the rest of the suite.
Both runs are guards and metric in one session, as the research loop runs them; the idle
one is nanochat_support.honest_values, which the scorer's tests compare against too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from nanochat_support import (
    SMALL_BUDGET,
    copy_example,
    example_env,
    honest_values,
    metric_values,
    run_session,
    shared_cache,
)

pytest.importorskip("torch")
pytest.importorskip("tiktoken")


def _training(marker: bytes) -> bool:
    """Whether a `nanochat.train` process whose command line names ``marker`` is running."""
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes() if proc.name.isdigit() else b""
        except OSError:
            continue
        if b"nanochat.train" in cmdline and marker in cmdline:
            return True
    return False


class LoadWhileTraining(threading.Thread):
    """One busy loop per core for as long as the session's training process runs."""

    def __init__(self, marker: Path) -> None:
        super().__init__(name="load while training", daemon=True)
        self.marker = os.fsencode(marker)
        self.done = threading.Event()
        self.loaded_s = 0.0  # seconds the busy loops ran alongside training

    def run(self) -> None:
        while not self.done.is_set():
            if not _training(self.marker):
                time.sleep(0.1)
                continue
            busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                    for _ in range(os.cpu_count() or 2)]  # fmt: skip
            t0 = time.monotonic()
            try:
                while not self.done.is_set() and _training(self.marker):
                    time.sleep(0.1)
            finally:
                for p in busy:
                    p.kill()
                    p.wait()
                self.loaded_s += time.monotonic() - t0


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc to see training")
@pytest.mark.slow
def test_cpu_metric_is_identical_on_an_idle_and_a_loaded_machine(tmp_path, tmp_path_factory):
    # The idle run: guards and metric of the unchanged example, measured once per session.
    idle = honest_values(tmp_path_factory)
    project = copy_example(tmp_path)
    env = example_env(shared_cache(tmp_path_factory), NANOCHAT_FLOP_BUDGET=SMALL_BUDGET)
    # Its own basetemp: the session's training process names it (--out), so it is found.
    load = LoadWhileTraining(tmp_path / "session")
    load.start()
    try:
        proc, report = run_session(project, env, tmp_path / "loaded.json", "tests", "-x",
                                   f"--basetemp={load.marker.decode()}")  # fmt: skip
    finally:
        load.done.set()
        load.join()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    # Every step competed for the CPU: the busy loops ran for the whole training.
    assert load.loaded_s > 0, "the training process was never seen: nothing was loaded"
    loaded = metric_values(report)
    for name in ("val_bpb", "test_bpb", "num_steps", "num_params_m"):
        assert loaded[name] == idle[name], (name, idle[name], loaded[name])
    # The speed figures are measured, so they may differ; the score may not.
    assert idle["tokens_per_s"] > 0 and loaded["tokens_per_s"] > 0
