"""The Anthropic proposer: Claude edits the editable files through its text editor tool.

Each experiment is a multi-turn Messages API exchange: the model views and edits
files with ``str_replace_based_edit_tool``; ``FileEditor`` runs every command
and answers with a ``tool_result``, until the model ends its turn or a turn/token
cap is reached. ``LLMProposer`` holds what the Anthropic and OpenAI-compatible
proposers share (editor, prompt, repair, cost, transcripts).

The ``anthropic`` package is imported only when a proposer is built.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_autoresearch.proposers import prompt
from pytest_autoresearch.proposers.base import (
    Cost,
    Failure,
    Outcome,
    Proposal,
    ProposalContext,
    ProposerError,
    ProposerFatal,
)
from pytest_autoresearch.proposers.editor import TOOL_NAME, FileEditor, glob_matcher
from pytest_autoresearch.sandbox.secrets import scrub  # re-exported for the other LLM proposers

DEFAULT_MODEL = "claude-sonnet-5-5"
EDITOR_TOOL = {"type": "text_editor_20250728", "name": TOOL_NAME}
MAX_TOKENS = 8192
MAX_TURNS = 30
MAX_RETRIES = 4  # the SDK retries 408/409/429/5xx with exponential backoff
TIMEOUT = 600.0  # seconds per API call
TOKEN_CAP = 600_000  # input + output tokens of one proposal, all turns together
NO_KEY = (
    "the anthropic proposer needs an API key: set ANTHROPIC_API_KEY (and ANTHROPIC_BASE_URL "
    "for another endpoint), or run offline with --autoresearch-proposer optuna"
)

# USD per million tokens: (input, output, 5-minute cache write, cache read).
# Anthropic's published list prices as of 2026-11-23; the longest matching prefix wins.
PRICES: dict[str, tuple[float, float, float, float]] = {
    "claude-fable-5": (10.0, 50.0, 12.5, 1.0),
    "claude-opus-5-5": (4.0, 20.0, 5.0, 0.4),
    "claude-opus-5": (5.0, 25.0, 6.25, 0.5),
    "claude-sonnet-5": (2.0, 10.0, 2.5, 0.2),
    "claude-opus-4-8": (5.0, 25.0, 6.25, 0.5),
    "claude-opus-4-7": (5.0, 25.0, 6.25, 0.5),
    "claude-opus-4-6": (5.0, 25.0, 6.25, 0.5),
    "claude-opus-4-5": (5.0, 25.0, 6.25, 0.5),
    "claude-opus-4": (15.0, 75.0, 18.75, 1.5),
    "claude-sonnet-4": (3.0, 15.0, 3.75, 0.3),
    "claude-haiku-4-5": (1.0, 5.0, 1.25, 0.1),
    "claude-3-7-sonnet": (3.0, 15.0, 3.75, 0.3),
    "claude-3-5-haiku": (0.8, 4.0, 1.0, 0.08),
}
# An unknown model is priced like the dearest one, so the cost cap errs on the safe side.
UNKNOWN_PRICE = max(PRICES.values())


def price_for(model: str, table: dict[str, tuple[float, ...]] = PRICES) -> tuple[tuple, bool]:
    """The per-million-token prices for ``model`` and whether the model was in the table."""
    model = model.split("/")[-1]
    matches = [p for p in table if model.startswith(p)]
    if not matches:
        return max(table.values()) if table else (0.0, 0.0, 0.0, 0.0), False
    return table[max(matches, key=len)], True


def usd(
    prices: tuple, inp: int, out: int, cache_write: int, cache_read: int, write_1h: int = 0
) -> float:
    """Dollars for token counts; 1-hour cache writes cost twice the input price."""
    p_in, p_out, p_write, p_read = prices
    total = inp * p_in + out * p_out + cache_write * p_write + cache_read * p_read
    return (total + write_1h * (2 * p_in - p_write)) / 1e6


def _option(config: Any, name: str, default: Any) -> Any:
    """An option's value, tolerating options not registered (yet) and None."""
    try:
        value = config.getoption(name, None)
    except (ValueError, AttributeError):
        value = None
    return default if value is None else value


class LLMProposerError(ProposerError):
    """A failed proposal that still cost tokens (``cost``); the next proposal bills it."""

    def __init__(self, message: str, cost: Cost | None = None) -> None:
        super().__init__(message)
        self.cost = cost or Cost()


@dataclass
class Exchange:
    """Counters for one propose or repair exchange."""

    cost: Cost = field(default_factory=Cost)
    turns: int = 0
    tool_calls: int = 0
    stop: str = ""
    final_text: str = ""
    usage: list[dict] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        c = self.cost
        return c.input_tokens + c.output_tokens + c.cache_read_tokens + c.cache_write_tokens


class LLMProposer:
    """What both LLM proposers share: editor, prompt, repair, cost carry-over, transcripts.

    A subclass provides ``_new_conversation``, ``_add_user_text`` and ``_turn``.
    """

    name = "llm"

    def __init__(
        self,
        *,
        model: str,
        max_turns: int = MAX_TURNS,
        history_tokens: int = prompt.HISTORY_TOKENS,
        token_cap: int = TOKEN_CAP,
    ) -> None:
        self.model = model
        self.max_turns = max_turns
        self.history_tokens = history_tokens
        self.token_cap = token_cap
        self._conv: list[dict] | None = None
        self._editor: FileEditor | None = None
        self._description = ""
        self._attempt = 0
        self._unbilled = Cost()  # spent by failed exchanges; billed with the next proposal

    # -- subclass hooks -------------------------------------------------------------------

    def _secrets(self) -> list[str]:
        return []

    def _new_conversation(self, system: str, user: str) -> list[dict]:
        raise NotImplementedError

    def _add_user_text(self, conv: list[dict], text: str) -> None:
        raise NotImplementedError

    def _turn(self, conv: list[dict], editor: FileEditor, ex: Exchange) -> bool:
        """One API call and its tool calls; returns False when the model ended its turn."""
        raise NotImplementedError

    # -- the Proposer protocol ------------------------------------------------------------

    def propose(self, ctx: ProposalContext) -> Proposal:
        """Let the model make one change; ProposerError if it made none."""
        self._editor = _editor_for(ctx)
        self._attempt = 0
        system = prompt.system_prompt(ctx)
        self._conv = self._new_conversation(system, prompt.state_message(ctx, self.history_tokens))
        ex = self._exchange(ctx, self._editor, "propose")
        if self._editor.writes == 0:
            self._unbilled = self._unbilled + ex.cost
            raise LLMProposerError(
                f"the model made no edit ({ex.stop}; {ex.turns} turns, "
                f"{self._editor.refused} refused commands)",
                ex.cost,
            )
        self._description = prompt.extract_description(ex.final_text, self._editor.changed)
        return self._proposal(ctx, ex, self._description)

    def repair(self, ctx: ProposalContext, failure: Failure) -> Proposal | None:
        """Show the model the failure and the log tail; None when it makes no further edit."""
        self._attempt += 1
        note = prompt.repair_message(failure, self._attempt)
        if self._conv is None or self._editor is None:
            # A fresh proposer (e.g. after a restart): start over from the state.
            self._editor = _editor_for(ctx)
            system = prompt.system_prompt(ctx)
            state = prompt.state_message(ctx, self.history_tokens)
            self._conv = self._new_conversation(system, state + "\n\n" + note)
        else:
            self._add_user_text(self._conv, note)
        before = self._editor.writes
        ex = self._exchange(ctx, self._editor, f"repair{self._attempt}")
        if self._editor.writes == before:
            self._unbilled = self._unbilled + ex.cost
            return None
        desc = prompt.extract_description(ex.final_text, self._editor.changed)
        if desc == "(no description)" or desc.startswith("edited "):
            desc = self._description or desc
        self._description = desc
        return self._proposal(ctx, ex, desc)

    def observe(self, ctx: ProposalContext, proposal: Proposal, outcome: Outcome) -> None:
        """The journal is the memory (it reaches the next prompt); drop this conversation."""
        self._conv = None
        self._editor = None

    def close(self) -> None:
        self._conv = None

    # -- shared machinery -----------------------------------------------------------------

    def _exchange(self, ctx: ProposalContext, editor: FileEditor, label: str) -> Exchange:
        ex = Exchange()
        assert self._conv is not None
        try:
            while True:
                if ex.turns >= self.max_turns:
                    ex.stop = f"turn cap of {self.max_turns} reached"
                    break
                if ex.tokens >= self.token_cap:
                    ex.stop = f"token cap of {self.token_cap} reached"
                    break
                if not self._turn(self._conv, editor, ex):
                    break
        except LLMProposerError as exc:
            exc.cost = exc.cost + ex.cost
            self._unbilled = self._unbilled + ex.cost
            raise
        finally:
            self._save_transcript(ctx, label, ex)
        return ex

    def _proposal(self, ctx: ProposalContext, ex: Exchange, description: str) -> Proposal:
        assert self._editor is not None
        cost, carried = ex.cost + self._unbilled, self._unbilled.usd
        self._unbilled = Cost()
        extra: dict[str, Any] = {
            "model": self.model,
            "turns": ex.turns,
            "tool_calls": ex.tool_calls,
            "refused": self._editor.refused,
            "files": list(self._editor.changed),
            "stop": ex.stop,
        }
        if carried:
            extra["carried_usd"] = round(carried, 6)
        if getattr(self, "price_known", True) is False:
            extra["price"] = "model not in the price table: priced at the dearest rate"
        return Proposal(description=description, cost=cost, extra=extra)

    def _save_transcript(self, ctx: ProposalContext, label: str, ex: Exchange) -> None:
        """The conversation, for a human reading the record later (never the key)."""
        try:
            folder = Path(ctx.state_dir) / "transcripts"
            if not Path(ctx.state_dir).is_dir():
                return
            folder.mkdir(exist_ok=True)
            data = {
                "experiment": ctx.experiment,
                "exchange": label,
                "model": self.model,
                "stop": ex.stop,
                "usage": ex.usage,
                "messages": self._conv,
            }
            text = json.dumps(prompt.transcript_safe(data, self._secrets()), indent=1, default=str)
            (folder / f"{ctx.experiment:04d}-{label}.json").write_text(text)
        except OSError:
            pass  # a transcript is a convenience; never fail an experiment over it


def _editor_for(ctx: ProposalContext) -> FileEditor:
    program = ctx.program
    protected = [getattr(program, "program_relpath", None) or ""]
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        protected.append(
            Path(program.path).resolve().relative_to(Path(ctx.root).resolve()).as_posix()
        )
    return FileEditor(
        ctx.root,
        program.is_editable,
        _context_matcher(program),
        protected=[p for p in protected if p],
    )


def _context_matcher(program: Any) -> Any:
    """program.md's context globs, matched the way program.py matches editable globs."""
    globs = list(getattr(program, "context", ()) or ())
    try:
        from pytest_autoresearch.program.program_md import glob_to_regex
    except ImportError:
        return glob_matcher(globs)
    regexes = [glob_to_regex(g) for g in globs]
    return lambda rel: any(r.match(rel) for r in regexes)


_FAMILY = re.compile(r"claude-(?:(sonnet|opus|haiku)-(\d+)(?:-(\d+))?|(fable|mythos))")


def adaptive_thinking(model: str) -> bool:
    """Whether ``model`` takes ``thinking: {type: adaptive}`` rather than a token budget."""
    m = _FAMILY.search(model)
    if not m:
        return False
    if m.group(4):
        return True
    major, minor = int(m.group(2)), int(m.group(3) or 0)
    if minor > 99:  # a date suffix, not a minor version
        minor = 0
    return major >= 5 or (major == 4 and minor >= 6)


class AnthropicProposer(LLMProposer):
    """Claude via the Messages API and Anthropic's text editor tool."""

    name = "anthropic"

    def __init__(
        self,
        *,
        model: str = DEFAULT_MODEL,
        max_tokens: int = MAX_TOKENS,
        thinking: int = 0,
        max_turns: int = MAX_TURNS,
        max_retries: int = MAX_RETRIES,
        timeout: float = TIMEOUT,
        api_key: str | None = None,
        base_url: str | None = None,
        client: Any = None,
        history_tokens: int = prompt.HISTORY_TOKENS,
        token_cap: int = TOKEN_CAP,
    ) -> None:
        super().__init__(
            model=model, max_turns=max_turns, history_tokens=history_tokens, token_cap=token_cap
        )
        import anthropic

        self.max_tokens = max_tokens
        self.thinking = thinking
        self.max_retries = max_retries
        if client is None:
            kwargs: dict[str, Any] = {"max_retries": max_retries, "timeout": timeout}
            if api_key is not None:
                kwargs["api_key"] = api_key
            if base_url is not None:
                kwargs["base_url"] = base_url
            client = anthropic.Anthropic(**kwargs)
        self.client = client
        if not (getattr(client, "api_key", None) or getattr(client, "auth_token", None)):
            raise ProposerFatal(NO_KEY)
        self.prices, self.price_known = price_for(model)

    def _secrets(self) -> list[str]:
        return [s for s in (self.client.api_key, getattr(self.client, "auth_token", None)) if s]

    def _new_conversation(self, system: str, user: str) -> list[dict]:
        self._system = system
        return [{"role": "user", "content": [{"type": "text", "text": user}]}]

    def _add_user_text(self, conv: list[dict], text: str) -> None:
        if conv and conv[-1]["role"] == "user":
            conv[-1]["content"].append({"type": "text", "text": text})
        else:
            conv.append({"role": "user", "content": [{"type": "text", "text": text}]})

    def _request(self, conv: list[dict]) -> dict[str, Any]:
        # Two cache breakpoints: the static system prompt (shared by every experiment of
        # the run) and the end of the conversation so far (shared by the next turn).
        last = dict(conv[-1])
        last["content"] = [
            *last["content"][:-1],
            {**last["content"][-1], "cache_control": {"type": "ephemeral"}},
        ]
        kwargs: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "system": [
                {"type": "text", "text": self._system, "cache_control": {"type": "ephemeral"}}
            ],
            "tools": [EDITOR_TOOL],
            "messages": [*conv[:-1], last],
        }
        if self.thinking > 0:
            if adaptive_thinking(self.model):
                kwargs["thinking"] = {"type": "adaptive"}
            else:
                budget = max(1024, self.thinking)
                kwargs["thinking"] = {"type": "enabled", "budget_tokens": budget}
                if budget >= self.max_tokens:
                    kwargs["max_tokens"] = budget + self.max_tokens
        return kwargs

    def _turn(self, conv: list[dict], editor: FileEditor, ex: Exchange) -> bool:
        response = self._call(self._request(conv))
        ex.turns += 1
        self._bill(response.usage, ex)
        content = [b.model_dump(mode="json", exclude_none=True) for b in response.content]
        conv.append({"role": "assistant", "content": content})
        texts = [b.get("text", "") for b in content if b.get("type") == "text"]
        if any(t.strip() for t in texts):
            ex.final_text = "\n".join(texts)
        uses = [b for b in content if b.get("type") == "tool_use"]
        ex.stop = str(response.stop_reason or "")
        if not uses:
            return False
        results = []
        for use in uses:
            ex.tool_calls += 1
            if use.get("name") != TOOL_NAME:
                editor.refused += 1
                answer, is_error = f"Error: unknown tool {use.get('name')!r}; use {TOOL_NAME}", True
            else:
                answer, is_error = editor.execute(use.get("input"))
            block: dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": use["id"],
                "content": answer,
            }
            if is_error:
                block["is_error"] = True
            results.append(block)
        conv.append({"role": "user", "content": results})
        return True

    def _bill(self, usage: Any, ex: Exchange) -> None:
        inp = int(getattr(usage, "input_tokens", 0) or 0)
        out = int(getattr(usage, "output_tokens", 0) or 0)
        write = int(getattr(usage, "cache_creation_input_tokens", 0) or 0)
        read = int(getattr(usage, "cache_read_input_tokens", 0) or 0)
        detail = getattr(usage, "cache_creation", None)
        write_1h = int(getattr(detail, "ephemeral_1h_input_tokens", 0) or 0) if detail else 0
        ex.cost = ex.cost + Cost(
            inp, out, read, write, usd(self.prices, inp, out, write, read, write_1h)
        )
        ex.usage.append({"input": inp, "output": out, "cache_write": write, "cache_read": read})

    def _call(self, kwargs: dict[str, Any]) -> Any:
        import anthropic

        secrets = self._secrets()
        try:
            return self.client.messages.create(**kwargs)
        except anthropic.AuthenticationError as exc:
            raise ProposerFatal(
                f"the Anthropic API rejected the API key (401 {_kind(exc)}): check "
                "ANTHROPIC_API_KEY (a current key from console.anthropic.com), or run offline "
                "with --autoresearch-proposer optuna"
            ) from None
        except anthropic.PermissionDeniedError as exc:
            raise ProposerFatal(
                f"the Anthropic API refused this key access to {self.model} (403 {_kind(exc)}): "
                f"{scrub(_detail(exc), secrets)}; check the key's workspace and permissions, or "
                "choose another --autoresearch-model"
            ) from None
        except anthropic.NotFoundError as exc:
            raise ProposerFatal(
                f"the Anthropic API does not know model {self.model!r} (404 {_kind(exc)}); set "
                f"--autoresearch-model to a current model id such as {DEFAULT_MODEL}"
            ) from None
        except anthropic.APIStatusError as exc:
            status = exc.status_code
            if status == 429 or status >= 500:
                what = {429: "rate limit (429)", 529: "overloaded (529)"}.get(
                    status, f"error {status}"
                )
                raise LLMProposerError(
                    f"the Anthropic API kept answering {what} after {self.max_retries} retries; "
                    "this experiment is skipped"
                ) from None
            raise LLMProposerError(
                f"the Anthropic API refused the request ({status} {_kind(exc)}): "
                f"{scrub(_detail(exc), secrets)}"
            ) from None
        except anthropic.APITimeoutError:
            raise LLMProposerError(
                f"the Anthropic API did not answer in time after {self.max_retries} retries"
            ) from None
        except anthropic.APIConnectionError:
            raise LLMProposerError(
                f"could not reach the Anthropic API at {_host(self.client.base_url)} after "
                f"{self.max_retries} retries (check ANTHROPIC_BASE_URL and the network)"
            ) from None

    def check(self) -> None:
        """A call that costs no tokens: ProposerFatal if the key or the model is rejected."""
        import anthropic

        try:
            self.client.models.retrieve(self.model)
        except anthropic.AuthenticationError:
            self._call_fails_with(401)
        except anthropic.PermissionDeniedError:
            self._call_fails_with(403)
        except anthropic.NotFoundError:
            self._call_fails_with(404)
        except anthropic.AnthropicError:
            pass  # overloaded or unreachable now: the first proposal will say so

    def _call_fails_with(self, status: int) -> None:
        messages = {
            401: "the Anthropic API rejected the API key (401): check ANTHROPIC_API_KEY, or run "
            "offline with --autoresearch-proposer optuna",
            403: f"the Anthropic API refused this key access to {self.model} (403): check the "
            "key's permissions, or choose another --autoresearch-model",
            404: f"the Anthropic API does not know model {self.model!r} (404); set "
            f"--autoresearch-model to a current model id such as {DEFAULT_MODEL}",
        }
        raise ProposerFatal(messages[status])


def _kind(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and isinstance(err.get("type"), str):
            return err["type"]
    return type(exc).__name__


def _detail(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return prompt.clean_description(err["message"], 300)
    return type(exc).__name__


def _host(url: Any) -> str:
    """The endpoint without any user:password part."""
    return re.sub(r"//[^/@]*@", "//", str(url))


def build(config: Any) -> AnthropicProposer:
    """The proposer from pytest options; the key and base URL come from the environment."""
    if not (os.environ.get("ANTHROPIC_API_KEY") or os.environ.get("ANTHROPIC_AUTH_TOKEN")):
        raise ProposerFatal(NO_KEY)
    return AnthropicProposer(
        model=_option(config, "autoresearch_model", None) or DEFAULT_MODEL,
        max_tokens=int(_option(config, "autoresearch_max_tokens", MAX_TOKENS)),
        thinking=int(_option(config, "autoresearch_thinking", 0)),
        max_turns=int(_option(config, "autoresearch_max_turns", MAX_TURNS)),
    )
