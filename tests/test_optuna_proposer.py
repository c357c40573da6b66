"""The built-in Optuna proposer against real files and the real Optuna study."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest

from pytest_autoresearch.proposers.base import (
    Failure,
    Outcome,
    ProposalContext,
    Proposer,
    ProposerFatal,
)
from pytest_autoresearch.proposers.constants import Space, default_space, find_constants
from pytest_autoresearch.proposers.optuna import STUDY_FILE, STUDY_NAME, OptunaProposer, build

TRAIN = """\
# Hyperparameters
LR           = 0.04     # learning rate
DEPTH        = 4        # layers
WEIGHT_DECAY = 1e-4     # decay
BETA2        = 0.95     # Adam beta2
SOFTCAP      = -2.5     # negative
DROPOUT      = 0.1      # a fraction
WIDTH        = 64       # search: 16..256
SCALE        = 2.0      # search: 1..4 log
SEED         = 1337     # search: off


def train():
    return LR * DEPTH
"""


def make_ctx(root: Path, files=("train.py",), best=1.0, goal="min", experiment=1):
    return ProposalContext(
        root=root,
        program=None,  # the optuna proposer reads only the files, never the program text
        editable_files=list(files),
        objective="loss",
        goal=goal,
        best_value=best,
        baseline_value=best,
        noise=0.0,
        history=[],
        experiment=experiment,
        total=100,
        state_dir=root / ".autoresearch" / "tag",
    )


def values(path: Path) -> dict[str, int | float]:
    return {c.name: c.value for c in find_constants(path.read_bytes(), path.name)}


def load_study(root: Path):
    import optuna

    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(root / ".autoresearch" / "tag" / STUDY_FILE))
    )
    return optuna.load_study(study_name=STUDY_NAME, storage=storage)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "train.py").write_text(TRAIN)
    (tmp_path / "README.md").write_text("LR = 0.5 is not Python\n")
    return tmp_path


def test_it_is_a_proposer_that_never_repairs(project):
    proposer = OptunaProposer(seed=0)
    assert isinstance(proposer, Proposer) and proposer.name == "optuna"
    ctx = make_ctx(project)
    assert proposer.repair(ctx, Failure("crash", "boom", "Traceback...")) is None


def test_a_proposal_rewrites_a_few_literals_and_nothing_else(project):
    proposer = OptunaProposer(seed=3)
    before = (project / "train.py").read_text().splitlines()
    proposal = proposer.propose(make_ctx(project))
    after = (project / "train.py").read_text().splitlines()
    assert len(after) == len(before)
    changed = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    names = [before[i].split()[0] for i in changed]
    assert 1 <= len(changed) <= 3
    assert sorted(names) == sorted(proposal.extra["changed"])
    for i in changed:
        # Name, alignment and comment survive: only the value field differs.
        old, new = before[i].split("#")[0].split(), after[i].split("#")[0].split()
        assert old[:2] == new[:2] and old[2] != new[2]
        assert before[i].split("#", 1)[1] == after[i].split("#", 1)[1]
    # The description names each change, in the file's own notation.
    for i in changed:
        name, old_text = before[i].split()[0], before[i].split()[2]
        new_text = after[i].split()[2]
        assert f"{name} {old_text} -> {new_text}" in proposal.description
    # params: the full dict of the trial, exactly as written to the file.
    now = values(project / "train.py")
    del now["SEED"]  # frozen, so not a parameter
    assert proposal.params == now
    assert isinstance(proposal.params["DEPTH"], int)
    assert (project / "README.md").read_text() == "LR = 0.5 is not Python\n"
    assert proposal.cost.usd == 0.0


def test_ranges_hints_and_int_kinds_hold_over_many_proposals(project):
    proposer = OptunaProposer(seed=11)
    train = project / "train.py"
    original = train.read_bytes()
    start = values(train)
    ranges = {name: default_space(value) for name, value in start.items()}
    ranges["WIDTH"] = Space(16, 256, False, True)
    ranges["SCALE"] = Space(1.0, 4.0, True, False)
    seen: dict[str, set] = {name: set() for name in start}
    for i in range(40):
        ctx = make_ctx(project, best=1.0, experiment=i + 1)
        proposal = proposer.propose(ctx)
        now = values(train)
        for name, value in now.items():
            seen[name].add(value)
            space = ranges[name]
            tolerance = 1e-9 * max(1.0, abs(space.high))
            assert space.low - tolerance <= value <= space.high + tolerance, (name, value)
            assert isinstance(value, int) == isinstance(start[name], int), (name, value)
        assert now["SEED"] == 1337  # '# search: off' freezes it
        assert 0 < now["DROPOUT"] <= 1 and 0 < now["BETA2"] <= 1  # fractions stay fractions
        proposer.observe(ctx, proposal, Outcome("discard", 1.0 + 0.01 * i, "no better"))
        train.write_bytes(original)  # the loop restores the best commit after a discard
    proposer.close()
    # Every tunable constant was actually explored, over a spread of values.
    for name in start:
        if name != "SEED":
            assert len(seen[name]) >= 4, (name, seen[name])


def test_no_constants_stops_with_a_message_that_says_what_it_looks_for(tmp_path):
    (tmp_path / "model.py").write_text("lr = 0.04\n\ndef f():\n    DEPTH = 4\n")
    (tmp_path / "notes.txt").write_text("LR = 0.04\n")
    with pytest.raises(ProposerFatal) as excinfo:
        OptunaProposer().propose(make_ctx(tmp_path, files=["model.py", "notes.txt"]))
    message = str(excinfo.value)
    assert "found nothing to tune in the editable files (model.py, notes.txt)" in message
    assert "module-level UPPER_CASE numbers and numbers marked with a '# search:'" in message
    # The example is the user's own number, with the comment that would make it a knob.
    assert "model.py:1: lr = 0.04  # search: log 0.004..0.4" in message
    assert 'program.md: search: {model.py: {lr: "log 0.004..0.4"}}' in message
    assert not (tmp_path / ".autoresearch").exists() or not any(
        (tmp_path / ".autoresearch").rglob("*.log")
    )


def test_frozen_only_file_is_fatal_too(tmp_path):
    (tmp_path / "train.py").write_text("SEED = 1  # search: off\n")
    with pytest.raises(ProposerFatal, match="1 number.s. are marked '# search: off'"):
        OptunaProposer().propose(make_ctx(tmp_path))


def test_bad_hint_and_syntax_error_are_fatal_with_the_place(tmp_path):
    (tmp_path / "train.py").write_text("X = 1\nLR = 0.04  # search: 0.1..0.001\n")
    with pytest.raises(ProposerFatal, match=r"train.py:2 \(LR\): .*LOW < HIGH"):
        OptunaProposer().propose(make_ctx(tmp_path))
    (tmp_path / "train.py").write_text("X = 1\nLR = = 0.04\n")
    with pytest.raises(ProposerFatal, match=r"train.py:2: cannot parse it.*syntax error"):
        OptunaProposer().propose(make_ctx(tmp_path))


def test_same_name_in_two_files_gets_a_path_key(tmp_path):
    (tmp_path / "a.py").write_text("LR = 0.1\nONLY_A = 5\n")
    (tmp_path / "b.py").write_text("LR = 0.2\n")
    proposal = OptunaProposer(seed=0).propose(make_ctx(tmp_path, files=["a.py", "b.py"]))
    assert set(proposal.params) == {"a.py:LR", "b.py:LR", "ONLY_A"}


def test_observe_tells_values_and_failures_and_the_study_persists(project):
    train = project / "train.py"
    original = train.read_bytes()
    first = OptunaProposer(seed=5)
    outcomes = [
        Outcome("discard", 1.2, "worse"),
        Outcome("crash", None, "NaN loss"),
        Outcome("keep", 0.8, "improved"),
        Outcome("rejected", None, "scope"),
    ]
    kept_params = None
    for i, outcome in enumerate(outcomes):
        ctx = make_ctx(project, best=1.0, experiment=i + 1)
        proposal = first.propose(ctx)
        first.observe(ctx, proposal, outcome)
        first.observe(ctx, proposal, outcome)  # a second word on the same trial is ignored
        if outcome.status == "keep":
            kept_params = proposal.params
        else:
            train.write_bytes(original)
    first.close()

    study = load_study(project)
    states = [t.state.name for t in study.trials]
    # The start point (current values, best value), then the proposals; retries that
    # landed on the current values are told the best value.
    assert states[0] == "COMPLETE" and study.trials[0].value == 1.0
    assert states.count("FAIL") == 2
    assert study.best_value == 0.8
    assert study.best_params == kept_params
    assert study.direction.name == "MINIMIZE"
    count = len(study.trials)

    # A new proposer on the same state dir continues the same study.
    second = OptunaProposer(seed=5)
    ctx = make_ctx(project, best=0.8, experiment=5)
    proposal = second.propose(ctx)
    second.observe(ctx, proposal, Outcome("discard", 0.9, "worse"))
    second.close()
    study = load_study(project)
    assert len(study.trials) > count
    assert study.trials[0].value == 1.0  # not re-seeded with a second start point
    assert study.best_value == 0.8 and study.trials[-1].value == 0.9


def test_a_trial_left_open_by_a_killed_run_does_not_break_resume(project):
    ctx = make_ctx(project)
    OptunaProposer(seed=1).propose(ctx)  # never observed: the run was killed
    log = project / ".autoresearch" / "tag" / STUDY_FILE
    with log.open("ab") as handle:
        handle.write(b'{"op_code": 5, "worker_id": "x", "trial_id": 1, "par')  # torn write
    proposer = OptunaProposer(seed=1)
    proposal = proposer.propose(ctx)
    proposer.observe(ctx, proposal, Outcome("discard", 2.0, "worse"))
    study = load_study(project)
    states = [t.state.name for t in study.trials]
    assert "RUNNING" not in states
    assert "FAIL" in states and states[-1] == "COMPLETE"


def test_a_study_made_for_the_other_goal_is_refused(project):
    OptunaProposer(seed=1).propose(make_ctx(project, goal="min"))
    with pytest.raises(ProposerFatal, match="was made to minimize.*goal 'max'.*--autoresearch-tag"):
        OptunaProposer(seed=1).propose(make_ctx(project, goal="max"))


def test_a_constant_that_changed_kind_mid_study_is_explained(tmp_path):
    train = tmp_path / "train.py"
    train.write_text("SCALE = 2.0  # search: 1..4 log\n")
    proposer = OptunaProposer(seed=1)
    ctx = make_ctx(tmp_path)
    proposer.observe(ctx, proposer.propose(ctx), Outcome("discard", 2.0, "worse"))
    proposer.close()
    train.write_text("SCALE = 2.0  # search: 1..4 linear\n")
    with pytest.raises(ProposerFatal, match="SCALE changed kind.*log/linear.*optuna.log away"):
        OptunaProposer(seed=1).propose(ctx)


def test_maximising_studies_learn_upwards(tmp_path):
    train = tmp_path / "train.py"
    train.write_text("X = 1.0\n")
    proposer = OptunaProposer(seed=2)
    best = 1.0
    for i in range(20):
        ctx = make_ctx(tmp_path, best=best, goal="max", experiment=i + 1)
        saved = train.read_bytes()
        proposal = proposer.propose(ctx)
        value = values(train)["X"]  # objective: X itself, to be maximised
        status = "keep" if value > best else "discard"
        best = max(best, value)
        if status == "discard":
            train.write_bytes(saved)
        proposer.observe(ctx, proposal, Outcome(status, value, ""))
    assert load_study(tmp_path).direction.name == "MAXIMIZE"
    assert best > 5.0  # default range for 1.0 is [0.1, 10] on a log scale


def toy_research(root: Path, seed: int, trials: int) -> tuple[float, list[float]]:
    """A miniature keep/discard loop: objective (X-3)^2 read from the file after each proposal."""
    toy = root / "toy.py"
    toy.write_text("X = 8.0  # the knob; the objective is (X - 3)^2\n")

    def objective() -> float:
        return (values(toy)["X"] - 3.0) ** 2

    proposer = OptunaProposer(seed=seed)
    best, errors = objective(), []
    for i in range(trials):
        ctx = make_ctx(root, files=["toy.py"], best=best, experiment=i + 1)
        saved = toy.read_bytes()
        proposal = proposer.propose(ctx)
        value = objective()
        errors.append(math.sqrt(value))
        if value < best:
            best, status = value, "keep"
        else:
            toy.write_bytes(saved)
            status = "discard"
        proposer.observe(ctx, proposal, Outcome(status, value, ""))
    proposer.close()
    return math.sqrt(best), errors


def test_tpe_learns_a_toy_objective(tmp_path):
    best_error, errors = toy_research(tmp_path, seed=0, trials=30)
    # The range searched is [0.8, 80] on a log scale; TPE homes in on 3.
    assert best_error < 0.3
    # TPE's guided trials (after the ten local moves) land closer than chance: a log-uniform
    # draw over [0.8, 80] is within 2.5 of 3 with probability ln(5.5/0.8)/ln(100) = 0.42.
    assert statistics.median(errors[10:]) < 2.5
    assert abs(values(tmp_path / "toy.py")["X"] - 3.0) == pytest.approx(best_error, abs=1e-9)


def test_build_reads_the_seed_option(pytester):
    assert build(pytester.parseconfig("--autoresearch-seed", "7")).seed == 7
    pytester.makeini("[pytest]\nautoresearch_seed = 11\n")
    proposer = build(pytester.parseconfig())
    assert isinstance(proposer, OptunaProposer) and proposer.seed == 11
    pytester.makeini("[pytest]\nautoresearch_seed = eleven\n")
    with pytest.raises(ProposerFatal, match="autoresearch_seed = 'eleven' is not an integer"):
        build(pytester.parseconfig())
    # Without the research plugin the option is missing: build still works, unseeded.
    pytester.makeini("[pytest]\n")
    assert build(pytester.parseconfig("-p", "no:autoresearch")).seed is None


# -- knobs beyond UPPER_CASE: '# search:' comments and program.md's search: key -----------

NANOGPT = '''"""nanoGPT-style: lowercase config, a dataclass, a dict of optimiser settings."""
from dataclasses import dataclass

learning_rate = 6e-4  # max learning rate; search: log 6e-5..6e-3
max_iters = 5000      # search: int 1000..20000
min_lr = 6e-5         # decays to this
grad_clip = 1.0


@dataclass
class GPTConfig:
    n_layer: int = 12   # search: int 2..24
    dropout: float = 0.0


optim = {
    "lr": 3e-4,         # search: log 1e-5..1e-2
    "eps": 1e-8,
}
'''


def program_for(root: Path, search: str = ""):
    from pytest_autoresearch.program.program_md import parse_program

    text = f'---\neditable: ["train.py"]\nobjective: loss\n{search}---\n'
    (root / "program.md").write_text(text)
    return parse_program(text, root / "program.md", root)


def program_ctx(root: Path, program, experiment: int = 1, best: float = 1.0) -> ProposalContext:
    ctx = make_ctx(root, best=best, experiment=experiment)
    ctx.program = program
    return ctx


def test_lowercase_knobs_class_fields_and_dict_values_are_tuned_in_place(tmp_path):
    train = tmp_path / "train.py"
    train.write_text(NANOGPT)
    program = program_for(tmp_path, "search:\n  train.py:\n    GPTConfig.dropout: 0.0..0.3\n")
    proposer = OptunaProposer(seed=4)
    assert proposer.preflight(tmp_path, program) == (
        "optuna tunes 5 number(s): learning_rate, max_iters, GPTConfig.n_layer, "
        "GPTConfig.dropout, optim.lr"
    )
    seen: dict[str, set] = {}
    for i in range(25):
        ctx = program_ctx(tmp_path, program, experiment=i + 1)
        proposal = proposer.propose(ctx)
        after = train.read_text()
        before_lines, after_lines = NANOGPT.splitlines(), after.splitlines()
        assert len(before_lines) == len(after_lines)
        for old, new in zip(before_lines, after_lines, strict=True):
            if old != new:
                # Only the number moved: the text before it and the comment after it stay.
                assert (
                    old.split("=")[0] == new.split("=")[0] or old.split(":")[0] == new.split(":")[0]
                )
                assert old.partition("#")[2] == new.partition("#")[2]
        assert set(proposal.params) == {
            "learning_rate",
            "max_iters",
            "GPTConfig.n_layer",
            "GPTConfig.dropout",
            "optim.lr",
        }
        for name, value in proposal.params.items():
            seen.setdefault(name, set()).add(value)
        assert 6e-5 <= proposal.params["learning_rate"] <= 6e-3
        assert 0.0 <= proposal.params["GPTConfig.dropout"] <= 0.3
        assert isinstance(proposal.params["GPTConfig.n_layer"], int)
        # min_lr, grad_clip and eps carry no comment and no declaration: never touched.
        assert "min_lr = 6e-5 " in after and "grad_clip = 1.0" in after and '"eps": 1e-8' in after
        proposer.observe(ctx, proposal, Outcome("discard", 1.0 + i / 100, "worse"))
        train.write_text(NANOGPT)
    assert all(len(values) >= 3 for values in seen.values()), seen


def test_a_declared_name_that_is_missing_points_at_program_md(tmp_path):
    (tmp_path / "train.py").write_text(NANOGPT)
    program = program_for(tmp_path, "search:\n  train.py:\n    learning_rte: log 1e-5..1e-2\n")
    with pytest.raises(ProposerFatal) as excinfo:
        OptunaProposer().preflight(tmp_path, program)
    message = str(excinfo.value)
    assert message.startswith(f"{tmp_path / 'program.md'}:4: train.py has no tunable number")
    assert "'learning_rte'" in message and "it has: learning_rate, max_iters, min_lr" in message
    # A declared range the value does not fit names both places.
    program = program_for(tmp_path, "search:\n  train.py:\n    min_lr: 0.1..1\n")
    with pytest.raises(
        ProposerFatal,
        match=r"train.py:6 \(min_lr\): the value 6e-5 lies outside.*"
        r"\(declared in .*program.md:4\)",
    ):
        OptunaProposer().preflight(tmp_path, program)


def test_nothing_to_tune_is_said_at_preflight_with_an_example_from_the_users_file(tmp_path):
    (tmp_path / "train.py").write_text(NANOGPT.replace("search:", "range"))
    program = program_for(tmp_path)
    with pytest.raises(ProposerFatal) as excinfo:
        OptunaProposer().preflight(tmp_path, program)
    message = str(excinfo.value)
    assert "\n" not in message
    assert "found nothing to tune in the editable files (train.py)" in message
    assert (
        "e.g. train.py:4: learning_rate = 6e-4  # search: log 6e-5..6e-3; "
        "train.py:5: max_iters = 5000  # search: int log 2500..10000"
    ) in message
    assert 'program.md: search: {train.py: {learning_rate: "log 6e-5..6e-3"}}' in message
    # Following the advice works.
    program = program_for(tmp_path, 'search: {train.py: {learning_rate: "log 6e-5..6e-3"}}\n')
    assert OptunaProposer().preflight(tmp_path, program).endswith(": learning_rate")


# -- end to end: `pytest --autoresearch` on a real repo with lowercase knobs ---------------

E2E_TRAIN = """\
learning_rate = 0.02   # max learning rate; search: log 1e-3..1e-1
width = 16             # search: int 4..64
warmup = 50            # not marked: left alone


def loss():
    import math

    return math.log(learning_rate / 0.05) ** 2 + ((width - 32) / 32) ** 2
"""
E2E_TEST = """\
from pytest_autoresearch import metric

import train


@metric(goal="min")
def test_loss():
    return train.loss()
"""
E2E_PROGRAM = "---\neditable: [train.py]\nobjective: loss\nbaseline_runs: 2\n---\nTune it.\n"


def e2e_project(root: Path, train: str) -> None:
    from toyproject import git

    (root / "train.py").write_text(train)
    (root / "test_metric.py").write_text(E2E_TEST)
    (root / "program.md").write_text(E2E_PROGRAM)
    (root / ".gitignore").write_text(".autoresearch/\n__pycache__/\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "toy@example.com")
    git(root, "config", "user.name", "Toy")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "start")


def research(pytester: pytest.Pytester, n: int) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        "--autoresearch", "-n", str(n), "--autoresearch-tag", "t1",
        "--autoresearch-proposer", "optuna", "--autoresearch-seed", "3", "-p", "no:randomly",
        timeout=240,
    )  # fmt: skip


@pytest.mark.slow
def test_a_lowercase_config_is_researched_and_the_report_says_what_moved(pytester) -> None:
    from toyproject import git

    e2e_project(pytester.path, E2E_TRAIN)
    # Six: the compass search follows width while it pays, then turns to learning_rate.
    result = research(pytester, 6)
    result.stdout.fnmatch_lines(
        [
            "*optuna tunes 2 number(s): learning_rate, width*",
            "*learned per parameter (start -> best, objective change when moved*",
        ]
    )
    # One line per parameter, in the order of how much each moved the objective.
    result.stdout.fnmatch_lines(["*learning_rate  0.02 *moved *x*"])
    result.stdout.fnmatch_lines(["*width          16 *moved *x*"])
    records = read_records(pytester.path)
    assert len(records) == 6
    assert all(set(r["params"] or {}) <= {"learning_rate", "width"} for r in records)
    assert any(r["params"] for r in records)
    # Whatever was kept changed only the marked literals; comments and the rest stay.
    now = git(pytester.path, "show", "autoresearch/t1:train.py").splitlines()
    for old, new in zip(E2E_TRAIN.splitlines(), now, strict=True):
        assert old.partition("#")[2] == new.partition("#")[2]
        if not old.startswith(("learning_rate", "width")):
            assert old == new
    report = (pytester.path / ".autoresearch" / "t1" / "report.md").read_text()
    assert "### Parameters" in report and "| `learning_rate` |" in report


@pytest.mark.slow
def test_nothing_to_tune_says_what_to_add_to_the_users_own_file(pytester) -> None:
    e2e_project(pytester.path, E2E_TRAIN.replace("search:", "range"))
    result = research(pytester, 2)
    assert result.ret != 0
    output = result.stdout.str() + result.stderr.str()
    assert "found nothing to tune in the editable files (train.py)" in output
    assert "baseline" not in output  # said at start, before anything was measured
    assert "train.py:1: learning_rate = 0.02  # search: log 0.002..0.2" in output
    assert 'program.md: search: {train.py: {learning_rate: "log 0.002..0.2"}}' in output


def read_records(root: Path) -> list[dict]:
    import json

    path = root / ".autoresearch" / "t1" / "experiments.jsonl"
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return [x for x in lines if x.get("event") == "experiment"]


def test_first_moves_are_local_one_number_inside_its_range() -> None:
    import random

    from optuna.distributions import FloatDistribution, IntDistribution

    from pytest_autoresearch.proposers.optuna import LOCAL_STEP, local_move

    rng = random.Random(7)
    log = FloatDistribution(1e-5, 1e-1, log=True)
    for _ in range(200):
        moved = local_move(rng, 1e-3, log)
        assert 1e-5 <= moved <= 1e-1 and moved != 1e-3
        assert abs(math.log(moved) - math.log(1e-3)) <= math.log(1e4) * LOCAL_STEP + 1e-9
    linear = FloatDistribution(0.0, 0.5)
    assert all(0.0 <= local_move(rng, 0.0, linear) <= 0.5 / 16 for _ in range(100))
    ints = IntDistribution(2, 3)
    assert {local_move(rng, 3, ints) for _ in range(20)} == {2}  # one step, inside the range


COMPASS = """\
DEPTH = 8       # search: 4..16
LR = 0.02       # search: log 0.002..0.2
WARMDOWN = 0.5  # search: 0..1
MOMENTUM = 0.9  # search: 0.5..0.99
"""


@pytest.mark.parametrize("seed", [2, 6, 7])  # seeds whose runs draw DEPTH, the inert one
def test_the_first_moves_are_a_compass_search(tmp_path, seed) -> None:
    """Local moves: on after a gain, back after a loss, never again a number that changed nothing.

    The toy objective: DEPTH is inert while it rounds to the same model (as the example's
    CPU profile rounds 8 * 0.125), a larger LR pays, a shorter WARMDOWN pays, MOMENTUM costs
    either way. A keep is a value lower than the best's (a deterministic metric).
    """
    train = tmp_path / "train.py"
    train.write_text(COMPASS)

    def objective() -> float:
        v = values(train)
        blocks = max(1, round(v["DEPTH"] * 0.125))
        return round(
            3.0 - 0.1 * math.log(v["LR"] / 0.02) + 0.05 * (v["WARMDOWN"] - 0.5)
            + abs(v["MOMENTUM"] - 0.9) + 0.3 * (blocks - 1),
            9,
        )  # fmt: skip

    proposer = OptunaProposer(seed=seed)
    best = objective()
    moves: list[tuple[str, int, bool]] = []  # (number, way, kept)
    ends: list[bool] = []  # the number moved now sits on a bound of its range
    bounds = {"DEPTH": (4, 16), "LR": (0.002, 0.2), "WARMDOWN": (0, 1), "MOMENTUM": (0.5, 0.99)}
    for i in range(10):
        ctx = make_ctx(tmp_path, best=best, experiment=i + 1)
        before, saved = values(train), train.read_bytes()
        proposal = proposer.propose(ctx)
        after = values(train)
        changed = [k for k in after if after[k] != before[k]]
        assert len(changed) == 1, (i, moves, changed)  # one number per local move
        name = changed[0]
        value = objective()
        kept = value < best
        if kept:
            best = value
        else:
            train.write_bytes(saved)
        moves.append((name, 1 if after[name] > before[name] else -1, kept))
        ends.append(after[name] in bounds[name])
        proposer.observe(ctx, proposal, Outcome("keep" if kept else "discard", value, ""))
    proposer.close()

    for i, ((name, way, kept), (then, then_way, _)) in enumerate(
        zip(moves[:-1], moves[1:], strict=True)
    ):
        if kept and not ends[i]:  # a gain goes on the same way (unless on the bound)
            assert (then, then_way) == (name, way), moves
        first_time = (name, -way) not in [(m, w) for m, w, _ in moves[:i]]
        if not kept and name != "DEPTH" and first_time and (i == 0 or not moves[i - 1][2]):
            # a loss is followed by the other way of the same number, unless tried already
            assert (then, then_way) == (name, -way), moves
    # An inert number costs one trial, not more, while others are left to try.
    assert [m for m, _, _ in moves].count("DEPTH") == 1, moves
    # The run found both real gains: LR up and WARMDOWN down.
    assert ("LR", 1, True) in moves and ("WARMDOWN", -1, True) in moves, moves
    assert best < 3.0
