"""The report page's cost: time to write report.html for 200 experiments, its size, and the
per-experiment overhead it adds to a run.

    python benchmarks/report_page.py                  # synthetic record, 200 experiments
    python benchmarks/report_page.py --loop -n 8      # also a real toy loop, page on vs off
    python benchmarks/report_page.py --paint          # also Chromium's first paint (Playwright)

Synthetic: a record shaped like the loop's (tests/page_records.py: diffs, params, two
workers, a holdout) grows one experiment at a time; after each, the page is rewritten the
way the plugin does it after every experiment (an incremental read of the journal, then an
atomic write). Cold: the whole record read and the page written by a fresh process-like
reader (what --autoresearch-report does). --loop: ``pytest --autoresearch -n N`` on the toy
project of tests/toyproject.py, alternately with the page and with ``-p no:autoresearch.page``,
wall time per experiment. --paint: the system Chromium opens the 200-experiment page five
times; milliseconds from navigation to the first frame after the load (parsed, laid out,
painted). A timed test would fail on a loaded machine; the figure lives here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from page_records import synthetic_record  # noqa: E402

from pytest_autoresearch.reporting import html, page_rows  # noqa: E402
from pytest_autoresearch.reporting.run_view import RecordTail, read_run  # noqa: E402


def growing(directory: Path, n: int) -> list[float]:
    """Seconds to rewrite the page after each of ``n`` experiments, as the plugin does."""
    full = synthetic_record(directory / "full", n, total=n, ended=False)
    lines = (full / "experiments.jsonl").read_text().splitlines(keepends=True)
    record = directory / "live"
    record.mkdir()
    journal = record / "experiments.jsonl"
    tail = RecordTail(record)
    times: list[float] = []
    with open(journal, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line)
            f.flush()
            if json.loads(line)["event"] != "experiment":
                continue
            started = time.perf_counter()
            html.write_page(record, tail.view(holdout="test_bpb"))
            times.append(time.perf_counter() - started)
    return times


def cold(directory: Path, n: int, repeats: int = 5) -> tuple[list[float], int]:
    """Seconds to read a whole record of ``n`` and write its page from scratch; its bytes."""
    record = synthetic_record(directory / "cold", n)
    times = []
    for _ in range(repeats):
        page_rows._ROWS.clear()  # no row cached from an earlier render
        html._LEARNED.clear()
        started = time.perf_counter()
        path = html.write_page(record, read_run(record, holdout="test_bpb"))
        times.append(time.perf_counter() - started)
    return times, path.stat().st_size


# Appended to the toy project's conftest.py: the time the run spends in the
# experiment_done hook (the page's rewrite and nothing else there), measured from inside.
HOOK_TIMER = """

import time
import pytest


@pytest.hookimpl(wrapper=True)
def pytest_autoresearch_experiment_done(record, config):
    started = time.perf_counter()
    try:
        return (yield)
    finally:
        with open(config.rootpath / "hook_times.txt", "a") as f:
            f.write(f"{time.perf_counter() - started}\\n")
"""


def loop(n: int, rounds: int) -> dict[str, list[float]]:
    """Wall seconds per experiment of a real toy loop, with the page and without; and the
    seconds spent in the experiment_done hook ("hook, page" / "hook, no page")."""
    from toyproject import git, make_toy, step

    out: dict[str, list[float]] = {"page": [], "no page": [], "hook, page": [], "hook, no page": []}
    steps = [step(f"move X to {x}", float(x)) for x in (5, 7, 4, 6, 2, 3, 8, 1)]
    for r in range(rounds):
        for kind in ("page", "no page") if r % 2 == 0 else ("no page", "page"):
            with tempfile.TemporaryDirectory() as tmp:
                root = make_toy(Path(tmp), steps)
                with open(root / "conftest.py", "a") as f:
                    f.write(HOOK_TIMER)
                with open(root / ".gitignore", "a") as f:
                    f.write("hook_times.txt\n")
                git(root, "commit", "-qam", "time the hook")
                cmd = [sys.executable, "-m", "pytest", "--autoresearch", "-n", str(n),
                       "--autoresearch-tag", "b", "--autoresearch-proposer", "scripted",
                       "-p", "no:randomly", "-q"]  # fmt: skip
                if kind == "no page":
                    cmd += ["-p", "no:autoresearch.page"]
                env = {**os.environ, "PYTEST_ADDOPTS": "-p no:hypothesispytest -p no:benchmark"}
                subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True)
                journal = (root / ".autoresearch/b/experiments.jsonl").read_text()
                events = [json.loads(x) for x in journal.splitlines()]
                exps = [e for e in events if e["event"] == "experiment"]
                # From the first experiment's start to the last's end: the hook's time between
                # experiments is inside, the baseline is not.
                first = next(e for e in events if e["event"] == "start")
                span = _seconds(exps[-1]["finished"]) - _seconds(first["at"])
                out[kind].append(span / len(exps))
                hook = (root / "hook_times.txt").read_text().split()
                out["hook, " + kind] += [float(x) for x in hook]
                assert (root / ".autoresearch/b/report.html").exists() == (kind == "page")
    return out


FIRST_FRAME = "new Promise(r => requestAnimationFrame(() => r(performance.now())))"


def paint(directory: Path, n: int, repeats: int = 5) -> list[float]:
    """Milliseconds from navigation to the first frame after the load, ``repeats`` times."""
    from playwright.sync_api import sync_playwright

    path = html.write_page(
        synthetic_record(directory / "paint", n, total=n + 50, ended=False),
        read_run(directory / "paint", holdout="test_bpb"),
    )
    chromium = next((c for c in ("/usr/bin/chromium", "/usr/bin/chromium-browser")
                     if Path(c).exists()), None)  # fmt: skip
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium)
        page = browser.new_page()
        page.goto(path.as_uri())  # the browser's own start-up, not counted
        frames = []
        for _ in range(repeats):
            page.goto(path.as_uri(), wait_until="load")
            frames.append(page.evaluate(FIRST_FRAME))
        browser.close()
    return frames


def _seconds(iso: str) -> float:
    import datetime

    return datetime.datetime.fromisoformat(iso).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="experiments (synthetic, default 200)")
    parser.add_argument("--loop", action="store_true", help="also a real toy loop, page on/off")
    parser.add_argument("--loop-n", type=int, default=8, help="experiments per toy run")
    parser.add_argument("--rounds", type=int, default=2, help="toy runs of each kind")
    parser.add_argument("--paint", action="store_true", help="also Chromium's first paint")
    args = parser.parse_args()
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        times, size = cold(Path(tmp), args.n)
        print(
            f"cold write of report.html for {args.n} experiments: median "
            f"{statistics.median(times) * 1000:.0f} ms (min {min(times) * 1000:.0f}, first "
            f"{times[0] * 1000:.0f} with Optuna's import); {size / 1024:.0f} KiB"
        )
        each = growing(Path(tmp), args.n)
        tail = sorted(each)
        print(
            f"rewrite after each experiment, 1..{args.n}: mean {statistics.mean(each) * 1000:.0f} "
            f"ms, median {statistics.median(each) * 1000:.0f} ms, p95 "
            f"{tail[int(0.95 * (len(tail) - 1))] * 1000:.0f} ms, max {max(each) * 1000:.0f} ms, "
            f"last {each[-1] * 1000:.0f} ms; total {sum(each):.1f} s"
        )
        if args.paint:
            frames = paint(Path(tmp), args.n)
            shown = ", ".join(f"{f:.0f}" for f in frames)
            print(
                f"Chromium, navigation to first frame after load, {args.n} experiments: "
                f"min {min(frames):.0f} ms, median {statistics.median(frames):.0f} ms ({shown})"
            )
    if args.loop:
        found = loop(args.loop_n, args.rounds)
        for kind in ("page", "no page"):
            spans, hook = found[kind], found["hook, " + kind]
            shown = ", ".join(f"{s:.2f}" for s in spans)
            print(
                f"toy loop, {kind}: {statistics.mean(spans):.2f} s per experiment ({shown}); "
                f"in the experiment_done hook: mean {statistics.mean(hook) * 1000:.1f} ms, "
                f"max {max(hook) * 1000:.1f} ms over {len(hook)} experiments"
            )


if __name__ == "__main__":
    main()
