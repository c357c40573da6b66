"""The hybrid proposer: an LLM proposes changes of structure, Optuna tunes their numbers.

An LLM proposes structure well and numbers badly; a classical optimiser is the reverse.
Here each experiment is made by one half, chosen by a bandit (``choose``):

- **llm**: the LLM makes one change, as the LLM proposers do. It is told that numbers are
  tuned after it, so a new constant belongs in a module-level UPPER_CASE name (or a line
  marked ``# search:``) where the tuner can reach it.
- **optuna**: the Optuna proposer moves numbers. On a short-list entry
  (proposers/shortlist.py: a near-miss, or a discarded change of structure whose numbers
  were not yet tuned) the entry's change is re-applied on top of the current best and the
  numbers it brought in or touched are tuned, in a study of its own that first spreads
  them over their ranges; a burst of up to ``shortlist.TRIES`` experiments, ended by a
  keep. With nothing on the list it tunes the best's numbers (the plain Optuna proposer).

So a good idea with a poor constant is not thrown away: it is measured, discarded (keeps
stay a chain: only a change that beats the best is kept), and then re-tried on the best
with its numbers tuned, where the tuned version can win.

The bandit rule, per experiment (every input is in the journal, so a resumed run picks
the same way):

1. A half with fewer than ``MIN_TRIES`` experiments goes next (the LLM first).
2. A tuning burst in progress goes on: the last experiment tuned an entry still on the
   list (its re-tries are paying: ``shortlist.paying``), or it was kept and its numbers
   are tuned further on the best, while each try is kept, up to ``shortlist.TRIES``.
3. A half with less than ``FLOOR`` of the last ``WINDOW`` experiments goes next.
4. Otherwise the half with the higher recent gain per experiment: over its own last
   ``WINDOW`` experiments, the improvement of each kept one (0 for the rest) summed and
   divided by their number. A kept experiment that tuned an LLM change is credited to
   both: the tuning experiment and the LLM's experiment that brought the idea. Ties go to
   the half that ran fewer of the last ``WINDOW``, then to the LLM.

Each record says which half made it (``made_by``) and, for tuning on an entry, the
experiment it built on (``builds_on``); the report sums what each half contributed.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_autoresearch.proposers import patch
from pytest_autoresearch.proposers.base import (
    Failure,
    Outcome,
    PastExperiment,
    Proposal,
    ProposalContext,
    ProposerError,
    ProposerFatal,
)
from pytest_autoresearch.proposers.shortlist import TRIES, Entry, knobs_in, shortlist

if TYPE_CHECKING:
    import pytest

    from pytest_autoresearch.proposers.optuna import OptunaProposer

__all__ = ["FLOOR", "MIN_TRIES", "WINDOW", "Choice", "HybridProposer", "build", "choose"]

WINDOW = 12  # recent experiments of each half the bandit weighs
FLOOR = 0.2  # each half makes at least this share of the last WINDOW experiments
MIN_TRIES = 2  # experiments of each half before the bandit weighs them
POOL = 20  # short-list entries the tuner may pick from (the notebook shows fewer)

STRUCTURE_NOTE = """\

## How this run splits the work (the hybrid proposer)
Numbers are tuned for you: after your change, an optimiser (Optuna) tunes the numbers it \
brought in or touched, on top of the best, in short bursts. So spend your experiments on \
changes of structure (architecture, algorithm, the shape of a schedule, what is computed), \
not on nudging constants. When your change needs a new constant, make it a module-level \
UPPER_CASE name (or put `# search: LOW..HIGH` on its line) so that it can be tuned; a \
first value that is merely plausible is fine. A discarded idea whose numbers were not yet \
tuned stays on the short list and is tuned later."""


@dataclass(frozen=True)
class Choice:
    """Who makes the next experiment, and on which short-list entry (optuna only)."""

    half: str  # "llm" | "optuna"
    entry: Entry | None
    why: str
    # A change kept after tuning: its numbers tuned further on the best (the burst goes on).
    refine: PastExperiment | None = None


def choose(history: Sequence[PastExperiment], noise: float, skip: set[int] = frozenset()) -> Choice:
    """The bandit rule of the module docstring, over the journal's experiments."""
    made = [e for e in history if e.made_by in ("llm", "optuna")]
    listed = [s for s in shortlist(history, noise, limit=POOL) if s.exp.index not in skip]
    entry = _pick_entry(listed)
    counts = {h: sum(1 for e in made if e.made_by == h) for h in ("llm", "optuna")}
    for half in ("llm", "optuna"):
        if counts[half] < MIN_TRIES:
            return Choice(half, entry if half == "optuna" else None, f"{half}: first tries")
    last = made[-1] if made else None
    if last is not None and last.made_by == "optuna" and last.builds_on is not None:
        j = last.builds_on
        tries = [e for e in history if e.builds_on == j]
        going = next((s for s in listed if s.exp.index == j), None)
        if going is not None:  # still listed: its burst is paying (shortlist.paying)
            return Choice("optuna", going, f"tuning #{j} goes on")
        source = next((e for e in history if e.index == j), None)
        kept = any(e.status == "keep" for e in tries)
        if kept and last.status == "keep" and len(tries) < TRIES and source is not None:
            return Choice("optuna", None, f"#{j} kept: its numbers tuned on", refine=source)
    recent = made[-WINDOW:]
    share = {h: sum(1 for e in recent if e.made_by == h) / max(1, len(recent)) for h in counts}
    for half in ("llm", "optuna"):
        if share[half] < FLOOR:
            return Choice(half, entry if half == "optuna" else None, f"{half}: below its floor")
    rate = gain_rates(made)
    if rate["llm"] != rate["optuna"]:
        half = max(rate, key=rate.get)
    elif share["llm"] != share["optuna"]:
        half = min(share, key=share.get)
    else:
        half = "llm"
    why = f"gain per experiment llm {rate['llm']:.4g}, optuna {rate['optuna']:.4g}"
    return Choice(half, entry if half == "optuna" else None, why)


def gain_rates(made: Sequence[PastExperiment]) -> dict[str, float]:
    """Each half's recent gain per experiment (rule 4 of the module docstring)."""
    gain = {e.index: _gain(e) for e in made}
    by_index = {e.index: e for e in made}
    for e in made:  # a tuned keep of an LLM change credits the LLM's experiment too
        src = by_index.get(e.builds_on) if e.builds_on is not None else None
        if src is not None and src.made_by == "llm" and e.status == "keep":
            gain[src.index] = max(gain[src.index], _gain(e))
    out = {}
    for half in ("llm", "optuna"):
        mine = [e for e in made if e.made_by == half][-WINDOW:]
        out[half] = sum(gain[e.index] for e in mine) / len(mine) if mine else 0.0
    return out


def _gain(e: PastExperiment) -> float:
    return max(0.0, e.delta) if e.status == "keep" and e.delta is not None else 0.0


def _pick_entry(listed: list[Entry]) -> Entry | None:
    """An untuned idea first (it is what the LLM alone would lose), then a near-miss; of
    those, the one tried least, then the newest."""
    for why in ("untuned", "near-miss"):
        mine = [s for s in listed if s.why == why]  # newest first
        if mine:
            return min(mine, key=lambda s: s.tries)
    return None


class HybridProposer:
    """An LLM proposer and the Optuna proposer behind one Proposer, split by a bandit."""

    name = "hybrid"

    def __init__(self, llm: Any, tuner: OptunaProposer) -> None:
        self.llm = llm
        self.tuner = tuner
        self._made: dict[int, str] = {}  # experiment -> the half that made its proposal
        self._skip: set[int] = set()  # entries whose change no longer applies on the best
        self.choices: list[Choice] = []  # what the bandit chose, in order (for tests, logs)

    # -- the Proposer protocol ------------------------------------------------------------

    def propose(self, ctx: ProposalContext) -> Proposal:
        choice = choose(ctx.history, ctx.noise, self._skip)
        self.choices.append(choice)
        if choice.half == "llm":
            return self._structure(ctx)
        if choice.refine is not None:
            return self._refine(ctx, choice.refine)
        return self._tune(ctx, choice.entry)

    def repair(self, ctx: ProposalContext, failure: Failure) -> Proposal | None:
        """The LLM repairs its own change; a tuned set of numbers that crashed is not repaired
        (the study learns that corner is bad)."""
        if self._made.get(ctx.experiment) != "llm":
            return None
        fixed = self.llm.repair(self._hinted(ctx), failure)
        if fixed is not None:
            fixed.extra.setdefault("made_by", "llm")
        return fixed

    def observe(self, ctx: ProposalContext, proposal: Proposal, outcome: Outcome) -> None:
        half = proposal.extra.get("made_by") or self._made.get(ctx.experiment)
        self._made.pop(ctx.experiment, None)
        (self.llm if half == "llm" else self.tuner).observe(ctx, proposal, outcome)

    def close(self) -> None:
        try:
            self.llm.close()
        finally:
            self.tuner.close()

    def check(self) -> None:
        """The LLM's own start-up check (a rejected key stops the run before any work)."""
        check = getattr(self.llm, "check", None)
        if check is not None:
            check()

    def preflight(self, root: Path, program: Any) -> str:
        """Both halves' start lines; nothing to tune yet is fine (the LLM may add numbers)."""
        lines = []
        llm_pre = getattr(self.llm, "preflight", None)
        if llm_pre is not None:
            lines.append(llm_pre(root, program))
        try:
            lines.append(self.tuner.preflight(root, program))
        except ProposerFatal:
            lines.append(
                "optuna finds nothing to tune yet: it tunes the numbers the LLM's changes bring "
                "in (module-level UPPER_CASE names, lines marked '# search:')"
            )
        return "\n".join(line for line in lines if line)

    # -- the two halves ---------------------------------------------------------------------

    def _hinted(self, ctx: ProposalContext) -> ProposalContext:
        """``ctx`` whose program tells the LLM that numbers are tuned after it."""
        program = ctx.program
        instructions = (getattr(program, "instructions", "") or "") + STRUCTURE_NOTE
        try:
            program = dataclasses.replace(program, instructions=instructions)
        except TypeError:  # not a dataclass (a plugin's program object): leave it
            return ctx
        return dataclasses.replace(ctx, program=program)

    def _structure(self, ctx: ProposalContext) -> Proposal:
        self._made[ctx.experiment] = "llm"
        try:
            proposal = self.llm.propose(self._hinted(ctx))
        except BaseException:
            self._made.pop(ctx.experiment, None)
            raise
        proposal.extra["made_by"] = "llm"
        return proposal

    def _tune(self, ctx: ProposalContext, entry: Entry | None) -> Proposal:
        self._made[ctx.experiment] = "optuna"
        if entry is not None:
            try:
                return self._tune_entry(ctx, entry)
            except (ProposerError, ProposerFatal):
                # It no longer applies, or not as a tunable change (its numbers are not
                # there, or bound twice now): off the list; the best's numbers instead.
                self._skip.add(entry.exp.index)
        try:
            proposal = self.tuner.propose(ctx)
        except ProposerFatal as exc:
            if "nothing to tune" not in str(exc):
                raise
            # Nothing numeric yet: the LLM's turn, whatever the bandit said.
            self._made[ctx.experiment] = "llm"
            return self._structure(ctx)
        except BaseException:
            self._made.pop(ctx.experiment, None)
            raise
        proposal.extra["made_by"] = "optuna"
        return proposal

    def _refine(self, ctx: ProposalContext, source: PastExperiment) -> Proposal:
        """A change kept after tuning: its numbers, now in the best, tuned on in its study."""
        self._made[ctx.experiment] = "optuna"
        try:
            proposal = self.tuner.propose(
                ctx, focus=knobs_in(source.diff), study_name=f"entry-{source.index}"
            )
        except (ProposerError, ProposerFatal):
            return self._tune(ctx, None)
        proposal.description = f"#{source.index} tuned on: {proposal.description}"
        proposal.extra.update(made_by="optuna", builds_on=source.index)
        return proposal

    def _tune_entry(self, ctx: ProposalContext, entry: Entry) -> Proposal:
        """The entry's change on top of the best, its numbers moved by a study of its own."""
        root = Path(ctx.root)
        touched = [fd.path for fd in patch.parse(entry.exp.diff)]
        before: dict[str, str | None] = {}
        for rel in touched:
            path = root / rel
            before[rel] = path.read_text() if path.is_file() else None
        texts = {rel: text for rel, text in before.items() if text is not None}
        new = patch.apply(texts, entry.exp.diff)
        if new is None:
            raise ProposerError(f"#{entry.exp.index} no longer applies on the best")
        for rel, text in new.items():
            (root / rel).write_text(text)
        try:
            proposal = self.tuner.propose(
                ctx,
                focus=list(entry.knobs),
                study_name=f"entry-{entry.exp.index}",
                start_value=entry.exp.objective,
            )
        except BaseException:
            for rel, text in before.items():  # the checkout back at the best
                if text is None:
                    (root / rel).unlink(missing_ok=True)
                else:
                    (root / rel).write_text(text)
            raise
        idea = entry.exp.description
        idea = idea if len(idea) <= 80 else idea[:77] + "..."
        proposal.description = (
            f"#{entry.exp.index} on the best, tuned: {proposal.description} ({idea})"
        )
        proposal.extra.update(made_by="optuna", builds_on=entry.exp.index)
        return proposal


def llm_name(config: pytest.Config, name: str = "hybrid") -> str:
    """The LLM half: ``hybrid:NAME`` names it; else anthropic with ANTHROPIC_API_KEY, else
    openai with an OpenAI key or endpoint; else the run cannot start."""
    import os

    if ":" in name:
        return name.split(":", 1)[1]
    if os.environ.get("ANTHROPIC_API_KEY") or os.environ.get("ANTHROPIC_AUTH_TOKEN"):
        return "anthropic"
    base_url = None
    with contextlib.suppress(ValueError, AttributeError):
        base_url = config.getoption("autoresearch_base_url", None)
    if base_url or os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL"):
        return "openai"
    raise ProposerFatal(
        "the hybrid proposer needs an LLM: set ANTHROPIC_API_KEY (Claude), or OPENAI_API_KEY / "
        "--autoresearch-base-url (an OpenAI-compatible endpoint), or name a plugin's proposer "
        "with --autoresearch-proposer hybrid:NAME; --autoresearch-proposer optuna runs offline"
    )


def build(config: pytest.Config, name: str = "hybrid") -> HybridProposer:
    """The ``hybrid`` proposer: the LLM half through the make_proposer hook, Optuna seeded
    with ``--autoresearch-seed``."""
    from pytest_autoresearch.proposers import optuna

    half = llm_name(config, name)
    if half in ("hybrid", "optuna") or half.startswith("hybrid:"):
        raise ProposerFatal(f"hybrid:{half}: the LLM half must be an LLM proposer, not {half!r}")
    llm = config.hook.pytest_autoresearch_make_proposer(name=half, config=config)
    if llm is None:
        raise ProposerFatal(f"no proposer called {half!r} for the hybrid's LLM half")
    return HybridProposer(llm, optuna.build(config))
