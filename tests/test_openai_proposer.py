"""The OpenAI-compatible proposer through the real openai SDK against a loopback server."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from pathlib import Path

import pytest

from pytest_autoresearch.proposers import openai as oa
from pytest_autoresearch.proposers.base import Failure, ProposerError, ProposerFatal
from pytest_autoresearch.proposers.editor import EDITOR_FUNCTION

try:
    from llm_server import (
        OPENAI_KEY,
        TRAIN,
        Reply,
        call,
        chat,
        chat_error,
        make_ctx,
        make_project,
        running_server,
        tool_messages,
    )
except ImportError:  # tests/ became a package
    from tests.llm_server import (
        OPENAI_KEY,
        TRAIN,
        Reply,
        call,
        chat,
        chat_error,
        make_ctx,
        make_project,
        running_server,
        tool_messages,
    )


@pytest.fixture
def server(monkeypatch):
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL", "AUTORESEARCH_PRICE"):
        monkeypatch.delenv(name, raising=False)
    with running_server(deadline=60) as srv:
        yield srv


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_project(tmp_path / "proj")


def proposer(server, **kw) -> oa.OpenAIProposer:
    kw.setdefault("max_retries", 2)
    kw.setdefault("model", "qwen-coder")
    return oa.OpenAIProposer(base_url=server.url + "/v1", timeout=10, **kw)


def improve_lr():
    return [
        chat(None, call("view", "train.py")),
        chat(
            "Raising LR.", call("str_replace", "train.py", old_str="LR = 0.01", new_str="LR = 0.04")
        ),
        chat("Done.\nDescription: raise LR to 0.04"),
    ]


def test_an_edit_through_a_function_call_is_applied(server, root):
    server.add(*improve_lr())
    proposal = proposer(server, api_key=OPENAI_KEY).propose(make_ctx(root))
    assert (root / "train.py").read_text() == TRAIN.replace("0.01", "0.04")
    assert proposal.description == "raise LR to 0.04" and proposal.extra["files"] == ["train.py"]
    body = server.requests[0].body
    assert server.requests[0].path == "/v1/chat/completions"
    assert body["model"] == "qwen-coder" and body["max_tokens"] == 8192
    assert body["tools"] == [EDITOR_FUNCTION]
    assert body["messages"][0]["role"] == "system"
    assert "Tune the learning rate LR" in body["messages"][0]["content"]
    assert "Current best loss: 0.5" in body["messages"][1]["content"]
    (answer,) = tool_messages(server.requests[1])
    assert "     1\tLR = 0.01" in answer["content"]
    assistant = server.requests[2].body["messages"][4]
    assert assistant["role"] == "assistant" and assistant["tool_calls"][0]["function"]["name"] == (
        "str_replace_based_edit_tool"
    )


def test_refusals_and_bad_calls_are_answered_and_the_exchange_goes_on(server, root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.py").write_text("SAFE = 1\n")
    (root / "lib").mkdir()
    os.symlink(outside, root / "lib" / "link")
    bad_json = call("view", "train.py")
    bad_json["function"]["arguments"] = "{not json"
    shell = call("view", "train.py")
    shell["function"]["name"] = "bash"
    server.add(
        chat(
            None,
            call("create", "tests/test_metric.py", file_text="def test_loss(): pass\n"),
            call("str_replace", "../outside/x.py", old_str="SAFE = 1", new_str="SAFE = 0"),
            call("str_replace", "lib/link/x.py", old_str="SAFE = 1", new_str="SAFE = 0"),
            bad_json,
            shell,
        ),
        chat(None, call("insert", "train.py", insert_line=0, insert_text="# tuned\n")),
        chat("Description: comment"),
    )
    proposal = proposer(server).propose(make_ctx(root, editable=("train.py", "lib/**/*.py")))
    answers = [m["content"] for m in tool_messages(server.requests[1])]
    assert len(answers) == 5 and all(a.startswith("Error: ") for a in answers)
    assert "tests/test_metric.py: not an editable file" in answers[0]
    assert "'..' is not allowed" in answers[1]
    assert "'lib/link' is a symlink" in answers[2]
    assert "not valid JSON" in answers[3] and "unknown tool 'bash'" in answers[4]
    assert (outside / "x.py").read_text() == "SAFE = 1\n"
    assert (root / "tests" / "test_metric.py").read_text() == "def test_loss():\n    pass\n"
    assert proposal.extra["refused"] == 5 and proposal.description == "comment"


def test_repair_gets_the_log_tail(server, root):
    server.add(
        chat(None, call("str_replace", "train.py", old_str="LR * BATCH", new_str="lr * BATCH")),
        chat("Description: typo"),
    )
    p = proposer(server)
    ctx = make_ctx(root)
    p.propose(ctx)
    server.add(
        chat(None, call("str_replace", "train.py", old_str="lr * BATCH", new_str="LR * BATCH")),
        chat("Description: fixed typo"),
    )
    fixed = p.repair(ctx, Failure("crash", "NameError", "E   NameError: name 'lr' is not defined"))
    assert fixed is not None and fixed.description == "fixed typo"
    told = server.requests[2].body["messages"][-1]
    assert told["role"] == "user" and "NameError: name 'lr' is not defined" in told["content"]
    assert (root / "train.py").read_text() == TRAIN


def test_cost_uses_the_price_table_and_cached_tokens(server, root):
    usage = {
        "prompt_tokens": 1000,
        "completion_tokens": 100,
        "total_tokens": 1100,
        "prompt_tokens_details": {"cached_tokens": 400},
    }
    server.add(
        chat(None, call("create", "train.py", file_text="LR = 1\n"), usage=usage),
        chat("Description: x", usage=usage),
    )
    c = proposer(server, model="gpt-4o-2024-08-06").propose(make_ctx(root)).cost
    assert (c.input_tokens, c.cache_read_tokens, c.output_tokens) == (1200, 800, 200)
    assert c.usd == pytest.approx(2 * (600 * 2.5 + 400 * 1.25 + 100 * 10) / 1e6)


def test_local_models_cost_nothing_unless_priced(server, root, monkeypatch):
    server.add(chat(None, call("create", "train.py", file_text="LR = 1\n")), chat("Description: x"))
    assert proposer(server).propose(make_ctx(root)).cost.usd == 0.0
    monkeypatch.setenv("AUTORESEARCH_PRICE", "1,2")
    server.add(chat(None, call("create", "train.py", file_text="LR = 2\n")), chat("Description: y"))
    cost = proposer(server).propose(make_ctx(root, experiment=2)).cost
    assert cost.usd == pytest.approx(2 * (1000 * 1 + 100 * 2) / 1e6)
    monkeypatch.setenv("AUTORESEARCH_PRICE", "cheap")
    with pytest.raises(ProposerFatal, match="AUTORESEARCH_PRICE='cheap' is not"):
        proposer(server)


def test_429_then_success_and_persistent_503(server, root):
    server.add(chat_error(429, "slow down"), *improve_lr())
    assert proposer(server).propose(make_ctx(root)).description == "raise LR to 0.04"
    assert len(server.posts()) == 4
    server.add(*[chat_error(503, "busy") for _ in range(3)])
    with pytest.raises(ProposerError, match=r"kept answering 503 after 2 retries"):
        proposer(server).propose(make_ctx(root, experiment=2))


def test_401_is_fatal_and_the_key_stays_out(server, root):
    server.add(Reply(401, {"error": {"message": f"Incorrect API key provided: {OPENAI_KEY}"}}))
    with pytest.raises(ProposerFatal) as info:
        proposer(server, api_key=OPENAI_KEY).propose(make_ctx(root))
    msg = str(info.value)
    assert "rejected the API key (401)" in msg and "OPENAI_API_KEY" in msg and "optuna" in msg
    assert OPENAI_KEY not in msg and info.value.__cause__ is None
    # A 400 echoing the key is scrubbed too, and the proposal never holds the key.
    server.add(Reply(400, {"error": {"message": f"bad request for {OPENAI_KEY}"}}))
    with pytest.raises(ProposerError) as info:
        proposer(server, api_key=OPENAI_KEY).propose(make_ctx(root))
    assert OPENAI_KEY not in str(info.value) and "[REDACTED]" in str(info.value)
    server.add(*improve_lr())
    ctx = make_ctx(root, experiment=3)
    proposal = proposer(server, api_key=OPENAI_KEY).propose(ctx)
    assert OPENAI_KEY not in json.dumps(dataclasses.asdict(proposal))
    for req in server.posts():
        assert OPENAI_KEY.encode() not in req.raw
        assert req.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    for t in (ctx.state_dir / "transcripts").iterdir():
        assert OPENAI_KEY not in t.read_text()


def test_the_only_served_model_is_used_when_none_is_named(server, root):
    server.add(*improve_lr())
    p = proposer(server, model=None)
    p.propose(make_ctx(root))
    assert p.model == "test-model" and server.posts()[0].body["model"] == "test-model"
    server.models_reply = Reply(
        200,
        {
            "object": "list",
            "data": [
                {"id": "a", "object": "model", "created": 0, "owned_by": "x"},
                {"id": "b", "object": "model", "created": 0, "owned_by": "x"},
            ],
        },
    )
    with pytest.raises(
        ProposerFatal, match=r"serves 2 \(a, b\); choose one with --autoresearch-model"
    ):
        proposer(server, model=None).propose(make_ctx(root))


def test_check_finds_a_missing_server_or_model(server):
    proposer(server, model="test-model").check()
    with pytest.raises(ProposerFatal, match="does not serve model 'other'"):
        proposer(server, model="other").check()
    server.models_reply = chat_error(401, "nope")
    with pytest.raises(ProposerFatal, match="rejected the API key"):
        proposer(server).check()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = oa.OpenAIProposer(
        base_url=f"http://127.0.0.1:{port}/v1", model="m", max_retries=0, timeout=5
    )
    with pytest.raises(ProposerFatal, match=r"could not reach http://127.0.0.1:\d+/v1"):
        down.check()


def test_build_needs_a_key_or_a_base_url(pytester, monkeypatch):
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ProposerFatal) as info:
        oa.build(pytester.parseconfig())
    assert "OPENAI_API_KEY" in str(info.value) and "--autoresearch-base-url" in str(info.value)
    assert "--autoresearch-proposer optuna" in str(info.value)


def test_build_reads_base_url_and_model(pytester, server, root, monkeypatch):
    monkeypatch.setenv("OPENAI_MODEL", "llama-3")
    config = pytester.parseconfig(
        "--autoresearch-base-url", server.url + "/v1", "--autoresearch-max-turns", "4"
    )
    p = oa.build(config)
    assert (p.model, p.max_turns, p.host) == ("llama-3", 4, server.url + "/v1/")
    p.client.max_retries = 0
    server.add(*improve_lr())
    p.propose(make_ctx(root))
    assert server.posts()[0].body["model"] == "llama-3"
    assert server.posts()[0].headers["authorization"] == "Bearer no-key"
