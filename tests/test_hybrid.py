"""The hybrid proposer's parts: the short list, the bandit rule, and the Optuna half's
studies of one change (focus, spread, never one parameter set twice). Real Optuna on files
in tmp_path; the whole through the real loop is in test_hybrid_loop.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_autoresearch.proposers.base import Outcome, PastExperiment, ProposalContext
from pytest_autoresearch.proposers.hybrid import MIN_TRIES, HybridProposer, choose, gain_rates
from pytest_autoresearch.proposers.optuna import OptunaProposer, spread_point
from pytest_autoresearch.proposers.shortlist import TRIES, knobs_in, shortlist, structural

IDEA = (
    "--- a/m.py\n+++ b/m.py\n@@ -1,5 +1,6 @@\n X = 10.0  # search: -20..20\n+SCALE = 2.0\n \n \n"
    " def predict():\n-    return X\n+    return X * SCALE\n"
)
NUMBERS = "--- a/m.py\n+++ b/m.py\n@@ -1 +1 @@\n-X = 10.0\n+X = 12.0\n"


def exp(index, status="discard", delta=-1.0, diff=IDEA, made_by="llm", builds_on=None, obj=5.0):
    return PastExperiment(
        index=index, description=f"exp {index}", status=status, objective=obj, delta=delta,
        reason="", diff=diff, made_by=made_by, builds_on=builds_on,
    )  # fmt: skip


def test_what_the_short_list_holds_and_when_an_entry_leaves_it():
    assert knobs_in(IDEA) == ["SCALE"] and structural(IDEA) and not structural(NUMBERS)
    assert knobs_in("+    lr = 0.1  # search: log 0.01..1\n+    DEPTH = 3\n") == ["lr"]
    near = exp(2, delta=-0.005, diff=NUMBERS, made_by="optuna")
    listed = shortlist([exp(1), near, exp(3, status="crash"), exp(4, diff=NUMBERS)], noise=0.01)
    assert [(s.exp.index, s.why, s.knobs) for s in listed] == [
        (2, "near-miss", ("X",)),
        (1, "untuned", ("SCALE",)),
    ]
    # An experiment built on it was kept: off the list.
    kept = [exp(1), exp(2, "keep", 0.5, made_by="optuna", builds_on=1)]
    assert shortlist(kept, 0.01) == []
    # Two re-tries that gained nothing on its own value: off the list (a knob that does
    # not matter); two that gained stay, up to TRIES.
    flat = [exp(1, delta=-1.0)] + [exp(i, delta=-1.0, builds_on=1) for i in (2, 3)]
    assert shortlist(flat, 0.01) == []
    rising = [exp(1, delta=-1.0)] + [exp(i, delta=-0.2, builds_on=1) for i in (2, 3)]
    assert [s.tries for s in shortlist(rising, 0.01)] == [2]
    full = [exp(1, delta=-1.0)] + [exp(i, delta=-0.2, builds_on=1) for i in range(2, 2 + TRIES)]
    assert shortlist(full, 0.01) == []
    # The same idea with another guessed number, once its sibling was tuned: not untuned.
    again = IDEA.replace("SCALE = 2.0", "SCALE = 7.0")
    tried = [exp(1), exp(2, builds_on=1, made_by="optuna"), exp(3, diff=again)]
    assert [s.exp.index for s in shortlist(tried, 0.01)] == [1]


def test_the_bandit_tries_both_halves_goes_on_with_a_burst_and_follows_the_gain():
    assert choose([], 0.01).half == "llm"
    first = [exp(1), exp(2, diff=NUMBERS)]
    pick = choose(first, 0.01)
    assert pick.half == "optuna" and pick.entry.exp.index == 1  # the untuned idea
    burst = first + [exp(3, delta=-0.5, made_by="optuna", builds_on=1)]
    going = choose(burst + [exp(4, delta=-0.4, made_by="optuna", builds_on=1)], 0.01)
    assert going.half == "optuna" and going.why == "tuning #1 goes on"
    # Kept after tuning: the tuning goes on on the best (refine) while each try is kept.
    kept = burst + [exp(4, "keep", 0.3, made_by="optuna", builds_on=1)]
    refine = choose(kept, 0.01)
    assert refine.refine is not None and refine.refine.index == 1
    # The tuned keep is credited to the LLM's idea too.
    rates = gain_rates([e for e in kept if e.made_by])
    assert rates["llm"] == pytest.approx(0.3 / 2) and rates["optuna"] == pytest.approx(0.3 / 2)
    # Past the burst, the half with the higher recent gain per experiment goes next.
    later = kept + [exp(5, delta=-0.1, made_by="optuna", builds_on=1, diff=NUMBERS)]
    later += [exp(6, delta=-0.2, diff=NUMBERS), exp(7, delta=-0.2, diff=NUMBERS)]
    assert MIN_TRIES == 2
    pick = choose(later, 0.01)  # llm 0.3 over 4, optuna 0.3 over 3; nothing listed
    assert pick.half == "optuna" and pick.entry is None and pick.refine is None
    assert pick.why == "gain per experiment llm 0.075, optuna 0.1"
    # A half below its floor of the recent experiments goes next, whatever its gain.
    starved = later + [exp(i, delta=-0.2, diff=NUMBERS) for i in range(8, 20)]
    assert choose(starved, 0.01).why == "optuna: below its floor"


TRAIN = "X = 10.0  # search: -20..20\nSCALE = 2.0\n\n\ndef predict():\n    return X * SCALE\n"


def ctx_for(root: Path, experiment: int, history=()) -> ProposalContext:
    from llm_server import make_program

    program = make_program(root, editable=("m.py",))
    state = root / ".autoresearch" / "t"
    state.mkdir(parents=True, exist_ok=True)
    return ProposalContext(
        root=root, program=program, editable_files=["m.py"], objective="loss", goal="min",
        best_value=7.0, baseline_value=7.0, noise=0.01, history=list(history),
        experiment=experiment, total=20, state_dir=state,
    )  # fmt: skip


def test_a_study_of_one_change_spreads_its_knob_and_never_repeats_a_parameter_set(tmp_path):
    (tmp_path / "m.py").write_text(TRAIN)
    tuner = OptunaProposer(seed=3)
    seen: list[dict] = []
    for i in range(1, 9):
        ctx = ctx_for(tmp_path, i)
        proposal = tuner.propose(ctx, focus=["SCALE"], study_name="entry-1", start_value=17.0)
        assert proposal.extra["changed"] == ["SCALE"]  # only the focus moves
        assert "X 10.0" not in proposal.description
        seen.append(proposal.params)
        value = abs(10.0 * proposal.params["SCALE"] - 3.0)
        tuner.observe(ctx, proposal, Outcome("discard", value, ""))
        (tmp_path / "m.py").write_text(TRAIN)
    # The first two trials spread over SCALE's range (0.2..20, log): a quarter and three
    # quarters of the way, whatever the seed; then TPE, never a set twice.
    assert [p["SCALE"] for p in seen[:2]] == [0.6325, 6.325]
    assert len({tuple(sorted(p.items())) for p in seen}) == len(seen)
    assert all(p["X"] == 10.0 for p in seen)
    # The study is its own: the best's study was not touched.
    import optuna

    from pytest_autoresearch.proposers.optuna import STUDY_FILE

    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / ".autoresearch/t" / STUDY_FILE))
    )
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    assert names == ["entry-1"]
    tuner.close()


def test_spread_points_are_inside_the_range_and_ints_stay_ints():
    from optuna.distributions import FloatDistribution, IntDistribution

    assert spread_point(2, 0, FloatDistribution(0.0, 1.0)) == 0.25
    assert spread_point(2, 1, FloatDistribution(0.0, 1.0)) == pytest.approx(2 / 3, abs=1e-3)
    assert spread_point(3, 0, IntDistribution(2, 10)) == 8


class FakeLLM:
    name = "fake-llm"

    def __init__(self):
        self.told: list = []
        self.programs: list = []

    def propose(self, ctx):
        from pytest_autoresearch.proposers.base import Proposal

        self.programs.append(ctx.program.instructions)
        (Path(ctx.root) / "m.py").write_text(TRAIN)
        return Proposal("scale X", extra={})

    def repair(self, ctx, failure):
        return None

    def observe(self, ctx, proposal, outcome):
        self.told.append(outcome.status)

    def close(self):
        pass


def test_the_hybrid_re_applies_an_untuned_idea_on_the_best_and_tunes_its_new_knob(tmp_path):
    start = "X = 10.0  # search: -20..20\n\n\ndef predict():\n    return X\n"
    (tmp_path / "m.py").write_text(start)
    llm = FakeLLM()
    hybrid = HybridProposer(llm, OptunaProposer(seed=1))
    p1 = hybrid.propose(ctx_for(tmp_path, 1))
    assert p1.extra["made_by"] == "llm" and "Numbers are tuned for you" in llm.programs[0]
    hybrid.observe(ctx_for(tmp_path, 1), p1, Outcome("discard", 17.0, "worse"))
    assert llm.told == ["discard"]
    (tmp_path / "m.py").write_text(start)  # the loop restored the best
    history = [
        exp(1, delta=-10.0, obj=17.0, diff=IDEA),
        exp(2, delta=-2.0, obj=9.0, diff=NUMBERS),
    ]
    p3 = hybrid.propose(ctx_for(tmp_path, 3, history))
    assert p3.extra["made_by"] == "optuna" and p3.extra["builds_on"] == 1
    text = (tmp_path / "m.py").read_text()
    assert "return X * SCALE" in text and "SCALE = 0.6325" in text
    assert p3.description.startswith("#1 on the best, tuned: SCALE 2.0 -> 0.6325")


class Config:
    """Just enough of pytest.Config for choosing the LLM half."""

    def __init__(self, base_url=None):
        self.base_url = base_url

    def getoption(self, name, default=None):
        return self.base_url if name == "autoresearch_base_url" else default


def test_the_llm_half_comes_from_the_environment_or_the_name_and_without_one_says_what_to_set(
    monkeypatch,
):
    from pytest_autoresearch.proposers.base import ProposerFatal
    from pytest_autoresearch.proposers.hybrid import build, llm_name

    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ProposerFatal, match="the hybrid proposer needs an LLM: set ANTHROPIC"):
        llm_name(Config())
    assert llm_name(Config(), "hybrid:my-llm") == "my-llm"
    assert llm_name(Config(base_url="http://127.0.0.1:8080/v1")) == "openai"
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-x")
    assert llm_name(Config()) == "anthropic"
    with pytest.raises(ProposerFatal, match="must be an LLM proposer"):
        build(Config(), "hybrid:optuna")
