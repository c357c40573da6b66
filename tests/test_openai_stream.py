"""The OpenAI-compatible proposer streams: answers are put together from their chunks, a
stream cut in the middle is sent again (a half-written edit is never run), a stream that
stays cut is "unavailable"; and it offers the check tool like the Anthropic proposer."""

from __future__ import annotations

import json

import pytest
from test_openai_proposer import improve_lr, proposer, root, server

from pytest_autoresearch.proposers import openai as oa
from pytest_autoresearch.proposers.base import CheckResult, ProposerUnavailable
from pytest_autoresearch.proposers.llm import CHECK_FUNCTION, CHECKS_PER_EXCHANGE

try:
    from llm_server import TRAIN, Cut, Reply, call, chat, make_ctx, tool_messages
except ImportError:  # tests/ became a package
    from tests.llm_server import TRAIN, Cut, Reply, call, chat, make_ctx, tool_messages

__all__ = ["root", "server"]  # the fixtures, shared with test_openai_proposer

HALF = chat(None, call("create", "train.py", file_text="# half a file\nLR = 9\n"))


@pytest.fixture
def waits(monkeypatch) -> list[float]:
    """The waits between resent streams, recorded instead of slept."""
    slept: list[float] = []
    monkeypatch.setattr(oa, "_sleep", slept.append)
    return slept


def test_a_stream_cut_in_the_middle_is_sent_again_and_its_half_edit_never_run(server, root, waits):
    usage = {"prompt_tokens": 1200, "completion_tokens": 80, "total_tokens": 1280}
    server.add(
        Cut(HALF, events=3),  # role, the call's name, half its arguments; then the cut
        Cut(HALF, events=4, clean=True),  # all the arguments, but no finish reason
        chat(None, call("view", "train.py"), usage=usage),
        *improve_lr()[1:],
    )
    proposal = proposer(server).propose(make_ctx(root))
    first, second, third = (r.body for r in server.posts()[:3])
    assert first["stream"] is True and first["stream_options"] == {"include_usage": True}
    assert first == second == third  # the same request, sent again after each cut
    assert waits == [1.0, 2.0]
    # Neither cut answer was run: the view and the edit after them were.
    assert "# half a file" not in (root / "train.py").read_text()
    assert "LR = 0.04" in (root / "train.py").read_text()
    assert proposal.description == "raise LR to 0.04"
    (viewed,) = tool_messages(server.posts()[3])
    assert "LR = 0.01" in viewed["content"]  # the streamed call's arguments, put together
    # Usage comes in a stream's last chunk: billed for the three turns that ended (1200,
    # then 1000 twice); the cut attempts never reported theirs.
    assert proposal.cost.input_tokens == 1200 + 2 * 1000
    assert proposal.cost.output_tokens == 80 + 2 * 100


def test_a_stream_that_stays_cut_is_unavailable_and_nothing_is_written(server, root, waits):
    server.add(*[Cut(HALF, events=3) for _ in range(3)])
    with pytest.raises(ProposerUnavailable, match=r"stream was cut 3 times \(.*Error"):
        proposer(server).propose(make_ctx(root))
    assert (root / "train.py").read_text() == TRAIN and len(server.posts()) == 3


def test_a_server_that_refuses_stream_options_is_asked_without(server, root):
    refused = {"error": {"message": "Unrecognized request argument: stream_options"}}
    server.add(Reply(400, refused), *improve_lr())
    p = proposer(server)
    assert p.propose(make_ctx(root)).description == "raise LR to 0.04"
    assert "stream_options" in server.posts()[0].body
    assert all("stream_options" not in r.body for r in server.posts()[1:])
    assert p.stream_usage is False and all(r.body["stream"] for r in server.posts())


def test_the_check_tool_is_offered_and_answered(server, root):
    results = iter(
        [CheckResult(False, "tests/test_g.py::test_x failed: assert 9 < 1", "E  assert 9 < 1", 2.0)]
        + [CheckResult(True, "1 passed in 0.5s", "1 passed", 0.5)] * 5
    )
    calls: list[str] = []

    def check() -> CheckResult:
        calls.append((root / "train.py").read_text())
        return next(results)

    ctx = make_ctx(root)
    ctx.check = check
    use = {"id": "call_chk", "type": "function", "function": {"name": "check", "arguments": "{}"}}
    server.add(
        chat(None, call("str_replace", "train.py", old_str="LR = 0.01", new_str="LR = 9.0"), use),
        chat(None, call("str_replace", "train.py", old_str="LR = 9.0", new_str="LR = 0.04"), use),
        chat(None, use, use, use),  # past the allowance: the last one is refused
        chat("Description: raise LR to 0.04"),
    )
    proposal = proposer(server).propose(ctx)
    body = server.posts()[0].body
    assert (
        body["tools"][1] == CHECK_FUNCTION and "The check tool:" in body["messages"][0]["content"]
    )
    # Each check ran on the file as the model had just left it.
    assert "LR = 9.0" in calls[0] and "LR = 0.04" in calls[1]
    failed = tool_messages(server.posts()[1])[-1]["content"]
    assert failed.startswith("check FAILED: tests/test_g.py::test_x failed: assert 9 < 1")
    assert f"{CHECKS_PER_EXCHANGE - 1} check(s) left" in failed
    last = [m["content"] for m in tool_messages(server.posts()[3])]
    assert last[-1].startswith(f"Error: no checks left ({CHECKS_PER_EXCHANGE} used")
    assert len(calls) == CHECKS_PER_EXCHANGE and proposal.extra["checks"] == CHECKS_PER_EXCHANGE
    assert json.loads(use["function"]["arguments"]) == {}
    # Without a check in the context, the tool is not offered.
    server.add(*improve_lr())
    (root / "train.py").write_text(TRAIN)
    proposer(server).propose(make_ctx(root))
    assert [t["function"]["name"] for t in server.posts()[-1].body["tools"]] == [
        "str_replace_based_edit_tool"
    ]
