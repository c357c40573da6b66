"""Fault injection for the crash-safety tests: a kill -9 at a named step of an experiment.

``AUTORESEARCH_FAULT=STEP`` or ``STEP:INDEX`` makes the loop SIGKILL itself at that step
(of that experiment), as a power cut or ``kill -9`` would; the next run must resume with
nothing lost and nothing recorded twice (tests/test_crash_safety.py, at 1 and 2 workers).
"""

from __future__ import annotations

import os
import signal

FAULT_ENV = "AUTORESEARCH_FAULT"
FAULT_STEPS = (
    "baseline",  # after the first baseline run, before the baseline is journaled
    "after-start",  # the experiment's start line is written, nothing proposed yet
    "after-proposal",  # the proposer has edited the tree, nothing checked yet
    "evaluation",  # after the candidate's first evaluation
    "confirmation",  # after a confirmation run
    "before-commit",  # a keep is journaled (write-ahead), the branch has not moved
    "after-commit",  # the branch moved, the experiment's record is not written
    "before-restore",  # a discard is journaled (write-ahead), the tree is not restored
    "after-restore",  # the tree is restored, the experiment's record is not written
    "after-record",  # the record is written
)


class FaultError(ValueError):
    """``AUTORESEARCH_FAULT`` names no step; the message lists the steps."""


def parse_fault(text: str | None) -> tuple[str, int | None] | None:
    """``STEP`` or ``STEP:INDEX`` from FAULT_ENV; a typo is an error, not a silent no-op."""
    if not text:
        return None
    step, _, index = text.partition(":")
    if step not in FAULT_STEPS or (index and not index.isdigit()):
        raise FaultError(
            f"{FAULT_ENV}={text!r}: expected STEP or STEP:INDEX with STEP one of "
            + ", ".join(FAULT_STEPS)
        )
    return step, int(index) if index else None


class Faults:
    """Where to kill this process, if anywhere: ``at(step, index)`` is a no-op otherwise."""

    def __init__(self, text: str | None) -> None:
        self.plan = parse_fault(text)

    def at(self, step: str, index: int | None = None) -> None:
        plan = self.plan
        if plan is not None and plan[0] == step and plan[1] in (None, index):
            os.kill(os.getpid(), signal.SIGKILL)
