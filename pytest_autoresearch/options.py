"""The ``--autoresearch-*`` options: one table, its validators, and the one reader.

Each option is also an ini key (its dest name); ``option(config, name)`` reads "the
command line, else the ini key, else the default", and ``research_plugin`` resolves them
all once in ``pytest_configure``. Here too: what the hooks, the session and publishing
share (the stash key of a finished run, the default tag, the proposer choice), so none of
them imports another's module for it.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
from typing import Any

import pytest

from pytest_autoresearch.budget import duration_option

# The finished run, (LoopResult, records), for the terminal summary and publishing.
RESULT_KEY = pytest.StashKey[Any]()

TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_N_FLAGS = ("-n", "--numprocesses")
_METAVARS = {
    "experiments": "N",
    "tag": "TAG",
    "program": "PATH",
    "proposer": "NAME",
    "seed": "INT",
    "model": "MODEL",
    "max_tokens": "N",
    "thinking": "TOKENS",
    "max_turns": "N",
    "repair_attempts": "N",
    "base_url": "URL",
    "max_cost": "USD",
    "time_budget": "DURATION",
    "remote": "NAME",
}


# -- option validators (argparse ``type=``) -----------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of experiments, got {text!r} (e.g. 200)"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"the number must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"the number must be 0 or more, got {value}")
    return value


def _usd(text: str) -> float:
    try:
        value = float(text.lstrip("$"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected dollars such as 5 or 2.50, got {text!r}"
        ) from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"the cost cap must be more than 0 dollars, got {text!r}")
    return value


def _tag(text: str) -> str:
    if not TAG_RE.match(text) or ".." in text or text.endswith(".lock"):
        raise argparse.ArgumentTypeError(
            f"invalid tag {text!r}: use letters, digits, '.', '_' or '-' (at most 64, no '..'), "
            "e.g. --autoresearch-tag nov23"
        )
    return text


# name, type, default, help. Each is also an ini key (the dest name), read when not given.
_OPTIONS: list[tuple[str, Any, Any, str]] = [
    (
        "experiments",
        _positive_int,
        20,
        "number of experiments to run (also '-n N' under --autoresearch); a resumed run "
        "counts the experiments already journaled for its tag (default 20)",
    ),
    (
        "tag",
        _tag,
        None,
        "name of this research run: branch autoresearch/TAG, record .autoresearch/TAG/; an "
        "existing tag resumes (default: today's date, e.g. nov23)",
    ),
    ("program", str, "program.md", "the research program (default: program.md at the rootdir)"),
    (
        "proposer",
        str,
        None,
        "who proposes changes: 'optuna' (built in, offline), 'anthropic', 'openai', or a name a "
        "plugin provides (default: anthropic when ANTHROPIC_API_KEY is set, else optuna)",
    ),
    ("seed", int, None, "random seed for the optuna proposer (default: random)"),
    ("model", str, None, "model for LLM proposers (default depends on the proposer)"),
    ("max_tokens", _positive_int, 8192, "max output tokens per LLM turn (default 8192)"),
    (
        "thinking",
        _non_negative_int,
        0,
        "extended-thinking budget in tokens for the anthropic proposer; 0 = off (default 0)",
    ),
    ("max_turns", _positive_int, 30, "max LLM turns (tool calls) per proposal (default 30)"),
    (
        "repair_attempts",
        _non_negative_int,
        2,
        "times an LLM may fix its own change after a crash or a failed guard (default 2)",
    ),
    (
        "base_url",
        str,
        None,
        "endpoint for the openai proposer (default: $OPENAI_BASE_URL, else OpenAI's)",
    ),
    ("max_cost", _usd, None, "stop cleanly once LLM proposals have cost this many US dollars"),
    (
        "time_budget",
        duration_option,
        None,
        "wall-clock budget (90s, 45m, 5h30m or seconds): no experiment starts that would not "
        "finish inside it; the run then ends cleanly, exit code 0 (default: no limit)",
    ),
    (
        "remote",
        str,
        "origin",
        "git remote that --autoresearch-pr pushes the research branch to (default origin)",
    ),
]


def option(config: pytest.Config, name: str) -> Any:
    """An --autoresearch-NAME value: the command line, else the ini key, else the default."""
    for opt_name, type_, default, _help in _OPTIONS:
        if opt_name != name:
            continue
        value = config.getoption("autoresearch_" + name)
        if value is not None:
            return value
        ini = config.getini("autoresearch_" + name)
        if ini not in (None, "", []):
            try:
                return type_(str(ini).strip())
            except (argparse.ArgumentTypeError, ValueError) as exc:
                raise pytest.UsageError(f"ini key autoresearch_{name} = {ini!r}: {exc}") from None
        return default
    raise KeyError(name)


def default_tag(today: datetime.date | None = None) -> str:
    """Karpathy's convention: a short date tag such as 'nov23'."""
    today = today or datetime.date.today()
    return today.strftime("%b%d").lower()


def proposer_choice(config: pytest.Config) -> tuple[str, str]:
    """The proposer name and why it was chosen (printed at the start of the run)."""
    name = option(config, "proposer")
    if name:
        return name, "chosen with --autoresearch-proposer"
    if os.environ.get("ANTHROPIC_API_KEY"):
        try:
            import importlib.util

            if importlib.util.find_spec("anthropic") is not None:
                return "anthropic", "ANTHROPIC_API_KEY is set"
        except (ImportError, ValueError):
            pass
        return "optuna", "ANTHROPIC_API_KEY is set but the anthropic package is not installed"
    return "optuna", "no ANTHROPIC_API_KEY set: the offline default"
