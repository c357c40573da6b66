"""The outside agent as a proposer: its proposal is the change it left in the working tree.

``pytest --autoresearch-try "description"`` (research/agent_try.py) takes the agent's
uncommitted change out of the checkout before the tests are collected and saves it in
the record (vcs/carry.py). ``propose()`` puts it back: the loop then sees a proposer that
edited the tree, exactly as with any other proposer, and runs the same scope check,
isolated evaluation and keep rule. The loop knows nothing of agents.

Why the change is replayed here and not left in the tree: the research branch is started
on a clean tree, and on a tag's first try the baseline is measured before anything is
proposed, on the unchanged code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytest_autoresearch.proposers.base import (
    Failure,
    Outcome,
    Proposal,
    ProposalContext,
    ProposerError,
)
from pytest_autoresearch.vcs import carry

NAME = "working-tree"


class WorkingTreeProposer:
    """Replays one saved change (the carry file); the agent, not this, does the thinking."""

    name = NAME

    def __init__(self, carry_file: Path) -> None:
        self.carry_file = Path(carry_file)

    def propose(self, ctx: ProposalContext) -> Proposal:
        data = carry.load(self.carry_file)
        if data is None:
            raise ProposerError(f"no change to try: {self.carry_file} is missing")
        if ctx.sent_back:  # the loop measured this very change on this best already
            raise ProposerError(
                f"not measured again: {ctx.sent_back[-1]}; the change is saved in {self.carry_file}"
            )
        data["index"] = ctx.experiment  # written before the tree changes: resume knows it
        carry.write(self.carry_file, data)
        try:
            carry.apply(ctx.root, data["patch"])
        except Exception as exc:  # VcsError: the loop restores the tree and records "error"
            raise ProposerError(
                f"the change could not be applied on the best commit ({exc}); it is saved in "
                f"{self.carry_file}"
            ) from None
        return Proposal(data["description"], extra={"paths": data.get("paths", [])})

    def repair(self, ctx: ProposalContext, failure: Failure) -> Proposal | None:
        """The agent repairs in its next try, with the log tail the verdict printed."""
        return None

    def observe(self, ctx: ProposalContext, proposal: Proposal, outcome: Outcome) -> None:
        pass

    def close(self) -> None:
        pass


def build(config: Any) -> WorkingTreeProposer:
    """The proposer of a ``--autoresearch-try`` run (the carry file its first step wrote)."""
    from pytest_autoresearch.program.options import TRY_KEY

    state = config.stash.get(TRY_KEY, None)
    if state is None:
        from pytest_autoresearch.proposers.base import ProposerFatal

        raise ProposerFatal(
            "the working-tree proposer judges an outside agent's change: run "
            "pytest --autoresearch-try 'what you changed' instead of naming it"
        )
    return WorkingTreeProposer(state.carry_file)
