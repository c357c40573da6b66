"""K workers on this machine, each with its own git worktree and one evaluation at a time.

Each worker is a thread that owns a ``workspace.Workspace`` under the folder the caller
gives (outside the work tree and the record: docs/parallel.md says why) and runs
``run_trial`` there: the evaluation itself is a subprocess, so the threads only wait.
GPUs are split one per worker by default (``gpus_per_worker``), pinned with
CUDA_VISIBLE_DEVICES; on CPU the cores are split between the workers (OMP_NUM_THREADS and
``AUTORESEARCH_NUM_THREADS`` as a hint).

Each worktree holds what the user's checkout holds that git does not: the ignored files
(a dataset under ``data/``) and program.md's ``shared:`` paths are linked in from it
(``plan_links``), read-only to evaluations (the launcher mounts the checkout read-only).

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
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_autoresearch.executors.base import (
    EvaluateFn,
    Trial,
    TrialResult,
    run_trial,
    worker_env,
)
from pytest_autoresearch.vcs.workspace import Links, Workspace, ls_files, prune_stale

__all__ = ["WorktreeExecutor", "detect_gpus", "plan_devices", "plan_links"]

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
        link_ignored: bool = True,
        is_editable: Callable[[str], bool] | None = None,
    ) -> None:
        """``repo``: the rootdir; ``folder``: where the worktrees go (created, pruned).

        Each worktree links the files git ignores in ``repo`` (``link_ignored``) and the
        ``shared`` paths (program.md's), as ``plan_links`` says; nothing ``is_editable``
        matches. What was left out, and why, is in ``notes`` (one line each).

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
        links = plan_links(repo, shared=shared, ignored=link_ignored, is_editable=is_editable)
        self.links = links
        self.notes = list(links.skipped)
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
                self.spaces.append(Workspace.create(repo, self.folder, name, sha, links=links))
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


# -- the user's untracked files in the workers --------------------------------------------

MIRROR_MAX = 1000  # entries: an ignored folder with more is linked whole (a dataset)
# Never linked: git's and the loop's own files, bytecode, and the caches tools write as they
# run (read-only, they would fail the run; absent, the tool makes a fresh one).
_OWN = frozenset({".git", ".autoresearch", "__pycache__", ".pytest_cache", ".mypy_cache"})
_CACHES = frozenset({".ruff_cache", ".hypothesis", ".tox", ".nox", ".ipynb_checkpoints"})


def plan_links(
    root: Path | str,
    *,
    shared: Sequence[str] = (),
    ignored: bool = True,
    is_editable: Callable[[str], bool] | None = None,
) -> Links:
    """What of the user's checkout at ``root`` (the rootdir) workers link to; all required.

    ``ignored``: the files git ignores there, except the record, bytecode, tools' caches,
    virtualenvs and nested repositories; a folder of at most MIRROR_MAX entries is mirrored
    (its entries linked), a bigger one linked whole. ``shared``: program.md's untracked
    paths, each linked whole. ``is_editable``: nothing the editable globs match is linked,
    since a proposer editing it in a worker would write into the user's checkout.
    """
    root = Path(root).resolve()
    skipped: list[str] = []
    paths, folders = [], []
    if ignored:
        listed = ls_files(root, "-o", "-i", "--exclude-standard", "--directory")
        for entry in sorted(e.rstrip("/") for e in listed):
            kept = _linkable(root, entry, skipped)
            if kept and (root / entry).is_dir() and not (root / entry).is_symlink():
                inside = _first_names(root / entry, MIRROR_MAX + 1)
                if len(inside) <= MIRROR_MAX:
                    folders.append(entry)
                    paths += [f"{entry}/{n}" for n in inside if _linkable(root, f"{entry}/{n}")]
                    continue
            if kept:
                paths.append(entry)
    shared = [s.strip("/") for s in shared]
    paths = [p for p in paths if not any(p == s or p.startswith(s + "/") for s in shared)]
    folders = [f for f in folders if not any(f == s or f.startswith(s + "/") for s in shared)]
    if is_editable is not None:  # what program.md shares by name is checked when linked
        paths = _not_editable(root, paths, is_editable, skipped)
    paths = sorted({*paths, *shared})
    return Links(
        str(root), tuple(paths), tuple(folders), tuple(shared), tuple(paths), tuple(skipped)
    )


def _first_names(folder: Path, most: int) -> list[str]:
    """Up to ``most`` names in ``folder``, sorted (a dataset folder may hold millions)."""
    with os.scandir(folder) as it:
        return sorted(entry.name for entry, _ in zip(it, range(most), strict=False))


def _linkable(root: Path, rel: str, skipped: list[str] | None = None) -> bool:
    """Is the ignored ``rel`` a file or folder a worker may link to? (Says why not.)"""
    parts = rel.split("/")
    path = root / rel
    if _OWN.intersection(parts) or _CACHES.intersection(parts) or rel.endswith((".pyc", ".pyo")):
        return False  # ours, git's, the interpreter's or a tool's: never what a metric reads
    if (path / "CACHEDIR.TAG").exists() or (path / "pyvenv.cfg").exists():
        return False  # a cache that says so, a virtualenv: the worker's Python is the driver's
    why = ""
    if (path / "conda-meta").is_dir():
        why = "a conda environment"
    elif os.path.lexists(path / ".git"):
        why = "a repository of its own"
    elif not (path.is_symlink() or path.is_file() or path.is_dir()):
        why = "not a file or folder"
    if why and skipped is not None:
        skipped.append(f"{rel}: not linked into the workers ({why})")
    return not why


def _not_editable(
    root: Path, paths: list[str], is_editable: Callable[[str], bool], skipped: list[str]
) -> list[str]:
    """``paths`` without those that hold a file the editable globs match (one line each)."""
    folders = [p for p in paths if (root / p).is_dir()]
    # -o without exclude rules: every untracked file, ignored ones too.
    inside = ls_files(root, "-o", "--", *folders) if folders else []
    linked, hits = set(paths), {}
    for rel in [*paths, *inside]:
        if not is_editable(rel):
            continue
        parts = rel.split("/")  # the linked path holding it: itself or a parent
        top = next(("/".join(parts[:i]) for i in range(len(parts), 0, -1)
                    if "/".join(parts[:i]) in linked), None)  # fmt: skip
        if top is not None:
            hits.setdefault(top, rel)
    for top, rel in sorted(hits.items()):
        skipped.append(
            f"{top}: not linked into the workers ({rel} matches the editable globs, and an "
            "edit there would write into your checkout)"
        )
    return [p for p in paths if p not in hits]
