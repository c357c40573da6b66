"""What loading pytest-autoresearch costs an ordinary test suite.

Usage::

    python benchmarks/plugin_overhead.py              # 2,000 tests, 10 alternating pairs
    python benchmarks/plugin_overhead.py --rounds 20 --isolated --calls

Generates a suite of plain tests (no metrics) in a temporary folder and times
``python -m pytest -q`` on it with the plugin loaded and with ``-p no:autoresearch``,
alternating the two so that drift in machine load hits both alike. Prints the median
time of each and the median of the per-pair ratios (target: <= 1.02).
``--isolated`` disables every other installed plugin (PYTEST_DISABLE_PLUGIN_AUTOLOAD)
and loads ours with ``-p autoresearch``, so the ratio is not diluted by their cost.
``--calls`` also counts Python function calls under cProfile (one run per arm), a
load-independent measure of the extra work, for machines too busy to time reliably.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TEST_FILE = """\
import pytest


@pytest.fixture
def numbers():
    return list(range(10))

"""


def make_suite(root: Path, tests: int, per_file: int = 100) -> None:
    """Write ``tests`` plain tests, ``per_file`` to a file, a mix of plain, fixture, param."""
    made = 0
    index = 0
    while made < tests:
        lines = [TEST_FILE]
        for i in range(min(per_file, tests - made)):
            kind = i % 4
            if kind == 0:
                lines.append(f"def test_{i}():\n    assert {i} + 1 == {i + 1}\n")
            elif kind == 1:
                lines.append(f"def test_{i}(numbers):\n    assert sum(numbers) == 45\n")
            elif kind == 2:
                lines.append(
                    f"class TestC{i}:\n    def test_m(self):\n        assert 'a' * 2 == 'aa'\n"
                )
            else:
                lines.append(
                    f"@pytest.mark.parametrize('x', [1])\ndef test_{i}(x):\n    assert x == 1\n"
                )
        made += min(per_file, tests - made)
        (root / f"test_gen_{index:03d}.py").write_text("\n\n".join(lines), encoding="utf-8")
        index += 1


def pytest_command(
    root: Path, plugin: bool, isolated: bool, pycache: Path
) -> tuple[list[str], dict[str, str]]:
    """The pytest arguments (after ``python``) and environment for one arm of the comparison."""
    env = dict(os.environ)
    # Cache bytecode as a normal install does (in a temp folder, so nothing is left behind):
    # with PYTHONDONTWRITEBYTECODE every run would recompile everything it imports.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", str(root)]
    if isolated:
        env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
        if plugin:
            args += ["-p", "autoresearch"]
    elif not plugin:
        args += ["-p", "no:autoresearch"]
    return args, env


def run_once(root: Path, plugin: bool, isolated: bool, pycache: Path) -> tuple[float, float]:
    """Wall and CPU (user+sys) seconds of one pytest run over the suite.

    CPU time is what the plugin adds; it is also far less disturbed than wall time when
    other work shares the machine. Fails loudly if the suite does not pass.
    """
    args, env = pytest_command(root, plugin, isolated, pycache)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *args], cwd=root, env=env, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"pytest failed ({done.returncode}):\n{done.stdout[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def count_calls(root: Path, plugin: bool, isolated: bool, pycache: Path) -> int:
    """Python function calls in one run, counted by cProfile: a measure of the work done
    that, unlike time, does not move with the load of other processes on the machine."""
    import pstats

    args, env = pytest_command(root, plugin, isolated, pycache)
    out = pycache.parent / f"calls-{plugin}.prof"
    cmd = [sys.executable, "-m", "cProfile", "-o", str(out), *args]
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"pytest failed ({done.returncode}):\n{done.stdout[-2000:]}")
    return sum(row[1] for row in pstats.Stats(str(out)).stats.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tests", type=int, default=2000, help="suite size (default 2000)")
    parser.add_argument("--rounds", type=int, default=10, help="alternating pairs (default 10)")
    parser.add_argument("--isolated", action="store_true", help="no other plugins loaded")
    parser.add_argument(
        "--calls",
        action="store_true",
        help="also count function calls with cProfile (one run each)",
    )
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="ar-overhead-") as tmp:
        root = Path(tmp) / "suite"
        root.mkdir()
        pycache = Path(tmp) / "pycache"
        make_suite(root, args.tests)
        (root / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")  # own rootdir
        run_once(root, True, args.isolated, pycache)  # warm the file cache and .pyc files
        run_once(root, False, args.isolated, pycache)
        calls = None
        if args.calls:
            calls = {
                flag: count_calls(root, flag, args.isolated, pycache) for flag in (True, False)
            }
        wall: dict[bool, list[float]] = {True: [], False: []}
        cpu: dict[bool, list[float]] = {True: [], False: []}
        wall_ratios, cpu_ratios = [], []
        for i in range(args.rounds):
            # Alternate which goes first, so neither always runs on a warmer machine.
            order = (True, False) if i % 2 == 0 else (False, True)
            times = {flag: run_once(root, flag, args.isolated, pycache) for flag in order}
            for flag in (True, False):
                wall[flag].append(times[flag][0])
                cpu[flag].append(times[flag][1])
            wall_ratios.append(times[True][0] / times[False][0])
            cpu_ratios.append(times[True][1] / times[False][1])
            print(
                f"round {i + 1:2d}: wall {times[True][0]:.3f}s / {times[False][0]:.3f}s "
                f"= {wall_ratios[-1]:.3f}   cpu {times[True][1]:.3f}s / {times[False][1]:.3f}s "
                f"= {cpu_ratios[-1]:.3f}",
                flush=True,
            )

    print()
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    mode = "isolated (-p autoresearch, autoload off)" if args.isolated else "all installed plugins"
    print(f"suite: {args.tests} plain tests; {args.rounds} alternating pairs; {mode}")
    med = statistics.median
    print("                 with plugin  -p no:autoresearch  median ratio")
    print(
        f"wall time        {med(wall[True]):9.3f}s  {med(wall[False]):17.3f}s  "
        f"{med(wall_ratios):12.4f}"
    )
    print(
        f"cpu time         {med(cpu[True]):9.3f}s  {med(cpu[False]):17.3f}s  "
        f"{med(cpu_ratios):12.4f}"
    )
    if calls:
        print(
            f"function calls   {calls[True]:10d}  {calls[False]:18d}  "
            f"{calls[True] / calls[False]:12.4f}"
        )
    print("target: median ratio <= 1.02")
    return 0


if __name__ == "__main__":
    sys.exit(main())
