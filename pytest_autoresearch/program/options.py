"""The ``--autoresearch-*`` options: one table, its validators, and the one reader.

Each option is also an ini key (its dest name); ``option(config, name)`` reads "the
command line, else the ini key, else the default", and ``research_plugin`` resolves them
all once in ``pytest_configure``. ``executor_settings`` adds program.md's ``workers:``
below the ini key: how many experiments run at once, and where. Here too: what the
hooks, the session and publishing share (the stash key of a finished run, the default tag,
the proposer choice), so none of them imports another's module for it.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from pytest_autoresearch.program.budget import duration_option

if TYPE_CHECKING:
    from pytest_autoresearch.program.program_md import Program

# The finished run, (LoopResult, records), for the terminal summary and publishing.
RESULT_KEY = pytest.StashKey[Any]()
# Where each option's value came from ("--autoresearch-NAME", "ini" or "default"), noted
# the first time it is read: pytest_configure then writes the value back into config.option.
_SOURCES_KEY = pytest.StashKey[dict[str, str]]()
# An outside agent's --autoresearch-try: its carry file, tag and verdict (research/agent_try.py).
TRY_KEY = pytest.StashKey[Any]()

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
    "workers": "N",
    "ray": "ADDRESS",
    "serve": "[HOST:]PORT",
    "outage": "DURATION",
    "notebook_tokens": "N",
}
RAY_FORMS = (
    "'local' (a throwaway Ray instance on this machine), 'auto' (the cluster this machine "
    "is part of), 'ray://HOST:PORT' or 'HOST:PORT'"
)
_RAY_ADDRESS = re.compile(
    r"^(?:ray://)?(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
    r":(?P<port>[0-9]{1,5})$"
)


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


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of workers such as 4, got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of workers such as 4 (at least 1), got {value}"
        )
    return value


def _ray_address(text: str) -> str:
    address = text.strip()
    if address in ("local", "auto"):
        return address
    m = _RAY_ADDRESS.match(address)
    if m is None or not 0 < int(m["port"]) < 65536:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a Ray address; use {RAY_FORMS}, e.g. ray://head:10001"
        )
    return address


def _serve_address(text: str) -> tuple[str, int]:
    """``[HOST:]PORT`` as (host, port): 8000, 127.0.0.1:8000, [::1]:8000, 0 (any free port)."""
    host, colon, port = text.strip().rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    host = host[1:-1] if bracketed else host
    bad_host = (colon and not host) or (":" in host and not bracketed)
    if not port.isdigit() or int(port) > 65535 or bad_host:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not [HOST:]PORT; e.g. 8000 (on 127.0.0.1), 127.0.0.1:8000, "
            "0.0.0.0:8000 (every interface), [::1]:8000, or 0 for any free port"
        )
    return host or "127.0.0.1", int(port)


def report_tag(text: str) -> str:
    """--autoresearch-report TAG: a tag as --autoresearch-tag accepts it."""
    return _tag(text)


def try_description(text: str) -> str:
    """--autoresearch-try TEXT: one line that says what the agent changed (the record's)."""
    line = " ".join(text.split())
    if not line:
        raise argparse.ArgumentTypeError(
            'say in one line what you changed, e.g. --autoresearch-try "halve the learning rate"'
        )
    return line[:300]


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
        "who proposes changes: 'optuna' (built in, offline), 'anthropic', 'openai' (an LLM "
        "alone), 'hybrid' (an LLM for structure, Optuna for its numbers; 'hybrid:NAME' names "
        "the LLM), or a name a plugin provides (default: hybrid when ANTHROPIC_API_KEY is "
        "set, else optuna)",
    ),
    ("seed", int, None, "random seed for the optuna proposer (default: random)"),
    ("model", str, None, "model for LLM proposers (default depends on the proposer)"),
    ("max_tokens", _positive_int, 8192, "max output tokens per LLM turn (default 8192)"),
    (
        "thinking",
        _non_negative_int,
        None,
        "extended-thinking budget in tokens for the anthropic proposer; 0 = off (default: "
        "adaptive thinking on models that take it, Claude 4.6 and later; off on others)",
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
        "outage",
        duration_option,
        1800.0,
        "how long the proposer may stay unavailable (API overloaded, 5xx, unreachable) "
        "while the loop backs off and retries the same experiment; then the run stops "
        "cleanly and a later run resumes (90s, 45m, 2h; default 30m)",
    ),
    (
        "notebook_tokens",
        _positive_int,
        12000,
        "token budget of the lab notebook in an LLM's prompt: the journal with metrics, "
        "kept and near-miss diffs, failure log tails (default 12000, sized for 200 "
        "experiments; older entries are summarised)",
    ),
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
    (
        "workers",
        _workers,
        None,
        "experiments in flight at once, each in its own git worktree (or Ray actor); "
        "program.md may set workers: (default 1; under --autoresearch-ray, what the cluster "
        "holds: one per GPU, else one per CPU)",
    ),
    (
        "ray",
        _ray_address,
        None,
        "evaluate on a Ray cluster: 'local' (a throwaway instance here), 'auto' (the cluster "
        "this machine is part of), or 'ray://HOST:PORT' (needs pytest-autoresearch[ray])",
    ),
    (
        "serve",
        _serve_address,
        None,
        "serve the live report page at http://HOST:PORT/ while the run goes on (HOST "
        "defaults to 127.0.0.1; PORT 0 takes any free port); it updates itself as "
        "experiments finish (see docs/report-page.md)",
    ),
]


def option(config: pytest.Config, name: str) -> Any:
    """An --autoresearch-NAME value: the command line, else the ini key, else the default."""
    value, _source = _read(config, name)
    return value


def option_source(config: pytest.Config, name: str) -> str:
    """Where ``option(config, name)`` came from: "--autoresearch-NAME", "ini" or "default"."""
    known = config.stash.get(_SOURCES_KEY, {}).get(name)
    return known if known is not None else _read(config, name)[1]


def _read(config: pytest.Config, name: str) -> tuple[Any, str]:
    for opt_name, type_, default, _help in _OPTIONS:
        if opt_name != name:
            continue
        sources = config.stash.setdefault(_SOURCES_KEY, {})
        value = config.getoption("autoresearch_" + name)
        if value is not None:
            sources.setdefault(name, "--autoresearch-" + name.replace("_", "-"))
            return value, sources[name]
        ini = config.getini("autoresearch_" + name)
        if ini not in (None, "", []):
            try:
                value = type_(str(ini).strip())
            except (argparse.ArgumentTypeError, ValueError) as exc:
                raise pytest.UsageError(f"ini key autoresearch_{name} = {ini!r}: {exc}") from None
            sources.setdefault(name, "ini")
            return value, sources[name]
        sources.setdefault(name, "default")
        return default, sources[name]
    raise KeyError(name)


@dataclass(frozen=True)
class ExecutorSettings:
    """How many experiments run at once, and where (``executor_settings``).

    ``workers`` None: under Ray, as many as the cluster holds (the Ray executor decides
    once it is connected). ``workers_from`` says where the number came from, for the
    line printed at the start: "--autoresearch-workers", "ini", "program.md", "the Ray
    cluster" or "default".
    """

    workers: int | None
    ray: str | None
    gpus_per_worker: int
    workers_from: str


def executor_settings(config: pytest.Config, program: Program | None) -> ExecutorSettings:
    """The command line, else the ini key, else program.md's ``workers:``, else 1."""
    ray = option(config, "ray")
    workers = option(config, "workers")
    source = option_source(config, "workers")
    program_workers = getattr(program, "workers", None)
    if workers is None and program_workers is not None:
        workers, source = program_workers, "program.md"
    elif workers is None and ray is not None:
        source = "the Ray cluster"
    elif workers is None:
        workers, source = 1, "default"
    return ExecutorSettings(
        workers=workers,
        ray=ray,
        gpus_per_worker=getattr(program, "gpus_per_worker", 1),
        workers_from=source,
    )


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
                return "hybrid", (
                    "ANTHROPIC_API_KEY is set: Claude proposes changes of structure, Optuna "
                    "tunes their numbers; --autoresearch-proposer anthropic for Claude alone"
                )
        except (ImportError, ValueError):
            pass
        return "optuna", "ANTHROPIC_API_KEY is set but the anthropic package is not installed"
    return "optuna", "no ANTHROPIC_API_KEY set: the offline default"
