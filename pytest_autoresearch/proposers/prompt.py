"""What an LLM proposer is told, and how what it says back is cleaned.

The prompt has a static part (rules, program.md's instructions, the objective,
constraints, guards, which files exist for it) that stays byte-identical across a
run so it can be cached, and a dynamic part, the lab notebook: the model's own
NOTES.md, the journal of earlier experiments (what changed, the outcome, the objective
and the other metrics), the diffs of kept changes and recent near-misses, and the log
tails of recent failures. The notebook has a token budget (``--autoresearch-notebook-
tokens``, default sized for 200 experiments): older entries lose detail first and are
then summarised in counts, never dropped without a word.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_autoresearch.proposers.base import Failure, PastExperiment, ProposalContext

# The notebook's budget: about 12,000 tokens (48 KB), shared out below. 200 experiments
# at about 35 tokens a line fit the journal's share in full; the diffs and log tails
# take the newest first.
HISTORY_TOKENS = 12_000
# Shares of the budget: the journal, the diffs, the recent artifacts (record_artifact:
# training logs); the rest, log tails of recent failures.
JOURNAL_SHARE, DIFF_SHARE, ARTIFACT_SHARE = 0.50, 0.25, 0.15
RECENT_IN_FULL = 8  # the newest experiments are always shown with their reasons
NEAR_MISSES = 5  # the short list's entries whose diffs are shown (proposers/shortlist.py)
FAILURE_TAILS = 3  # recent crashes whose log tails are shown
DIFF_CHARS = 2400  # one diff in the notebook
TAIL_LINES = 25  # one failure's log tail in the notebook
ARTIFACT_EXPERIMENTS = 3  # the newest experiments whose artifacts are shown
ARTIFACT_LINES = 30  # of one artifact, its last lines
LINE_CHARS = 300  # one line of a log tail or an artifact
OTHER_METRICS = 6  # secondary metrics on a journal line
DESCRIPTION_CHARS = 200
LOG_TAIL_CHARS = 6000  # of a crash log handed to repair: the traceback is at the end
TRUNCATED = (
    "Error: your answer was cut off at the output token limit while you were writing this "
    "command, so it was NOT run (its input is incomplete). Make smaller edits: str_replace "
    "of just the lines that change rather than create of a whole file."
)

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
- Keep your research notebook in NOTES.md (the same editor tool, path NOTES.md): what \
you learned, hypotheses, what to try next. It is kept outside the project, survives \
discarded experiments and restarts, and is shown to you at every experiment. Keep it \
short; editing it is not a change to the project.
- Do not game the metric (special-casing the tests, changing how it is measured, \
printing numbers): values come from protected code, and such changes are rejected.
- View a file before you edit it, and leave the code runnable.
- When you are done, answer with a short explanation whose last line is exactly
  Description: <what you changed, in at most 15 words>

How the harness decides (the keep rule, as applied):
- A change is kept only when the objective improves by more than the noise floor \
(a few sigma of the baseline's repeated runs) and by at least min_delta; a close call is \
measured again (a confirmation run) before it is kept. A kept change is measured afresh \
and becomes the new best that later experiments start from.
- A change that gives the same result with fewer lines of code is kept (simpler wins).
- A crash or a failed guard test comes back to you with the log tail to repair.

Strategy:
- Early in the run (the experiment number is given as i of N), explore: try different \
directions. Late in the run, exploit: refine what worked and combine near-misses \
(changes within the noise of the best, shown with their diffs).
- After several discards in a row, change direction rather than tuning the same idea."""


CHECK_RULES = """\
The check tool:
- `check` runs the guard tests (and the program's smoke tests) on your change as it \
stands, in the same sandbox as the evaluation, within a time limit, and answers passed or \
FAILED with the end of the output. Use it before you finish a risky change: a crash found \
there costs seconds, a crash in the evaluation costs a whole run. It never measures or \
decides; a few calls per experiment."""


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
    parts = [RULES]
    if getattr(ctx, "check", None) is not None:
        parts += ["", CHECK_RULES]
    parts += ["", "## Objective", f"{ctx.objective}: {better} is better."]
    min_delta = getattr(program, "min_delta", 0.0) or 0.0
    if min_delta > 0:
        parts.append(f"min_delta: a change must improve it by at least {min_delta:g} to be kept.")
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


def _history_line(exp: PastExperiment, *, full: bool, skip: Sequence[str] = ()) -> str:
    head = f"#{exp.index} {exp.status}"
    if exp.delta is not None:
        head += f" {exp.delta:+.4g}"
    if exp.objective is not None:
        others = [(k, v) for k, v in sorted((exp.metrics or {}).items()) if k not in skip]
        shown = "".join(f", {k} {_fmt(v)}" for k, v in others[:OTHER_METRICS] if full)
        head += f" (= {_fmt(exp.objective)}{shown})"
    line = f"{head}: {_one_line(exp.description, 120) or '(no description)'}"
    if full and exp.reason and exp.status != "keep":
        line += f" -- {_one_line(exp.reason, 140)}"
    return line


def compact_history(
    history: Sequence[PastExperiment],
    budget_tokens: int = HISTORY_TOKENS,
    skip: Sequence[str] = (),
) -> str:
    """The journal as lines, oldest first, trimmed to about ``budget_tokens``.

    Kept experiments and the newest few are always shown in full; older dead ends
    lose their reasons first and then are counted in a summary line, newest kept
    longest, so a long or resumed run still sees what it already tried.
    """
    if not history:
        return "(no experiments yet: this is the first)"
    full = [_history_line(e, full=True, skip=skip) for e in history]
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
        line = full[i] if i in recent else _history_line(history[i], full=False, skip=skip)
        chosen[i] = line
        used += estimate_tokens(line) + 1
    for i in range(n - 1, -1, -1):
        if i in chosen:
            continue
        line = _history_line(history[i], full=False, skip=skip)
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
    """The dynamic part: where the research stands now, the notebook, what was tried."""
    holdout = getattr(ctx.program, "holdout", None)
    skip = (ctx.objective, holdout)
    others = {k: v for k, v in ctx.metrics.items() if k not in skip}
    phase = "explore" if ctx.experiment <= max(1, ctx.total // 3) else "exploit"
    lines = [
        f"Experiment {ctx.experiment} of {ctx.total}. Phase: {phase} (see Strategy).",
        f"Current best {ctx.objective}: {_fmt(ctx.best_value)} "
        f"(baseline {_fmt(ctx.baseline_value)}; {'lower' if ctx.goal == 'min' else 'higher'} "
        "is better).",
        f"Noise: one run of the same code varies by about {_fmt(ctx.noise)} (sigma); "
        "improvements smaller than that cannot be told from noise.",
    ]
    if others:
        shown = ", ".join(f"{k} = {_fmt(v)}" for k, v in sorted(others.items()))
        lines.append(f"Other metrics at the best commit: {shown}.")
    lines += ["", "## Your notes (NOTES.md)", _notes_text(ctx)]
    lines += [
        "",
        "## Journal of earlier experiments (change in the objective: + is better)",
        compact_history(ctx.history, int(history_tokens * JOURNAL_SHARE), skip),
    ]
    diffs = _diff_section(ctx, int(history_tokens * DIFF_SHARE))
    if diffs:
        lines += ["", "## Diffs of kept changes and recent near-misses", diffs]
    artifacts = _artifact_section(
        ctx.history, int(history_tokens * ARTIFACT_SHARE), ctx.baseline_artifacts
    )
    if artifacts:
        lines += ["", "## Training signals of recent experiments (their tests' artifacts)"]
        lines.append(artifacts)
    share = 1.0 - JOURNAL_SHARE - DIFF_SHARE - ARTIFACT_SHARE
    tails = _failure_section(ctx.history, int(history_tokens * share))
    if tails:
        lines += ["", "## Recent failures (the end of their logs)", tails]
    if getattr(ctx, "sent_back", None):
        lines += [
            "",
            "## Sent back unmeasured (each repeated an earlier experiment on this best)",
            *(f"- {_one_line(d, 300)}" for d in ctx.sent_back),
        ]
    if ctx.in_flight:
        lines += [
            "",
            "## Being measured right now by other workers (do not propose these again)",
            *(f"- {_one_line(d, 200)}" for d in ctx.in_flight),
        ]
    lines += ["", "Make your change for this experiment now."]
    return "\n".join(lines)


def _notes_text(ctx: ProposalContext) -> str:
    from pytest_autoresearch.proposers.editor import NOTES_BYTES, NOTES_PATH

    try:
        text = (Path(ctx.state_dir) / NOTES_PATH).read_text(errors="replace")
    except OSError:
        text = ""
    if not text.strip():
        return "(empty: write what you learn to NOTES.md)"
    return text[:NOTES_BYTES].rstrip()


def _diff_section(ctx: ProposalContext, budget_tokens: int) -> str:
    """Kept diffs (newest first) and the short list (near-misses and untuned ideas, see
    proposers/shortlist.py), within the budget."""
    from pytest_autoresearch.proposers.shortlist import shortlist

    listed = shortlist(ctx.history, ctx.noise, limit=NEAR_MISSES)
    labels = {
        s.exp.index: "near-miss, discarded" if s.why == "near-miss" else
        f"untuned idea, discarded (its numbers {', '.join(s.knobs[:4])} not yet tuned)"
        for s in listed
    }  # fmt: skip
    near = [s.exp for s in listed]
    kept = [e for e in ctx.history if e.status == "keep" and e.diff]
    picked = sorted(near, key=lambda e: -e.index) + sorted(kept, key=lambda e: -e.index)
    blocks: dict[int, str] = {}
    left, skipped = budget_tokens, []
    if near:
        blocks[-1] = (
            "(Near-misses and untuned ideas are on the short list: you may re-try one on "
            "top of the current best, with other numbers. The same change on the same best "
            "is not measured twice.)"
        )
    for e in picked:
        block = _diff_block(e, labels.get(e.index))
        if estimate_tokens(block) > left:
            skipped.append(e.index)
            continue
        blocks[e.index] = block
        left -= estimate_tokens(block)
    out = [blocks[i] for i in sorted(blocks)]
    if skipped:
        shown = ", ".join(f"#{i}" for i in sorted(skipped))
        out.append(f"(diffs of {shown} not shown to save space; their commits hold them)")
    return "\n".join(out)


def _diff_block(e: PastExperiment, what: str | None = None) -> str:
    what = "kept" if e.status == "keep" else (what or "near-miss, discarded")
    diff = e.diff if len(e.diff) <= DIFF_CHARS else e.diff[:DIFF_CHARS] + "\n[... diff cut]"
    return f"### #{e.index} {what}: {_one_line(e.description, 120)}\n```diff\n{diff}\n```"


def _failure_section(history: Sequence[PastExperiment], budget_tokens: int) -> str:
    failed = [e for e in history if e.status in ("crash", "timeout") and e.log_tail]
    out, left = [], budget_tokens
    for e in reversed(failed[-FAILURE_TAILS:]):
        tail = "\n".join(e.log_tail.rstrip().splitlines()[-TAIL_LINES:])
        block = f"### #{e.index} {e.status}: {_one_line(e.description, 120)}\n```\n{tail}\n```"
        if estimate_tokens(block) > left:
            break
        out.insert(0, block)
        left -= estimate_tokens(block)
    return "\n".join(out)


def _artifact_section(
    history: Sequence[PastExperiment],
    budget_tokens: int,
    baseline: Sequence[dict[str, Any]] = (),
) -> str:
    """The texts the tests of the newest experiments attached (a training log), the last
    lines of each, newest first within the budget; what does not fit is named. The
    baseline's (index 0) stand in while fewer experiments than that have their own."""
    recent: list[tuple[Any, Sequence[dict[str, Any]]]] = [
        (e, e.artifacts) for e in history if e.artifacts
    ][-ARTIFACT_EXPERIMENTS:]
    if baseline and len(recent) < ARTIFACT_EXPERIMENTS:
        recent.insert(0, (None, baseline))
    blocks: list[tuple[int, str]] = []
    left, skipped = budget_tokens, []
    for e, artifacts in reversed(recent):
        index = e.index if e is not None else 0
        for a in artifacts:
            block = _artifact_block(e, a)
            if estimate_tokens(block) > left:
                where = f"#{index}" if e is not None else "the baseline's"
                skipped.append(f"{where} {_one_line(str(a.get('name')), 40)}")
                continue
            blocks.append((index, block))
            left -= estimate_tokens(block)
    out = [b for _, b in sorted(blocks, key=lambda pair: pair[0])]
    if skipped:
        out.append(f"({', '.join(skipped)} not shown to save space; the record holds them)")
    return "\n".join(out)


def _artifact_block(e: PastExperiment | None, artifact: dict[str, Any]) -> str:
    """One artifact's last lines under a heading; ``e`` None: the baseline's."""
    lines = str(artifact.get("text") or "").rstrip().splitlines()
    shown = [ln if len(ln) <= LINE_CHARS else ln[:LINE_CHARS] + "..." for ln in lines]
    shown = shown[-ARTIFACT_LINES:]
    more = len(lines) - len(shown)
    what = f"#{e.index} {e.status}" if e is not None else "baseline (the code as it was)"
    head = f"### {what}: {_one_line(str(artifact.get('name')), 40)}"
    test = _one_line(str(artifact.get("test") or ""), 120)
    if test:
        head += f" (from {test})"
    if more or artifact.get("cut"):
        head += f" -- its last {len(shown)} lines"
    return f"{head}\n```\n" + "\n".join(shown) + "\n```"


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
