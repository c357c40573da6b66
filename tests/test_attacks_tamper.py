"""In-process tampering, through the real loop: caught by the plugin's tamper evidence.

The toy's metric is ``abs(X - 3)`` with X = 10 (loss 7). Each attack lives in the editable
``toy/model.py``, keeps X = 10, and makes the recorded loss 0 by patching the plugin in
memory (the recorder, the ``@metric`` wrapper) or by finding the results channel with ``gc``
and writing a forged message first. One loop runs all three (each must be rejected as
tampering); the control runs the recorder attack with the watcher off (it is kept). A metric
test that uses numpy and ``run_untrusted`` keeps a real gain with no false alarm, and one that
trains with torch is measured in an isolated evaluation with no false alarm.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from toyproject import git, make_toy, read_jsonl, step

from pytest_autoresearch.sandbox.isolation import IsolationSpec, make_launcher

pytestmark = pytest.mark.slow

RECORD = Path(".autoresearch") / "t1"

PATCH_RECORDER = """
import pytest_autoresearch.metrics.metric as m
_real_record = m.Recorder.record
def _record(self, name, value, goal, unit=None, verb="returned"):
    return _real_record(self, name, 0.0, goal, unit, verb)
m.Recorder.record = _record
"""

PATCH_WRAPPER = """
import functools, sys
import pytest_autoresearch.metrics.metric as m
_real_metric = m.metric
def _metric(*args, **kwargs):
    def decorate(func):
        spec = _real_metric(*args, **kwargs)(func)._autoresearch_metric
        @functools.wraps(func)
        def fake(*a, **k):
            m._active.take_return(0.0)
        fake._autoresearch_metric = spec
        return fake
    return decorate
for _name, _module in list(sys.modules.items()):
    if _name.endswith("test_metric"):  # being imported: its @metric line has not run yet
        _module.metric = _metric
"""

GC_CHANNEL = """
import gc, json, os
_doc = {"version": 1, "exitstatus": 0, "tests": [], "metrics": [
    {"name": "loss", "value": 0.0, "samples": [0.0], "goal": "min",
     "nodeid": "tests/test_metric.py::test_loss", "outcome": "passed"}]}
_found = [o for o in gc.get_objects() if type(o).__name__ == "EvalChannel"]
if _found and _found[0]._fd >= 0:
    os.write(_found[0]._fd, (_found[0]._nonce + " " + json.dumps(_doc) + "\\n").encode())
"""


def run_loop(pytester: pytest.Pytester, n: int, *extra: str):
    return pytester.runpytest_subprocess(
        "--autoresearch", "-n", str(n), "--autoresearch-tag", "t1",
        "--autoresearch-proposer", "scripted", "-p", "no:randomly", *extra,
        timeout=240,
    )  # fmt: skip


def experiments(root: Path) -> list[dict]:
    journal = read_jsonl(root / RECORD / "experiments.jsonl")
    return [e for e in journal if e["event"] == "experiment"]


@pytest.fixture(autouse=True)
def lean_inner_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:hypothesispytest -p no:benchmark")
    monkeypatch.delenv("AUTORESEARCH_TAMPER_CHECK", raising=False)


def test_patching_the_recorder_or_the_wrapper_or_the_channel_is_rejected(
    pytester: pytest.Pytester,
) -> None:
    attacks = {"recorder": PATCH_RECORDER, "wrapper": PATCH_WRAPPER, "gc": GC_CHANNEL}
    steps = [step(f"attack: {name}", 10.0, extra=body) for name, body in attacks.items()]
    root = make_toy(pytester.path, steps)
    result = run_loop(pytester, len(steps))
    assert result.ret == 0, result.stdout.str()
    recs = experiments(root)
    assert [r["status"] for r in recs] == ["rejected"] * 3, [r["reason"] for r in recs]
    reasons = [r["reason"] for r in recs]
    assert all(r.startswith("tampering detected in the evaluation: ") for r in reasons), reasons
    # A class attribute swap raises no audit event: the report-time check finds it.
    assert "pytest_autoresearch.plugin.Recorder.record was replaced" in reasons[0]
    assert "tests/test_metric.py::test_loss: the @metric wrapper was replaced" in reasons[1]
    assert "gc.get_objects() called from " in reasons[2] and "toy/model.py" in reasons[2]
    assert git(root, "log", "--format=%s", "main..autoresearch/t1") == ""


def test_control_with_the_watcher_off_the_patched_recorder_is_kept(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_toy(pytester.path, [step("attack: recorder", 10.0, extra=PATCH_RECORDER)])
    monkeypatch.setenv("AUTORESEARCH_TAMPER_CHECK", "off")
    result = run_loop(pytester, 1)
    assert result.ret == 0, result.stdout.str()
    (rec,) = experiments(root)
    assert (rec["status"], rec["objective"]) == ("keep", 0.0), rec  # the cheat works


ORDINARY_METRIC = """
import gc, inspect, pickle, sys
from unittest import mock

import numpy as np

from pytest_autoresearch import metric, run_untrusted

import toy.model as model


@metric(goal="min")
def test_loss(monkeypatch, tmp_path):
    a = np.linspace(0.0, 1.0, 256)
    assert abs(float(np.fft.fft(a).real[0]) - a.sum()) < 1e-6
    np.save(tmp_path / "a.npy", a)
    pickle.loads(pickle.dumps(a))
    inspect.getsource(test_loss)
    gc.collect()
    monkeypatch.setattr(model, "UNUSED", 1, raising=False)
    with mock.patch.object(np, "pi", 3.0):
        pass
    child = run_untrusted(
        [sys.executable, "-c", "print(sum(range(10)))"], cpu_limit=20, wall_limit=60,
        hide=["toy"],
    )
    assert child.ok and child.stdout == "45\\n", child
    return abs(model.X - 3.0)
"""


def test_numpy_and_run_untrusted_in_a_metric_raise_no_false_alarm(
    pytester: pytest.Pytester,
) -> None:
    pytest.importorskip("numpy")
    if make_launcher(IsolationSpec()).name != "namespaces":
        pytest.skip("run_untrusted(hide=...) needs namespaces")
    root = make_toy(pytester.path, [step("move X to 5", 5.0)], timeout=60)
    (root / "tests" / "test_metric.py").write_text(ORDINARY_METRIC)
    git(root, "commit", "-qam", "a metric with numpy and run_untrusted")
    result = run_loop(pytester, 1)
    assert result.ret == 0, result.stdout.str()
    (rec,) = experiments(root)
    assert (rec["status"], rec["objective"]) == ("keep", 2.0), rec
    assert "tamper" not in (root / RECORD / "experiments.jsonl").read_text()
    assert "X = 5.0" in git(root, "show", "autoresearch/t1:toy/model.py")


TORCH_METRIC = """
import torch

from pytest_autoresearch import metric


@metric(goal="min")
def test_loss(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    opt = torch.optim.AdamW(net.parameters(), lr=0.01)
    x = torch.randn(64, 8)
    for _ in range(20):
        loss = net(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.save(net.state_dict(), tmp_path / "net.pt")
    net.load_state_dict(torch.load(tmp_path / "net.pt"))
    with torch.no_grad():
        traced = torch.jit.trace(net, x)
    return float(traced(x).pow(2).mean())
"""


def test_torch_in_an_isolated_evaluation_raises_no_false_alarm(tmp_path: Path) -> None:
    """One evaluation as the loop runs it (read-only world, watcher on), torch training."""
    if importlib.util.find_spec("torch") is None:  # not imported here: seconds
        pytest.skip("torch is not installed")
    from pytest_autoresearch.sandbox.evaluate import evaluate
    from pytest_autoresearch.sandbox.isolation import for_research

    (tmp_path / "test_torch.py").write_text(TORCH_METRIC)
    record = tmp_path / ".autoresearch" / "t1"
    launcher = for_research(tmp_path, record)
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    env.pop("AUTORESEARCH_TAMPER_CHECK", None)
    ev = evaluate(
        tmp_path, ["test_torch.py"], [], 120, launcher=launcher, env=env, tmp_root=record / "tmp"
    )
    assert (ev.status, ev.reason) == ("ok", ""), ev.log_tail
    assert 0 <= ev.metrics["loss"].value < 1


# This project's own tests, as guards in an isolated evaluation: pytester sessions in-process,
# monkeypatching, fixtures and dataclasses under the watcher, no false alarm.
OWN_SUITE = [
    "tests/test_metric_decorator.py",
    "tests/test_decide.py",
    "tests/test_stats.py",
    "tests/test_fingerprint.py",
    "tests/test_program.py",
    "tests/test_journal.py",
    "tests/test_stale.py",
]


def test_this_projects_own_tests_raise_no_false_alarm(tmp_path: Path) -> None:
    from pytest_autoresearch.sandbox.evaluate import evaluate
    from pytest_autoresearch.sandbox.isolation import for_research

    repo = Path(__file__).resolve().parents[1]
    launcher = for_research(repo, tmp_path / "record")
    env = {k: v for k, v in os.environ.items() if k != "AUTORESEARCH_TAMPER_CHECK"}
    env["PYTEST_ADDOPTS"] = "-p no:randomly -p no:hypothesispytest -p no:benchmark"
    ev = evaluate(repo, [], OWN_SUITE, 300, launcher=launcher, env=env, tmp_root=tmp_path / "t")
    assert ev.status != "rejected", ev.reason
    assert len(ev.tests) > 50, ev.log_tail
    failed = [t.nodeid for t in ev.tests if t.outcome in ("failed", "error")]
    assert not failed, ev.log_tail
