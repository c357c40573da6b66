"""report: experiment lines, the summary, report.md and a real progress.png."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from pytest_autoresearch.report import (
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
        "from pytest_autoresearch.report import write_report\n"
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
