"""Synthetic research records for the report page's tests and benchmark.

``synthetic_record(directory, n)`` writes an experiments.jsonl shaped like the loop's (a
session, a baseline, then start/decided/experiment lines), with diffs, log tails, params,
two workers and a holdout metric, so a page of ``n`` experiments can be built without
running anything.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

DIFF = """diff --git a/train.py b/train.py
index 3540988..a7c2258 100644
--- a/train.py
+++ b/train.py
@@ -10,7 +10,7 @@ def model():
 # ---------------------------------------------------------------------------
 # hyperparameters: edit these directly
-LR = {old}  # search: 1e-4..1e-1 log
+LR = {new}  # search: 1e-4..1e-1 log
 WARMUP = 100
 BATCH = 32
 DEPTH = 8
"""


def _at(i: int, extra: int = 0) -> str:
    minute, second = divmod(i * 40 + extra, 60)
    hour, minute = divmod(minute, 60)
    return f"2026-11-23T{8 + hour:02d}:{minute:02d}:{second:02d}+00:00"


def experiment(i: int, total: int, best: float, rng: random.Random, ended: bool = True) -> dict:
    """One experiment record; ``best`` is the best value before it."""
    value = best + rng.gauss(0.0015, 0.004)
    kind = rng.random()
    status = "keep" if value < best - 0.004 else "discard"
    if kind < 0.06:
        status, value = "crash", None
    old, new = f"{0.01 + i * 1e-5:.5f}", f"{0.01 + (i + 1) * 1e-5:.5f}"
    rec = {
        "index": i,
        "total": total,
        "commit": f"{i:07x}" + "a" * 33,
        "parent": "b" * 40,
        "status": status,
        "description": f"LR {old} -> {new}, WARMUP 100 -> {100 + i % 7}",
        "objective": value,
        "best_before": best,
        "best_after": value if status == "keep" else best,
        "improvement": None if value is None else best - value,
        "noise": 0.0021,
        "decision": "keep: improved beyond the noise floor"
        if status == "keep"
        else "discard: within noise",
        "reason": "crashed: ZeroDivisionError" if status == "crash" else "",
        "metrics": {} if value is None else {"val_bpb": value, "test_bpb": value + 0.02},
        "samples": {} if value is None else {"val_bpb": [value, value + 0.0005]},
        "guards": {"passed": status != "crash", "failed": []},
        "proposer": "optuna",
        "params": {"LR": float(new), "WARMUP": 100 + i % 7},
        "diff": DIFF.format(old=old, new=new),
        "lines_added": 1,
        "lines_removed": 1,
        "durations": {"propose": 0.1, "evaluate": 38.0, "total": 39.5},
        "cost": {"usd": 0.0},
        "attempts": [],
        "worker": f"w{i % 2}",
        "host": "node1",
        "evaluations": [
            {
                "kind": "candidate",
                "worker": f"w{i % 2}",
                "status": "ok",
                "duration": 38.0,
                "started": _at(i),
            }
        ],
        "log_tail": "Traceback (most recent call last):\n  ...\nZeroDivisionError: <boom> & co"
        if status == "crash"
        else None,
        "started": _at(i),
        "finished": _at(i, 39),
    }
    return rec


def synthetic_record(
    directory: Path, n: int, *, total: int | None = None, ended: bool = True, seed: int = 1
) -> Path:
    """Write ``directory/experiments.jsonl`` with ``n`` experiments; return the directory."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    total = total or n
    lines = [
        {
            "event": "session",
            "tag": directory.name,
            "proposer": "optuna",
            "experiments": total,
            "workers": 2,
            "executor": "worktree",
            "at": _at(0),
        },
        {
            "event": "baseline",
            "commit": "b" * 40,
            "objective": "val_bpb",
            "goal": "min",
            "goals": {"val_bpb": "min", "test_bpb": "min"},
            "samples": [1.0, 1.001],
            "sigma": 0.002,
            "value": 1.0,
            "metrics": {"val_bpb": 1.0, "test_bpb": 1.02},
            "at": _at(0),
        },
    ]
    best = 1.0
    for i in range(1, n + 1):
        rec = experiment(i, total, best, rng)
        lines.append({"event": "start", "index": i, "parent": rec["parent"], "at": rec["started"]})
        lines.append({"event": "decided", "index": i, "record": rec})
        lines.append({"event": "experiment", **rec})
        best = rec["best_after"]
    if ended:
        lines.append(
            {"event": "end", "reason": f"reached {total} experiments", "done": n, "at": _at(n, 40)}
        )
    with open(directory / "experiments.jsonl", "w", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")
    return directory
