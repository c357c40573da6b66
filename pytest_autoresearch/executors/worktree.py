"""K workers on this machine, each with its own git worktree and one evaluation at a time.

Each worker is a thread that owns a ``workspace.Workspace`` under the folder the caller
gives (outside the work tree and the record: docs/parallel.md says why) and runs
``run_trial`` there: the evaluation itself is a subprocess, so the threads only wait.
GPUs are split one per worker by default (``gpus_per_worker``), pinned with
CUDA_VISIBLE_DEVICES; on CPU the cores are split between the workers (OMP_NUM_THREADS and
``AUTORESEARCH_NUM_THREADS`` as a hint).

Nothing is left behind: ``shutdown`` kills the evaluations still running (their process
groups), joins the threads and removes the worktrees; worktrees of a driver killed with
-9 are pruned when the next executor starts on the same folder (``workspace.prune_stale``).
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_autoresearch.executors.base import (
    EvaluateFn,
    Trial,
    TrialResult,
    run_trial,
    worker_env,
)
from pytest_autoresearch.vcs.workspace import Workspace, prune_stale

__all__ = ["WorktreeExecutor", "detect_gpus", "plan_devices"]

POLL = 0.2  # seconds: how often a wait wakes up, so Ctrl-C is seen promptly


def detect_gpus(env: Mapping[str, str] | None = None) -> list[str]:
    """GPU ids this process may use: CUDA_VISIBLE_DEVICES if set, else what nvidia-smi lists."""
    env = os.environ if env is None else env
    given = env.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        return [d.strip() for d in given.split(",") if d.strip() and d.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip().isdigit()]


def plan_devices(
    workers: int, gpus: Sequence[str], gpus_per_worker: int, cpus: int
) -> list[tuple[list[str] | None, int]]:
    """(GPU ids or None, CPU threads) for each worker; ValueError says how to fit.

    With GPUs each worker gets ``gpus_per_worker`` of its own (0: the GPUs are hidden);
    without any, GPUs are left alone. The CPU cores are split evenly, at least one each.
    """
    if workers < 1:
        raise ValueError(f"workers must be 1 or more, not {workers}")
    if gpus_per_worker < 0:
        raise ValueError(f"gpus_per_worker must be 0 or more, not {gpus_per_worker}")
    threads = max(1, cpus // workers)
    if not gpus:
        return [(None, threads)] * workers
    need = workers * gpus_per_worker
    if need > len(gpus):
        fit = len(gpus) // gpus_per_worker if gpus_per_worker else workers
        raise ValueError(
            f"{workers} workers with {gpus_per_worker} GPU(s) each need {need} GPUs, and "
            f"{len(gpus)} are visible ({','.join(gpus)}); use --autoresearch-workers "
            f"{max(1, fit)} or set gpus_per_worker: in program.md"
        )
    return [
        (list(gpus[i * gpus_per_worker : (i + 1) * gpus_per_worker]), threads)
        for i in range(workers)
    ]


def _usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):  # a container or taskset may allow fewer than exist
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class _TrackingLauncher:
    """Wraps the evaluation's launcher so that shutdown can kill what a worker started."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = getattr(inner, "name", "plain")
        self.procs: list[subprocess.Popen] = []
        self.lock = threading.Lock()

    def describe(self) -> str:
        return self.inner.describe()

    def popen(self, cmd: list[str], **kwargs: Any) -> subprocess.Popen:
        proc = self.inner.popen(cmd, **kwargs)
        with self.lock:
            self.procs = [p for p in self.procs if p.poll() is None] + [proc]
        return proc

    def kill(self) -> None:
        with self.lock:
            procs = list(self.procs)
        for proc in procs:
            if proc.poll() is None:
                # Launchers start a new session: the pid is the group's id.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)


class WorktreeExecutor:
    """A pool of worktree workers on this machine; see the module docstring."""

    kind = "worktree"

    def __init__(
        self,
        repo: Path | str,
        folder: Path | str,
        workers: int = 2,
        *,
        sha: str = "HEAD",
        gpus_per_worker: int = 1,
        gpus: Sequence[str] | None = None,
        cpus: int | None = None,
        evaluate_fn: EvaluateFn | None = None,
        evaluate_kwargs: Mapping[str, Any] | None = None,
        shared: Sequence[str] = (),
    ) -> None:
        """``repo``: the rootdir; ``folder``: where the worktrees go (created, pruned).

        ``gpus``: ids to share out (None: ``detect_gpus()``); ``cpus``: cores to share out
        (None: the cores this process may use). ``evaluate_kwargs`` go to every evaluation
        (``launcher=``, ``tmp_root=``...); with the real ``evaluate`` the launcher is wrapped
        so that ``shutdown`` can kill running evaluations.
        """
        self.folder = Path(folder)
        self.capacity = workers
        gpus = detect_gpus() if gpus is None else list(gpus)
        plan = plan_devices(workers, gpus, gpus_per_worker, cpus or _usable_cpus())
        self.evaluate_fn = evaluate_fn
        self._kwargs = dict(evaluate_kwargs or {})
        self._pending: queue.Queue[Trial | None] = queue.Queue()
        self._results: queue.Queue[TrialResult] = queue.Queue()
        self._lock = threading.Lock()
        self._outstanding = 0
        self._stop = threading.Event()
        self._closed = False
        self.pruned = prune_stale(repo, self.folder)
        self.names = [f"w{i}" for i in range(workers)]
        self.envs = [
            worker_env(n, threads=t, gpus=g) for n, (g, t) in zip(self.names, plan, strict=True)
        ]
        self.running: dict[str, str | None] = dict.fromkeys(self.names)  # worker -> trial id
        self.spaces: list[Workspace] = []
        self._launchers: list[_TrackingLauncher] = []
        self._threads: list[threading.Thread] = []
        try:
            for name in self.names:  # one after another: git worktree add takes a lock
                self.spaces.append(Workspace.create(repo, self.folder, name, sha, shared=shared))
        except BaseException:
            self._remove_spaces()
            raise
        for i, name in enumerate(self.names):
            thread = threading.Thread(
                target=self._work, args=(i,), name=f"autoresearch-{name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    # -- the Executor protocol ------------------------------------------------------------

    def submit(self, trial: Trial) -> None:
        if self._closed:
            raise RuntimeError("the executor is shut down; make a new one")
        with self._lock:
            self._outstanding += 1
        self._pending.put(trial)

    def as_completed(self, timeout: float | None = None) -> Iterator[TrialResult]:
        waited = 0.0
        while True:
            with self._lock:
                if self._outstanding == 0 or self._closed:
                    return
            try:
                result = self._results.get(timeout=POLL)
            except queue.Empty:
                waited += POLL
                if timeout is not None and waited >= timeout:
                    return
                continue
            waited = 0.0
            with self._lock:
                self._outstanding -= 1
            yield result

    def shutdown(self) -> None:
        """Kill running evaluations, stop the workers, remove the worktrees."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        while True:  # trials not started yet are dropped
            try:
                self._pending.get_nowait()
            except queue.Empty:
                break
        for _ in self._threads:
            self._pending.put(None)
        for attempt in range(2):
            # Twice: a worker may have started its evaluation just after the first kill.
            with self._lock:
                launchers = list(self._launchers)
            for launcher in launchers:
                launcher.kill()
            for thread in self._threads:
                thread.join(timeout=5 if attempt == 0 else 30)
        self._remove_spaces()

    def __enter__(self) -> WorktreeExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # -- the workers ----------------------------------------------------------------------

    def _evaluate_kwargs(self) -> dict[str, Any]:
        kwargs = dict(self._kwargs)
        if self.evaluate_fn is None or "launcher" in kwargs:
            inner = kwargs.get("launcher")
            if inner is None:
                from pytest_autoresearch.sandbox.isolation import plain_launcher

                inner = plain_launcher()
            launcher = _TrackingLauncher(inner)
            with self._lock:
                self._launchers.append(launcher)
            kwargs["launcher"] = launcher
        return kwargs

    def _work(self, i: int) -> None:
        name, space, env = self.names[i], self.spaces[i], self.envs[i]
        kwargs = self._evaluate_kwargs()
        while True:
            trial = self._pending.get()
            if trial is None or self._stop.is_set():
                return
            self.running[name] = trial.id
            try:
                result = run_trial(
                    space, trial, self.evaluate_fn, worker=name, env=env,
                    evaluate_kwargs=kwargs, should_stop=self._stop.is_set,
                )  # fmt: skip
            except BaseException as exc:  # run_trial catches; this is a bug, not a lost trial
                result = TrialResult(trial.id, worker=name, error=f"worker {name} failed: {exc}")
            finally:
                self.running[name] = None
            self._results.put(result)

    def _remove_spaces(self) -> None:
        for space in self.spaces:
            space.remove()
        self.spaces = []
        with contextlib.suppress(OSError):
            self.folder.rmdir()  # the run's folder, once empty (another run may still use it)
