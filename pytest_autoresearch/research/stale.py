"""What becomes of a candidate that finishes after the best has moved (K workers): pure policy.

With several experiments in flight, each is proposed against the best commit of the
moment, its *parent*. By the time it has been measured another candidate may have been
kept, so its measurement compares it with a commit that is no longer the best. The rules
(docs/parallel.md has the why):

1. A candidate is *decided* (keep rule, ``decide.keep_decision``) only while its parent is
   still the best; a keep moves the best, by a compare-and-swap on the research branch.
   So two candidates are never both kept on one parent: the second one's parent is no
   longer the best when it finishes, and rule 2 applies to it.
2. A candidate whose parent moved and that was no better than its own parent (the keep
   rule would discard it there) is discarded as it is: a change that did not help the old
   best is not worth a second measurement on the new one.
3. A promising one (keep or confirm against its parent) is *re-based*: its diff is applied
   on the new best and it is measured again there, from scratch, as a new trial. What it
   measured on the old parent is journaled with it but never counted towards a keep.
4. When its diff no longer applies on the new best, or it was re-based ``max_rebases``
   times already and the best moved again, it is dropped with status ``stale``.

Like pytest-xdist's ``scheduler/``, nothing here does I/O: the caller checks whether a diff
applies (``workspace.Workspace.applies``) and passes the answer in.

API::

    Resolution(action, reason)       action: "decide" | "discard" | "rebase" | "stale"
    resolve(parent=, best=, promising=, applies=, rebases=, max_rebases=1) -> Resolution
    promising(action) -> bool        a keep_decision action worth re-basing
    InFlight                         trials under way: parent, description; behind(best)
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["MAX_REBASES", "InFlight", "Resolution", "promising", "resolve"]

MAX_REBASES = 1  # a candidate overtaken twice is dropped: the code under it changed twice


@dataclass(frozen=True)
class Resolution:
    """What to do with a finished candidate, and one line saying why."""

    action: str  # "decide" | "discard" | "rebase" | "stale"
    reason: str


def promising(action: str) -> bool:
    """Is a keep-rule action on the candidate's own parent worth a re-measure on the new best?"""
    if action not in ("keep", "confirm", "discard"):
        raise ValueError(f"a keep_decision action is keep, confirm or discard, not {action!r}")
    return action != "discard"


def resolve(
    *,
    parent: str,
    best: str,
    promising: bool,
    applies: bool | None,
    rebases: int = 0,
    max_rebases: int = MAX_REBASES,
) -> Resolution:
    """Decide, discard, re-base or drop a finished candidate measured on ``parent``.

    ``promising``: the keep rule against its own parent said keep or confirm. ``applies``:
    whether its diff applies on ``best`` (only looked at when it matters; None = unknown,
    which is an error then). ``rebases``: how often it was re-based already.
    """
    if not parent or not best:
        raise ValueError("parent and best must be commit shas")
    if rebases < 0 or max_rebases < 0:
        raise ValueError("rebases and max_rebases must be zero or more")
    if parent == best:
        return Resolution("decide", f"measured on the best commit {best[:12]}")
    moved = f"the best moved from {parent[:12]} to {best[:12]} while it ran"
    if not promising:
        return Resolution("discard", f"no better than its parent, and {moved}")
    if applies is None:
        raise ValueError("a promising candidate whose parent moved needs applies=True/False")
    if not applies:
        return Resolution("stale", f"{moved}, and its diff does not apply there")
    if rebases >= max_rebases:
        return Resolution(
            "stale", f"{moved} again after {rebases} re-base{'s' if rebases != 1 else ''}"
        )
    return Resolution("rebase", f"{moved}; measuring it again on top of {best[:12]}")


@dataclass
class _Entry:
    parent: str
    description: str
    rebases: int = 0


@dataclass
class InFlight:
    """The trials under way: what each sits on and tries (proposers are told, not to repeat)."""

    entries: dict[str, _Entry] = field(default_factory=dict)

    def add(self, trial_id: str, parent: str, description: str = "", rebases: int = 0) -> None:
        if trial_id in self.entries:
            raise ValueError(f"trial {trial_id} is already in flight")
        self.entries[trial_id] = _Entry(parent, description, rebases)

    def done(self, trial_id: str) -> tuple[str, str, int]:
        """Forget a finished trial; its (parent, description, rebases)."""
        entry = self.entries.pop(trial_id)
        return entry.parent, entry.description, entry.rebases

    def behind(self, best: str) -> list[str]:
        """Trials measured on a parent that is no longer ``best`` (they will need rule 2-4)."""
        return [tid for tid, e in self.entries.items() if e.parent != best]

    def descriptions(self) -> list[str]:
        """What is being tried right now, for the next proposal's context."""
        return [e.description for e in self.entries.values() if e.description]

    def __len__(self) -> int:
        return len(self.entries)
