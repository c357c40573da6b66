"""The OpenAI-compatible proposer: any Chat Completions endpoint with tool calling.

vLLM, llama.cpp's server, Ollama, LM Studio or a hosted API: the same editor and
prompt as the Anthropic proposer, with the editor offered as a function tool that
has the same commands. The ``openai`` package is imported only when it is built.
"""

from __future__ import annotations

import json
import os
import time
from types import SimpleNamespace
from typing import Any

from pytest_autoresearch.proposers import prompt
from pytest_autoresearch.proposers.anthropic import _transport_errors, price_for
from pytest_autoresearch.proposers.base import Cost, ProposerFatal
from pytest_autoresearch.proposers.editor import EDITOR_FUNCTION, TOOL_NAME, FileEditor
from pytest_autoresearch.proposers.llm import (
    CHECK_FUNCTION,
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

NO_KEY = (
    "the openai proposer needs an endpoint: set OPENAI_API_KEY for OpenAI's API, or "
    "--autoresearch-base-url (or OPENAI_BASE_URL) for a local server such as vLLM, "
    "llama.cpp or Ollama (e.g. http://127.0.0.1:8000/v1); or run offline with "
    "--autoresearch-proposer optuna"
)
PLACEHOLDER_KEY = "no-key"  # local servers ignore the key, but the SDK insists on one
# A stream cut in the middle (connection lost, no finish reason) is sent again at once, up
# to this many times, 1 s, 2 s ... apart; then the proposal is unavailable and the loop
# backs off (research/run_state.py), as for the Anthropic proposer.
STREAM_RETRIES = 2
_sleep = time.sleep  # tests make the waits between resent streams instant

# USD per million tokens: (input, output, cached input). OpenAI's published list
# prices for a few families as of 2026-11-23; the longest matching prefix wins.
# Any other model (a local one) is priced at 0: set AUTORESEARCH_PRICE to override.
PRICES: dict[str, tuple[float, float, float]] = {
    "gpt-5-nano": (0.05, 0.40, 0.005),
    "gpt-5-mini": (0.25, 2.0, 0.025),
    "gpt-5": (1.25, 10.0, 0.125),
    "gpt-4.1-nano": (0.10, 0.40, 0.025),
    "gpt-4.1-mini": (0.40, 1.60, 0.10),
    "gpt-4.1": (2.0, 8.0, 0.50),
    "gpt-4o-mini": (0.15, 0.60, 0.075),
    "gpt-4o": (2.50, 10.0, 1.25),
}


def prices_from_env(default: tuple[float, float, float]) -> tuple[float, float, float]:
    """AUTORESEARCH_PRICE="input,output[,cached]" in USD per million tokens, if set."""
    raw = os.environ.get("AUTORESEARCH_PRICE", "").strip()
    if not raw:
        return default
    try:
        values = [float(v) for v in raw.split(",")]
    except ValueError:
        values = []
    if len(values) not in (2, 3) or any(v < 0 for v in values):
        raise ProposerFatal(
            f"AUTORESEARCH_PRICE={raw!r} is not 'input,output[,cached]' dollars per million "
            "tokens, e.g. AUTORESEARCH_PRICE=0.5,1.5"
        )
    return values[0], values[1], values[2] if len(values) == 3 else values[0]


def _is_openai(url: str) -> bool:
    return "api.openai.com" in url


class OpenAIProposer(LLMProposer):
    """A model behind an OpenAI-compatible Chat Completions endpoint."""

    name = "openai"

    def __init__(
        self,
        *,
        model: str | None = None,
        max_tokens: int = MAX_TOKENS,
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
            model=model or "",
            max_turns=max_turns,
            history_tokens=history_tokens,
            token_cap=token_cap,
        )
        import openai

        self.max_tokens = max_tokens
        self.max_retries = max_retries
        if client is None:
            key = api_key or os.environ.get("OPENAI_API_KEY")
            url = base_url or os.environ.get("OPENAI_BASE_URL")
            if not key:
                if not url:
                    raise ProposerFatal(NO_KEY)
                key = PLACEHOLDER_KEY
            client = openai.OpenAI(
                api_key=key, base_url=url or None, max_retries=max_retries, timeout=timeout
            )
        self.client = client
        self.host = _host(client.base_url)
        # OpenAI's own newer models take max_completion_tokens (and refuse max_tokens);
        # local servers take max_tokens. A 400 naming the other one switches for good.
        self.limit_key = "max_completion_tokens" if _is_openai(self.host) else "max_tokens"
        # The usage of a streamed answer comes in a last chunk when asked for; a server that
        # refuses stream_options (400 naming it) is asked without, for good.
        self.stream_usage = True
        self.context_window: int | None = None  # the server's, when its /models says it
        self._warned_context = False
        self._resolve_prices()

    def _resolve_prices(self) -> None:
        found, known = price_for(self.model, PRICES) if self.model else ((0.0, 0.0, 0.0), False)
        self.prices = prices_from_env(found if known else (0.0, 0.0, 0.0))

    def _secrets(self) -> list[str]:
        key = self.client.api_key
        return [key] if isinstance(key, str) and key and key != PLACEHOLDER_KEY else []

    # -- model ----------------------------------------------------------------------------

    def _list_models(self) -> list[str] | None:
        """The endpoint's model ids, or None when it has no usable /models route."""
        import openai

        try:
            models = list(self.client.models.list())
        except openai.AuthenticationError:
            raise ProposerFatal(self._rejected()) from None
        except openai.PermissionDeniedError:
            raise ProposerFatal(f"{self.host} refused this key access (403)") from None
        except openai.APIConnectionError:
            raise ProposerFatal(
                f"could not reach {self.host}: is the server running, and is the base URL "
                "right (e.g. http://127.0.0.1:8000/v1)?"
            ) from None
        except openai.OpenAIError:
            return None
        self._windows = {m.id: _context_window(m) for m in models}
        return [m.id for m in models]

    def _resolve_model(self) -> None:
        """With no model named, use the endpoint's only model (as llama.cpp serves one)."""
        if self.model:
            return
        ids = self._list_models() or []
        if len(ids) != 1:
            shown = ", ".join(ids[:10]) or "none listed"
            raise ProposerFatal(
                f"no model named for {self.host}, which serves {len(ids)} ({shown}); choose one "
                "with --autoresearch-model (or OPENAI_MODEL)"
            )
        self.model = ids[0]
        self._resolve_prices()
        self.context_window = getattr(self, "_windows", {}).get(self.model)

    def check(self) -> None:
        """Is the endpoint there, the key accepted and the model served? Costs no tokens."""
        ids = self._list_models()
        self._resolve_model()
        self.context_window = getattr(self, "_windows", {}).get(self.model)
        if ids and self.model not in ids:
            raise ProposerFatal(
                f"{self.host} does not serve model {self.model!r} (it serves: "
                f"{', '.join(ids[:10])}); set --autoresearch-model"
            )

    def _rejected(self) -> str:
        return (
            f"{self.host} rejected the API key (401): check OPENAI_API_KEY, or run offline "
            "with --autoresearch-proposer optuna"
        )

    # -- conversation ---------------------------------------------------------------------

    def _new_conversation(self, system: str, user: str) -> list[dict]:
        self._resolve_model()
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def _add_user_text(self, conv: list[dict], text: str) -> None:
        conv.append({"role": "user", "content": text})

    def _turn(self, conv: list[dict], editor: FileEditor, ex: Exchange) -> bool:
        self._check_context(conv)
        response = self._complete(conv, ex)
        ex.turns += 1
        self._bill(response.usage, ex)
        if not response.choices:
            raise LLMProposerError(f"{self.host} answered with no choices")
        choice = response.choices[0]
        msg = choice.message
        ex.stop = str(choice.finish_reason or "")
        calls = list(msg.tool_calls or [])
        if msg.content and msg.content.strip():
            ex.final_text = msg.content
        entry: dict[str, Any] = {"role": "assistant", "content": msg.content or ""}
        if calls:
            entry["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.function.name, "arguments": c.function.arguments},
                }
                for c in calls
            ]
        conv.append(entry)
        if not calls:
            return False
        for c in calls:
            ex.tool_calls += 1
            if ex.stop == "length" and c is calls[-1]:  # cut while writing it: never run
                editor.refused += 1
                answer = prompt.TRUNCATED
            elif c.function.name == CHECK_TOOL_NAME and ex.check is not None:
                answer = self._run_check(ex)[0]
            else:
                answer = self._run_call(c, editor)
            conv.append({"role": "tool", "tool_call_id": c.id, "content": answer})
        return True

    def _complete(self, conv: list[dict], ex: Exchange | None = None) -> Any:
        """One streamed call; a 400 that asks for the other output-limit parameter, or that
        refuses ``stream_options``, is sent again without it."""
        for _ in range(3):
            kwargs: dict[str, Any] = {
                "model": self.model,
                "messages": conv,
                "tools": [EDITOR_FUNCTION, CHECK_FUNCTION]
                if ex is not None and ex.check
                else [EDITOR_FUNCTION],
                self.limit_key: self.max_tokens,
                "stream": True,
            }
            if self.stream_usage:
                kwargs["stream_options"] = {"include_usage": True}
            try:
                return self._streamed(kwargs)
            except LLMProposerError as exc:
                if getattr(exc, "status", None) != 400:
                    raise
                if self.stream_usage and "stream_options" in str(exc):
                    self.stream_usage = False
                    continue
                if "max_tokens" not in str(exc) and "max_completion_tokens" not in str(exc):
                    raise
                self.limit_key = (
                    "max_tokens" if self.limit_key != "max_tokens" else "max_completion_tokens"
                )
        raise LLMProposerError(f"{self.host} refused both max_tokens and max_completion_tokens")

    def _streamed(self, kwargs: dict[str, Any]) -> Any:
        """The answer of one streamed call; a stream cut in the middle is sent again."""
        why = ""
        for attempt in range(STREAM_RETRIES + 1):
            if attempt:
                _sleep(min(8.0, 2.0 ** (attempt - 1)))
            try:
                return self._stream(kwargs)
            except _StreamCut as cut:
                why = str(cut)
        raise LLMUnavailable(f"{self.host}'s stream was cut {STREAM_RETRIES + 1} times ({why})")

    def _stream(self, kwargs: dict[str, Any]) -> Any:
        import openai

        stream = self._guard(lambda: self.client.chat.completions.create(**kwargs))
        answer = _Answer()
        try:
            for chunk in stream:
                answer.add(chunk)
        except _transport_errors() + (openai.APIError,) as exc:
            detail = scrub(_detail(exc) if isinstance(exc, openai.APIError) else str(exc),
                           self._secrets())  # fmt: skip
            raise _StreamCut(f"{type(exc).__name__}: {detail}") from None
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        if answer.finish is None:  # the body ended without a finish reason
            raise _StreamCut("the stream ended before a finish reason")
        return answer.response()

    def _check_context(self, conv: list[dict]) -> None:
        """Warn once (on stderr and in the transcript) when the prompt will not fit."""
        if not self.context_window or self._warned_context:
            return
        size = prompt.estimate_tokens(json.dumps(conv)) + prompt.estimate_tokens(
            json.dumps(EDITOR_FUNCTION)
        )
        if size + self.max_tokens > self.context_window:
            self._warned_context = True
            import warnings

            warnings.warn(
                f"the prompt (about {size} tokens) plus --autoresearch-max-tokens "
                f"{self.max_tokens} exceeds {self.host}'s context of {self.context_window} "
                "tokens for this model: start the server with a longer context (vLLM "
                "--max-model-len, llama.cpp -c) or lower --autoresearch-notebook-tokens",
                stacklevel=2,
            )

    def _run_call(self, call: Any, editor: FileEditor) -> str:
        if call.function.name != TOOL_NAME:
            editor.refused += 1
            return f"Error: unknown tool {call.function.name!r}; use {TOOL_NAME}"
        try:
            args = json.loads(call.function.arguments or "{}")
        except ValueError as exc:
            editor.refused += 1
            return f"Error: the arguments are not valid JSON ({exc}); send a JSON object"
        return editor.execute(args)[0]

    def _bill(self, usage: Any, ex: Exchange) -> None:
        if usage is None:
            ex.usage.append({})
            return
        prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        out = int(getattr(usage, "completion_tokens", 0) or 0)
        details = getattr(usage, "prompt_tokens_details", None)
        cached = int(getattr(details, "cached_tokens", 0) or 0) if details else 0
        fresh = max(0, prompt_tokens - cached)
        p_in, p_out, p_cached = self.prices
        dollars = (fresh * p_in + out * p_out + cached * p_cached) / 1e6
        ex.cost = ex.cost + Cost(fresh, out, cached, 0, dollars)
        ex.usage.append({"input": fresh, "output": out, "cache_read": cached})

    # -- errors ---------------------------------------------------------------------------

    def _guard(self, fn: Any) -> Any:
        """Run an SDK call, turning its errors into ProposerFatal / LLMProposerError."""
        import openai

        secrets = self._secrets()
        try:
            return fn()
        except openai.AuthenticationError:
            raise ProposerFatal(self._rejected()) from None
        except openai.PermissionDeniedError as exc:
            raise ProposerFatal(
                f"{self.host} refused this key access (403): {scrub(_detail(exc), secrets)}"
            ) from None
        except openai.NotFoundError:
            raise ProposerFatal(
                f"{self.host} answered 404 for model {self.model!r}: check --autoresearch-model, "
                "and that the base URL ends in /v1 (e.g. http://127.0.0.1:8000/v1)"
            ) from None
        except openai.APIStatusError as exc:
            status = exc.status_code
            if status == 429 or status >= 500:
                raise LLMUnavailable(
                    f"{self.host} kept answering {status} after {self.max_retries} retries",
                    retry_after=retry_after(exc),
                ) from None
            refused = LLMProposerError(
                f"{self.host} refused the request ({status}): {scrub(_detail(exc), secrets)}"
            )
            refused.status = status  # type: ignore[attr-defined]
            raise refused from None
        except openai.APITimeoutError:
            raise LLMUnavailable(
                f"{self.host} did not answer in time after {self.max_retries} retries"
            ) from None
        except openai.APIConnectionError:
            raise LLMUnavailable(
                f"could not reach {self.host} after {self.max_retries} retries: is the server "
                "running, and is the base URL right?"
            ) from None


class _StreamCut(Exception):
    """A stream that stopped in the middle: sent again (``STREAM_RETRIES``)."""


class _Answer:
    """A streamed answer put together from its chunks, shaped like a ChatCompletion for
    ``_turn``: the text, each tool call (its arguments joined), the finish reason, usage."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish: str | None = None
        self.usage: Any = None

    def add(self, chunk: Any) -> None:
        if getattr(chunk, "usage", None) is not None:
            self.usage = chunk.usage
        for choice in getattr(chunk, "choices", None) or ():
            if getattr(choice, "index", 0) not in (0, None):
                continue  # one answer asked for: n = 1
            delta = getattr(choice, "delta", None)
            if delta is not None:
                if delta.content:
                    self.text.append(delta.content)
                for part in delta.tool_calls or ():
                    slot = self.calls.setdefault(part.index, {"id": "", "name": "", "args": []})
                    slot["id"] = slot["id"] or (part.id or "")
                    fn = part.function
                    if fn is not None:
                        slot["name"] = slot["name"] or (fn.name or "")
                        slot["args"].append(fn.arguments or "")
            if choice.finish_reason:
                self.finish = choice.finish_reason

    def response(self) -> Any:
        calls = [
            SimpleNamespace(
                id=slot["id"] or f"call_{i}",
                function=SimpleNamespace(name=slot["name"], arguments="".join(slot["args"])),
            )
            for i, slot in sorted(self.calls.items())
        ]
        message = SimpleNamespace(content="".join(self.text) or None, tool_calls=calls or None)
        choice = SimpleNamespace(message=message, finish_reason=self.finish)
        return SimpleNamespace(choices=[choice], usage=self.usage)


def _context_window(model: Any) -> int | None:
    """A served model's context length where the server says it: vLLM's max_model_len,
    llama.cpp's meta.n_ctx (or n_ctx_train); None for OpenAI and Ollama, which do not."""
    extra = getattr(model, "model_extra", None) or {}
    meta = extra.get("meta") if isinstance(extra.get("meta"), dict) else {}
    for value in (extra.get("max_model_len"), meta.get("n_ctx"), meta.get("n_ctx_train")):
        if isinstance(value, int) and value > 0:
            return value
    return None


def _detail(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        message = err.get("message") if isinstance(err, dict) else err
        if isinstance(message, str):
            return prompt.clean_description(message, 300)
    return type(exc).__name__


def build(config: Any) -> OpenAIProposer:
    """The proposer from pytest options, falling back to OPENAI_* environment variables."""
    base_url = _option(config, "autoresearch_base_url", None) or os.environ.get("OPENAI_BASE_URL")
    if not (os.environ.get("OPENAI_API_KEY") or base_url):
        raise ProposerFatal(NO_KEY)
    return OpenAIProposer(
        model=_option(config, "autoresearch_model", None) or os.environ.get("OPENAI_MODEL"),
        base_url=base_url,
        max_tokens=int(_option(config, "autoresearch_max_tokens", MAX_TOKENS)),
        max_turns=int(_option(config, "autoresearch_max_turns", MAX_TURNS)),
        history_tokens=notebook_option(config),
    )
