"""What starting an evaluation costs, and what ``lean: true`` (program.md) saves of it.

Usage::

    python benchmarks/eval_startup.py                  # 10 interleaved rounds
    python benchmarks/eval_startup.py --rounds 20 --json /tmp/eval_startup.json
    python benchmarks/eval_startup.py --per-plugin     # and what each plugin adds alone

Writes a one-metric project (``@metric`` returning a constant, so nothing but the start is
measured) to a temporary folder, computes its lean start with the real ``lean_start`` over a
real collection, then times the real ``evaluate()`` on it, with every installed plugin
autoloaded and lean, through the plain launcher and, where this system has them, through the
namespace launcher (``isolation.make_launcher``). The arms run interleaved, one of each per
round, so drift in the machine's load hits all alike. Floors: ``python -c pass``,
``python -m pytest --version`` (no plugin is loaded for it) and ``--version --version``
(which loads the plugins to list them) with and without autoload.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_autoresearch.research.lean import AUTOLOAD_ENV, LeanStart, installed_plugins, lean_start
from pytest_autoresearch.sandbox.evaluate import evaluate

METRIC = """\
from pytest_autoresearch import metric


@metric(goal="min", unit="s")
def test_constant():
    return 1.0
"""
METRIC_ID = "test_metric.py::test_constant"


def make_project(root: Path) -> None:
    (root / "test_metric.py").write_text(METRIC, encoding="utf-8")
    (root / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")


def lean_for(root: Path) -> LeanStart:
    """The lean start the research session would compute for this project."""
    sessions: list[pytest.Session] = []

    class Grab:
        def pytest_collection_finish(self, session: pytest.Session) -> None:
            sessions.append(session)

    with contextlib.redirect_stdout(io.StringIO()):  # the listing is not a result
        code = pytest.main(
            ["--co", "-q", "-p", "no:cacheprovider", "--rootdir", str(root), str(root)],
            plugins=[Grab()],
        )
    if code != 0 or not sessions:
        raise SystemExit(f"collecting the benchmark project failed (pytest exit code {code})")
    return lean_start(sessions[0], [METRIC_ID], [])


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def command(args: list[str], env: dict[str, str]) -> Callable[[], None]:
    def run() -> None:
        subprocess.run(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    return run


def evaluation(root: Path, tmp: Path, env: dict[str, str], launcher, start: LeanStart | None):
    def run() -> None:
        ev = evaluate(
            root, [METRIC_ID], [], 120, launcher=launcher, tmp_root=tmp,
            env={**env, **(start.env if start else {})},
            extra_args=start.extra_args if start else (),
        )  # fmt: skip
        if ev.status != "ok":
            raise SystemExit(f"an evaluation failed: {ev.reason}\n{ev.log_tail}")

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds (10)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--no-namespaces", action="store_true", help="plain launcher only")
    parser.add_argument(
        "--per-plugin",
        action="store_true",
        help="also time a lean evaluation plus each installed plugin alone (plain launcher)",
    )
    opts = parser.parse_args(argv)

    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", AUTOLOAD_ENV)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # bytecode cached as in a normal install
    bare = {**env, AUTOLOAD_ENV: "1"}
    load_start = os.getloadavg()

    with tempfile.TemporaryDirectory(prefix="eval-startup-") as tmp_name:
        tmp = Path(tmp_name)
        root = tmp / "project"
        root.mkdir()
        make_project(root)
        start = lean_for(root)
        arms: dict[str, Callable[[], None]] = {
            "python -c pass": command([sys.executable, "-c", "pass"], env),
            "pytest --version": command([sys.executable, "-m", "pytest", "--version"], env),
            # Twice: pytest then loads the plugins to list them.
            "pytest --version --version, autoload": command(
                [sys.executable, "-m", "pytest", "--version", "--version"], env
            ),
            "pytest --version --version, no autoload": command(
                [sys.executable, "-m", "pytest", "--version", "--version"], bare
            ),
        }
        from pytest_autoresearch.sandbox.isolation import (
            IsolationSpec,
            make_launcher,
            plain_launcher,
        )

        launchers = [("plain", plain_launcher())]
        if not opts.no_namespaces:
            ns = make_launcher(IsolationSpec())
            if ns.name == "namespaces":
                launchers.append(("namespaces", ns))
            else:
                print(f"namespace launcher: not here ({ns.describe()})")
        for name, launcher in launchers:
            arms[f"evaluate(), {name}, all plugins"] = evaluation(
                root, tmp / "eval", env, launcher, None
            )
            arms[f"evaluate(), {name}, lean"] = evaluation(root, tmp / "eval", env, launcher, start)

        if opts.per_plugin:
            for plugin in installed_plugins():
                one = LeanStart((*start.extra_args, "-p", plugin.name), start.env, (), "")
                arms[f"evaluate(), plain, lean + {plugin.name}"] = evaluation(
                    root, tmp / "eval", env, plain_launcher(), one
                )
        for fn in arms.values():  # warm the bytecode and page caches; not counted
            fn()
        times: dict[str, list[float]] = {name: [] for name in arms}
        for _ in range(opts.rounds):
            for name, fn in arms.items():
                times[name].append(timed(fn))

    load_end = os.getloadavg()
    rows = {
        name: {"median": statistics.median(ts), "min": min(ts), "runs": ts}
        for name, ts in times.items()
    }
    ratios = {
        name: rows[f"evaluate(), {name}, lean"]["median"]
        / rows[f"evaluate(), {name}, all plugins"]["median"]
        for name, _ in launchers
    }
    plugins = [p.name for p in installed_plugins()]
    machine = (
        f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"pytest {pytest.__version__}"
    )
    print(f"machine: {machine}")
    print(f"load average: {load_start[0]:.2f} at the start, {load_end[0]:.2f} at the end")
    print(f"installed pytest plugins (besides ours): {', '.join(plugins) or 'none'}")
    print(f"lean start: {' '.join(start.extra_args) or '(no -p)'}; {start.why}")
    print(f"rounds: {opts.rounds}, interleaved\n")
    print("| what | median | min |")
    print("|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['median']:.3f} s | {row['min']:.3f} s |")
    print()
    for name, ratio in ratios.items():
        full = rows[f"evaluate(), {name}, all plugins"]["median"]
        lean = rows[f"evaluate(), {name}, lean"]["median"]
        print(f"{name}: lean / all plugins = {ratio:.2f} (saves {full - lean:.3f} s a run)")
    if opts.json is not None:
        opts.json.write_text(
            json.dumps(
                {
                    "machine": machine,
                    "load_average": [load_start[0], load_end[0]],
                    "plugins": plugins,
                    "lean_args": list(start.extra_args),
                    "rounds": opts.rounds,
                    "times": rows,
                    "lean_ratio": ratios,
                },
                indent=2,
            ),
            encoding="utf-8",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
