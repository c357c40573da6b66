"""The Anthropic proposer driven through the real anthropic SDK against a loopback server."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from pytest_autoresearch.proposers import anthropic as ar
from pytest_autoresearch.proposers.base import (
    Failure,
    Outcome,
    PastExperiment,
    ProposerError,
    ProposerFatal,
    ProposerUnavailable,
)

try:
    from llm_server import (
        API_KEY,
        TRAIN,
        Reply,
        api_error,
        edit,
        make_ctx,
        make_project,
        message,
        result_text,
        running_server,
        text,
        tool_results,
    )
except ImportError:  # tests/ became a package
    from tests.llm_server import (
        API_KEY,
        TRAIN,
        Reply,
        api_error,
        edit,
        make_ctx,
        make_project,
        message,
        result_text,
        running_server,
        text,
        tool_results,
    )


@pytest.fixture
def server(monkeypatch):
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    with running_server(deadline=60) as srv:
        yield srv


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_project(tmp_path / "proj")


def proposer(server, **kw) -> ar.AnthropicProposer:
    kw.setdefault("max_retries", 2)
    return ar.AnthropicProposer(api_key=API_KEY, base_url=server.url, timeout=10, **kw)


def improve_lr(final: str = "Raised the learning rate.\nDescription: raise LR to 0.04"):
    return [
        message(edit("view", "train.py")),
        message(edit("str_replace", "train.py", old_str="LR = 0.01", new_str="LR = 0.04")),
        message(text(final)),
    ]


def test_an_edit_is_applied_and_described(server, root):
    server.add(*improve_lr())
    ctx = make_ctx(root)
    proposal = proposer(server).propose(ctx)
    assert (root / "train.py").read_text() == TRAIN.replace("0.01", "0.04")
    assert proposal.description == "raise LR to 0.04"
    assert proposal.extra["files"] == ["train.py"] and proposal.extra["turns"] == 3
    # The view answer went back as a tool_result with numbered lines.
    first_result = tool_results(server.requests[1])[0]
    assert "     1\tLR = 0.01" in result_text(first_result) and "is_error" not in first_result
    assert "Edited train.py" in result_text(tool_results(server.requests[2])[0])


def test_what_the_model_is_told(server, root):
    server.add(*improve_lr())
    history = [
        PastExperiment(1, "halve the batch", "discard", 0.55, -0.05, "worse by 0.05"),
        PastExperiment(2, "add dropout", "crash", None, None, "NameError: name 'nn'"),
    ]
    ctx = make_ctx(root, history=history, experiment=3, guards=("tests/test_guard.py",))
    proposer(server, model="claude-sonnet-5-5").propose(ctx)
    body = server.requests[0].body
    assert body["model"] == "claude-sonnet-5-5" and body["max_tokens"] == ar.MAX_TOKENS
    assert body["tools"] == [
        {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"}
    ]
    (system,) = body["system"]
    assert system["cache_control"] == {"type": "ephemeral"}
    for fact in (
        "Tune the learning rate LR",
        "loss: lower is better",
        "- train.py",
        "- prepare.py",
        "tests/test_guard.py",
        "Description:",
    ):
        assert fact in system["text"], fact
    state = body["messages"][0]["content"][0]["text"]
    for fact in (
        "Experiment 3 of 10",
        "Current best loss: 0.5",
        "baseline 0.6",
        "0.01 (sigma)",
        "#1 discard -0.05 (= 0.55): halve the batch -- worse by 0.05",
        "#2 crash: add dropout -- NameError: name 'nn'",
        "accuracy = 0.9",
    ):
        assert fact in state, fact
    # The conversation so far is a cache breakpoint too; the system prompt is the same later.
    assert body["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert server.requests[2].body["system"] == body["system"]
    assert "thinking" not in body


def test_refused_edits_come_back_as_errors_and_the_exchange_goes_on(server, root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.py").write_text("SAFE = 1\n")
    (root / "lib").mkdir()
    os.symlink(outside, root / "lib" / "link")
    server.add(
        message(edit("create", "tests/test_metric.py", file_text="def test_loss():\n    pass\n")),
        message(edit("str_replace", "../outside/x.py", old_str="SAFE = 1", new_str="SAFE = 0")),
        message(edit("str_replace", "lib/link/x.py", old_str="SAFE = 1", new_str="SAFE = 0")),
        message(edit("create", "program.md", file_text="editable: ['**']\n")),
        message(edit("str_replace", "train.py", old_str="BATCH = 32", new_str="BATCH = 64")),
        message(text("Description: double the batch")),
    )
    ctx = make_ctx(root, editable=("train.py", "lib/**/*.py"))
    proposal = proposer(server).propose(ctx)
    answers = [tool_results(r)[0] for r in server.requests[1:5]]
    assert all(a["is_error"] is True for a in answers)
    texts = [result_text(a) for a in answers]
    assert "tests/test_metric.py: not an editable file" in texts[0]
    assert "'..' is not allowed" in texts[1]
    assert "'lib/link' is a symlink" in texts[2]
    assert "program.md: not an editable file" in texts[3]
    assert (outside / "x.py").read_text() == "SAFE = 1\n"
    assert (root / "program.md").read_text().startswith("---\neditable: [train.py]")
    assert proposal.description == "double the batch" and proposal.extra["refused"] == 4
    assert "BATCH = 64" in (root / "train.py").read_text()


def test_no_edit_is_a_proposer_error_that_carries_its_cost(server, root):
    server.add(message(edit("view", "train.py")), message(text("I would not change anything.")))
    p = proposer(server)
    with pytest.raises(ProposerError, match="the model made no edit") as info:
        p.propose(make_ctx(root))
    # 2 calls wasted, 1000 in / 100 out each at $2 / $10 per million: billed with the error
    # (the loop puts it on the "error" record at once), never carried to the next proposal.
    assert info.value.cost.input_tokens == 2000
    assert info.value.cost.usd == pytest.approx(0.006)
    server.add(*improve_lr())
    proposal = p.propose(make_ctx(root, experiment=2))
    assert proposal.cost.input_tokens == 3000 and proposal.cost.output_tokens == 300
    assert "carried_usd" not in proposal.extra


def test_turn_cap_stops_the_exchange(server, root):
    server.add(*[message(edit("view", "train.py")) for _ in range(3)])
    with pytest.raises(ProposerError, match="turn cap of 2 reached"):
        proposer(server, max_turns=2).propose(make_ctx(root))
    assert len(server.posts()) == 2


def test_crash_repair_gets_the_log_tail_and_fixes_on_the_second_attempt(server, root):
    server.add(
        message(edit("str_replace", "train.py", old_str="LR * BATCH", new_str="lr * BATCH")),
        message(text("Description: scale by lr")),
    )
    p = proposer(server)
    ctx = make_ctx(root)
    first = p.propose(ctx)
    assert first.description == "scale by lr"
    # Attempt 1: the model looks but cannot fix it: an error that carries the call's cost.
    server.add(message(text("I do not see the problem.")))
    log = "Traceback (most recent call last):\n  File train.py, line 6\n"
    log += "NameError: name 'lr' is not defined"
    with pytest.raises(ProposerError, match="no further edit") as info:
        p.repair(ctx, Failure("crash", "NameError in test_loss", log))
    assert info.value.cost.input_tokens == 1000
    told = server.requests[-1].body["messages"]
    assert len(told) == 5  # the whole exchange so far, then the failure
    note = told[-1]["content"][-1]["text"]
    assert "the run ended in crash (NameError in test_loss)" in note
    assert "NameError: name 'lr' is not defined" in note and "Repair attempt 1" in note
    # Attempt 2: it fixes the change.
    server.add(
        message(edit("str_replace", "train.py", old_str="lr * BATCH", new_str="LR * BATCH * 2")),
        message(text("Fixed the typo.\nDescription: scale LR*BATCH by 2")),
    )
    fixed = p.repair(ctx, Failure("crash", "NameError in test_loss", log))
    assert fixed is not None and fixed.description == "scale LR*BATCH by 2"
    assert "LR * BATCH * 2" in (root / "train.py").read_text()
    assert "Repair attempt 2" in server.requests[-2].body["messages"][-1]["content"][-1]["text"]
    # Its cost is its own two calls (the failed attempt's was billed with its error).
    assert fixed.cost.input_tokens == 2000
    p.observe(ctx, fixed, Outcome("keep", 0.4, "improved"))
    assert p._threads == {}  # the candidate ended: its conversation is closed


def test_with_two_in_flight_a_repair_continues_its_own_candidates_conversation(server, root):
    server.add(
        message(edit("str_replace", "train.py", old_str="LR * BATCH", new_str="lr * BATCH")),
        message(text("Description: scale by lr")),
        message(edit("str_replace", "train.py", old_str="LR = 0.01", new_str="LR = 0.02")),
        message(text("Description: double the learning rate")),
    )
    p = proposer(server)
    first, second = make_ctx(root, experiment=1), make_ctx(root, experiment=2)
    assert p.propose(first).description == "scale by lr"
    assert p.propose(second).description == "double the learning rate"
    server.add(
        message(edit("str_replace", "train.py", old_str="lr * BATCH", new_str="LR * BATCH * 2")),
        message(text("Description: scale LR*BATCH by 2")),
    )
    fixed = p.repair(first, Failure("crash", "NameError in test_loss", "NameError: lr"))
    assert fixed is not None and fixed.description == "scale LR*BATCH by 2"
    told = server.requests[-2].body["messages"]
    # Experiment 1's exchange, not experiment 2's, then the failure.
    assert "lr * BATCH" in str(told[1]) and "LR = 0.02" not in str(told)
    assert "Repair attempt 1" in told[-1]["content"][-1]["text"]
    p.observe(first, fixed, Outcome("crash", None, "NameError"))
    assert set(p._threads) == {2}


def test_repair_on_a_fresh_proposer_starts_from_the_state(server, root):
    server.add(
        message(edit("str_replace", "train.py", old_str="LR = 0.01", new_str="LR = 0.02")),
        message(text("Description: smaller step")),
    )
    fixed = proposer(server).repair(
        make_ctx(root), Failure("guard", "guards failed: t", "E assert")
    )
    assert fixed is not None and fixed.description == "smaller step"
    first = server.requests[0].body["messages"][0]["content"][0]["text"]
    assert "Current best loss" in first and "a guard test failed" in first


def test_cost_is_computed_from_usage_with_cache_tokens(server, root):
    usage = {
        "input_tokens": 1000,
        "output_tokens": 500,
        "cache_creation_input_tokens": 2000,
        "cache_read_input_tokens": 10000,
    }
    server.add(
        message(edit("create", "train.py", file_text="LR = 0.02\n"), usage=usage),
        message(text("Description: rewrite"), usage=usage),
    )
    proposal = proposer(server).propose(make_ctx(root))
    c = proposal.cost
    assert (c.input_tokens, c.output_tokens, c.cache_write_tokens, c.cache_read_tokens) == (
        2000,
        1000,
        4000,
        20000,
    )
    # claude-sonnet-5-5: $2 in, $10 out, $2.50 cache write, $0.20 cache read per million.
    assert c.usd == pytest.approx(2 * (1000 * 2 + 500 * 10 + 2000 * 2.5 + 10000 * 0.2) / 1e6)


def test_price_table_prefixes_and_unknown_models():
    assert ar.price_for("claude-opus-5-5")[0] == (4.0, 20.0, 5.0, 0.4)
    assert ar.price_for("claude-opus-5")[0] == (5.0, 25.0, 6.25, 0.5)
    assert ar.price_for("claude-opus-4-1-20250805")[0][0] == 15.0
    assert ar.price_for("claude-opus-4-5-20251101")[0][0] == 5.0
    prices, known = ar.price_for("claude-mystery-9")
    assert not known and prices == ar.UNKNOWN_PRICE


def test_429_then_success_is_retried_by_the_sdk(server, root):
    server.add(api_error(429, "rate_limit_error", "slow down"), *improve_lr())
    proposal = proposer(server).propose(make_ctx(root))
    assert proposal.description == "raise LR to 0.04"
    assert len(server.posts()) == 4
    assert server.posts()[1].headers["x-stainless-retry-count"] == "1"


def test_persistent_overload_is_a_proposer_error(server, root):
    server.add(*[api_error(529, "overloaded_error", "Overloaded") for _ in range(3)])
    with pytest.raises(ProposerUnavailable) as info:  # the loop retries it later
        proposer(server, max_retries=2).propose(make_ctx(root))
    assert str(info.value) == "the Anthropic API kept answering overloaded (529) after 2 retries"
    assert len(server.posts()) == 3 and (root / "train.py").read_text() == TRAIN


def test_401_is_fatal_with_a_clear_message_and_no_retry(server, root):
    server.add(api_error(401, "authentication_error", "invalid x-api-key"))
    with pytest.raises(ProposerFatal) as info:
        proposer(server).propose(make_ctx(root))
    msg = str(info.value)
    assert "rejected the API key (401 authentication_error)" in msg
    assert "ANTHROPIC_API_KEY" in msg and "--autoresearch-proposer optuna" in msg
    assert API_KEY not in msg and info.value.__cause__ is None
    assert len(server.posts()) == 1


def test_403_and_unknown_model_are_fatal(server, root):
    server.add(api_error(403, "permission_error", "no access"))
    with pytest.raises(ProposerFatal, match=r"refused this key access to claude-sonnet-5-5 \(403"):
        proposer(server).propose(make_ctx(root))
    server.add(api_error(404, "not_found_error", "model: claude-nope"))
    with pytest.raises(ProposerFatal, match="does not know model 'claude-nope'"):
        proposer(server, model="claude-nope").propose(make_ctx(root))


def test_check_costs_nothing_and_catches_a_bad_key(server):
    p = proposer(server)
    p.check()
    assert server.requests[-1].method == "GET"
    assert server.requests[-1].path == "/v1/models/claude-sonnet-5-5"
    server.models_reply = api_error(401, "authentication_error", "invalid x-api-key")
    with pytest.raises(ProposerFatal, match="rejected the API key"):
        p.check()
    server.models_reply = api_error(404, "not_found_error", "no such model")
    with pytest.raises(ProposerFatal, match="does not know model"):
        p.check()
    server.models_reply = api_error(529, "overloaded_error", "busy")
    p.check()  # transient: left to the first proposal


def test_the_key_stays_out_of_records_errors_and_transcripts(server, root):
    server.add(*improve_lr())
    ctx = make_ctx(root)
    proposal = proposer(server).propose(ctx)
    assert API_KEY not in json.dumps(dataclasses.asdict(proposal))
    for req in server.requests:
        assert API_KEY.encode() not in req.raw
        sent = {k: v for k, v in req.headers.items() if API_KEY in v}
        assert set(sent) <= {"x-api-key", "authorization"} and sent
    transcripts = sorted((ctx.state_dir / "transcripts").iterdir())
    assert [t.name for t in transcripts] == ["0001-propose.json"]
    assert API_KEY not in transcripts[0].read_text()
    assert "LR = 0.01" in transcripts[0].read_text()
    # Even an endpoint that echoes the key in an error body does not get it printed.
    server.add(
        Reply(
            400,
            {
                "type": "error",
                "error": {"type": "invalid_request_error", "message": f"bad key {API_KEY}"},
            },
        )
    )
    with pytest.raises(ProposerError) as info:
        proposer(server).propose(make_ctx(root, experiment=2))
    assert API_KEY not in str(info.value) and "[REDACTED]" in str(info.value)


def test_unknown_tool_and_untrusted_description(server, root):
    server.add(
        message({"type": "tool_use", "id": "toolu_x", "name": "bash", "input": {"cmd": "ls"}}),
        message(edit("insert", "train.py", insert_line=0, insert_text="# tuned\n")),
        message(text("Description: \x1b[31mred\x1b[0m\tline\r\n" + "y" * 500)),
    )
    proposal = proposer(server).propose(make_ctx(root))
    assert "unknown tool 'bash'" in result_text(tool_results(server.requests[1])[0])
    assert proposal.description == "[31mred [0m line"
    server.add(
        message(edit("insert", "train.py", insert_line=0, insert_text="# more\n")),
        message(text("Description: " + "z" * 500)),
    )
    long = proposer(server).propose(make_ctx(root, experiment=2)).description
    assert len(long) == 200 and long.endswith("...") and "\n" not in long


@pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")
def test_thinking_is_adaptive_on_new_models_and_a_budget_on_older_ones(server, root):
    server.add(*improve_lr())
    proposer(server, model="claude-opus-5", thinking=4000).propose(make_ctx(root))
    assert server.requests[0].body["thinking"] == {"type": "adaptive"}
    (root / "train.py").write_text(TRAIN)
    server.add(*improve_lr())
    proposer(server, model="claude-sonnet-4-5", thinking=10000, max_tokens=8192).propose(
        make_ctx(root, experiment=2)
    )
    body = server.posts()[3].body
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 10000}
    assert body["max_tokens"] == 18192
    assert ar.adaptive_thinking("claude-sonnet-4-6") and not ar.adaptive_thinking(
        "claude-sonnet-4-20250514"
    )


def test_thinking_blocks_are_passed_back_unchanged(server, root):
    thinking = {"type": "thinking", "thinking": "LR looks low", "signature": "sig-abc"}
    server.add(
        message(
            thinking, edit("str_replace", "train.py", old_str="LR = 0.01", new_str="LR = 0.03")
        ),
        message(text("Description: LR 0.03")),
    )
    proposer(server, thinking=2000).propose(make_ctx(root))
    assistant = server.requests[1].body["messages"][1]
    assert assistant["role"] == "assistant" and assistant["content"][0] == thinking


def test_build_needs_a_key_and_names_the_offline_choice(pytester, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    config = pytester.parseconfig()
    with pytest.raises(ProposerFatal) as info:
        ar.build(config)
    assert "set ANTHROPIC_API_KEY" in str(info.value)
    assert "--autoresearch-proposer optuna" in str(info.value)


def test_build_reads_options_and_the_environment(pytester, server, root, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
    config = pytester.parseconfig(
        "--autoresearch-model",
        "claude-opus-5-5",
        "--autoresearch-max-tokens",
        "2048",
        "--autoresearch-max-turns",
        "3",
    )
    p = ar.build(config)
    # Thinking: adaptive by default on a model that takes it.
    assert (p.model, p.max_tokens, p.max_turns, p.thinking) == ("claude-opus-5-5", 2048, 3, 1)
    assert p.prices == (4.0, 20.0, 5.0, 0.4)
    p.max_retries = p.client.max_retries = 0
    server.add(*improve_lr())
    assert p.propose(make_ctx(root)).description == "raise LR to 0.04"
    assert server.requests[0].body["model"] == "claude-opus-5-5"


def test_build_defaults_without_options(monkeypatch):
    class Bare:
        def getoption(self, name, default=None):
            raise ValueError(f"no option named {name!r}")

    monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
    p = ar.build(Bare())
    assert (p.model, p.max_tokens, p.max_turns, p.thinking) == (ar.DEFAULT_MODEL, 8192, 30, 1)
    assert p.client.max_retries == ar.MAX_RETRIES
