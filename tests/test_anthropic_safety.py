"""The Anthropic proposer fails safely, through the real SDK streaming from a loopback server:
a cut stream is sent again and, cut every time, is "unavailable" with what it spent; a body
that ends before message_stop counts as cut; long experiments cache the prefix for an hour."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
from test_anthropic_proposer import improve_lr, proposer, root, server

from pytest_autoresearch.proposers import anthropic as ar
from pytest_autoresearch.proposers.base import ProposerUnavailable
from pytest_autoresearch.reporting.report import write_report

try:
    from llm_server import TRAIN, Cut, edit, make_ctx, message
except ImportError:  # tests/ became a package
    from tests.llm_server import TRAIN, Cut, edit, make_ctx, message

__all__ = ["root", "server"]  # the fixtures, shared with test_anthropic_proposer


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch):
    monkeypatch.setattr(ar.time, "sleep", lambda seconds: None)


def test_a_stream_cut_every_time_is_unavailable_and_bills_what_it_reported(server, root):
    cut = Cut(message(edit("view", "train.py")), events=2)
    server.add(cut, cut, cut)
    with pytest.raises(ProposerUnavailable, match="stream was cut 3 times") as info:
        proposer(server).propose(make_ctx(root))
    # Each cut stream had reported message_start's 1000 input tokens: all are billed.
    assert info.value.cost.input_tokens == 3000 and info.value.cost.usd > 0
    assert len(server.posts()) == 3 and (root / "train.py").read_text() == TRAIN


def test_a_stream_that_ends_before_message_stop_is_sent_again(server, root):
    server.add(Cut(message(edit("view", "train.py")), events=4, clean=True), *improve_lr())
    proposal = proposer(server).propose(make_ctx(root))
    assert proposal.description == "raise LR to 0.04"
    first, second = server.posts()[:2]
    assert first.body == second.body and first.body["stream"] is True


def test_long_experiments_cache_the_stable_prefix_for_an_hour(server, root):
    server.add(*improve_lr(), *improve_lr())
    p = proposer(server)
    p.propose(make_ctx(root))
    assert server.posts()[0].body["system"][0]["cache_control"] == {"type": "ephemeral"}
    (root / "train.py").write_text(TRAIN)
    long = dataclasses.replace(make_ctx(root, experiment=2), seconds_per_experiment=600.0)
    p.propose(long)
    request = server.posts()[3].body
    assert request["system"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    # The conversation's own breakpoint stays at five minutes (shorter after longer).
    assert request["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}


def test_report_md_carries_the_notes(tmp_path):
    (tmp_path / "NOTES.md").write_text("# Notes\n- LR 0.04 helped\n")
    result = SimpleNamespace(objective="loss", goal="min", baseline=1.0, sigma=0.01)
    text = write_report(tmp_path, [], result).read_text()
    assert "## The model's notes (NOTES.md)" in text and "- LR 0.04 helped" in text
