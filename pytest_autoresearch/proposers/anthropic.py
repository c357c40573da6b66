"""The Anthropic proposer: Claude edits the editable files through its text editor tool.

Each experiment is a multi-turn Messages API exchange: the model views and edits
files with ``str_replace_based_edit_tool``; ``FileEditor`` runs every command
and answers with a ``tool_result``, until the model ends its turn or a turn/token
cap is reached. ``LLMProposer`` holds what the Anthropic and OpenAI-compatible
proposers share (editor, prompt, repair, cost, transcripts): see proposers/llm.py.

The ``anthropic`` package is imported only when a proposer is built.
"""

from __future__ import annotations

import importlib
import os
import re
import time
from typing import Any

from pytest_autoresearch.proposers import prompt
from pytest_autoresearch.proposers.base import (
    Cost,
    ProposerFatal,
)
from pytest_autoresearch.proposers.editor import TOOL_NAME, FileEditor
from pytest_autoresearch.proposers.llm import (
    CHECK_TOOL,
    CHECK_TOOL_NAME,
    MAX_RETRIES,
    MAX_TOKENS,
    MAX_TURNS,
    TIMEOUT,
    TOKEN_CAP,
    Exchange,
    LLMProposer,
    LLMProposerError,
    LLMUnavailable,
    _host,
    _option,
    notebook_option,
    retry_after,
    scrub,
)

DEFAULT_MODEL = "claude-sonnet-5-5"
EDITOR_TOOL = {"type": "text_editor_20250728", "name": TOOL_NAME}
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
# A stream cut in the middle (connection lost, no message_stop) is sent again at once, up
# to this many times, waiting 1 s, 2 s ... in between; then the proposal is unavailable
# and the loop backs off (research/run_state.py).
STREAM_RETRIES = 2


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
        history_tokens: int | None = None,
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

    def _request(self, conv: list[dict], ex: Exchange | None = None) -> dict[str, Any]:
        # Two cache breakpoints: the static system prompt (shared by every experiment of
        # the run) and the end of the conversation so far (shared by the next turn).
        last = dict(conv[-1])
        last["content"] = [
            *last["content"][:-1],
            {**last["content"][-1], "cache_control": {"type": "ephemeral"}},
        ]
        # Experiments longer than five minutes outlive the default cache: the stable prefix
        # (rules, program.md) is then cached for an hour (writes cost 2x input, not 1.25x).
        stable: dict[str, Any] = {"type": "ephemeral"}
        if self.cache_hour:
            stable["ttl"] = "1h"
        kwargs: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "system": [{"type": "text", "text": self._system, "cache_control": stable}],
            "tools": [EDITOR_TOOL, CHECK_TOOL] if ex is not None and ex.check else [EDITOR_TOOL],
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
        response = self._call(self._request(conv, ex), ex)
        ex.turns += 1
        content = [b.model_dump(mode="json", exclude_none=True) for b in response.content]
        conv.append({"role": "assistant", "content": content})
        texts = [b.get("text", "") for b in content if b.get("type") == "text"]
        if any(t.strip() for t in texts):
            ex.final_text = "\n".join(texts)
        uses = [b for b in content if b.get("type") == "tool_use"]
        ex.stop = str(response.stop_reason or "")
        if not uses:
            return False
        # Cut at max_tokens while writing its last block: that command's input is partial
        # (half a `create` of a long file); it is answered, never run.
        cut = ex.stop == "max_tokens" and content[-1].get("type") == "tool_use"
        results = []
        for use in uses:
            ex.tool_calls += 1
            if cut and use is uses[-1]:
                editor.refused += 1
                answer, is_error = prompt.TRUNCATED, True
            elif use.get("name") == CHECK_TOOL_NAME and ex.check is not None:
                answer, is_error = self._run_check(ex)
            elif use.get("name") != TOOL_NAME:
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

    def _call(self, kwargs: dict[str, Any], ex: Exchange) -> Any:
        """One streamed call, billed as it goes; a stream cut in the middle is sent again."""
        why = ""
        for attempt in range(STREAM_RETRIES + 1):
            if attempt:
                time.sleep(min(8.0, 2.0 ** (attempt - 1)))
            try:
                return self._stream(kwargs, ex)
            except _StreamCut as cut:
                why = str(cut)
        raise LLMUnavailable(f"the Anthropic API stream was cut {STREAM_RETRIES + 1} times ({why})")

    def _stream(self, kwargs: dict[str, Any], ex: Exchange) -> Any:
        import anthropic

        try:
            with self.client.messages.stream(**kwargs) as stream:
                try:
                    for _event in stream:
                        pass
                except _transport_errors() + (anthropic.APIError,) as exc:
                    self._bill_partial(stream, ex)
                    why = scrub(_detail(exc), self._secrets())  # the server's words: no key
                    raise _StreamCut(f"{type(exc).__name__}: {why}") from None
                try:
                    message = stream.get_final_message()
                except AssertionError:  # the body ended before message_start
                    raise _StreamCut("the stream ended before message_start") from None
        except anthropic.APIError as exc:
            raise self._error(exc) from None
        if message.stop_reason is None:  # the body ended without message_stop
            self._bill(message.usage, ex)
            raise _StreamCut("the stream ended before message_stop")
        self._bill(message.usage, ex)
        return message

    def _bill_partial(self, stream: Any, ex: Exchange) -> None:
        """What a cut stream had reported (message_start's input tokens) is spent too."""
        try:
            usage = stream.current_message_snapshot.usage
        except (AssertionError, AttributeError):
            return
        self._bill(usage, ex)

    def _error(self, exc: Exception) -> Exception:
        """The SDK's error (after its own retries) as ProposerFatal / unavailable / error."""
        import anthropic

        secrets = self._secrets()
        if isinstance(exc, anthropic.AuthenticationError):
            return ProposerFatal(
                f"the Anthropic API rejected the API key (401 {_kind(exc)}): check "
                "ANTHROPIC_API_KEY (a current key from console.anthropic.com), or run offline "
                "with --autoresearch-proposer optuna"
            )
        if isinstance(exc, anthropic.PermissionDeniedError):
            return ProposerFatal(
                f"the Anthropic API refused this key access to {self.model} (403 {_kind(exc)}): "
                f"{scrub(_detail(exc), secrets)}; check the key's workspace and permissions, or "
                "choose another --autoresearch-model"
            )
        if isinstance(exc, anthropic.NotFoundError):
            return ProposerFatal(
                f"the Anthropic API does not know model {self.model!r} (404 {_kind(exc)}); set "
                f"--autoresearch-model to a current model id such as {DEFAULT_MODEL}"
            )
        if isinstance(exc, anthropic.APIStatusError):
            status = exc.status_code
            if status == 429 or status >= 500:
                what = {429: "rate limit (429)", 529: "overloaded (529)"}.get(
                    status, f"error {status}"
                )
                return LLMUnavailable(
                    f"the Anthropic API kept answering {what} after {self.max_retries} retries",
                    retry_after=retry_after(exc),
                )
            return LLMProposerError(
                f"the Anthropic API refused the request ({status} {_kind(exc)}): "
                f"{scrub(_detail(exc), secrets)}"
            )
        if isinstance(exc, anthropic.APITimeoutError):
            return LLMUnavailable(
                f"the Anthropic API did not answer in time after {self.max_retries} retries"
            )
        if isinstance(exc, anthropic.APIConnectionError):
            return LLMUnavailable(
                f"could not reach the Anthropic API at {_host(self.client.base_url)} after "
                f"{self.max_retries} retries (check ANTHROPIC_BASE_URL and the network)"
            )
        return LLMProposerError(f"the Anthropic API call failed: {type(exc).__name__}")

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


class _StreamCut(Exception):
    """A stream that stopped in the middle: sent again (``STREAM_RETRIES``)."""


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP library's transport errors (connection lost, read timeout mid-body)."""
    for name in ("httpx2", "httpx"):
        try:
            return (importlib.import_module(name).TransportError,)
        except (ImportError, AttributeError):
            continue
    return (OSError,)


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


def build(config: Any) -> AnthropicProposer:
    """The proposer from pytest options; the key and base URL come from the environment."""
    if not (os.environ.get("ANTHROPIC_API_KEY") or os.environ.get("ANTHROPIC_AUTH_TOKEN")):
        raise ProposerFatal(NO_KEY)
    model = _option(config, "autoresearch_model", None) or DEFAULT_MODEL
    # Thinking is on by default where it costs no budget to set: adaptive models decide
    # how much to think. Older models need a token budget, so there it is opt-in.
    thinking = _option(config, "autoresearch_thinking", None)
    if thinking is None:
        thinking = 1 if adaptive_thinking(model) else 0
    return AnthropicProposer(
        model=model,
        max_tokens=int(_option(config, "autoresearch_max_tokens", MAX_TOKENS)),
        thinking=int(thinking),
        max_turns=int(_option(config, "autoresearch_max_turns", MAX_TURNS)),
        history_tokens=notebook_option(config),
    )
