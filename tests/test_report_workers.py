"""report: the workers of a parallel run (utilisation, experiments per hour, re-based, stale)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from pytest_autoresearch.reporting.report import (
    WorkerStat,
    format_line,
    summary_lines,
    throughput,
    wall_seconds,
    worker_lines,
    worker_stats,
    write_report,
)
from pytest_autoresearch.research.journal import Journal


def at(seconds: int, hour: int = 10) -> str:
    """An ISO UTC time as the journal writes it (seconds precision)."""
    return f"2025-01-01T{hour:02d}:{seconds // 60:02d}:{seconds % 60:02d}+00:00"


def ev(worker: str, start: int, duration: float, kind: str = "candidate", **kw) -> dict:
    out = {
        "status": "ok",
        "duration": duration,
        "confirm": kind in ("confirm", "remeasure"),
        "worker": worker,
        "host": {"w0": "alpha", "w1": "beta"}.get(worker, "gamma"),
        "started": at(start),
        "kind": kind,
    }
    out.update(kw)
    return out


def rec(index: int, status: str, worker: str, start: int, end: int, evals: list, **kw) -> dict:
    out = {
        "index": index,
        "total": 3,
        "status": status,
        "objective": 1.0 - 0.01 * index,
        "best_before": 1.0,
        "noise": 0.001,
        "description": f"idea {index}",
        "reason": "",
        "commit": f"{index:07d}",
        "metrics": {},
        "worker": worker,
        "host": {"w0": "alpha", "w1": "beta"}.get(worker, "gamma"),
        "started": at(start),
        "finished": at(end),
        "evaluations": evals,
        "durations": {"total": float(end - start)},
    }
    out.update(kw)
    return out


# Two workers over one minute (10:00:00 -> 10:01:00), worked out by hand:
#   w0: #1's candidate (20 s) and #2's confirmation (10 s)        = 30 s of 60 -> 50%
#   w1: #2's candidate (20 s), #3's candidate (20 s) and re-base (5 s) = 45 s -> 75%
#   3 experiments in 60 s -> 180 an hour
RUN = [
    rec(1, "discard", "w0", 0, 30, [ev("w0", 5, 20.0)]),
    rec(2, "keep", "w1", 1, 40, [ev("w1", 6, 20.0), ev("w0", 26, 10.0, "confirm")]),
    rec(
        3,
        "stale",
        "w1",
        31,
        60,
        [ev("w1", 32, 20.0), ev("w1", 53, 5.0, "rebase")],
        rebased=1,
        reason="re-based once; the diff no longer applies on the new best",
    ),
]


def result(**kw) -> SimpleNamespace:
    base = dict(objective="loss", goal="min", baseline=1.0, best=0.98, sigma=0.001, kept=1)
    base.update(kw)
    return SimpleNamespace(**base)


def test_utilisation_and_throughput_worked_out_by_hand() -> None:
    assert wall_seconds(RUN) == 60.0
    assert throughput(RUN) == pytest.approx(180.0)
    assert worker_stats(RUN) == [
        WorkerStat("w0", "alpha", experiments=1, evaluations=2, busy_seconds=30.0, utilisation=0.5),
        WorkerStat("w1", "beta", experiments=2, evaluations=3, busy_seconds=45.0, utilisation=0.75),
    ]


def test_the_gap_between_two_sessions_is_not_idle_time() -> None:
    # Resumed two hours later: one more experiment, 30 s, on w0.
    later = rec(4, "discard", "w0", 0, 30, [ev("w0", 0, 30.0)])
    later["started"], later["finished"] = at(0, hour=12), at(30, hour=12)
    later["evaluations"][0]["started"] = at(0, hour=12)
    records = [*RUN, later]
    assert wall_seconds(records) == 90.0
    assert throughput(records) == pytest.approx(160.0)  # 4 in 90 s
    w0 = worker_stats(records)[0]
    assert (w0.worker, w0.busy_seconds, w0.experiments) == ("w0", 60.0, 2)
    assert w0.utilisation == pytest.approx(60 / 90)


def test_records_from_before_workers_have_no_worker_view_but_a_throughput() -> None:
    old = [
        {
            "index": i,
            "status": "discard",
            "started": f"2025-01-01T10:{5 * (i - 1):02d}:00Z",  # a "Z" reads on Python 3.10 too
            "finished": f"2025-01-01T10:{5 * i:02d}:00Z",
            "evaluations": [{"status": "ok", "duration": 250.0, "confirm": False}],
        }
        for i in (1, 2)
    ]
    assert worker_stats(old) == []
    assert wall_seconds(old) == 600.0
    assert throughput(old) == pytest.approx(12.0)
    assert worker_lines(old) == ["throughput: 12.0 experiments/hour (2 in 10m00s)"]
    bare = [{"index": 1, "status": "crash", "evaluations": []}]  # no times at all
    assert (wall_seconds(bare), throughput(bare), worker_stats(bare), worker_lines(bare)) == (
        None,
        None,
        [],
        [],
    )


def test_evaluations_without_a_start_time_still_count_as_busy() -> None:
    records = [dict(r, evaluations=[dict(e, started=None) for e in r["evaluations"]]) for r in RUN]
    assert wall_seconds(records) == 60.0  # from the records' own start and finish
    assert [(s.worker, s.busy_seconds, s.utilisation) for s in worker_stats(records)] == [
        ("w0", 30.0, 0.5),
        ("w1", 45.0, 0.75),
    ]


def test_a_pool_worker_that_ran_nothing_is_listed_idle() -> None:
    stats = worker_stats(RUN, workers=4)
    assert [(s.worker, s.evaluations, s.utilisation) for s in stats] == [
        ("w0", 2, 0.5),
        ("w1", 3, 0.75),
        ("w2", 0, 0.0),
        ("w3", 0, 0.0),
    ]
    # Names that do not say the pool's other names: nothing is made up.
    serial = [dict(r, worker="serial", evaluations=[]) for r in RUN]
    assert [s.worker for s in worker_stats(serial, workers=3)] == ["serial"]


def test_workers_sort_by_number_and_a_moved_ray_worker_shows_both_hosts() -> None:
    records = [
        rec(i, "discard", f"r{n}", 0, 30, [ev(f"r{n}", 0, 30.0)]) for i, n in enumerate((10, 2), 1)
    ]
    records.append(rec(3, "discard", "r2", 30, 60, [ev("r2", 30, 30.0, host="delta")]))
    stats = worker_stats(records)
    assert [(s.worker, s.host, s.utilisation) for s in stats] == [
        ("r2", "gamma, delta", 1.0),
        ("r10", "gamma", 0.5),
    ]


def test_the_terminal_summary_shows_workers_throughput_and_stale() -> None:
    lines = summary_lines(RUN, result())
    assert "experiments: 3 (1 discard, 1 keep, 1 stale); kept 1" in lines
    i = lines.index("throughput: 180.0 experiments/hour (3 in 60s)")
    assert lines[i + 1 : i + 3] == [
        "workers: w0 50% (2 evals), w1 75% (3 evals)",
        "re-based onto a newer best: 1 experiment (1 time); stale: 1",
    ]
    # The pool's size comes from the result when the loop puts it there.
    assert "workers: w0 50% (2 evals), w1 75% (3 evals), w2 0% (0 evals)" in summary_lines(
        RUN, result(workers=3)
    )


def test_a_large_pool_gets_one_line() -> None:
    records = [
        rec(i + 1, "discard", f"w{i}", 0, 60, [ev(f"w{i}", 0, 6.0 * (i + 1))]) for i in range(10)
    ]
    assert worker_lines(records)[1] == (
        "workers: 10, 10 evals, utilisation 55% on average (lowest w0 10%, highest w9 100%)"
    )


def test_format_line_names_the_worker_only_when_there_is_one() -> None:
    plain = {k: v for k, v in RUN[1].items() if k not in ("worker", "host")}
    assert format_line(plain, objective="loss") == (
        "[2/3] keep  loss 0.9800 (-0.0200, noise ±0.0010) idea 2  39s"
    )
    assert format_line(RUN[1], objective="loss") == (
        "[2/3] [w1] keep  loss 0.9800 (-0.0200, noise ±0.0010) idea 2  39s"
    )
    assert format_line(dict(RUN[1], worker=""), objective="loss") == format_line(
        plain, objective="loss"
    )
    # A stale candidate says why, like a crash does.
    assert format_line(RUN[2], objective="loss").endswith(
        "idea 3 [re-based once; the diff no longer applies on the new best]  29s"
    )


def test_report_has_a_workers_section_only_for_runs_with_workers(tmp_path: Path) -> None:
    text = write_report(tmp_path / "par", RUN, result()).read_text()
    assert (
        "\n".join(
            [
                "## Workers",
                "",
                "| worker | host | experiments | evaluations | busy | utilisation |",
                "|---|---|---|---|---|---|",
                "| w0 | alpha | 1 | 2 | 30s | 50% |",
                "| w1 | beta | 2 | 3 | 45s | 75% |",
                "",
                "- 180.0 experiments per hour: 3 in 60s with experiments in flight "
                "(gaps between sessions left out)",
                "- the 2 workers spent 62% of it measuring",
                "- evaluations: 3 candidate, 1 confirm, 1 rebase",
                "- re-based onto a newer best: 1 experiment (1 time); stale: 1",
            ]
        )
        in text
    )
    assert "| # | status | worker | value | change | description | reason |" in text
    assert "| 3 | stale | w1 | 0.9700 | -0.0300 | idea 3 | re-based once;" in text

    old = [{k: v for k, v in r.items() if k not in ("worker", "host")} for r in RUN]
    for r in old:
        r["evaluations"] = [{"status": "ok", "duration": e["duration"]} for e in r["evaluations"]]
    text = write_report(tmp_path / "serial", old, result()).read_text()
    assert "## Workers" not in text and "| w" not in text
    assert "| # | status | value | change | description | reason |" in text
    assert "| 3 | stale | 0.9700 | -0.0300 | idea 3 | re-based once;" in text


def test_the_worker_fields_survive_the_journal(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "loss")
    journal.write("session", workers=2, executor="worktree")
    for r in RUN:
        journal.record(dict(r))
    records = journal.load().records
    assert worker_stats(records, workers=2) == worker_stats(RUN)
    assert throughput(records) == pytest.approx(180.0)
