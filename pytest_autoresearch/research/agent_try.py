"""``pytest --autoresearch-try "description"``: an outside agent's change, judged by the loop.

An agent (Claude Code, Codex, a shell script) edits the checkout and asks for a verdict.
The change is one more experiment of the research run of its tag, through the one
``ResearchLoop`` with the working-tree proposer (proposers/working_tree.py): the same
scope check, isolated evaluation, noise-aware keep rule against the run's best,
write-ahead journal, resume, lock and report as ``pytest --autoresearch -n N``.

Two steps, because the judge must not run the agent's code itself:

1. ``prepare`` (``pytest_load_initial_conftests``, before any conftest or test module
   is imported): under the checkout's lock, the change is saved in the record
   (``.autoresearch/<tag>/agent/carry.json``, fsynced) and taken out of the tree, so the
   tests are collected, and the branch started, on the best commit.
2. ``run_try`` (``pytest_runtestloop``): the session's own steps (``_plan``, ``_run``)
   run exactly one more experiment (``experiments = done + 1``); the proposer puts the
   change back as its proposal. The checkout then stays on ``autoresearch/<tag>`` so the
   agent's next change starts from the best; the verdict and exit code come from the
   journaled record (``pytest_sessionfinish``): 0 keep, 1 discard, 2 crash or refused,
   3 usage error.

Killed with -9 anywhere, the change is in the tree or in the carry file; the next try
finds the carry file, resumes that experiment (the journal says where it stopped) and
reports its verdict. A change in the tree that differs from it is saved aside, named.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pytest_autoresearch.program import options
from pytest_autoresearch.program.options import TRY_KEY

EXIT = {"keep": 0, "discard": 1, "crash": 2, "refused": 2, "usage": 3}
# A journal status as the agent's verdict.
VERDICT = {
    "keep": "keep",
    "discard": "discard",
    "stale": "discard",
    "crash": "crash",
    "error": "crash",
    "rejected": "refused",
}
PREFIX = "autoresearch-try:"


@dataclass
class TryState:
    """One try, from the first hook to the exit code (``config.stash[TRY_KEY]``)."""

    description: str
    tag: str
    record_dir: Path
    json: bool = False
    mode: str = ""  # "new" (a change taken), "resume" (a cut-short try), "report" (finished)
    previous: int | None = None  # "report": the experiment the cut-short try became
    notes: list[str] = field(default_factory=list)
    error: tuple[str, str] | None = None  # (verdict, why): stopped before the loop
    verdict: dict[str, Any] | None = None

    @property
    def carry_file(self) -> Path:
        return self.record_dir / "agent" / "carry.json"

    @property
    def exit_code(self) -> int | None:
        return None if self.verdict is None else self.verdict["exit_code"]


def current_tag(config: pytest.Config, root: Path, fallback: str | None = None) -> str:
    """The command line's tag, else the ini key's, else the research branch checked out
    (an agent's later tries, and the midnight that changes the default), else
    ``fallback``, else today's."""
    given = getattr(config.known_args_namespace, "autoresearch_tag", None)
    if given:
        return given
    ini = config.getini("autoresearch_tag")
    if ini:
        try:
            return options.report_tag(str(ini).strip())
        except Exception as exc:
            raise pytest.UsageError(f"ini key autoresearch_tag = {ini!r}: {exc}") from None
    ref = _git_out(root, "symbolic-ref", "-q", "HEAD")
    name = ref.removeprefix("refs/heads/autoresearch/")
    if name != ref and options.TAG_RE.match(name):
        return name
    return fallback or options.default_tag()


def _git_out(root: Path, *args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    except OSError:
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


# -- step 1: take the change out of the tree, before anything is imported ------------------


def prepare(config: pytest.Config) -> None:
    """Lock the checkout, save the agent's change in the record, clean the tree."""
    from pytest_autoresearch.research.session_parts import Lock, git_dir
    from pytest_autoresearch.vcs.gitutil import VcsError

    ns = config.known_args_namespace
    root = Path(config.rootpath)
    state = TryState(ns.autoresearch_try, "", root, json=bool(ns.autoresearch_json))
    config.stash[TRY_KEY] = state
    try:
        state.tag = current_tag(config, root)
        state.record_dir = root / ".autoresearch" / state.tag
        lock = Lock(git_dir(root) or state.record_dir)
        lock.__enter__()
    except pytest.UsageError as exc:
        state.error = ("usage", str(exc))
        return
    config.add_cleanup(lambda: lock.__exit__(None, None, None))
    # Stopped before the change became an experiment (a usage error, Ctrl-C): put it back.
    config.add_cleanup(lambda: put_back(root, state))
    try:
        _take_change(root, state)
    except VcsError as exc:
        state.error = ("usage", str(exc))


def _take_change(root: Path, state: TryState) -> None:
    from pytest_autoresearch.vcs import carry

    workdir = carry.workdir_of(root)
    record = os.path.relpath(state.record_dir.parent.resolve(), workdir.resolve())  # all tags
    exclude = () if record.startswith("..") else (Path(record).as_posix() + "/",)
    change = carry.capture(root, exclude)
    existing = carry.load(state.carry_file)
    if existing is not None and existing.get("index") in finished_indices(state.record_dir):
        # Decided before a kill: the loop finishes it; the same change again is its leftover.
        state.previous = existing["index"]
        if change and change.patch == existing.get("patch"):
            carry.clear(root, change)
            change = carry.Change(change.head, change.head_ref, (), "")
        archive(state, existing)
        existing = None
    if existing is not None:  # a try cut short: finish it first, lose nothing
        if change and change.patch != existing.get("patch"):
            aside = _write_patch(state, f"set-aside-{_stamp()}", change.patch)
            state.notes.append(
                f"a try was cut short and is finished first; the other change in the tree "
                f"is saved in {aside} (git apply {aside})"
            )
        carry.clear(root, change)
        state.mode, state.description = "resume", existing.get("description", state.description)
        return
    if not change:
        if state.previous is not None:
            state.mode = "report"
            return
        state.error = ("usage", "nothing to try: the working tree has no uncommitted changes")
        return
    why = _base_problem(workdir, change, state.tag)
    if why:
        state.error = ("usage", why)
        return
    why = _moved_outside(workdir, state)
    if why:
        state.error = ("refused", why)
        return
    carry.save(state.carry_file, change, state.description, tag=state.tag, at=_now())
    carry.clear(root, change)
    state.mode = "new"


def _base_problem(workdir: Path, change: Any, tag: str) -> str | None:
    """A change made on another commit than the research branch's tip cannot be judged."""
    branch = "autoresearch/" + tag
    tip = _git_out(workdir, "rev-parse", "--verify", "-q", f"refs/heads/{branch}^{{commit}}")
    if not tip or tip == change.head:
        return None
    where = change.head_ref.removeprefix("refs/heads/")
    return (
        f"your change is made on {where} ({change.head[:12]}), but {branch} is at {tip[:12]}: "
        f"it would be judged against code it was not written for. Move it onto the research "
        f"branch first: git stash && git checkout {branch} && git stash pop"
    )


def _moved_outside(workdir: Path, state: TryState) -> str | None:
    """The research branch holds judged commits only: a commit made by hand is refused."""
    judged = judged_commits(state.record_dir)
    tip = _git_out(workdir, "rev-parse", "--verify", "-q", f"refs/heads/autoresearch/{state.tag}")
    if not judged or not tip or tip in judged:
        return None
    best = judged[0]
    return (
        f"autoresearch/{state.tag} is at {tip[:12]}, a commit the judge did not make (its best "
        f"is {best[:12]}): the branch was moved by hand. Nothing was tried; put it back with "
        f"git reset --hard {best[:12]} on autoresearch/{state.tag} (after saving your change)"
    )


def judged_commits(record_dir: Path) -> list[str]:
    """The best commit the journal knows (first), and a decided keep's, which resume moves to."""
    best, decided = "", []
    for ev in _events(record_dir):
        if ev.get("event") == "baseline" or (
            ev.get("event") == "experiment" and ev.get("status") == "keep"
        ):
            best = str(ev.get("commit") or best)
        elif ev.get("event") == "decided" and (ev.get("record") or {}).get("status") == "keep":
            decided.append(str(ev["record"].get("commit") or ""))
    return [best, *decided] if best else []


def _events(record_dir: Path) -> list[dict[str, Any]]:
    """experiments.jsonl's complete lines, read only (a torn last line is skipped)."""
    try:
        lines = (record_dir / "experiments.jsonl").read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    events = []
    for line in lines:
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if isinstance(ev, dict):
            events.append(ev)
    return events


def finished_indices(record_dir: Path) -> set[int]:
    """Experiments recorded or decided (resume finishes those) in experiments.jsonl."""
    done: set[int] = set()
    for ev in _events(record_dir):
        index = ev.get("index")
        if not isinstance(index, int):
            continue
        if ev.get("event") in ("experiment", "decided"):
            done.add(index)
        elif ev.get("event") == "start":
            done.discard(index)  # run again after an interruption
    return done


def archive(state: TryState, data: dict[str, Any]) -> Path:
    """The carry file of a finished try becomes agent/<index>.json and agent/<index>.patch."""
    index = data.get("index")
    patch = _write_patch(state, str(index), data.get("patch", ""))
    os.replace(state.carry_file, state.carry_file.with_name(f"{index}.json"))
    return patch


def _write_patch(state: TryState, name: str, patch: str) -> Path:
    path = state.carry_file.with_name(f"{name}.patch")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(patch, encoding="utf-8")
    return path


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _stamp() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")


# -- step 2: one more experiment through the loop -----------------------------------------


def run_try(session: pytest.Session) -> None:
    """The try's experiment through the session's own steps; the verdict in the stash."""
    from pytest_autoresearch import publish
    from pytest_autoresearch.reporting import page_plugin
    from pytest_autoresearch.research.session import _echo_for, _plan, _run

    config = session.config
    state: TryState = config.stash[TRY_KEY]
    if state.error is not None:
        conclude(state, None, *state.error)
        return
    echo = _echo_for(config)
    try:
        plan = _plan(session, echo)
        plan.experiments = _experiments(plan, state)
        config.stash[page_plugin.RECORD_KEY] = (plan.record_dir, plan.program)
        repo = _run(session, plan, echo, stay=True)
    except pytest.UsageError as exc:
        put_back(Path(config.rootpath), state)
        conclude(state, None, "usage", str(exc))
        return
    _verdict_from_record(session, plan, state)
    publish.after_run(session, repo, echo)


def _experiments(plan: Any, state: TryState) -> int:
    """Exactly one more than the run has finished (none more when only reporting)."""
    from pytest_autoresearch.research.journal import Journal, JournalError

    try:
        found = Journal(plan.record_dir, plan.program.objective).load()
    except JournalError as exc:
        raise pytest.UsageError(str(exc)) from None
    finished = len(found.records) + len(found.decided)
    return max(1, finished + (0 if state.mode == "report" else 1))


def _verdict_from_record(session: pytest.Session, plan: Any, state: TryState) -> None:
    from pytest_autoresearch.research.journal import Journal
    from pytest_autoresearch.vcs import carry

    data = carry.load(state.carry_file)
    index = data.get("index") if data else state.previous
    records = Journal(plan.record_dir, plan.program.objective).load().records
    rec = next((r for r in records if r.get("index") == index), None)
    if rec is None:
        result = session.config.stash.get(options.RESULT_KEY, None)
        why = result[0].stop_reason if result else "the run stopped before the change was tried"
        if data is not None and data.get("index") is None:
            put_back(Path(session.config.rootpath), state)
            why += "; your change is back in the working tree"
        else:
            why += f"; your change is saved in {state.carry_file} and is tried when you run again"
        conclude(state, plan.program.objective, "crash", why)
        return
    patch = archive(state, data) if data is not None else state.carry_file.with_name(
        f"{index}.patch"
    )  # fmt: skip
    conclude(state, plan.program.objective, VERDICT.get(rec["status"], "crash"), "", rec, patch)


def put_back(root: Path, state: TryState) -> None:
    """A new change that never became an experiment goes back into the tree."""
    from pytest_autoresearch.vcs import carry

    data = carry.load(state.carry_file)
    if state.mode != "new" or data is None or data.get("index") is not None:
        return
    try:
        carry.apply(root, data.get("patch", ""))
    except Exception as exc:  # VcsError: keep the carry file, say where the change is
        state.notes.append(f"could not put your change back ({exc}); it is in {state.carry_file}")
        return
    state.carry_file.unlink(missing_ok=True)


def conclude(
    state: TryState,
    objective: str | None,
    verdict: str,
    reason: str,
    rec: dict[str, Any] | None = None,
    patch: Path | None = None,
) -> None:
    """The verdict an agent parses: one line, or one JSON object (--autoresearch-json)."""
    rec = rec or {}
    value, before = rec.get("objective"), rec.get("best_before")
    delta = value - before if value is not None and before is not None else None
    reason = reason or rec.get("reason") or ""
    if patch is not None and verdict != "keep":
        reason += f"; your change is saved in {patch} (git apply {patch})"
    state.verdict = {
        "verdict": verdict,
        "exit_code": EXIT[verdict],
        "tag": state.tag,
        "branch": "autoresearch/" + state.tag,
        "index": rec.get("index"),
        "description": rec.get("description") or state.description,
        "objective": objective,
        "value": value,
        "best_before": before,
        "best_after": rec.get("best_after"),
        "delta": delta,
        "noise": rec.get("noise"),
        "reason": reason,
        "commit": rec.get("commit") or None,
        "patch": str(patch) if patch is not None else None,
        "log_tail": rec.get("log_tail") if verdict == "crash" else None,
        "notes": list(state.notes),
    }


def verdict_lines(state: TryState) -> list[str]:
    """What the terminal shows last: notes, a crash's log tail, then the verdict."""
    v = state.verdict
    if v is None:
        return []
    lines = [f"note: {n}" for n in v["notes"]]
    if v["log_tail"]:
        lines += ["--- last lines of the evaluation ---", *str(v["log_tail"]).splitlines()[-30:]]
    value = "-" if v["value"] is None else f"{v['value']:.6g}"
    delta = "-" if v["delta"] is None else f"{v['delta']:+.3g}"
    lines.append(f"{PREFIX} {v['verdict']} {v['objective'] or '-'} {value} ({delta}) {v['reason']}")
    if state.json:
        lines.append(json.dumps(v, default=str))
    return lines
