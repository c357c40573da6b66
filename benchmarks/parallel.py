"""Parallel experiments: measured on this machine, simulated for 8 and 64 workers.

Measured (``--measure``): a throwaway git project whose metric sleeps 2 s; the same N
candidates (parent + diff) run through the executors: one worktree worker, two worktree
workers, and Ray (a local instance) with one and two workers. Reported: candidates
measured per hour, the speed-up of two workers, and Ray's overhead per evaluation (Ray
with one worker against one worktree worker, per candidate). This is the worker side
only: proposing and deciding happen on the driver and are not in these figures.

Simulated (``--simulate``): K workers, a driver that spends ``propose`` time units per
proposal (one thread), evaluations of ~1 time unit (lognormal spread), and the real keep
rule (``decide.keep_decision``, confirmations as extra runs of the same trial) and the
real stale policy (``stale.resolve``). Two objectives: pure noise (every keep is false:
the false-keep rate must stay under decide.ALPHA whatever K), and one where 10% of
candidates are real 2-sigma gains. Reported per K: experiments per time unit, worker
utilisation, how often a candidate finished after the best moved, and what became of
those (discarded without a re-measure, re-based, or dropped as stale).

    python benchmarks/parallel.py --measure -n 8
    python benchmarks/parallel.py --simulate --experiments 4000
    python benchmarks/parallel.py --loop -n 12 --rounds 2

Through the loop (``--loop``): whole ``pytest --autoresearch -n N`` sessions (the Optuna
proposer, the keep rule, commits, journal) on the same sleeping metric, one at a time in
the checkout, with two worktree workers, and with ``--autoresearch-ray local`` and two
workers; experiments per hour from the journal, from the first experiment's start to the
last one's end (the baseline is left out: it is the same work in every configuration).
"""

from __future__ import annotations

import argparse
import heapq
import os
import random
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytest_autoresearch.research import decide  # noqa: E402
from pytest_autoresearch.research.stale import promising, resolve  # noqa: E402

# -- measured -----------------------------------------------------------------------------

SLEEP_METRIC = """
import time
from pytest_autoresearch import metric
import knob


@metric(goal="min")
def test_loss():
    time.sleep(knob.SLEEP)
    return abs(knob.X - 3.0)
"""


def _git(root: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-c", "user.name=b", "-c", "user.email=b@e", *args],
        cwd=root, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return out.stdout.strip()


def _project(sleep: float) -> Path:
    root = Path(tempfile.mkdtemp(prefix="bench-parallel-")) / "proj"
    (root / "tests").mkdir(parents=True)
    (root / "knob.py").write_text(f"X = 10.0\nSLEEP = {sleep}\n")
    (root / "tests" / "test_metric.py").write_text(textwrap.dedent(SLEEP_METRIC))
    (root / "pytest.ini").write_text("[pytest]\npythonpath = .\n")
    (root / ".gitignore").write_text("__pycache__/\n")
    _git(root.parent, "init", "-q", "-b", "main", str(root))
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "bench")
    return root


def _trials(root: Path, n: int, sleep: float) -> list:
    from pytest_autoresearch.executors import Trial

    head = _git(root, "rev-parse", "HEAD")
    out = []
    for i in range(n):
        (root / "knob.py").write_text(f"X = {i / 2}\nSLEEP = {sleep}\n")
        diff = _git(root, "diff", "--binary") + "\n"
        out.append(
            Trial(f"t{i}", head, diff=diff, metric_args=("tests/test_metric.py",), timeout=120,
                  env_hints={"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}, required=("loss",))
        )  # fmt: skip
    _git(root, "checkout", "-q", "knob.py")
    return out


def _drive(executor, trials: list) -> tuple[float, list]:
    """Keep ``capacity`` trials in flight until all are measured; (seconds, results)."""
    pending = list(trials)
    t0 = time.perf_counter()
    for _ in range(min(executor.capacity, len(pending))):
        executor.submit(pending.pop(0))
    results = []
    for result in executor.as_completed():
        results.append(result)
        if pending:
            executor.submit(pending.pop(0))
    elapsed = time.perf_counter() - t0
    bad = [r for r in results if not r.ok or r.evaluations[0].status != "ok"]
    if bad:
        raise SystemExit(f"a benchmark trial failed: {bad[0].error or bad[0].evaluations[0]}")
    return elapsed, results


def measure(n: int, sleep: float, ray_too: bool) -> None:
    from pytest_autoresearch.executors.worktree import WorktreeExecutor

    root = _project(sleep)
    trials = _trials(root, n, sleep)
    folder = root.parent / "workers"
    rows: list[tuple[str, float, list]] = []
    for workers in (1, 2):
        with WorktreeExecutor(root, folder, workers, gpus=[], cpus=2) as ex:
            rows.append((f"worktree x{workers}", *_drive(ex, trials)))
    if ray_too:
        import ray

        from pytest_autoresearch.executors.ray import RayExecutor

        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 logging_level="WARNING")  # fmt: skip
        start = time.perf_counter() - t0
        print(f"ray.init (local, once): {start:.1f}s")
        for workers in (1, 2):
            with RayExecutor(root, "local", workers) as ex:
                _drive(ex, trials[:workers])  # actors up and checkouts made: not per evaluation
                rows.append((f"ray local x{workers}", *_drive(ex, trials)))
        ray.shutdown()
    print(f"\n{n} candidates, metric sleeps {sleep:g}s, cores: {os.cpu_count()}")
    head = f"{'executor':<16}{'wall s':>8}{'s/cand':>8}{'per hour':>10}{'eval s':>8}"
    print(head + f"{'speed-up':>10}")
    base = rows[0][1]
    for name, wall, results in rows:
        per = wall / n
        ev = statistics.mean(r.evaluations[0].duration for r in results)
        print(f"{name:<16}{wall:>8.1f}{per:>8.2f}{3600 / per:>10.0f}{ev:>8.2f}{base / wall:>9.2f}x")
    by = {name: wall for name, wall, _ in rows}
    if "ray local x1" in by:
        print(f"\nRay overhead per evaluation (ray x1 - worktree x1, per candidate): "
              f"{(by['ray local x1'] - by['worktree x1']) / n:+.2f}s")  # fmt: skip


# -- through the real loop ----------------------------------------------------------------

LOOP_PROGRAM = """\
---
editable: ["knob.py"]
objective: loss
timeout: 60
baseline_runs: 2
---
Tune X.
"""

LOOP_METRIC = """
import time
from pytest_autoresearch import metric
import knob
import pace


@metric(goal="min")
def test_loss():
    time.sleep(pace.SLEEP)
    return abs(knob.X - 3.0)
"""


def _loop_project(sleep: float) -> Path:
    root = Path(tempfile.mkdtemp(prefix="bench-parallel-loop-")) / "proj"
    (root / "tests").mkdir(parents=True)
    (root / "knob.py").write_text("X = 10.0  # search: -20..20\n")
    (root / "pace.py").write_text(f"SLEEP = {sleep}\n")  # not editable: the pace is fixed
    (root / "tests" / "test_metric.py").write_text(textwrap.dedent(LOOP_METRIC))
    (root / "program.md").write_text(LOOP_PROGRAM)
    (root / "pytest.ini").write_text("[pytest]\npythonpath = .\n")
    (root / ".gitignore").write_text("__pycache__/\n.autoresearch/\n")
    _git(root.parent, "init", "-q", "-b", "main", str(root))
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "bench")
    return root


def _loop_once(n: int, sleep: float, args: list[str]) -> dict:
    """One ``pytest --autoresearch`` session on a fresh project; figures from its journal."""
    import datetime
    import json

    root = _loop_project(sleep)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "AUTORESEARCH"))}
    cmd = [sys.executable, "-m", "pytest", "--autoresearch", "-n", str(n), "--autoresearch-seed",
           "1", "--autoresearch-tag", "bench", "-p", "no:randomly", *args]  # fmt: skip
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args) or 'serial'} failed:\n{done.stdout[-3000:]}")
    events = [
        json.loads(line)
        for line in (root / ".autoresearch" / "bench" / "experiments.jsonl")
        .read_text()
        .splitlines()
    ]
    recs = [e for e in events if e["event"] == "experiment"]

    def when(text: str) -> float:
        return datetime.datetime.fromisoformat(text).timestamp()

    span = max(when(r["finished"]) for r in recs) - min(when(r["started"]) for r in recs)
    evals = [e for r in recs for e in r["evaluations"]]
    return {
        "wall": wall,
        "span": span,
        "experiments": len(recs),
        "evaluations": len(evals),
        "per_hour": 3600 * len(recs) / span if span > 0 else float("nan"),
        "evals_per_hour": 3600 * len(evals) / span if span > 0 else float("nan"),
        "eval_s": statistics.mean(e["duration"] for e in evals) if evals else float("nan"),
        "kept": sum(r["status"] == "keep" for r in recs),
        "stale": sum(r["status"] == "stale" for r in recs),
        "rebased": sum(bool(r.get("rebased")) for r in recs),
    }


def loop(n: int, sleep: float, ray_too: bool, rounds: int) -> None:
    """``pytest --autoresearch -n N`` with 1 and 2 worktree workers (and Ray local x2),
    interleaved ``rounds`` times; experiments per hour from the journal (baseline excluded).
    """
    configs = [("serial (in place)", []), ("worktree x2", ["--autoresearch-workers", "2"])]
    if ray_too:
        configs.append(("ray local x2", ["--autoresearch-ray", "local",
                                         "--autoresearch-workers", "2"]))  # fmt: skip
    got: dict[str, list[dict]] = {name: [] for name, _ in configs}
    for _ in range(rounds):
        for name, args in configs:
            got[name].append(_loop_once(n, sleep, args))
    print(f"\n{n} experiments per session, metric sleeps {sleep:g}s, optuna seed 1, "
          f"{rounds} round(s) interleaved, cores: {os.cpu_count()}")  # fmt: skip
    print(f"{'configuration':<20}{'session s':>10}{'exp/hour':>10}{'evals/hour':>11}{'evals':>7}"
          f"{'eval s':>8}{'kept':>6}{'stale':>6}{'rebased':>8}{'vs serial':>10}"
          f"{'evals vs serial':>16}")  # fmt: skip
    med = statistics.median
    base = med(r["per_hour"] for r in got[configs[0][0]])
    base_evals = med(r["evals_per_hour"] for r in got[configs[0][0]])
    for name, _ in configs:
        rows = got[name]
        per_hour = med(r["per_hour"] for r in rows)
        evals_hour = med(r["evals_per_hour"] for r in rows)
        print(f"{name:<20}{med(r['wall'] for r in rows):>10.1f}{per_hour:>10.0f}"
              f"{evals_hour:>11.0f}{med(r['evaluations'] for r in rows):>7.0f}"
              f"{med(r['eval_s'] for r in rows):>8.2f}{med(r['kept'] for r in rows):>6.0f}"
              f"{med(r['stale'] for r in rows):>6.0f}{med(r['rebased'] for r in rows):>8.0f}"
              f"{per_hour / base:>9.2f}x{evals_hour / base_evals:>15.2f}x")  # fmt: skip


# -- simulated ----------------------------------------------------------------------------


def _runs_until_decided(rng: random.Random, true: float, best: float, best_runs: int,
                        sigma: float) -> tuple[decide.Decision, list[float]]:  # fmt: skip
    """The keep rule with as many runs as it asks for (goal min: lower is better)."""
    runs = [true + rng.gauss(0, sigma)]
    while True:
        d = decide.keep_decision(goal="min", best=best, sigma=sigma, candidate=runs, df=1000,
                                 best_runs=best_runs)  # fmt: skip
        if d.action != "confirm":
            return d, runs
        runs.append(true + rng.gauss(0, sigma))


def simulate(k: int, experiments: int, propose: float, gain_rate: float, seed: int,
             applies: float = 0.8, max_rebases: int = 1) -> dict:  # fmt: skip
    """One run of K workers; see the module docstring. Time unit: one evaluation run."""
    rng = random.Random(seed)
    sigma = 1.0
    state = {"best": 0.0, "true": 0.0, "runs": 6, "sha": 0}  # the best commit and its value
    heap: list = []  # (finish time, seq, trial)
    seq = 0
    driver_free = 0.0
    proposed = finished = keeps = false_keeps = overtaken = rebased = stale_n = 0
    discarded_moved = 0
    busy = 0.0
    now = 0.0

    def start(t: float, trial: dict) -> None:
        nonlocal seq, busy
        d, runs = _runs_until_decided(rng, trial["true"], trial["parent_best"], trial["best_runs"],
                                      sigma)  # fmt: skip
        dur = sum(rng.lognormvariate(0, 0.3) for _ in runs)
        busy += dur
        trial.update(decision=d, runs=runs)
        seq += 1
        heapq.heappush(heap, (t + dur, seq, trial))

    def new_trial() -> dict:
        nonlocal driver_free, proposed
        driver_free = max(driver_free, now) + propose  # one driver thread proposes
        proposed += 1
        gain = -2.0 * sigma if rng.random() < gain_rate else 0.0
        return {"parent": state["sha"], "parent_best": state["best"], "best_runs": state["runs"],
                "true": state["true"] + gain, "gain": gain, "rebases": 0}  # fmt: skip

    for _ in range(min(k, experiments)):
        trial = new_trial()
        start(driver_free, trial)
    while heap:
        now, _, trial = heapq.heappop(heap)
        moved = trial["parent"] != state["sha"]
        r = resolve(
            parent=f"{trial['parent']:040d}", best=f"{state['sha']:040d}",
            promising=promising(trial["decision"].action),
            applies=rng.random() < applies if moved else None,
            rebases=trial["rebases"], max_rebases=max_rebases,
        )  # fmt: skip
        if moved:
            overtaken += 1
        if r.action == "rebase":
            rebased += 1
            trial.update(parent=state["sha"], parent_best=state["best"],
                         best_runs=state["runs"], rebases=trial["rebases"] + 1,
                         true=state["true"] + trial["gain"])  # fmt: skip
            start(now, trial)  # same worker, measured again on the new best
            continue
        finished += 1
        if r.action == "stale":
            stale_n += 1
        elif r.action == "discard":
            discarded_moved += 1
        elif trial["decision"].action == "keep":
            keeps += 1
            if trial["gain"] >= 0:
                false_keeps += 1
            n_fresh = trial["decision"].remeasure
            fresh = [trial["true"] + rng.gauss(0, sigma) for _ in range(n_fresh)]
            carried = decide.after_keep(trial["decision"], trial["runs"], fresh)
            state.update(best=carried.best, runs=carried.best_runs, sha=state["sha"] + 1,
                         true=trial["true"])  # fmt: skip
        if proposed < experiments:
            nxt = new_trial()
            start(driver_free, nxt)
    return {
        "k": k, "time": now, "per_time": finished / now, "util": busy / (k * now),
        "overtaken": overtaken / finished, "rebased": rebased / finished,
        "stale": stale_n / finished, "discard_moved": discarded_moved / finished,
        "keeps": keeps, "keeps_per_time": keeps / now, "false_keep_rate": false_keeps / finished,
    }  # fmt: skip


def simulate_table(experiments: int, seed: int) -> None:
    print(f"alpha (false keeps per experiment, at most): {decide.ALPHA}")
    cases = [(0.0, 0.005, 1), (0.0, 0.05, 1), (0.1, 0.005, 1), (0.1, 0.05, 1), (0.1, 0.005, 3)]
    for gain_rate, propose, max_rebases in cases:
        what = "pure noise" if gain_rate == 0 else f"{gain_rate:.0%} real 2-sigma gains"
        print(
            f"\n{what}; proposing costs {propose} of an evaluation (one driver thread); "
            f"max_rebases {max_rebases}"
        )
        print(
            f"{'K':>4}{'exp/unit':>10}{'speed-up':>10}{'util':>7}{'overtaken':>11}"
            f"{'rebased':>9}{'stale':>7}{'disc.moved':>11}{'keeps':>7}{'keeps/unit':>11}"
            f"{'false/exp':>11}"
        )
        base = None
        for k in (1, 2, 8, 64):
            r = simulate(k, experiments, propose, gain_rate, seed + k, max_rebases=max_rebases)
            base = base or r["per_time"]
            print(f"{k:>4}{r['per_time']:>10.2f}{r['per_time'] / base:>9.1f}x"
                  f"{r['util']:>7.0%}{r['overtaken']:>11.1%}{r['rebased']:>9.1%}"
                  f"{r['stale']:>7.1%}{r['discard_moved']:>11.1%}{r['keeps']:>7}"
                  f"{r['keeps_per_time']:>11.3f}{r['false_keep_rate']:>11.4f}")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description="parallel experiments: measured and simulated")
    ap.add_argument("--measure", action="store_true", help="run the executors for real")
    ap.add_argument("--no-ray", action="store_true", help="measure without Ray")
    ap.add_argument("-n", type=int, default=8, help="candidates per measured executor")
    ap.add_argument("--sleep", type=float, default=2.0, help="seconds the metric sleeps")
    ap.add_argument("--simulate", action="store_true", help="simulate 1, 2, 8 and 64 workers")
    ap.add_argument("--experiments", type=int, default=4000, help="experiments per simulation")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--loop", action="store_true", help="whole research sessions, 1 and 2 workers")
    ap.add_argument("--rounds", type=int, default=1, help="--loop: sessions per configuration")
    args = ap.parse_args()
    if not (args.measure or args.simulate or args.loop):
        ap.error("say --measure, --simulate, --loop or several")
    if args.simulate:
        simulate_table(args.experiments, args.seed)
    if args.measure:
        measure(args.n, args.sleep, not args.no_ray)
    if args.loop:
        loop(args.n, args.sleep, not args.no_ray, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
