"""program.md ``lean:``: evaluations start with only the pytest plugins the metric tests need.

Every evaluation is a fresh ``python -m pytest``, and before a test runs that process imports
every installed plugin (the ``pytest11`` entry points): Hypothesis alone re-imports all of
itself. With ``lean: true`` the evaluation runs with ``PYTEST_DISABLE_PLUGIN_AUTOLOAD=1`` and a
``-p NAME`` for each plugin the research session found a use for in the tests it collected:

- a fixture that a metric or guard test uses (directly, through another fixture, or autouse)
  whose function lives in the plugin's module or package;
- a marker on such a test that the plugin declares or reads (``asyncio``, ``anyio``, ...);
- an option in ``addopts``/``PYTEST_ADDOPTS``, or an ini key the project sets, that the plugin
  defines (without it the evaluation would stop at "unrecognized arguments");
- a name listed in program.md, ``lean: [NAME, ...]`` (an entry point or distribution name).

conftest.py files, ``pytest_plugins`` and ``PYTEST_PLUGINS`` load as always. What this cannot
see (a fixture fetched with ``request.getfixturevalue``, a hook the tests rely on silently)
shows up as a failed baseline whose log names the missing fixture or option; list the plugin
under ``lean:`` then. Our own plugin is always loaded: ``evaluate()`` passes ``-p autoresearch``.

API::

    lean_start(session, metric_ids, guard_args, keep=()) -> LeanStart
    LeanStart.extra_args   ("-p", "xdist", ...)  pytest arguments for every evaluation
    LeanStart.env          {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}  merged into its environment
    LeanStart.plugins      the entry point names kept
    LeanStart.why          one line for the terminal

See docs/lean.md.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from importlib.util import find_spec
from typing import Any

import pytest

__all__ = ["AUTOLOAD_ENV", "LeanStart", "installed_plugins", "lean_start"]

AUTOLOAD_ENV = "PYTEST_DISABLE_PLUGIN_AUTOLOAD"
OURS = "autoresearch"  # evaluate() always passes -p autoresearch
DOCS = "docs/lean.md"
_LISTED = "listed under lean:"

# Markers pytest itself (and this plugin) handles; no third-party plugin is needed for them.
_BUILTIN_MARKERS = frozenset(
    ("parametrize", "skip", "skipif", "xfail", "usefixtures", "filterwarnings")
    + ("tryfirst", "trylast", "metric")
)


@dataclass(frozen=True)
class LeanStart:
    """How every evaluation starts under ``lean:``: arguments, environment, and why."""

    extra_args: tuple[str, ...]
    env: dict[str, str]
    plugins: tuple[str, ...]
    why: str


@dataclass(frozen=True)
class _Plugin:
    """One installed ``pytest11`` entry point."""

    name: str  # what -p takes
    module: str  # the module it loads
    dist: str  # the distribution that installs it, e.g. "pytest-xdist"


def installed_plugins() -> list[_Plugin]:
    """The installed ``pytest11`` entry points, first of each name, ours left out."""
    seen: dict[str, _Plugin] = {}
    for ep in entry_points(group="pytest11"):
        if ep.name == OURS or ep.name in seen:
            continue
        dist = ep.dist.name if ep.dist is not None else ep.module.split(".")[0]
        seen[ep.name] = _Plugin(ep.name, ep.module, dist)
    return list(seen.values())


def lean_start(
    session: pytest.Session,
    metric_ids: Sequence[str],
    guard_args: Sequence[str],
    keep: Iterable[str] = (),
) -> LeanStart:
    """Which plugins the evaluations of ``metric_ids`` + ``guard_args`` need, from ``session``.

    ``session`` is the research session after collection; ``metric_ids`` are node ids;
    ``guard_args`` are the guards' paths or node ids (those not collected here are not
    inspected, and ``why`` says so); ``keep`` names plugins to load regardless (program.md
    ``lean: [...]``). A ``keep`` name that is not installed is a ``pytest.UsageError``.
    """
    plugins = installed_plugins()
    reasons: dict[str, list[str]] = {}
    # "-p no:NAME" in this session (its addopts reach the evaluations too): a later "-p NAME"
    # would switch it back on, so only an explicit lean: entry does that.
    blocked = {p.name for p in plugins if session.config.pluginmanager.is_blocked(p.name)}

    def add(plugin: _Plugin, reason: str) -> None:
        if plugin.name in blocked and reason != _LISTED:
            return
        said = reasons.setdefault(plugin.name, [])
        if reason not in said and len(said) < 3:
            said.append(reason)

    for name in keep:
        found = _by_name(plugins, name)
        if not found:
            installed = ", ".join(sorted(p.name for p in plugins)) or "none"
            raise pytest.UsageError(
                f"program.md lean: {name!r} is not an installed pytest plugin (entry point or "
                f"distribution name); installed: {installed}. Fix the name or remove it."
            )
        for plugin in found:
            add(plugin, _LISTED)

    items, uncollected = _selected(session.items, metric_ids, guard_args)
    for item in items:
        for fixture, module in _fixture_modules(item):
            for plugin in _owners(plugins, module):
                add(plugin, f"fixture {fixture}")
        for marker in sorted({m.name for m in item.iter_markers()} - _BUILTIN_MARKERS):
            for plugin in _marker_owners(plugins, marker):
                add(plugin, f"marker {marker}")
    for text, plugin in _configured(session.config, plugins):
        add(plugin, text)

    kept = tuple(p.name for p in plugins if p.name in reasons)
    args: list[str] = []
    for name in kept:
        args += ["-p", name]
    return LeanStart(
        extra_args=tuple(args),
        env={AUTOLOAD_ENV: "1"},
        plugins=kept,
        why=_why(plugins, kept, reasons, uncollected),
    )


# -- which tests ------------------------------------------------------------------------


def _selected(
    items: Sequence[pytest.Item], metric_ids: Sequence[str], guard_args: Sequence[str]
) -> tuple[list[pytest.Item], list[str]]:
    """The collected items an evaluation runs, and the guard args that matched none of them."""
    wanted = set(metric_ids)
    chosen = [item for item in items if item.nodeid in wanted]
    uncollected = []
    for arg in guard_args:
        match = [item for item in items if _covers(arg, item.nodeid)]
        if not match:
            uncollected.append(arg)
        chosen += [item for item in match if item not in chosen]
    return chosen, uncollected


def _covers(arg: str, nodeid: str) -> bool:
    """Whether the guard ``arg`` (a path or node id relative to the rootdir) selects ``nodeid``."""
    arg = arg.strip().replace(os.sep, "/").rstrip("/")
    while arg.startswith("./"):
        arg = arg[2:]
    if arg in ("", "."):
        return True
    return nodeid == arg or nodeid.startswith((arg + "::", arg + "/", arg + "["))


# -- fixtures and markers ---------------------------------------------------------------


def _fixture_modules(item: pytest.Item) -> list[tuple[str, str]]:
    """(fixture name, module of its function) for every fixture the item's setup runs."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:  # not a Function (a doctest, a plugin's own item type)
        return []
    out = []
    for name, defs in info.name2fixturedefs.items():
        # The last definition wins; it reaches the one before only by requesting its own name.
        i = len(defs) - 1
        while i >= 0:
            func = getattr(defs[i], "func", None)
            module = getattr(inspect.unwrap(func), "__module__", None) if func else None
            if module:
                out.append((name, module))
            if name not in getattr(defs[i], "argnames", ()):
                break
            i -= 1
    return out


def _owners(plugins: Sequence[_Plugin], module: str) -> list[_Plugin]:
    """The plugins whose module (or, failing that, whose top-level package) holds ``module``."""
    exact = [p for p in plugins if module == p.module or module.startswith(p.module + ".")]
    if exact:
        return exact
    top = module.split(".")[0]
    return [p for p in plugins if p.module.split(".")[0] == top and top not in ("_pytest",)]


def _marker_owners(plugins: Sequence[_Plugin], marker: str) -> list[_Plugin]:
    """Plugins named like the marker, or whose module declares or reads it."""
    named = [p for p in plugins if marker in _names(p)]
    if named:
        return named
    pattern = re.compile(
        rf"""["']{re.escape(marker)}\s*[:(]"""  # "asyncio: mark the test ..." (declared)
        rf"""|markers?\(\s*(?:name\s*=\s*)?["']{re.escape(marker)}["']"""  # get_closest_marker
    )
    return [p for p in plugins if pattern.search(_source(p.module))]


def _names(plugin: _Plugin) -> set[str]:
    """What a user might call the plugin: entry point, distribution, without "pytest-"."""
    out = set()
    for raw in (plugin.name, plugin.dist, plugin.module.split(".")[0]):
        name = raw.lower().replace("_", "-")
        out |= {name, name.removeprefix("pytest-"), name.removesuffix("-pytest")}
    return out


def _by_name(plugins: Sequence[_Plugin], name: str) -> list[_Plugin]:
    exact = [p for p in plugins if p.name == name]
    if exact:
        return exact
    wanted = name.strip().lower().replace("_", "-")
    return [p for p in plugins if wanted in {p.dist.lower().replace("_", "-"), *_names(p)}]


_SOURCES: dict[str, str] = {}


def _source(module: str) -> str:
    """The text of a plugin's module file (read, not imported); "" when there is none."""
    if module not in _SOURCES:
        text = ""
        try:
            spec = find_spec(module)
            if spec is not None and spec.origin and spec.origin.endswith(".py"):
                with open(spec.origin, encoding="utf-8", errors="replace") as fh:
                    text = fh.read()
        except (ImportError, ValueError, OSError):
            pass
        _SOURCES[module] = text
    return _SOURCES[module]


# -- options and ini keys the project's configuration uses ------------------------------


def _configured(config: pytest.Config, plugins: Sequence[_Plugin]) -> list[tuple[str, _Plugin]]:
    """(reason, plugin) for plugins whose options ``addopts`` uses or whose ini keys are set."""
    words = _addopts_words(config)
    ini_keys = _ini_keys(config)
    if not words and not ini_keys:
        return []
    out = []
    for plugin in plugins:
        obj = config.pluginmanager.get_plugin(plugin.name)
        if obj is None:
            continue  # blocked or not loaded here: nothing of it in this session either
        flags, keys = _declared(obj, config)
        for word in words:
            flag = word.split("=", 1)[0]
            if flag in flags or any(flag.startswith(f) and len(f) == 2 for f in flags):
                out.append((f"option {flag} in addopts", plugin))
                break
        for key in sorted(ini_keys & keys):
            out.append((f"ini key {key}", plugin))
            break
    return out


def _addopts_words(config: pytest.Config) -> list[str]:
    words: list[str] = []
    with contextlib.suppress(ValueError, KeyError):
        words += [str(w) for w in config.getini("addopts")]
    words += shlex.split(os.environ.get("PYTEST_ADDOPTS", ""))
    return [w for w in words if w.startswith("-") and w != "--"]


def _ini_keys(config: pytest.Config) -> set[str]:
    """The keys the project's ini file sets (pytest has no public API for this)."""
    inicfg = getattr(config, "_inicfg", None)
    if inicfg is None:
        inicfg = getattr(config, "inicfg", None) or {}
    try:
        return {str(k) for k in inicfg}
    except TypeError:
        return set()


def _declared(plugin: Any, config: pytest.Config) -> tuple[set[str], set[str]]:
    """The option strings and ini keys a plugin's ``pytest_addoption`` declares."""
    hook = getattr(plugin, "pytest_addoption", None)
    if hook is None:
        return set(), set()
    try:
        from _pytest.config.argparsing import Parser

        parser = Parser(_ispytest=True)
        given = {"parser": parser, "pluginmanager": config.pluginmanager}
        params = inspect.signature(hook).parameters
        hook(**{k: v for k, v in given.items() if k in params})
    except Exception:  # a plugin's addoption that wants more than a scratch parser
        return set(), set()
    flags: set[str] = set()
    for group in [parser._anonymous, *parser._groups]:
        for option in group.options:
            flags.update(option.names())
    return flags, set(parser._inidict)


# -- the line for the terminal ----------------------------------------------------------


def _why(
    plugins: Sequence[_Plugin],
    kept: Sequence[str],
    reasons: dict[str, list[str]],
    uncollected: Sequence[str],
) -> str:
    left = sorted(p.name for p in plugins if p.name not in kept)
    if kept:
        said = "; ".join(f"{name} ({', '.join(reasons[name])})" for name in kept)
        line = f"lean: evaluations load {len(kept)} of {len(plugins)} installed plugin(s): {said}"
    else:
        line = f"lean: evaluations load none of the {len(plugins)} installed plugin(s)"
    if left:
        line += f"; not loaded: {', '.join(left)}"
    if uncollected:
        line += (
            f"; guard(s) {', '.join(uncollected)} not collected in this session, their "
            "plugins not checked"
        )
    return line + f" (a missing one fails the baseline: list it under lean:, see {DOCS})"
