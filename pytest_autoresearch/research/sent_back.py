"""A proposal that repeats an earlier or in-flight experiment goes back to the proposer.

A part of ``ResearchLoop`` (research/loop.py) kept in its own file. After the scope
check and before anything is measured, the candidate's change is compared with every
change already measured (kept or discarded) or in flight on the same best commit
(``dedupe``: the normalised diff, exact or near). A repeat is not measured: the checkout
is restored, a ``duplicate`` line is journaled, the proposer is told (``observe`` with
status ``duplicate`` and the earlier value, so Optuna learns it) and asked again for the
same experiment, with the earlier result in ``ctx.sent_back``. It costs no evaluation
and no experiment of ``-n``; its tokens are billed with the experiment. After
``MAX_SENT_BACK`` repeats in a row the experiment is recorded as an ``error``, so a
proposer that only repeats itself cannot spin the loop.
"""

from __future__ import annotations

from typing import Any

from pytest_autoresearch.proposers.base import Cost, Outcome
from pytest_autoresearch.research.dedupe import Seen
from pytest_autoresearch.research.records import now

MAX_SENT_BACK = 3  # repeats sent back for one experiment before it is an error
MEASURED = ("keep", "discard")  # the statuses of changes never measured again


class SendBack:
    """Mixed into ``ResearchLoop`` (first, so ``_learn`` also remembers each change)."""

    @property
    def seen(self: Any) -> Seen:
        """Every finished experiment's change, by parent (filled by ``_learn``)."""
        if "_seen" not in self.__dict__:
            self._seen = Seen()
        return self._seen

    def sent_back_lines(self: Any, index: int) -> list[str]:
        """What was sent back for experiment ``index`` so far, for its next proposal."""
        return list(self.__dict__.setdefault("_sent", {}).get(index, []))

    def _learn(self: Any, rec: dict) -> None:
        super()._learn(rec)
        # Measured changes only: a crash, a timeout or a lost worker may be the machine's
        # fault, and a rejected or failed proposal had no value; those may be tried again.
        if rec.get("status") in MEASURED:
            self.seen.add(rec.get("parent") or "", rec.get("diff") or "", rec)

    def _sent_back(self: Any, cand: Any) -> bool:
        """True when the candidate repeats another and was handled here (not measured)."""
        rec = cand.rec
        in_flight = [(c.rec["parent"], c.rec["diff"], c.rec) for c in self.pending.values()]
        found = self.seen.find(rec["parent"], rec["diff"], also=in_flight)
        if found is None:
            return False
        kind, earlier = found
        index = rec["index"]
        line = _what(rec, kind, earlier, self.objective)
        tries = self.__dict__.setdefault("_sent", {}).setdefault(index, [])
        tries.append(line)
        self.journal.write(
            "duplicate", index=index, of=earlier["index"], kind=kind,
            description=rec["description"], made_by=rec.get("made_by"), diff=rec["diff"],
            cost=cand.cost.as_dict(), at=now(),
        )  # fmt: skip
        self.echo(f"  [{index}] sent back, not measured: {line}")
        self.repo.restore()
        self._waiting[index] = self._waiting.get(index, Cost()) + cand.cost
        measured = earlier.get("status") in ("keep", "discard")
        value = earlier.get("objective") if measured else None
        self.proposer.observe(cand.ctx, cand.proposal, Outcome("duplicate", value, line))
        if len(tries) > MAX_SENT_BACK:
            rec["cost"] = self._waiting.pop(index).as_dict()
            why = f"the proposer repeated earlier experiments {len(tries)} times in a row ({line})"
            self._finish(rec, cand.ctx, None, "error", why, cand.t0, valid=False)
            return True
        self._propose(index)  # the same experiment again, told what it repeated
        return True


def _what(rec: dict, kind: str, earlier: dict, objective: str) -> str:
    """One line for the proposer and the terminal: what it repeated, and how that went."""
    mine = rec.get("description") or "(no description)"
    same = (
        "the same change as" if kind == "duplicate" else "a near-duplicate of (numbers within 0.1%)"
    )
    where = f"#{earlier['index']}"
    status = earlier.get("status")
    if status is None:
        return f"'{mine}' is {same} {where}, being measured right now: propose something else"
    result = status
    value = earlier.get("objective")
    if isinstance(value, (int, float)):
        result += f", {objective} {value:.6g}"
    delta = earlier.get("improvement")
    if isinstance(delta, (int, float)):
        result += f", {delta:+.4g} against the best then"
    return f"'{mine}' is {same} {where} ({result}) on this same best: propose something else"
