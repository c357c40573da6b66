"""report: experiment lines, the summary, report.md and a real progress.png."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from pytest_autoresearch.reporting.report import (
    eta_seconds,
    format_duration,
    format_line,
    summary_lines,
    write_report,
)


def rec(index: int, status: str, value: float | None, before: float, **kw) -> dict:
    out = {
        "index": index,
        "total": 200,
        "status": status,
        "objective": value,
        "best_before": before,
        "description": f"idea {index}",
        "noise": 0.0008,
        "durations": {"total": 312.0},
        "reason": "",
    }
    if status == "keep":
        out["best_after"] = value
        out["commit"] = "abcdef1234567"
    out.update(kw)
    return out


def result(**kw) -> SimpleNamespace:
    base = dict(
        objective="val_bpb",
        goal="min",
        baseline=0.9963,
        best=0.9921,
        sigma=0.0008,
        kept=1,
        done=3,
        stop_reason="reached 3 experiments",
        branch="autoresearch/t1",
        record_dir=Path(".autoresearch/t1"),
        holdout=None,
        holdout_baseline=None,
        holdout_best=None,
        cost=None,
    )
    base.update(kw)
    return SimpleNamespace(**base)


def test_the_line_from_the_issue() -> None:
    r = rec(12, "keep", 0.9921, 0.9963, description="increase LR to 0.04")
    assert format_line(r, objective="val_bpb") == (
        "[ 12/200] keep  val_bpb 0.9921 (-0.0042, noise ±0.0008) increase LR to 0.04  312s"
    )
    assert format_line(r, objective="val_bpb", eta_seconds=4000).endswith("312s  ETA 1h06m")


def test_lines_without_a_value_say_why() -> None:
    r = rec(3, "crash", None, 1.0, reason="timeout after 420s\nkilled", description="big\tmodel")
    assert format_line(r, objective="val_bpb") == (
        "[  3/200] crash val_bpb - big model [timeout after 420s killed]  312s"
    )


def test_durations_and_eta() -> None:
    assert [format_duration(s) for s in (42, 312, 1500, 7500)] == ["42s", "312s", "25m00s", "2h05m"]
    assert eta_seconds([100.0, 300.0], 10) == 2000.0
    assert eta_seconds([], 10) is None and eta_seconds([5.0], 0) is None


def test_summary_flags_a_holdout_that_got_worse() -> None:
    records = [
        rec(1, "discard", 0.997, 0.9963),
        rec(2, "keep", 0.9921, 0.9963),
        rec(3, "crash", None, 0.9921),
    ]
    lines = summary_lines(
        records, result(holdout="test_bpb", holdout_baseline=1.05, holdout_best=1.06)
    )
    assert (
        lines[0] == "val_bpb (min): baseline 0.9963 -> best 0.9921 (-0.0042, -0.42%), noise ±0.0008"
    )
    assert "experiments: 3 (1 crash, 1 discard, 1 keep); kept 1" in lines
    assert "branch: autoresearch/t1" in lines and "record: .autoresearch/t1" in lines
    assert "holdout test_bpb (min): 1.0500 -> 1.0600 (+0.0100, +0.95%)" in lines
    assert any(x.startswith("WARNING: the objective improved but the holdout") for x in lines)
    ok = summary_lines(
        records, result(holdout="test_bpb", holdout_baseline=1.05, holdout_best=1.04)
    )
    assert not any("WARNING" in x for x in ok)


@pytest.mark.slow  # the first matplotlib import builds its font cache
def test_write_report_with_a_real_plot(tmp_path: Path) -> None:
    records = [rec(i, "discard", 0.9963 + 0.001 * (i % 3), 0.9963) for i in range(1, 8)]
    records.append(rec(8, "keep", 0.9921, 0.9963, description="increase LR | to 0.04"))
    records.append(rec(9, "crash", None, 0.9921, reason="boom"))
    path = write_report(tmp_path, records, result())
    text = path.read_text()
    assert path.name == "report.md" and text.startswith("# Research report: val_bpb")
    assert "![progress](progress.png)" in text
    assert "| 8 | `abcdef1` | 0.9921 | -0.0042 | increase LR \\| to 0.04 |" in text
    assert "| 9 | crash | - |  | idea 9 | boom |" in text
    png = (tmp_path / "progress.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_without_matplotlib_the_report_says_so(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from pathlib import Path\n"
        "from types import SimpleNamespace as NS\n"
        "from pytest_autoresearch.reporting.report import write_report\n"
        "r = NS(objective='loss', goal='min', baseline=1.0, best=1.0, sigma=0.1)\n"
        "recs = [{'index': 1, 'status': 'discard', 'objective': 1.1}]\n"
        "write_report(Path(sys.argv[1]), recs, r)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
    text = (tmp_path / "report.md").read_text()
    assert (
        "_No plot: matplotlib is not installed (pip install 'pytest-autoresearch[plot]')._" in text
    )
    assert not (tmp_path / "progress.png").exists()


def test_reports_never_show_a_key(tmp_path: Path) -> None:
    key = "sk-ant-api03-" + "Z" * 40
    r = rec(1, "discard", 1.0, 1.0, description=f"leaked {key}")
    assert key not in format_line(r, objective="val_bpb")
    write_report(tmp_path, [r], result())
    assert key not in (tmp_path / "report.md").read_text()


# -- what was learned -------------------------------------------------------------------


def tuned(index: int, status: str, value: float | None, before: float, params: dict, desc: str):
    out = rec(index, status, value, before, params=params, description=desc, proposer="optuna")
    out["improvement"] = None if value is None else before - value
    return out


SHORT_RUN = [
    tuned(1, "discard", 1.02, 1.00, {"LR": 0.08, "DEPTH": 4}, "LR 0.04 -> 0.08"),
    tuned(2, "keep", 0.97, 1.00, {"LR": 0.04, "DEPTH": 6}, "DEPTH 4 -> 6"),
    tuned(3, "discard", 1.10, 0.97, {"LR": 0.01, "DEPTH": 6}, "LR 0.04 -> 0.01"),
    tuned(4, "crash", None, 0.97, {"LR": 0.04, "DEPTH": 12}, "DEPTH 6 -> 12"),
]


def test_a_short_tuned_run_shows_each_parameter_without_importances() -> None:
    lines = summary_lines(SHORT_RUN, result(baseline=1.0, best=0.97, sigma=0.01))
    start = lines.index(
        "learned per parameter (start -> best, objective change when moved: best .. worst):"
    )
    # Most moving first; the change is the objective minus the best at the time, here
    # always from experiments that moved the parameter alone. The crash has no value.
    assert lines[start + 1 :] == [
        "  LR     0.04 (unchanged)  moved 2x, 2 alone: +0.020 .. +0.130",
        "  DEPTH  4 -> 6            moved 1x, 1 alone: -0.030 .. -0.030",
    ]
    assert not any(line.startswith("ideas") for line in lines)


def test_the_hybrids_tuned_experiments_name_only_the_numbers_they_moved() -> None:
    """Its descriptions carry a prefix and the idea in brackets; neither is a change."""
    run = [
        tuned(1, "keep", 0.97, 1.00, {"LR": 0.04, "POWER": 0.63, "DEPTH": 4},
              "#3 on the best, tuned: POWER 2.0 -> 0.63 (polynomial warmdown, POWER 2.0)"),
        tuned(2, "discard", 0.99, 0.97, {"LR": 0.04, "POWER": 0.4, "DEPTH": 4},
              "#3 tuned on: POWER 0.63 -> 0.4"),
    ]  # fmt: skip
    lines = summary_lines(run, result(baseline=1.0, best=0.97, sigma=0.01))
    start = next(i for i, x in enumerate(lines) if x.startswith("learned per parameter"))
    rows = lines[start + 1 :]
    assert " ".join(rows[0].split()) == "POWER 2 -> 0.63 moved 2x, 2 alone: -0.030 .. +0.020"
    assert [r.split()[0] for r in rows[1:]] == ["LR", "DEPTH"], rows
    unmoved = ["(unchanged)", "never", "moved", "with", "a", "value"]
    assert all(r.split()[2:] == unmoved for r in rows[1:]), rows


def test_a_change_rebased_onto_a_newer_best_keeps_the_numbers_it_landed_on() -> None:
    """Two workers: #2 was proposed on the baseline, #1 was kept while it ran, and #2 was
    re-based onto #1 and kept there (journaled after it). Its params still say the
    baseline's LR; the best configuration has #1's LR and #2's DEPTH."""
    run = [
        tuned(1, "keep", 0.97, 1.00, {"LR": 0.08, "DEPTH": 4}, "LR 0.04 -> 0.08"),
        tuned(2, "keep", 0.95, 0.97, {"LR": 0.04, "DEPTH": 6}, "DEPTH 4 -> 6"),
    ]
    run[1]["rebased"] = 1
    lines = summary_lines(run, result(baseline=1.0, best=0.95, sigma=0.01))
    start = next(i for i, x in enumerate(lines) if x.startswith("learned per parameter"))
    rows = {r.split()[0]: " ".join(r.split()[1:4]) for r in lines[start + 1 :]}
    assert rows == {"LR": "0.04 -> 0.08", "DEPTH": "4 -> 6"}, lines[start:]


def toy_tuning_records(n: int) -> list[dict]:
    """A tuned run where the objective depends strongly on LR and not at all on WD."""
    import random

    rng = random.Random(0)
    best, config, records = 1.0, {"LR": 0.04, "WD": 0.1, "DEPTH": 4}, []
    for index in range(1, n + 1):
        params = dict(config)
        for name in rng.sample(sorted(config), rng.randint(1, 2)):
            params[name] = (
                rng.randint(2, 8) if name == "DEPTH" else round(rng.uniform(0.01, 0.2), 4)
            )
        value = 0.9 + 100 * (params["LR"] - 0.06) ** 2 + 0.001 * params["DEPTH"]
        desc = ", ".join(
            f"{k} {config[k]} -> {params[k]}" for k in params if params[k] != config[k]
        )
        status = "keep" if value < best - 0.005 else "discard"
        records.append(tuned(index, status, value, best, params, desc or "LR 0.04 -> 0.04"))
        if status == "keep":
            best, config = value, params
    return records


def test_enough_trials_bring_optunas_importances_to_the_summary_and_report(tmp_path) -> None:
    records = toy_tuning_records(40)
    lines = summary_lines(records, result(baseline=1.0, best=min(r["objective"] for r in records)))
    head = lines.index(
        "learned per parameter (start -> best, importance over 40 trials, "
        "objective change when moved: best .. worst):"
    )
    first = lines[head + 1]
    assert first.startswith("  LR     0.04 -> 0.0592")  # the knob that matters comes first
    share = int(first.split()[4].rstrip("%"))
    assert share >= 50
    # WD never changes the objective: moved alone, it changed nothing.
    assert lines[head + 3].startswith("  WD ") and lines[head + 3].endswith(
        "alone: +0.0000 .. +0.0000"
    )
    write_report(tmp_path, records, result())
    text = (tmp_path / "report.md").read_text()
    assert "## What was learned" in text and "### Parameters" in text
    assert "| `LR` | 0.04 -> 0.0592 | " in text
    assert text.count("\n| `") >= 3 and "- learned" not in text  # a table, not summary bullets
    assert "over the 40 experiments with a value" in text
    # Deterministic: the terminal and report.md agree, run after run.
    assert summary_lines(records, result()) == summary_lines(records, result())


LLM_RUN = [
    rec(
        1,
        "discard",
        1.01,
        1.0,
        description="Increase the learning rate to 0.05",
        diff="--- a/train.py\n+++ b/train.py\n@@\n-LR\n+LR\n",
    ),
    rec(
        2,
        "keep",
        0.98,
        1.0,
        description="increase learning rate warmup",
        diff="--- a/train.py\n+++ b/train.py\n",
        improvement=0.02,
    ),
    rec(
        3,
        "crash",
        None,
        0.98,
        description="Swap ReLU for GELU in the MLP",
        diff="--- a/model.py\n+++ b/model.py\n",
        reason="NaN",
    ),
    rec(
        4,
        "discard",
        0.99,
        0.98,
        description="swap relu for squared relu",
        diff="--- a/model.py\n+++ b/model.py\n",
        improvement=-0.01,
    ),
    rec(5, "error", None, 0.98, description="", reason="API overloaded"),
]


def test_llm_runs_group_experiments_by_idea(tmp_path) -> None:
    lines = summary_lines(LLM_RUN, result(baseline=1.0, best=0.98, sigma=0.005))
    assert (
        "ideas (by first words): 'increase learning' 2 tried/1 kept, "
        "'swap relu' 2 tried/0 kept" in lines
    )
    assert not any(line.startswith("parameters") for line in lines)
    write_report(tmp_path, LLM_RUN, result(baseline=1.0, best=0.98, sigma=0.005))
    text = (tmp_path / "report.md").read_text()
    assert "| increase learning | 2 (#1, #2) | 1 | 0 | +0.020 | `train.py` |" in text
    assert "| swap relu | 2 (#3, #4) | 0 | 1 | -0.010 | `model.py` |" in text


def test_few_records_never_import_optuna() -> None:
    code = (
        "import sys\n"
        "from types import SimpleNamespace as NS\n"
        "from pytest_autoresearch.reporting.report import summary_lines\n"
        "recs = [{'index': i, 'status': 'discard', 'objective': 1.0 + i, 'best_before': 1.0,\n"
        "         'params': {'A': i, 'B': 2 * i}, 'description': f'A {i-1} -> {i}'}\n"
        "        for i in range(1, 10)]\n"
        "lines = summary_lines(recs, NS(objective='x', goal='min', baseline=1.0, best=1.0))\n"
        "assert any(l.startswith('learned per parameter') for l in lines), lines\n"
        "assert 'optuna' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_parameter_only_ever_moved_with_others_is_not_credited_alone(tmp_path) -> None:
    records = [
        tuned(1, "discard", 1.50, 1.0, {"A": 2, "B": 2}, "A 1 -> 2, B 1 -> 2"),
        tuned(2, "discard", 1.45, 1.0, {"A": 3, "B": 1}, "A 1 -> 3"),
    ]
    lines = summary_lines(records, result(baseline=1.0, best=1.0, sigma=0.01))
    assert "  A  1 (unchanged)  moved 2x, 1 alone: +0.450 .. +0.450" in lines
    assert "  B  1 (unchanged)  moved 1x, always with others: +0.500 .. +0.500" in lines
    write_report(tmp_path, records, result(baseline=1.0, best=1.0, sigma=0.01))
    text = (tmp_path / "report.md").read_text()
    assert "| `B` | 1 (unchanged) | - | 1 | 0 | - | +0.500 .. +0.500 |" in text
