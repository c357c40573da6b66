"""What the LLM proposers share: one conversation per candidate, the editor, repairs, cost.

``LLMProposer`` runs a multi-turn exchange in which the model views and edits files with a
text editor tool (``FileEditor`` runs every command and answers), until the model ends its
turn or a turn/token cap is reached. A subclass (``AnthropicProposer``, ``OpenAIProposer``)
provides the API calls: ``_new_conversation``, ``_add_user_text`` and ``_turn``.

Each candidate in flight has its own conversation (``_Thread``), so with K workers a
repair continues the exchange that made that very candidate; it is closed when the
candidate ends (``observe``).
"""

from __future__ import annotations

import contextlib
import json
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
    ProposerUnavailable,
)
from pytest_autoresearch.proposers.editor import NOTES_PATH, TOOL_NAME, FileEditor, glob_matcher
from pytest_autoresearch.sandbox.secrets import scrub  # re-exported for the LLM proposers

__all__ = ["Exchange", "LLMProposer", "LLMProposerError", "LLMUnavailable", "scrub"]

MAX_TOKENS = 8192
MAX_TURNS = 30
MAX_RETRIES = 4  # the SDK retries 408/409/429/5xx with exponential backoff
TIMEOUT = 600.0  # seconds per API call
TOKEN_CAP = 600_000  # input + output tokens of one proposal, all turns together
# Experiments longer than this outlive a 5-minute prompt cache between two proposals:
# the stable prefix is then cached for an hour (the Anthropic proposer).
LONG_EXPERIMENT = 240.0

# The check tool, offered when the loop gives a check (ProposalContext.check): the guards
# and program.md's smoke: tests on the change as it stands (research/checks.py).
CHECK_TOOL_NAME = "check"
CHECKS_PER_EXCHANGE = 3
CHECK_DESCRIPTION = (
    "Run the guard tests (and the program's smoke tests) on the editable files as they are "
    "now, in the same sandbox as the evaluation, within a time limit. Answers passed or "
    "FAILED with the end of the test output. It does not measure the objective and never "
    "decides a keep. Use it before you finish a risky change (architecture, imports, "
    f"export); at most {CHECKS_PER_EXCHANGE} per experiment. Takes no arguments."
)
CHECK_TOOL = {  # the Messages API's custom tool
    "name": CHECK_TOOL_NAME,
    "description": CHECK_DESCRIPTION,
    "input_schema": {"type": "object", "properties": {}},
}
CHECK_FUNCTION = {  # Chat Completions' function tool
    "type": "function",
    "function": {
        "name": CHECK_TOOL_NAME,
        "description": CHECK_DESCRIPTION,
        "parameters": {"type": "object", "properties": {}},
    },
}


def _option(config: Any, name: str, default: Any) -> Any:
    """An option's value, tolerating options not registered (yet) and None."""
    try:
        value = config.getoption(name, None)
    except (ValueError, AttributeError):
        value = None
    return default if value is None else value


class LLMProposerError(ProposerError):
    """A failed proposal that still cost tokens (``cost``): the loop bills it at once."""


class LLMUnavailable(LLMProposerError, ProposerUnavailable):
    """Overloaded (529), 429, 5xx, a timeout, no connection, a stream cut: try again later.

    Raised after the SDK's own quick retries; the loop backs off and proposes the same
    experiment again (research/run_state.py), so an outage costs no experiment.
    """


@dataclass
class Exchange:
    """Counters for one propose or repair exchange."""

    cost: Cost = field(default_factory=Cost)
    turns: int = 0
    tool_calls: int = 0
    stop: str = ""
    final_text: str = ""
    usage: list[dict] = field(default_factory=list)
    check: Any = None  # ProposalContext.check: the check tool is offered when set
    checks: int = 0  # check calls in this exchange

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
        history_tokens: int | None = None,
        token_cap: int = TOKEN_CAP,
    ) -> None:
        self.model = model
        self.max_turns = max_turns
        self.history_tokens = history_tokens
        self.token_cap = token_cap
        # One conversation per candidate in flight (experiment index -> its thread): with K
        # workers a repair continues the conversation that made that candidate.
        self._threads: dict[int, _Thread] = {}
        self.cache_hour = False  # cache the stable prefix for 1 h (set per exchange)

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
        system = prompt.system_prompt(ctx)
        conv = self._new_conversation(system, prompt.state_message(ctx, self._budget(ctx)))
        thread = self._threads[ctx.experiment] = _Thread(conv, _editor_for(ctx))
        try:
            ex = self._exchange(ctx, thread, "propose")
        except BaseException:
            self._threads.pop(ctx.experiment, None)
            raise
        if thread.editor.writes == 0:
            self._threads.pop(ctx.experiment, None)
            raise LLMProposerError(
                f"the model made no edit ({ex.stop}; {ex.turns} turns, "
                f"{thread.editor.refused} refused commands)",
                ex.cost,
            )
        thread.description = prompt.extract_description(ex.final_text, thread.editor.changed)
        return self._proposal(ex, thread, thread.description)

    def repair(self, ctx: ProposalContext, failure: Failure) -> Proposal | None:
        """Show the model the failure and the log tail; None when it makes no further edit."""
        thread = self._threads.get(ctx.experiment)
        attempt = thread.attempt + 1 if thread else 1
        note = prompt.repair_message(failure, attempt)
        if thread is None:
            # A fresh proposer (e.g. after a restart): start over from the state.
            system = prompt.system_prompt(ctx)
            state = prompt.state_message(ctx, self._budget(ctx))
            conv = self._new_conversation(system, state + "\n\n" + note)
            thread = self._threads[ctx.experiment] = _Thread(conv, _editor_for(ctx))
        else:
            self._add_user_text(thread.conv, note)
        thread.attempt = attempt
        before = thread.editor.writes
        ex = self._exchange(ctx, thread, f"repair{attempt}")
        if thread.editor.writes == before:
            if ex.cost.usd or ex.tokens:  # spent, so say so: the loop bills the error
                raise LLMProposerError("the model made no further edit", ex.cost)
            return None
        desc = prompt.extract_description(ex.final_text, thread.editor.changed)
        if desc == "(no description)" or desc.startswith("edited "):
            desc = thread.description or desc
        thread.description = desc
        return self._proposal(ex, thread, desc)

    def observe(self, ctx: ProposalContext, proposal: Proposal, outcome: Outcome) -> None:
        """The journal is the memory (it reaches the next prompt); close this conversation."""
        self._threads.pop(ctx.experiment, None)

    def close(self) -> None:
        self._threads.clear()

    def preflight(self, root: Path, program: Any) -> str:
        """Said at the start: what the model may read, and files program.md's text names
        that the editor would refuse (the model would be told to read what it cannot)."""
        readable = _context_matcher(program)
        context = [
            f for f in _mentioned_or_listed(root, program) if readable(f) or program.is_editable(f)
        ]
        lines = [
            f"the model may view {len(program.editable_files(root))} editable file(s) and "
            f"{sum(1 for f in context if not program.is_editable(f))} context file(s) "
            f"(program.md context:); its notebook is {NOTES_PATH} in the record"
        ]
        refused = [
            f
            for f in _mentioned_or_listed(root, program, listed=False)
            if not readable(f) and not program.is_editable(f)
        ]
        if refused:
            lines.append(
                f"program.md names {', '.join(refused[:8])} but the model may not view "
                f"{'it' if len(refused) == 1 else 'them'}: add to context: in program.md"
            )
        return "\n".join(lines)

    # -- shared machinery -----------------------------------------------------------------

    def _budget(self, ctx: ProposalContext) -> int:
        """The notebook's token budget: the option (command line or ini), else program.md's
        ``notebook_tokens:``, else the default."""
        if self.history_tokens is not None:
            return int(self.history_tokens)
        return int(getattr(ctx.program, "notebook_tokens", None) or prompt.HISTORY_TOKENS)

    def _exchange(self, ctx: ProposalContext, thread: _Thread, label: str) -> Exchange:
        ex = Exchange(check=getattr(ctx, "check", None))
        self.cache_hour = (ctx.seconds_per_experiment or 0.0) > LONG_EXPERIMENT
        try:
            while True:
                if ex.turns >= self.max_turns:
                    ex.stop = f"turn cap of {self.max_turns} reached"
                    break
                if ex.tokens >= self.token_cap:
                    ex.stop = f"token cap of {self.token_cap} reached"
                    break
                if not self._turn(thread.conv, thread.editor, ex):
                    break
        except ProposerError as exc:
            exc.cost = exc.cost + ex.cost  # what the turns before the failure spent
            raise
        finally:
            self._save_transcript(ctx, label, ex, thread.conv)
        return ex

    def _run_check(self, ex: Exchange) -> tuple[str, bool]:
        """The check tool's answer: (text for the model, whether it is an error)."""
        if ex.check is None:
            return f"Error: no check is available in this run; use {TOOL_NAME}", True
        if ex.checks >= CHECKS_PER_EXCHANGE:
            return (
                f"Error: no checks left ({CHECKS_PER_EXCHANGE} used for this change); "
                "finish with your Description line",
                True,
            )
        ex.checks += 1
        result = ex.check()
        left = CHECKS_PER_EXCHANGE - ex.checks
        head = "check passed" if result.passed else "check FAILED"
        output = scrub(result.output, self._secrets())
        return (
            f"{head}: {result.summary}\nThe end of the test output:\n```\n{output}\n```\n"
            f"(Not a measurement: the full evaluation decides. {left} check(s) left.)",
            False,
        )

    def _proposal(self, ex: Exchange, thread: _Thread, description: str) -> Proposal:
        extra: dict[str, Any] = {
            "model": self.model,
            "turns": ex.turns,
            "tool_calls": ex.tool_calls,
            "refused": thread.editor.refused,
            "files": list(thread.editor.changed),
            "stop": ex.stop,
        }
        if ex.checks:
            extra["checks"] = ex.checks
        if thread.editor.notes_writes:
            extra["notes_edits"] = thread.editor.notes_writes
        if getattr(self, "price_known", True) is False:
            extra["price"] = "model not in the price table: priced at the dearest rate"
        return Proposal(description=description, cost=ex.cost, extra=extra)

    def _save_transcript(
        self, ctx: ProposalContext, label: str, ex: Exchange, conv: list[dict]
    ) -> None:
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
                "messages": conv,
            }
            text = json.dumps(prompt.transcript_safe(data, self._secrets()), indent=1, default=str)
            (folder / f"{ctx.experiment:04d}-{label}.json").write_text(text)
        except OSError:
            pass  # a transcript is a convenience; never fail an experiment over it


@dataclass
class _Thread:
    """One candidate's conversation: its messages, its editor, where its repairs stand."""

    conv: list[dict]
    editor: FileEditor
    description: str = ""
    attempt: int = 0


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
        notes=Path(ctx.state_dir) / NOTES_PATH,
    )


def _context_matcher(program: Any) -> Any:
    """program.md's context globs, matched the way program.py matches editable globs."""
    globs = [_clean_glob(g) for g in getattr(program, "context", ()) or ()]
    try:
        from pytest_autoresearch.program.program_md import glob_to_regex
    except ImportError:
        return glob_matcher(globs)
    regexes = [glob_to_regex(g) for g in globs]
    return lambda rel: any(r.match(rel) for r in regexes)


def notebook_option(config: Any) -> int | None:
    """--autoresearch-notebook-tokens or its ini key; None when left at the default, so
    that program.md's ``notebook_tokens:`` applies."""
    try:
        from pytest_autoresearch.program.options import option, option_source

        if option_source(config, "notebook_tokens") == "default":
            return None
        return int(option(config, "notebook_tokens"))
    except (KeyError, ValueError, AttributeError, TypeError):
        value = _option(config, "autoresearch_notebook_tokens", None)
        return None if value is None else int(value)


def _host(url: Any) -> str:
    """The endpoint without any user:password part."""
    return re.sub(r"//[^/@]*@", "//", str(url))


def _clean_glob(glob: str) -> str:
    """``./nanochat/prepare.py`` names the same file as ``nanochat/prepare.py``."""
    while glob.startswith("./"):
        glob = glob[2:]
    return glob


_PATHLIKE = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w-][\w.-]*\.[A-Za-z]\w{0,5})(?![\w/])")


def _mentioned_or_listed(root: Path, program: Any, *, listed: bool = True) -> list[str]:
    """Existing files the program's text names (and, with ``listed``, its context globs)."""
    from pytest_autoresearch.program.globs import expand

    root = Path(root)
    found: dict[str, None] = {}
    if listed:
        globs = [_clean_glob(g) for g in getattr(program, "context", ()) or ()]
        found.update(dict.fromkeys(expand(globs, root)))
    text = getattr(program, "instructions", "") or ""
    for name in _PATHLIKE.findall(text):
        rel = _clean_glob(name)
        if rel.split("/")[0] in (".git", ".autoresearch") or rel == NOTES_PATH:
            continue
        if (root / rel).is_file() and rel != getattr(program, "program_relpath", None):
            found.setdefault(rel)
    return list(found)


def retry_after(exc: Any) -> float | None:
    """The seconds an HTTP error's Retry-After (or retry-after-ms) header asks for."""
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        try:
            value = float(headers.get(name))
        except (TypeError, ValueError):
            continue
        if value >= 0:
            return value / scale
    return None
