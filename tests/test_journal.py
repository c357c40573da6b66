"""journal: the record on disk, including a real kill -9 in the middle of writing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_autoresearch.research.journal import Journal, JournalError, scrub

KEY = "sk-ant-api03-" + "A1b2C3d4" * 6


def rec(index: int, status: str = "discard", **extra) -> dict:
    out = {
        "index": index,
        "total": 10,
        "commit": f"{index:07d}abcdef",
        "parent": "p" * 40,
        "status": status,
        "description": f"idea {index}",
        "objective": 1.0 - index / 100,
        "best_before": 1.0,
        "best_after": 1.0,
        "metrics": {"val_bpb": 1.0 - index / 100, "mem_gb": 3.25, "test_bpb": 1.1},
        "samples": {"val_bpb": [1.0 - index / 100]},
        "cost": {"usd": 0.5, "input_tokens": 10},
    }
    out.update(extra)
    return out


def tsv(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()]


def test_record_writes_karpathy_columns_and_the_full_json(tmp_path: Path) -> None:
    j = Journal(tmp_path / "t1", "val_bpb", ["val_bpb", "mem_gb", "test_bpb"])
    j.write("session", tag="t1")
    j.record(rec(1, "keep", best_after=0.99))
    j.record(rec(2, "crash", objective=None, commit="", metrics={}))
    rows = tsv(j.tsv_path)
    assert rows[0] == ["commit", "val_bpb", "status", "description", "mem_gb", "test_bpb"]
    assert rows[1] == ["0000001", "0.990000", "keep", "idea 1", "3.25", "1.1"]
    assert rows[2] == ["", "0.000000", "crash", "idea 2", "", ""]
    lines = [json.loads(x) for x in j.jsonl_path.read_text().splitlines()]
    assert [x["event"] for x in lines] == ["session", "experiment", "experiment"]
    assert lines[1]["parent"] == "p" * 40 and lines[1]["cost"]["usd"] == 0.5


def test_other_metric_columns_default_to_the_first_record(tmp_path: Path) -> None:
    j = Journal(tmp_path, "val_bpb")
    j.record(rec(1))
    assert tsv(j.tsv_path)[0][4:] == ["mem_gb", "test_bpb"]


def test_descriptions_are_sanitised_and_secrets_never_written(tmp_path: Path) -> None:
    j = Journal(tmp_path, "val_bpb")
    j.record(rec(1, description=f"try\tthis\nand that with {KEY}", diff=f"+KEY = '{KEY}'"))
    j.write("note", text=f"ANTHROPIC_API_KEY={KEY}", nested={"k": [KEY]})
    assert tsv(j.tsv_path)[1][3] == "try this and that with [REDACTED]"
    everything = j.jsonl_path.read_text() + j.tsv_path.read_text()
    assert KEY not in everything and "sk-ant-" not in everything
    assert everything.count("[REDACTED]") == 5


def test_scrub_catches_keys_tokens_and_secret_env_values(monkeypatch: pytest.MonkeyPatch) -> None:
    assert scrub(f"key {KEY} end") == "key [REDACTED] end"
    assert scrub("sk-proj-" + "x" * 40) == "[REDACTED]"
    assert scrub("Authorization: Bearer abcdefghijklmnopqrstuvwxyz") == (
        "Authorization: [REDACTED]"
    )
    assert scrub("OPENAI_API_KEY=plainvalue123 next") == "OPENAI_API_KEY=[REDACTED] next"
    assert scrub("ghp_" + "a" * 36) == "[REDACTED]"
    monkeypatch.setenv("MY_SERVICE_TOKEN", "no-pattern-would-catch-this")
    assert scrub("got no-pattern-would-catch-this back") == "got [REDACTED] back"
    # Ordinary text is left alone.
    for text in ("max_tokens=8192", "MAX_TOKENS=8192", "task-list sk-short", "val_bpb 0.99"):
        assert scrub(text) == text


def test_load_rebuilds_the_state_for_a_resume(tmp_path: Path) -> None:
    j = Journal(tmp_path, "val_bpb")
    j.write("session", tag="t1")
    j.write(
        "baseline",
        commit="b" * 40,
        objective="val_bpb",
        goal="min",
        samples=[1.0, 1.02, 0.98],
        sigma=0.02,
        value=1.0,
        metrics={},
    )
    j.write("start", index=1)
    j.record(rec(1, "keep", best_after=0.95, samples={"val_bpb": [0.94, 0.95, 0.95]}))
    j.write("start", index=2)
    j.record(rec(2))
    j.write("session", tag="t1")
    j.write("start", index=3)
    state = Journal(tmp_path, "val_bpb").load()
    assert [r["index"] for r in state.records] == [1, 2]
    assert (state.best, state.best_commit) == (0.95, "0000001abcdef")
    assert (state.unfinished, state.next_index, state.sessions) == (3, 3, 2)
    assert state.cost == {"usd": 1.0, "input_tokens": 20}
    assert state.baseline["sigma"] == 0.02


def test_an_empty_folder_loads_as_a_fresh_start(tmp_path: Path) -> None:
    state = Journal(tmp_path / "new", "val_bpb").load()
    assert (state.records, state.baseline, state.unfinished, state.next_index) == (
        [],
        None,
        None,
        1,
    )


def test_a_torn_last_line_is_ignored_and_cut_before_the_next_write(tmp_path: Path) -> None:
    j = Journal(tmp_path, "val_bpb")
    j.record(rec(1))
    with open(j.jsonl_path, "a") as f:
        f.write('{"event": "experiment", "index": 2, "status": "ke')  # kill -9 mid-write
    j2 = Journal(tmp_path, "val_bpb")
    assert [r["index"] for r in j2.load().records] == [1]
    j2.record(rec(2))
    lines = j.jsonl_path.read_text().splitlines()
    assert [json.loads(x)["index"] for x in lines] == [1, 2]
    assert len(tsv(j.tsv_path)) == 3


def test_a_kill_between_the_json_line_and_the_tsv_row_loses_nothing(tmp_path: Path) -> None:
    j = Journal(tmp_path, "val_bpb")
    j.record(rec(1))
    j.record(rec(2))
    lines = j.tsv_path.read_text().splitlines(keepends=True)
    j.tsv_path.write_text("".join(lines[:-1]) + lines[-1][:5])  # row 2 torn
    state = Journal(tmp_path, "val_bpb").load()
    assert len(state.records) == 2
    assert [r[0] for r in tsv(j.tsv_path)[1:]] == ["0000001", "0000002"]


def test_a_duplicate_index_is_refused(tmp_path: Path) -> None:
    j = Journal(tmp_path, "val_bpb")
    j.record(rec(1))
    with pytest.raises(ValueError, match="experiment 1 is already recorded"):
        Journal(tmp_path, "val_bpb").record(rec(1))
    with pytest.raises(ValueError, match="status must be one of"):
        j.record(rec(2, "maybe"))


def test_resuming_with_another_objective_fails_clearly(tmp_path: Path) -> None:
    Journal(tmp_path, "val_bpb").record(rec(1))
    with pytest.raises(JournalError) as exc:
        Journal(tmp_path, "test_bpb").load()
    msg = str(exc.value)
    assert "written for objective 'val_bpb'" in msg and "now has objective 'test_bpb'" in msg
    assert "--autoresearch-tag" in msg
    with pytest.raises(JournalError, match="with metrics"):
        Journal(tmp_path, "val_bpb", ["val_bpb", "peak_vram_gb"]).load()


WRITER = """
import sys
from pathlib import Path
from pytest_autoresearch.research.journal import Journal
j = Journal(Path(sys.argv[1]), "val_bpb", ["mem_gb"])
i = 0
while True:
    i += 1
    j.write("start", index=i, note="x" * 2000)
    j.record({"index": i, "status": "discard", "commit": "c" * 40, "description": "d" * 3000,
              "objective": 1.0, "metrics": {"val_bpb": 1.0, "mem_gb": 2.0}, "diff": "+" * 20000})
    if i == 20:
        print("ready", flush=True)
"""


@pytest.mark.slow
def test_survives_a_real_kill_9_and_resumes_without_loss_or_duplicates(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    j = Journal(tmp_path, "val_bpb", ["mem_gb"])
    state = j.load()
    n = len(state.records)
    assert n >= 20
    assert [r["index"] for r in state.records] == list(range(1, n + 1))
    assert len(tsv(j.tsv_path)) == n + 1  # header + one row per record, no more, no less
    j.record({**state.records[-1], "index": state.next_index})
    for line in j.jsonl_path.read_text().splitlines():
        json.loads(line)  # every line whole: the torn tail was cut, nothing glued on
    assert len(tsv(j.tsv_path)) == n + 2
