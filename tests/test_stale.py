"""The policy for candidates whose parent moved while they ran (pure: literal shas)."""

from __future__ import annotations

import pytest

from pytest_autoresearch.research.stale import InFlight, promising, resolve

A, B, C = "a" * 40, "b" * 40, "c" * 40


def test_a_candidate_on_the_best_is_decided() -> None:
    r = resolve(parent=A, best=A, promising=False, applies=None)
    assert r.action == "decide"


def test_no_better_than_its_own_parent_is_discarded_without_a_remeasure() -> None:
    r = resolve(parent=A, best=B, promising=False, applies=None)
    assert r.action == "discard"
    assert "no better than its parent" in r.reason and A[:12] in r.reason and B[:12] in r.reason


def test_a_promising_candidate_is_rebased_when_its_diff_applies() -> None:
    r = resolve(parent=A, best=B, promising=True, applies=True)
    assert r.action == "rebase" and f"on top of {B[:12]}" in r.reason


def test_it_is_stale_when_the_diff_does_not_apply() -> None:
    r = resolve(parent=A, best=B, promising=True, applies=False)
    assert r.action == "stale" and "does not apply" in r.reason


def test_it_is_stale_when_overtaken_again_after_a_rebase() -> None:
    r = resolve(parent=B, best=C, promising=True, applies=True, rebases=1)
    assert r.action == "stale" and "after 1 re-base" in r.reason
    r = resolve(parent=B, best=C, promising=True, applies=True, rebases=1, max_rebases=2)
    assert r.action == "rebase"


def test_two_candidates_on_one_parent_are_never_both_decided_there() -> None:
    """Both proposed on A; the first is kept (best becomes B); the second must be re-measured."""
    best = A
    first = resolve(parent=A, best=best, promising=True, applies=True)
    assert first.action == "decide"
    best = B  # the first one was kept
    second = resolve(parent=A, best=best, promising=True, applies=True)
    assert second.action == "rebase"  # measured again on top of the first, then decided
    again = resolve(parent=B, best=best, promising=True, applies=True, rebases=1)
    assert again.action == "decide"


def test_bad_arguments_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="needs applies"):
        resolve(parent=A, best=B, promising=True, applies=None)
    with pytest.raises(ValueError, match="commit shas"):
        resolve(parent="", best=B, promising=True, applies=True)
    with pytest.raises(ValueError, match="zero or more"):
        resolve(parent=A, best=B, promising=True, applies=True, rebases=-1)
    with pytest.raises(ValueError, match="keep, confirm or discard"):
        promising("maybe")


def test_promising_actions() -> None:
    assert promising("keep") and promising("confirm") and not promising("discard")


def test_in_flight_tells_what_is_being_tried_and_what_fell_behind() -> None:
    flight = InFlight()
    flight.add("1", A, "raise LR")
    flight.add("2", A, "")
    flight.add("3", B, "more layers", rebases=1)
    assert len(flight) == 3
    assert flight.descriptions() == ["raise LR", "more layers"]
    assert flight.behind(B) == ["1", "2"]
    assert flight.done("3") == (B, "more layers", 1)
    with pytest.raises(ValueError, match="already in flight"):
        flight.add("1", B)
    assert flight.behind(A) == []
