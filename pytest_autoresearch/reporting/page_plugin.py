"""The report page during a run (report.html after every experiment, --autoresearch-serve)
and after it (--autoresearch-report TAG).

Registered by research/hooks.py under ``--autoresearch`` as ``autoresearch.page``
(``-p no:autoresearch.page`` turns the page off). Where the record is: what the session put
in ``config.stash[RECORD_KEY]`` (``(record_dir, program)``), else the folder the session
derives the same way (``.autoresearch/<tag>`` at the rootdir), noted once. Nothing heavy is
imported until a page is written; a page that cannot be written costs one warning line,
never the run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

__all__ = ["RECORD_KEY", "PagePlugin", "regenerate", "record_dir"]

# Set by the research session once it knows them: (record folder, Program).
RECORD_KEY = pytest.StashKey[tuple[Path, Any]]()
_GUESSED_KEY = pytest.StashKey[Path]()


def record_dir(config: pytest.Config) -> Path:
    """The record folder of this run: the session's word, else derived once from the tag."""
    known = config.stash.get(RECORD_KEY, None)
    if known is not None:
        return Path(known[0])
    guessed = config.stash.get(_GUESSED_KEY, None)
    if guessed is None:
        from pytest_autoresearch.program import options

        tag = config.getoption("autoresearch_tag", None) or options.default_tag()
        guessed = config.stash[_GUESSED_KEY] = Path(config.rootpath) / ".autoresearch" / tag
    return guessed


def _holdout(config: pytest.Config) -> str | None:
    """program.md's holdout metric: the session's Program, else program.md read here."""
    known = config.stash.get(RECORD_KEY, None)
    if known is not None:
        return getattr(known[1], "holdout", None)
    given = Path(config.getoption("autoresearch_program", None) or "program.md")
    bases = [Path(config.invocation_params.dir), Path(config.rootpath)]
    for path in [given] if given.is_absolute() else [b / given for b in bases]:
        if path.is_file():
            try:
                from pytest_autoresearch.program.program_md import load_program

                return load_program(path, Path(config.rootpath)).holdout
            except Exception:  # a broken program.md is the session's to report
                return None
    return None


def _extras(config: pytest.Config) -> dict[str, Any]:
    return {
        "holdout": _holdout(config),
        "time_budget": config.getoption("autoresearch_time_budget", None),
        "max_cost": config.getoption("autoresearch_max_cost", None),
    }


class PagePlugin:
    """Writes report.html after every experiment and at the end; serves it when asked."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.server: Any = None
        self._tail: Any = None
        self._extras: dict[str, Any] | None = None
        self._warned = False
        self._written = False
        self._pending: list[tuple[str, dict[str, bool]]] = []

    def _echo(self, line: str, **markup: bool) -> None:
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        if tr is None:  # at configure time the terminal may not be there yet
            self._pending.append((line, markup))
            return
        for early, how in self._pending:
            tr.write_line(early, **how)
        self._pending.clear()
        tr.write_line(line, **markup)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        for line, how in list(self._pending):
            self._pending.clear()
            self._echo(line, **how)

    def _view(self) -> Any:
        from pytest_autoresearch.reporting.run_view import RecordTail

        directory = record_dir(self.config)
        if self._tail is None or self._tail.directory != directory:
            self._tail = RecordTail(directory)
        if self._extras is None:
            self._extras = _extras(self.config)
        return self._tail.view(**self._extras)

    def write(self) -> Path | None:
        """report.html from the record as it is now; None (and one warning) on failure."""
        try:
            from pytest_autoresearch.reporting.html import write_page

            view = self._view()
            if not view.directory.is_dir():
                return None
            path = write_page(view.directory, view)
            self._written = True
            return path
        except Exception as exc:  # the page is a view: it must never stop the research
            if not self._warned:
                self._warned = True
                self._echo(f"report.html not written: {type(exc).__name__}: {exc}", yellow=True)
            return None

    def start_server(self, address: tuple[str, int]) -> None:
        from pytest_autoresearch.reporting.serve import PageServer

        host, port = address
        self.server = PageServer(record_dir(self.config), host, port, **_extras(self.config))
        try:
            url = self.server.start()
        except OSError as exc:
            self.server = None
            raise pytest.UsageError(
                f"--autoresearch-serve {host}:{port}: cannot listen there ({exc.strerror or exc}); "
                "choose another port, or 0 for any free one"
            ) from None
        exposed = host not in ("127.0.0.1", "localhost", "::1")
        self._echo(
            f"live page: {url} (record {self.server.directory})"
            + (
                f"; listening on {host}: anyone who can reach it can read the page"
                if exposed
                else ""
            ),
            yellow=exposed,
        )

    def pytest_autoresearch_experiment_done(self, record: dict, config: pytest.Config) -> None:
        self.write()

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """The final page (the journal now says how the run ended)."""
        from pytest_autoresearch.program.options import RESULT_KEY

        found = self.config.stash.get(RESULT_KEY, None)
        if found is not None and getattr(found[0], "record_dir", None):
            self.config.stash[_GUESSED_KEY] = Path(found[0].record_dir)  # the loop's own word
        if found is not None or self._written:  # a refused run leaves the record alone
            self.write()

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


def install(config: pytest.Config) -> None:
    """Register the page plugin for a research run (not in an evaluation subprocess)."""
    if os.environ.get("AUTORESEARCH_EVAL") or config.option.collectonly:
        return
    plugin = PagePlugin(config)
    if config.pluginmanager.register(plugin, "autoresearch.page") is None:
        return  # -p no:autoresearch.page
    record_dir(config)  # the tag's default is today's date: note it now, not after midnight
    address = config.getoption("autoresearch_serve", None)
    if address is not None:
        plugin.start_server(address)


def regenerate(config: pytest.Config, tag: str) -> int:
    """--autoresearch-report TAG: report.md, progress.png and report.html from the record."""
    from pytest_autoresearch.reporting import report
    from pytest_autoresearch.reporting.html import write_page
    from pytest_autoresearch.reporting.run_view import read_run, summarise

    base = Path(config.rootpath) / ".autoresearch"
    directory = base / tag
    if not (directory / "experiments.jsonl").is_file():
        tags = sorted(p.parent.name for p in base.glob("*/experiments.jsonl"))
        raise pytest.UsageError(
            f"--autoresearch-report {tag}: no record at {directory}"
            + (f"; records here: {', '.join(tags)}" if tags else "; there is no record here yet")
        )
    extras = _extras(config)
    view = read_run(directory, **{**extras, "time_budget": None, "max_cost": None})
    summary = summarise(view)
    written = [report.write_report(directory, view.records, summary), write_page(directory, view)]
    if (directory / report.PLOT_NAME).exists():
        written.insert(1, directory / report.PLOT_NAME)
    # Before pytest_configure there is no terminal reporter: plain lines.
    print(f"autoresearch report {tag}: {', '.join(p.name for p in written)} in {directory}")
    for line in report.summary_lines(view.records, summary):
        print(line)
    return 0
