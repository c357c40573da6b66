"""The check tool's loop side: the guards and program.md's ``smoke:`` tests, run on a
proposal as it stands, before a full evaluation.

An LLM proposer offers the model a tool named ``check`` (proposers/llm.py); calling it
runs ``ProposalContext.check``, made here per experiment. It runs the tests in the user's
checkout through the same launcher as an evaluation (the session's ``LoopSettings.check``:
the same isolation, scratch, secret-free environment), within a time limit, and answers
pass/fail with the end of the output. It never measures and never decides a keep, and it
writes nothing to the checkout: the proposal is held as a snapshot commit while the tests
run, and the tree is put back to exactly that afterwards (outputs and planted files gone).
The calls and their time are counted in the experiment's record (``checks``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pytest_autoresearch.proposers.base import CheckResult

CHECK_TIMEOUT = 120.0  # seconds, unless program.md's check_timeout says otherwise
OUTPUT_LINES = 40  # of the test output, handed to the model


def check_args(program: Any) -> list[str]:
    """What a check runs: the guards, then the smoke tests (each once)."""
    found = [*getattr(program, "guards", ()), *getattr(program, "smoke", ())]
    return list(dict.fromkeys(found))


def time_limit(program: Any, evaluation_timeout: float | None) -> float:
    """program.md's ``check_timeout``, else ``CHECK_TIMEOUT``; never above an evaluation's."""
    limit = float(getattr(program, "check_timeout", None) or CHECK_TIMEOUT)
    return min(limit, evaluation_timeout) if evaluation_timeout else limit


def check_for(loop: Any, rec: dict[str, Any]) -> Callable[[], CheckResult] | None:
    """The check of experiment ``rec`` (its proposal, then its repairs); None when the
    session offers none or there is nothing to run."""
    run = getattr(loop.s, "check", None)
    args = check_args(loop.program)
    if run is None or not args:
        return None

    def check() -> CheckResult:
        limit = time_limit(loop.program, getattr(loop, "timeout", None))
        t0 = loop.clock()
        held = loop.repo.snapshot(f"check of candidate {rec['index']}")
        try:
            ev = run(args, limit)
        finally:
            # What the tests wrote is flagged as if a proposal had written it, so that the
            # restore removes it; then the proposal comes back, exactly as it was.
            loop.repo.out_of_scope(loop.program.is_editable, after="proposal")
            loop.repo.restore()
            loop.repo.load(held)
        result = verdict(ev, limit, loop.clock() - t0)
        count(rec, result)
        outcome = "passed" if result.passed else "FAILED"
        loop.echo(f"  [{rec['index']}] check: {outcome}, {result.summary}")
        return result

    return check


def count(rec: dict[str, Any], result: CheckResult) -> None:
    """The record's ``checks``: calls, how many passed, their seconds."""
    stats = rec.setdefault("checks", {"calls": 0, "passed": 0, "seconds": 0.0})
    stats["calls"] += 1
    stats["passed"] += int(result.passed)
    stats["seconds"] = round(stats["seconds"] + result.seconds, 3)


def verdict(ev: Any, limit: float, seconds: float) -> CheckResult:
    """Pass or fail for one run of the tests (an ``Evaluation`` with no metric tests)."""
    output = "\n".join((ev.log_tail or "").rstrip().splitlines()[-OUTPUT_LINES:])
    if ev.status == "timeout":
        why = f"the tests took longer than the check's {limit:g}s limit"
        return CheckResult(False, why, output, seconds)
    if ev.status == "rejected":
        return CheckResult(False, f"the run was rejected: {ev.reason}", output, seconds)
    tests = list(ev.tests or [])
    failed = [t for t in tests if t.outcome in ("failed", "error")]
    if failed:
        t = failed[0]
        why = f"{t.nodeid} {t.outcome}"
        line = _telling_line(t.message or "")
        why += f": {line}" if line else ""
        if len(failed) > 1:
            why += f" (and {len(failed) - 1} more failed)"
        return CheckResult(False, why, output, seconds)
    if ev.returncode != 0:
        if ev.returncode == 5:
            why = "no tests were collected"
        else:
            line = _telling_line(output)
            why = f"pytest exited with code {ev.returncode}" + (f": {line}" if line else "")
        return CheckResult(False, why, output, seconds)
    passed = sum(1 for t in tests if t.outcome == "passed")
    return CheckResult(True, f"{passed} passed in {seconds:.1f}s", output, seconds)


_ERROR = re.compile(r"\b\w*(Error|Exception)\b")
_DETAIL = ("+", "-", "?", "where ", "At index")  # an assert's explanation, not its line


def _telling_line(text: str) -> str:
    """The telling line of pytest output: the exception raised (the last one), else the
    failed assert's first ``E`` line, else the last error line; shortened."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    marked = [ln[1:].strip() for ln in lines if ln.startswith("E ")]
    marked = [ln for ln in marked if ln and not ln.startswith(_DETAIL)]
    raised = [ln for ln in marked if _ERROR.match(ln)]
    if raised or marked:
        line = raised[-1] if raised else marked[0]
    else:
        found = [ln for ln in lines if _ERROR.search(ln) and not ln.startswith("=")]
        line = found[-1] if found else ""
    return line if len(line) <= 200 else line[:197] + "..."
