"""``pytest --autoresearch-status``: where the run stands, for an agent's next try.

Read from the journal (``Journal.load()``, the same reading a resumed run makes, so the
best and the noise are the loop's own), without collecting or running anything and
without writing into the record: the journal is read from a copy, so a status taken
while a try is writing never repairs a line that is still being written.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

LAST = 10  # experiments shown
NOTES_LIMIT = 4000  # characters of NOTES.md shown (its end: the newest notes)


def show_status(config: pytest.Config) -> int:
    """Print the status of the tag's record; 0, or 3 when there is no record yet."""
    from pytest_autoresearch.research.agent_try import current_tag

    root = Path(config.rootpath)
    try:
        tag = current_tag(config, root, fallback=_latest_tag(root))
    except pytest.UsageError as exc:
        print(f"autoresearch-status: usage {exc}", flush=True)
        return 3
    status = read_status(root / ".autoresearch" / tag, tag)
    lines = status_lines(status)
    if config.getoption("autoresearch_json", False):
        lines.append(json.dumps(status, default=str))
    print("\n".join(lines), flush=True)
    return 0 if status["found"] else 3


def _latest_tag(root: Path) -> str | None:
    """The record written last, when neither a tag nor a research branch says which."""
    found = sorted(
        (p.stat().st_mtime, p.parent.name)
        for p in (root / ".autoresearch").glob("*/experiments.jsonl")
    )
    return found[-1][1] if found else None


def read_status(record_dir: Path, tag: str) -> dict[str, Any]:
    """The run of ``record_dir`` as one JSON-able dict (``found`` False when there is none)."""
    from pytest_autoresearch.research.journal import Journal
    from pytest_autoresearch.research.standing import Standing

    out: dict[str, Any] = {"found": False, "tag": tag, "record": str(record_dir)}
    jsonl = record_dir / "experiments.jsonl"
    if not jsonl.is_file():
        return out
    with tempfile.TemporaryDirectory(prefix="autoresearch-status-") as tmp:
        for name in ("experiments.jsonl", "results.tsv"):
            if (record_dir / name).is_file():
                shutil.copyfile(record_dir / name, Path(tmp) / name)
        objective = _objective(jsonl)
        state = Journal(Path(tmp), objective or "objective").load()
    if state.baseline is None:
        out.update(found=True, objective=objective, note="the baseline is not measured yet")
        return out
    st = Standing()
    st.resume(state.baseline)
    for rec in state.records:
        st.learn(rec)
    out.update(
        found=True,
        objective=objective,
        goal=st.goal,
        baseline=st.baseline,
        best=st.best,
        best_commit=state.best_commit,
        noise=st.sigma,
        done=st.done,
        kept=st.kept,
        cut_short=list(state.pending) + [r["index"] for r in state.decided],
        last=[_brief(r) for r in state.records[-LAST:]],
        notes=_notes(record_dir),
    )
    return out


def _objective(jsonl: Path) -> str | None:
    with open(jsonl, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if isinstance(ev, dict) and ev.get("event") == "baseline":
                return ev.get("objective")
    return None


def _brief(rec: dict[str, Any]) -> dict[str, Any]:
    value, before = rec.get("objective"), rec.get("best_before")
    return {
        "index": rec.get("index"),
        "status": rec.get("status"),
        "value": value,
        "delta": value - before if value is not None and before is not None else None,
        "description": rec.get("description", ""),
        "reason": rec.get("reason", ""),
        "proposer": rec.get("proposer", ""),
    }


def _notes(record_dir: Path) -> str | None:
    """The lab notebook an LLM proposer keeps (NOTES.md), its newest part."""
    path = record_dir / "NOTES.md"
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return text if len(text) <= NOTES_LIMIT else "...\n" + text[-NOTES_LIMIT:]


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.6g}"


def status_lines(s: dict[str, Any]) -> list[str]:
    """The status as terminal lines (the first starts with ``autoresearch-status:``)."""
    head = (
        f"autoresearch-status: tag {s['tag']}, branch autoresearch/{s['tag']}, record {s['record']}"
    )
    if not s["found"]:
        return [head, "no record yet: the first pytest --autoresearch-try measures the baseline"]
    if "best" not in s:
        return [head, s.get("note", "")]
    lines = [
        head,
        f"objective {s['objective']} (goal {s['goal']}): baseline {_num(s['baseline'])}, "
        f"best {_num(s['best'])} at {str(s['best_commit'] or '')[:12]}, noise ±{s['noise']:.3g}",
        f"experiments: {s['done']} done, {s['kept']} kept"
        + (f"; cut short, finished by the next try: {s['cut_short']}" if s["cut_short"] else ""),
    ]
    if s["last"]:
        lines.append(f"last {len(s['last'])}:")
    for r in s["last"]:
        delta = "-" if r["delta"] is None else f"{r['delta']:+.3g}"
        lines.append(
            f"  #{r['index']} {r['status']:<8} {_num(r['value'])} ({delta}) "
            f"{r['description']} -- {r['reason']}"
        )
    if s["notes"]:
        lines += ["--- NOTES.md ---", *s["notes"].splitlines()]
    return lines
