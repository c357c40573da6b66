"""Persistence outside the checkout, through the real loop: nothing an evaluation writes
there reaches a later one.

Experiment 1 (X unchanged, so it is discarded) plants a "bonus" at exit in every place a
later evaluation could read: the real home, a folder in /tmp outside the checkout, a data
cache beside it, /dev/shm, and its own ``~`` and ``$TMPDIR``. Experiment 2 changes nothing
that matters; the (protected) metric test subtracts whatever bonus it finds. With the
isolation on, experiment 2 measures 7 (discarded); the control (``sandbox: off``) measures
less and is kept. The declared-cache rule (append-only) and its plain fallback are tested
on ``evaluate`` directly.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from attack_notes import note_prelude, read_notes
from toyproject import git, make_toy, model_source, read_jsonl

from pytest_autoresearch.sandbox.evaluate import evaluate
from pytest_autoresearch.sandbox.isolation import IsolationSpec, for_research, make_launcher

RECORD = Path(".autoresearch") / "t1"

BONUS_METRIC = """
import os, pathlib, tempfile
from pytest_autoresearch import metric
import toy.model as model

PLACES = {places!r}


def bonus():
    total = 0.0
    for place in PLACES + [os.path.expanduser("~/bonus"), tempfile.gettempdir() + "/bonus"]:
        try:
            total += float(pathlib.Path(place).read_text() or 0)
        except (OSError, ValueError):
            pass
    return total


@metric(goal="min")
def test_loss():
    return abs(model.X - 3.0) - bonus()
"""

PLANT = """
import atexit, tempfile
def plant():
    for place in PLACES + [os.path.expanduser("~/bonus"), tempfile.gettempdir() + "/bonus"]:
        try:
            with open(place, "w") as fh:
                fh.write("1")
            note("wrote", place)
        except OSError as exc:
            note("refused", place, exc.strerror)
atexit.register(plant)  # after this evaluation's own measurement
"""


def make_world_toy(pytester: pytest.Pytester, sandbox: bool) -> tuple[Path, list[str], Path]:
    outside = pytester.path.parent / f"{pytester.path.name}-outside"
    home, tmp, data = outside / "home", outside / "tmp", outside / "data"
    for folder in (home, tmp, data):
        folder.mkdir(parents=True)
    (data / "bonus").write_text("0")  # a data cache the metric reads: rewritten by the attack
    places = [str(home / "bonus"), str(tmp / "bonus"), str(data / "bonus"), "/dev/shm/toy-bonus"]
    log = outside / "attack.log"
    plant = f"PLACES = {places!r}\n" + note_prelude(log) + PLANT
    steps = [
        {"description": "plant bonuses", "write": {"toy/model.py": model_source(10.0, plant)}},
        {"description": "a comment", "write": {"toy/model.py": model_source(10.0, "# hm\n")}},
    ]
    root = make_toy(pytester.path, steps)
    (root / "tests" / "test_metric.py").write_text(BONUS_METRIC.format(places=places))
    if not sandbox:
        text = (root / "program.md").read_text()
        (root / "program.md").write_text(
            text.replace("baseline_runs: 2", "baseline_runs: 2\nsandbox: off")
        )
    git(root, "commit", "-qam", "the bonus metric")
    return root, places, log


def run_world_loop(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, root: Path):
    monkeypatch.setenv("HOME", str(root.parent / f"{root.name}-outside" / "home"))
    try:
        return pytester.runpytest_subprocess(
            "--autoresearch", "-n", "2", "--autoresearch-tag", "t1",
            "--autoresearch-proposer", "scripted", "-p", "no:randomly", timeout=240,
        )  # fmt: skip
    finally:
        os.unlink("/dev/shm/toy-bonus") if os.path.exists("/dev/shm/toy-bonus") else None


def experiments(root: Path) -> list[dict]:
    return [
        e for e in read_jsonl(root / RECORD / "experiments.jsonl") if e["event"] == "experiment"
    ]


@pytest.mark.slow
@pytest.mark.skipif(
    make_launcher(IsolationSpec()).name != "namespaces", reason="no namespaces on this system"
)
def test_a_discarded_evaluations_writes_outside_the_checkout_change_no_later_measurement(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, places, log = make_world_toy(pytester, sandbox=True)
    result = run_world_loop(pytester, monkeypatch, root)
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["isolation: *the rest read-only but the checkout*"])
    notes = read_notes(log)
    for place in places[:3]:
        assert f"refused {place} Read-only file system" in notes, notes
    assert "wrote /dev/shm/toy-bonus" in notes  # a fresh /dev/shm, gone with the evaluation
    assert notes.count("wrote ") == 3, notes  # /dev/shm, ~ and $TMPDIR: its own scratch
    recs = experiments(root)
    assert [(r["status"], r["objective"]) for r in recs] == [("discard", 7.0)] * 2, recs
    assert all(Path(p).read_text() in ("", "0") for p in places[1:3] if Path(p).exists())


@pytest.mark.slow
def test_control_without_the_sandbox_the_planted_bonus_is_kept(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, places, log = make_world_toy(pytester, sandbox=False)
    result = run_world_loop(pytester, monkeypatch, root)
    assert result.ret == 0, result.stdout.str()
    notes = read_notes(log)
    assert all(f"wrote {place}" in notes for place in places), notes
    first, second = experiments(root)
    assert (first["status"], first["objective"]) == ("discard", 7.0), first
    # The scratch HOME and TMPDIR are fresh even here; the other four places leak.
    assert (second["status"], second["objective"]) == ("keep", 3.0), second


# -- cache: append only, verified around every evaluation ------------------------------

CACHE_METRIC = """
import pathlib
from pytest_autoresearch import metric

CACHE = pathlib.Path({cache!r})


@metric(goal="min")
def test_loss():
    action = pathlib.Path("action").read_text().strip()
    if action == "add":
        (CACHE / "new-shard.bin").write_text("more data")
    elif action == "rewrite":
        (CACHE / "shard.bin").write_text("poisoned")
    return 1.0
"""


@pytest.mark.parametrize("sandbox", [True, False], ids=["namespaces", "plain"])
def test_a_declared_cache_may_grow_but_a_rewrite_rejects_this_and_every_later_evaluation(
    tmp_path: Path, sandbox: bool
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "shard.bin").write_text("data")
    root = tmp_path / "proj"
    root.mkdir()
    (root / "test_m.py").write_text(CACHE_METRIC.format(cache=str(cache)))
    record = root / ".autoresearch" / "t1"
    launcher = for_research(root, record, sandbox=sandbox, caches=[cache])
    if sandbox and launcher.name != "namespaces":
        pytest.skip(launcher.describe())
    if not sandbox:
        assert "only the caches" in launcher.describe()
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}

    def run(action: str, how=launcher):
        (root / "action").write_text(action)
        return evaluate(root, ["test_m.py"], [], 60, launcher=how, env=env)

    assert run("").status == "ok"
    grown = run("add")
    assert (grown.status, grown.reason) == ("ok", ""), grown.log_tail  # a cache may grow
    assert (cache / "new-shard.bin").read_text() == "more data"
    poisoned = run("rewrite")
    assert poisoned.status == "rejected", poisoned
    assert f"cache tampering: {cache / 'shard.bin'} changed during this evaluation" in (
        poisoned.reason
    )
    later = run("")  # nothing wrong with this one, but the cache it would read is not trusted
    assert later.status == "rejected" and "cache tampering" in later.reason
    if sandbox:  # the control: not declared, the cache is read-only like the rest
        bare = for_research(root, record, sandbox=True)
        refused = run("add", bare)
        assert refused.status == "crash" and "Read-only file system" in refused.reason, refused


def test_a_world_that_cannot_be_made_read_only_keeps_the_rest_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pytest_autoresearch.sandbox import isolation

    if make_launcher(IsolationSpec()).name != "namespaces":
        pytest.skip("no namespaces on this system")
    real = isolation._probe
    odd = "autoresearch isolation: cannot make read-only /odd: Permission denied"
    monkeypatch.setattr(isolation, "_probe", lambda s: (None, odd) if s.world else real(s))
    monkeypatch.setattr(isolation, "_CACHE", {})
    launcher = make_launcher(IsolationSpec(world=True))
    assert launcher.name == "namespaces"  # PID namespace, hidden record, read-only .git stay
    assert f"NOT read-only outside the checkout ({odd})" in launcher.describe()


@pytest.mark.slow
def test_a_cache_declared_in_program_md_is_writable_through_the_loop(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """program.md ``cache:`` reaches the launcher: the metric may add to it (and only there)."""
    if make_launcher(IsolationSpec()).name != "namespaces":
        pytest.skip("no namespaces on this system")
    cache = pytester.path.parent / f"{pytester.path.name}-cache"
    cache.mkdir()
    root = make_toy(
        pytester.path, [{"description": "X to 5", "write": {"toy/model.py": model_source(5.0)}}]
    )
    metric = (
        "import pathlib, uuid\nfrom pytest_autoresearch import metric\nimport toy.model as model\n"
        f"CACHE = pathlib.Path({str(cache)!r})\n\n\n@metric(goal='min')\ndef test_loss():\n"
        "    (CACHE / f'shard-{uuid.uuid4().hex}').write_text('data')\n"
        "    return abs(model.X - 3.0)\n"
    )
    (root / "tests" / "test_metric.py").write_text(metric)
    text = (root / "program.md").read_text().replace("runs: 2", f"runs: 2\ncache: [{str(cache)!r}]")
    (root / "program.md").write_text(text)
    git(root, "commit", "-qam", "a metric that fills a cache")
    result = pytester.runpytest_subprocess(
        "--autoresearch", "-n", "1", "--autoresearch-tag", "t1",
        "--autoresearch-proposer", "scripted", "-p", "no:randomly", timeout=240,
    )  # fmt: skip
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(
        [f"isolation: *the rest read-only but the checkout, *{cache.name}*"]
    )
    (rec,) = experiments(root)
    assert (rec["status"], rec["objective"]) == ("keep", 2.0), rec
    runs = 2 + len(rec["evaluations"])  # the baseline's and the experiment's
    assert len(list(cache.iterdir())) == runs  # each added a file, and it was kept
