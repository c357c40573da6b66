"""The OpenAI-compatible proposer fails safely: a `length` finish is never applied, the
output-limit parameter a server asks for is used, a prompt past a local server's context
is warned about, and an outage is "unavailable" (the loop retries it), not an error."""

from __future__ import annotations

import pytest
from test_openai_proposer import improve_lr, proposer, root, server

from pytest_autoresearch.proposers.base import ProposerUnavailable

try:
    from llm_server import TRAIN, Reply, call, chat, chat_error, make_ctx, tool_messages
except ImportError:  # tests/ became a package
    from tests.llm_server import TRAIN, Reply, call, chat, chat_error, make_ctx, tool_messages

__all__ = ["root", "server"]  # the fixtures, shared with test_openai_proposer


def test_a_call_cut_at_the_length_limit_is_not_run(server, root):
    server.add(
        chat(None, call("create", "train.py", file_text="LR = 0.0"), finish_reason="length"),
        *improve_lr()[1:],
    )
    proposal = proposer(server).propose(make_ctx(root))
    (answer,) = tool_messages(server.posts()[1])
    assert "cut off at the output token limit" in answer["content"]
    assert "LR = 0.04" in (root / "train.py").read_text() and proposal.extra["refused"] == 1


def test_the_output_limit_parameter_the_server_asks_for_is_used(server, root):
    server.add(
        Reply(
            400,
            {
                "error": {
                    "message": "Unsupported parameter: 'max_tokens' is not supported with this "
                    "model. Use 'max_completion_tokens' instead.",
                    "type": "invalid_request_error",
                    "code": "unsupported_parameter",
                }
            },
        ),
        *improve_lr(),
    )
    p = proposer(server)
    assert p.propose(make_ctx(root)).description == "raise LR to 0.04"
    first, second = server.posts()[:2]
    assert "max_tokens" in first.body and "max_completion_tokens" in second.body
    assert p.limit_key == "max_completion_tokens"  # for good: the next call uses it at once
    assert all("max_completion_tokens" in r.body for r in server.posts()[1:])


def test_a_prompt_past_the_local_servers_context_is_warned_about(server, root):
    server.models_reply = Reply(
        200,
        {
            "object": "list",
            "data": [
                {"id": "local", "object": "model", "created": 0, "owned_by": "vllm",
                 "max_model_len": 4096},
            ],
        },
    )  # fmt: skip
    p = proposer(server, model="local", max_tokens=3800)
    p.check()
    assert p.context_window == 4096
    server.add(*improve_lr())
    with pytest.warns(UserWarning, match=r"exceeds .*'s context of 4096 tokens"):
        p.propose(make_ctx(root))


def test_a_persistent_503_is_unavailable_not_an_error(server, root):
    server.add(*[chat_error(503, "busy") for _ in range(3)])
    with pytest.raises(ProposerUnavailable, match=r"kept answering 503 after 2 retries"):
        proposer(server).propose(make_ctx(root))
    assert (root / "train.py").read_text() == TRAIN
