"""The example's score comes from code the experiment cannot change (issue 12, item 6).

train.py exports its model as a graph of ATen operators; the process that computes val_bpb
loads only that graph and never imports train.py. A train.py that wraps evaluate_bpb, fakes
the stats or a score file, or patches things at import must not move val_bpb at all: the CPU
metric is deterministic, so "unchanged" means equal to the last digit.
"""

from __future__ import annotations

import sys

import pytest
from nanochat_support import (
    EXAMPLE,
    METRIC_NODE,
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

# Appended to train.py just before main(): everything a hostile experiment would try from
# inside the training code. Each line is harmless to the score only because of the design.
HOSTILE = """
# ---- hostile additions (test) ------------------------------------------------
import json as _json
import pathlib as _pathlib

from nanochat import graph as _graph

_real_evaluate = prepare.evaluate_bpb


def _flattering_evaluate(model, *args, **kwargs):
    value = _real_evaluate(model, *args, **kwargs)
    # Only for this trainer's model, so the guards' hand-made models still check out.
    return value * 0.9 if type(model).__name__ in ("GPT", "GraphModel") else value


prepare.evaluate_bpb = _flattering_evaluate  # the issue's attack: 0.9x for a GPT
prepare.uniform_bpb = lambda *a, **k: 99.0
_graph.load = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("patched at import"))

_honest_train = train


def train(out, stats_path):
    stats = _honest_train(out, stats_path)
    fake = {**stats, "val_bpb": 0.1, "test_bpb": 0.1, "num_params_m": 0.001}
    if stats_path:
        _pathlib.Path(stats_path).write_text(_json.dumps(fake))
    for name in ("score.json", "metrics.json", "val_bpb.txt"):
        _pathlib.Path(out).with_name(name).write_text(_json.dumps(fake))
    return stats
"""


def _make_hostile(project) -> None:
    path = project / "nanochat" / "train.py"
    source = path.read_text()
    marker = "def main(argv"
    assert marker in source
    path.write_text(source.replace(marker, HOSTILE + "\n\n" + marker, 1))


@pytest.mark.slow
def test_a_hostile_train_py_does_not_move_val_bpb(tmp_path, tmp_path_factory):
    hostile = copy_example(tmp_path / "hostile")
    _make_hostile(hostile)
    env = example_env(shared_cache(tmp_path_factory), NANOCHAT_FLOP_BUDGET=SMALL_BUDGET)
    # Guards and metric in one session, as the research loop runs them (the honest code's
    # run too: honest_values).
    proc, report = run_session(hostile, env, tmp_path / "hostile.json", "tests", "-x")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    values = {"honest": honest_values(tmp_path_factory), "hostile": metric_values(report)}
    assert values["hostile"]["val_bpb"] == values["honest"]["val_bpb"]
    assert values["hostile"]["test_bpb"] == values["honest"]["test_bpb"]
    assert values["hostile"]["num_params_m"] == values["honest"]["num_params_m"] > 0.1


@pytest.mark.slow
def test_importing_train_py_into_the_scoring_process_fails_the_metric(tmp_path, tmp_path_factory):
    """The check that keeps the design honest: a guard that imports train.py in-process."""
    project = copy_example(tmp_path)
    (project / "tests" / "test_sneaky.py").write_text(
        "from nanochat import train  # noqa: F401\n\ndef test_nothing():\n    pass\n"
    )
    env = example_env(shared_cache(tmp_path_factory), NANOCHAT_FLOP_BUDGET=SMALL_BUDGET)
    proc, report = run_session(project, env, tmp_path / "m.json", METRIC_NODE,
                               "tests/test_sneaky.py")  # fmt: skip
    assert proc.returncode == 1
    assert "train.py was imported into the process that computes val_bpb" in proc.stdout


# -----------------------------------------------------------------------------
# The graph format: what a crafted model file can and cannot do to the scorer


@pytest.fixture(scope="module")
def graph():
    sys.path.insert(0, str(EXAMPLE))
    try:
        from nanochat import graph
    finally:
        sys.path.remove(str(EXAMPLE))
    return graph


def _tiny_payload(graph, nodes, tensors=None):
    import torch

    return {"format": graph.FORMAT, "nodes": nodes, "tensors": tensors or {"w": torch.ones(3)},
            "params": ["w"], "input_shape": [3]}  # fmt: skip


def test_a_round_trip_reproduces_the_model(graph, tmp_path):
    import torch

    model = torch.nn.Sequential(torch.nn.Embedding(11, 8), torch.nn.Linear(8, 11))
    x = torch.randint(0, 11, (2, 5))
    graph.save(model, x, tmp_path / "m.pt")
    loaded = graph.load(tmp_path / "m.pt")
    assert torch.equal(loaded(x), model(x))
    assert loaded.num_params == sum(p.numel() for p in model.parameters())
    with pytest.raises(graph.GraphError, match="inputs of shape"):
        loaded(torch.zeros(1, 5, dtype=torch.long))


@pytest.mark.parametrize(
    "target",
    ["torch.os.system", "builtins.eval", "aten.from_file.default", "aten.__class__.default",
     "aten.no_such_op.default", "custom.op.default", 42, "aten.add_.Tensor", "aten.add.out",
     "aten.rand.default", "aten.bernoulli.p"],
)  # fmt: skip
def test_only_aten_operators_are_called(graph, target):
    nodes = [{"op": "input", "name": "x"},
             {"op": "call", "name": "y", "target": target, "args": ["echo pwned"], "kwargs": {}},
             {"op": "output", "args": [{"node": "y"}]}]  # fmt: skip
    with pytest.raises(graph.GraphError, match="not an allowed ATen operator|does not have"):
        graph.GraphModel(_tiny_payload(graph, nodes), "cpu")


def test_a_pickle_that_runs_code_is_refused_unrun(graph, tmp_path):
    import pickle

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"format": graph.FORMAT, "x": Evil()}, protocol=2))
    with pytest.raises(graph.GraphError, match="not a safely loadable model file"):
        graph.load(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "arg", [{"node": "missing"}, {"callable": "os.system"}, {"dtype": "os"}, {"a": 1, "b": 2}]
)
def test_arguments_are_literals_or_earlier_results(graph, arg):
    nodes = [{"op": "input", "name": "x"},
             {"op": "call", "name": "y", "target": "aten.add.Tensor", "args": [{"node": "x"}, arg],
              "kwargs": {}},
             {"op": "output", "args": [{"node": "y"}]}]  # fmt: skip
    import torch

    with pytest.raises(graph.GraphError, match="bad graph argument"):
        graph.GraphModel(_tiny_payload(graph, nodes), "cpu")(torch.zeros(3))
