"""What an LLM proposer is told, and how what it says back is cleaned.

The prompt has a static part (rules, program.md's instructions, the objective,
constraints, guards, which files exist for it) that stays byte-identical across a
run so it can be cached, and a dynamic part (the current best, the noise floor and
the journal of earlier experiments, compacted to a token budget).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_autoresearch.proposers.base import Failure, PastExperiment, ProposalContext

HISTORY_TOKENS = 4000  # journal budget in the prompt (about 16 KB of text)
RECENT_IN_FULL = 8  # the newest experiments are always shown with their reasons
DESCRIPTION_CHARS = 200
LOG_TAIL_CHARS = 6000  # of a crash log handed to repair: the traceback is at the end

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]")
_DESCRIPTION_LINE = re.compile(r"^\W*description\W*:\s*(.+)$", re.IGNORECASE | re.MULTILINE)

RULES = """\
You are the proposer in an automated research loop (pytest-autoresearch). In each \
experiment you make ONE focused change to the editable files; the harness then runs \
the metric tests in a fresh process and keeps your change only if the objective \
improves by more than the measurement noise. The harness, not you, measures and decides.

Rules:
- Work with the str_replace_based_edit_tool. Paths are relative to the project root \
(for example train.py). Absolute paths, '..', symlinks and files other than those \
listed below are refused.
- You may change only the editable files. You may read the editable files and the \
context files. Tests, the harness and program.md cannot be changed; trying wastes turns.
- One idea per experiment, small enough to judge on its own. Read the journal: do not \
repeat a change that was discarded or crashed unless you change something material.
- Do not game the metric (special-casing the tests, changing how it is measured, \
printing numbers): values come from protected code, and such changes are rejected.
- View a file before you edit it, and leave the code runnable.
- When you are done, answer with a short explanation whose last line is exactly
  Description: <what you changed, in at most 15 words>"""


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate (about 4 characters a token) for budgeting only."""
    return (len(text) + 3) // 4


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.6g}"


def _one_line(text: str, limit: int) -> str:
    text = " ".join(_CONTROL.sub(" ", text or "").split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def system_prompt(ctx: ProposalContext) -> str:
    """The static part: the same text for every experiment of a run (cacheable)."""
    program = ctx.program
    better = "lower" if ctx.goal == "min" else "higher"
    parts = [RULES, "", "## Objective", f"{ctx.objective}: {better} is better."]
    constraints = [c.text for c in getattr(program, "constraints", ())]
    if constraints:
        parts += ["", "## Constraints (a change that breaks one is discarded)"]
        parts += [f"- {c}" for c in constraints]
    guards = list(getattr(program, "guards", ()))
    if guards:
        parts += ["", "## Guard tests (must keep passing)"] + [f"- {g}" for g in guards]
    parts += ["", "## Editable files"] + [f"- {f}" for f in ctx.editable_files]
    context = list(getattr(program, "context", ()))
    if context:
        parts += ["", "## Context files (read-only)"] + [f"- {f}" for f in context]
    instructions = (getattr(program, "instructions", "") or "").strip()
    if instructions:
        parts += ["", "## Research program (from program.md)", instructions]
    return "\n".join(parts)


def _history_line(exp: PastExperiment, *, full: bool) -> str:
    head = f"#{exp.index} {exp.status}"
    if exp.delta is not None:
        head += f" {exp.delta:+.4g}"
    if exp.objective is not None:
        head += f" (= {_fmt(exp.objective)})"
    line = f"{head}: {_one_line(exp.description, 120) or '(no description)'}"
    if full and exp.reason and exp.status != "keep":
        line += f" -- {_one_line(exp.reason, 140)}"
    return line


def compact_history(history: Sequence[PastExperiment], budget_tokens: int = HISTORY_TOKENS) -> str:
    """The journal as lines, oldest first, trimmed to about ``budget_tokens``.

    Kept experiments and the newest few are always shown in full; older dead ends
    lose their reasons first and then are counted in a summary line, newest kept
    longest, so a long or resumed run still sees what it already tried.
    """
    if not history:
        return "(no experiments yet: this is the first)"
    full = [_history_line(e, full=True) for e in history]
    if estimate_tokens("\n".join(full)) <= budget_tokens:
        return "\n".join(full)
    n = len(history)
    recent = set(range(max(0, n - RECENT_IN_FULL), n))
    chosen: dict[int, str] = {}
    used = 0
    # Highest priority first: the newest experiments, then every kept one.
    for i in sorted(recent, reverse=True) + [
        i for i in range(n - 1, -1, -1) if history[i].status == "keep" and i not in recent
    ]:
        line = full[i] if i in recent else _history_line(history[i], full=False)
        chosen[i] = line
        used += estimate_tokens(line) + 1
    for i in range(n - 1, -1, -1):
        if i in chosen:
            continue
        line = _history_line(history[i], full=False)
        if used + estimate_tokens(line) + 1 > budget_tokens - 30:
            break
        chosen[i] = line
        used += estimate_tokens(line) + 1
    dropped = [history[i] for i in range(n) if i not in chosen]
    lines = [chosen[i] for i in sorted(chosen)]
    if dropped:
        counts: dict[str, int] = {}
        for e in dropped:
            counts[e.status] = counts.get(e.status, 0) + 1
        summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        first, last = dropped[0].index, dropped[-1].index
        lines.insert(
            0,
            f"({len(dropped)} older experiments between #{first} and #{last} "
            f"omitted to save space: {summary})",
        )
    return "\n".join(lines)


def state_message(ctx: ProposalContext, history_tokens: int = HISTORY_TOKENS) -> str:
    """The dynamic part: where the research stands now, and what was tried."""
    holdout = getattr(ctx.program, "holdout", None)
    others = {k: v for k, v in ctx.metrics.items() if k not in (ctx.objective, holdout)}
    lines = [
        f"Experiment {ctx.experiment} of {ctx.total}.",
        f"Current best {ctx.objective}: {_fmt(ctx.best_value)} "
        f"(baseline {_fmt(ctx.baseline_value)}; {'lower' if ctx.goal == 'min' else 'higher'} "
        "is better).",
        f"Noise: one run of the same code varies by about {_fmt(ctx.noise)} (sigma); "
        "improvements smaller than that cannot be told from noise.",
    ]
    if others:
        shown = ", ".join(f"{k} = {_fmt(v)}" for k, v in sorted(others.items()))
        lines.append(f"Other metrics at the best commit: {shown}.")
    lines += [
        "",
        "## Journal of earlier experiments (change in the objective: + is better)",
        compact_history(ctx.history, history_tokens),
    ]
    if ctx.in_flight:
        lines += [
            "",
            "## Being measured right now by other workers (do not propose these again)",
            *(f"- {_one_line(d, 200)}" for d in ctx.in_flight),
        ]
    lines += ["", "Make your change for this experiment now."]
    return "\n".join(lines)


def repair_message(failure: Failure, attempt: int, max_chars: int = LOG_TAIL_CHARS) -> str:
    """Told after a crash or a failed guard: the reason and the end of the log."""
    tail = failure.log_tail or ""
    if len(tail) > max_chars:
        tail = "[...]\n" + tail[-max_chars:]
    what = (
        "a guard test failed" if failure.status == "guard" else f"the run ended in {failure.status}"
    )
    return (
        f"Your change did not work: {what} ({_one_line(failure.reason, 300)}).\n"
        f"Repair attempt {attempt}. The last lines of the test output:\n"
        f"```\n{tail}\n```\n"
        "Fix your change with the editor (editable files only), keeping its idea if you can. "
        "If it cannot be fixed, say so without editing. End with the Description line."
    )


def clean_description(text: str, limit: int = DESCRIPTION_CHARS) -> str:
    """Untrusted model text made safe for a journal line and a commit subject."""
    text = unicodedata.normalize("NFKC", text or "")
    return _one_line(text, limit).strip(" \"'`*")


def extract_description(final_text: str, changed: Sequence[str]) -> str:
    """The model's 'Description:' line, else its first line, else the files it changed."""
    found = _DESCRIPTION_LINE.findall(final_text or "")
    if found:
        desc = clean_description(found[-1])
        if desc:
            return desc
    for line in (final_text or "").splitlines():
        desc = clean_description(line)
        if desc:
            return desc
    return clean_description("edited " + ", ".join(changed)) if changed else "(no description)"


def transcript_safe(value: Any, secrets: Sequence[str]) -> Any:
    """A JSON-able copy of ``value`` with every secret replaced (for saved transcripts)."""
    from pytest_autoresearch.sandbox.secrets import scrub_obj

    return scrub_obj(value, secrets)
