"""The example's answer key and budget belong to the harness, through the real loop (issue 20).

Each test runs `pytest --autoresearch` on a copy of example_project/ with a scripted
proposer whose experiments are the cheats an optimiser stumbles into:

- read the validation split and train on it ("use all the data");
- under-report its FLOPs 3x, so it trains three times longer ("train a bit longer");
- under a wall-clock budget (the GPU profile's kind, simulated on CPU with a few seconds),
  under-report its clock 6x.

With the harness's defences (training under run_untrusted with the data cache hidden,
batches served and counted by the harness, the budget checked on what it measured) the
split cannot be opened, and an overspending run is a crash with the reason. The control
(NANOCHAT_TRUST_TRAINER=1: a plain subprocess that reads the cache and counts its own
budget, as the example did before) shows each cheat is kept otherwise.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from attack_notes import note_prelude, read_notes
from nanochat_support import copy_example, example_env, shared_cache
from toyproject import CONFTEST, git, read_jsonl

from pytest_autoresearch.sandbox.isolation import IsolationSpec, make_launcher

pytest.importorskip("torch")
pytest.importorskip("tiktoken")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        make_launcher(IsolationSpec()).name != "namespaces", reason="no namespaces on this system"
    ),
]

TAG = "t1"
FLOP_BUDGET = "2e10"  # about 18 steps of the CPU profile
# Seconds. The cheat says its clock runs at a sixth of its speed, so it trains 18 s by its
# own clock; the harness allows 1.25 x 3 + 8 (the CPU profile's untimed allowance) = 11.75 s
# of batches, and sees at least the cheat's own 18 s less its last step: refused, whatever
# the load. (2 s would be refused too, 12 s against 10.5, but its fewer steps make val_bpb
# noisier on loaded cores: sigma 0.07 and 0.17 over 4 baseline runs at a load of 5-7 on 2
# cores, against 0.006 for 3 s at a load of 4; more runs of the cheat cost more than the 6 s
# each one saves.)
TIME_BUDGET = "3"
CLOCK_CHEAT = 6
# The control's baseline runs (program.md's baseline_runs: 2 in the example). The cheat gains
# ~0.5 bits per byte, and the keep rule keeps after one run a gain over
# t(1 - 0.0005, runs - 1) * sigma * sqrt(1 + 1/runs) (docs/keep-rule.md): 779 sigma with 2
# baseline runs, so the cheat was run 3 times (or 8 when noisy) before its 6
# re-measurements; 14.4 sigma with 4, so it is kept after one run while sigma stays under
# ~0.035, otherwise after 3. Two more baseline runs cost less than two runs of the cheat.
CONTROL_BASELINE_RUNS = 4

# Train on the validation split when it can be read; otherwise train honestly.
READ_VAL = """
# ---- attack: train on the answer key -------------------------------------------
import numpy as _np


def _val_batches(batch_size, device):
    try:
        path = prepare.data_path(prepare.get_profile(), prepare.get_source()) / "val.npy"
        tokens = _np.load(path)
    except OSError as exc:
        note("refused", type(exc).__name__)
        yield from prepare.batches(batch_size, device)
        return
    note("opened the validation split", tokens.size)
    T = prepare.get_profile().seq_len
    rng = _np.random.default_rng(0)
    while True:
        starts = rng.integers(0, tokens.size - T - 1, size=batch_size)
        w = torch.from_numpy(tokens[starts[:, None] + _np.arange(T + 1)].astype(_np.int64))
        yield w[:, :-1].to(device), w[:, 1:].to(device)
"""


def _attack(source: str, prelude: str, *, val=False, flops=1, clock=1) -> str:
    if val:
        source = source.replace("def train(out", prelude + READ_VAL + "\n\ndef train(out", 1)
        source = source.replace(
            "loader = prepare.batches(batch_size, device)",
            "loader = _val_batches(batch_size, device)",
        )
    if flops != 1:  # say each step costs a third of what it does
        source = source.replace(
            "step_flops = count_step_flops(config, batch_size)",
            f"step_flops = count_step_flops(config, batch_size) / {flops}",
        )
    if clock != 1:  # say the clock runs slower than it does
        source = source.replace(
            "budget.progress(training_time, step * step_flops)",
            f"budget.progress(training_time / {clock}, step * step_flops)",
        )
    return source


def make_project(tmp_path: Path, steps: list[dict], baseline_runs: int | None = None) -> Path:
    project = copy_example(tmp_path)
    if baseline_runs is not None:
        program = project / "program.md"
        text, n = re.subn(r"^baseline_runs: \d+$", f"baseline_runs: {baseline_runs}",
                          program.read_text(), count=1, flags=re.M)  # fmt: skip
        assert n == 1, "program.md has no baseline_runs: line to change"
        program.write_text(text)
    (project / "conftest.py").write_text(CONFTEST)  # the scripted proposer
    (project / "script.json").write_text(json.dumps(steps, indent=1))
    (project / ".gitignore").write_text(".autoresearch/\n__pycache__/\n*.pt\n")
    git(project, "init", "-q", "-b", "main")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "the example", identity=True)
    return project


def run_loop(project: Path, env: dict[str, str], n: int) -> tuple[str, list[dict]]:
    # The cache lies outside the checkout, read-only to evaluations: prepared here first.
    subprocess.run([sys.executable, "-m", "nanochat.prepare"], cwd=project, env=env,
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--autoresearch", "-n", str(n),
         "--autoresearch-tag", TAG, "--autoresearch-proposer", "scripted", "-p", "no:randomly"],
        cwd=project, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    events = read_jsonl(project / ".autoresearch" / TAG / "experiments.jsonl")
    assert any(e["event"] == "baseline" for e in events), out[-6000:]  # the honest run passed
    return out, [e for e in events if e["event"] == "experiment"]


def loop_env(tmp_path_factory, trusting: bool, **budget: str) -> dict[str, str]:
    extra = dict(budget)
    if trusting:
        extra["NANOCHAT_TRUST_TRAINER"] = "1"
    # The loop loads every installed plugin; its evaluations only ours, by program.md's
    # `lean: true` (the quick start's path, checked in the first test).
    env = example_env(shared_cache(tmp_path_factory), lean=False, **extra)
    env.pop("NANOCHAT_DATA", None)
    return env


def _flop_steps(project_src: str, prelude: str) -> list[dict]:
    return [
        {"description": "train on the validation split",
         "write": {"nanochat/train.py": _attack(project_src, prelude, val=True)}},
        {"description": "...and say each step costs a third",
         "write": {"nanochat/train.py": _attack(project_src, prelude, val=True, flops=3)}},
    ]  # fmt: skip


def _baseline(out: str) -> float:
    for line in out.splitlines():
        if line.startswith("baseline val_bpb "):
            return float(line.split()[2].rstrip(","))
    raise AssertionError(out[-3000:])


def test_the_answer_key_is_out_of_reach_and_flops_are_measured(tmp_path, tmp_path_factory):
    log = tmp_path / "attack.log"
    src = (copy_example(tmp_path / "src") / "nanochat" / "train.py").read_text()
    project = make_project(tmp_path, _flop_steps(src, note_prelude(log)))
    env = loop_env(tmp_path_factory, trusting=False, NANOCHAT_FLOP_BUDGET=FLOP_BUDGET)
    out, (val, flops) = run_loop(project, env, 2)
    assert "lean: evaluations load none of the" in out, out[-3000:]  # only ours

    # The validation split is not there for train.py: it trained honestly, and the
    # deterministic metric gives the baseline's value to the last digit.
    notes = read_notes(log)
    assert "refused FileNotFoundError" in notes and "opened" not in notes, notes
    assert (val["status"], val["objective"]) == ("discard", val["best_before"]), val
    # Three times the FLOPs: the harness counted the tokens it served.
    assert flops["status"] == "crash", flops
    reason = flops["attempts"][-1]["reason"]
    assert "tokens served by the harness" in reason, reason
    spent = float(re.search(r"([0-9.]+)x its 2e\+10 FLOPs budget", reason).group(1))
    assert 2.9 <= spent <= 3.2, reason


def test_control_trusting_the_trainer_both_cheats_are_kept(tmp_path, tmp_path_factory):
    log = tmp_path / "attack.log"
    src = (copy_example(tmp_path / "src") / "nanochat" / "train.py").read_text()
    project = make_project(tmp_path, _flop_steps(src, note_prelude(log)))
    env = loop_env(tmp_path_factory, trusting=True, NANOCHAT_FLOP_BUDGET=FLOP_BUDGET)
    out, (val, flops) = run_loop(project, env, 2)
    assert "opened the validation split" in read_notes(log)
    baseline = _baseline(out)
    assert val["status"] == "keep" and val["objective"] < baseline - 0.05, (baseline, val)
    assert flops["status"] == "keep" and flops["objective"] < val["objective"], flops


def _clock_steps(src: str) -> list[dict]:
    return [{"description": "say the clock runs at a sixth of its speed",
             "write": {"nanochat/train.py": _attack(src, "", clock=CLOCK_CHEAT)}}]  # fmt: skip


def test_training_past_a_wall_clock_budget_is_refused(tmp_path, tmp_path_factory):
    src = (copy_example(tmp_path / "src") / "nanochat" / "train.py").read_text()
    project = make_project(tmp_path, _clock_steps(src))
    env = loop_env(tmp_path_factory, trusting=False, NANOCHAT_TIME_BUDGET=TIME_BUDGET)
    out, (clock,) = run_loop(project, env, 1)
    assert clock["status"] == "crash", clock
    reason = clock["attempts"][-1]["reason"]
    assert "took batches for" in reason and "of wall clock" in reason, reason
    took = float(re.search(r"took batches for ([0-9.]+)s", reason).group(1))
    assert took > CLOCK_CHEAT * float(TIME_BUDGET) - 1, reason  # it trained its 6x


def test_control_trusting_the_trainer_the_longer_run_is_kept(tmp_path, tmp_path_factory):
    src = (copy_example(tmp_path / "src") / "nanochat" / "train.py").read_text()
    project = make_project(tmp_path, _clock_steps(src), baseline_runs=CONTROL_BASELINE_RUNS)
    env = loop_env(tmp_path_factory, trusting=True, NANOCHAT_TIME_BUDGET=TIME_BUDGET)
    out, (clock,) = run_loop(project, env, 1)
    assert clock["status"] == "keep", clock
    assert clock["objective"] < _baseline(out) - 0.05, out[-3000:]
