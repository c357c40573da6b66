"""Trials as Ray actor calls: a cluster's GPUs measure, the driver keeps everything else.

Each worker is a Ray actor with a resource request (``num_cpus``, ``num_gpus``) holding a
standalone checkout in its node's temp folder. A trial ships as the parent commit plus
the candidate's diff (or a snapshot commit); the commits themselves travel once, as a git
bundle in Ray's object store (``workspace.make_bundle``), fetched by an actor only when it
lacks the parent. The actor runs ``run_trial`` (apply, evaluate in a fresh pytest process,
restore) and returns the ``TrialResult``; proposing, deciding, committing and journaling
stay on the driver.

Each checkout links the driver's untracked files (what git ignores there, a dataset under
``data/``; program.md's ``shared:``) from the same path on its node, as worktrees do: on the
driver's machine (``--autoresearch-ray local``) they are there, read-only to evaluations;
on a node without them the trial fails with the path and the program.md line that fixes it.

How many actors: ``workers``, or else what the cluster holds (one per ``num_gpus`` GPUs
where it has GPUs, else one per CPU): ``capacity``. Isolation (program.md's ``sandbox:`` and
``network:``) is built by each actor on its node, around its own checkout.

A lost worker or node (the actor's process died: ``RayActorError``) is replaced by a fresh
actor and the trial retried once; lost again, the trial comes back with ``error`` saying
why, which the loop records as a crash. ``shutdown`` kills the actors (their evaluations
die with them: PR_SET_PDEATHSIG) and, for ``address="local"``, stops the Ray instance it started.

Ray is imported only here, and only when a RayExecutor is made: ``pip install
'pytest-autoresearch[ray]'``. Every node needs git, Python and this package installed
(or a ``runtime_env`` that installs them).
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_autoresearch.executors.base import Trial, TrialResult, run_trial, worker_env
from pytest_autoresearch.executors.ray_leftovers import (
    CLONE_DIR,
    _mark_local_instance,
    _prune_clones,
    reap_local_leftovers,
)

__all__ = ["RayExecutor", "RayWorker", "import_ray", "reap_local_leftovers"]

POLL = 0.2  # seconds per ray.wait, so Ctrl-C and the caller's timeout are seen promptly
RETRIES = 1  # a trial whose worker was lost runs once more, then it is a crash


def import_ray() -> Any:
    """``import ray``, or an ImportError that says how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError(
            f"--autoresearch-ray needs Ray ({exc}); install it with: "
            "pip install 'pytest-autoresearch[ray]'"
        ) from None
    return ray


class RayWorker:
    """The actor: one checkout on its node, one trial at a time.

    ``isolation``: (sandbox, network) from program.md, or None for none (plain
    subprocesses). The launcher is built here, on the node, once the checkout exists: its
    git directory is the one evaluations must not write, and a launcher does not pickle.
    """

    def __init__(
        self,
        name: str,
        prefix: str,
        threads: int,
        evaluate_kwargs: Mapping[str, Any],
        isolation: tuple[bool, bool] | None = None,
        links: Any = None,
    ) -> None:
        self.name = name
        self.links = links  # workspace.Links: the driver's untracked files, linked if here
        self.prefix = prefix
        self.env = worker_env(name, threads=threads)
        self.evaluate_kwargs = dict(evaluate_kwargs)
        self.isolation = isolation
        self.launcher: Any = None
        self.folder = Path(tempfile.gettempdir()) / CLONE_DIR
        self.space: Any = None
        _prune_clones(self.folder)

    def pid(self) -> int:
        return os.getpid()

    def run(self, trial: Trial, bundle_box: list[Any]) -> TrialResult:
        """Measure ``trial``; ``bundle_box``: [ObjectRef of a bundle holding its commit]."""
        from pytest_autoresearch.vcs.workspace import MissingLinkError, Workspace

        commit = trial.snapshot_sha or trial.parent_sha
        try:
            if self.space is None:
                self.space = Workspace.clone(
                    _get(bundle_box[0]), self.folder, self.name, prefix=self.prefix,
                    links=self.links,
                )  # fmt: skip
            elif not self.space.has(commit):
                self.space.fetch(_get(bundle_box[0]))
        except MissingLinkError as exc:
            return TrialResult(
                trial.id, worker=self.name, host=_host(), error=_missing(exc.missing, self.links)
            )
        except Exception as exc:
            return TrialResult(
                trial.id, worker=self.name, host=_host(), error=f"could not check out: {exc}"
            )
        if self.isolation is not None and self.launcher is None:
            try:
                self.launcher = self._make_launcher()
            except Exception as exc:  # IsolationError: e.g. network: off where it cannot be
                return TrialResult(trial.id, worker=self.name, host=_host(), error=str(exc))
            self.evaluate_kwargs["launcher"] = self.launcher
        return run_trial(
            self.space, trial, worker=self.name, env=self.env, evaluate_kwargs=self.evaluate_kwargs
        )

    def describe(self) -> str:
        """The isolation line of this worker's evaluations (after its first trial)."""
        if self.launcher is None:
            return "isolation: none (plain subprocess)"
        return self.launcher.describe()

    def _make_launcher(self) -> Any:
        from pytest_autoresearch.sandbox.isolation import IsolationSpec, git_paths, make_launcher

        sandbox, network, caches = self.isolation or (True, True, ())
        readonly = git_paths(self.space.root)
        source = Path(self.links.source) if self.links is not None else None
        if source is not None and source.is_dir() and source not in self.space.path.parents:
            # The driver's checkout on this machine, where the links point: as worktree
            # evaluations see it (isolation.for_research(checkout_readonly=True)).
            readonly = (*readonly, source)
        # The read-only world with a fresh scratch, as in the session's own evaluations; the
        # caches (program.md's, absolute) written and kept on this node.
        kept = tuple(Path(c).expanduser().resolve() for c in caches)
        for path in kept:
            path.mkdir(parents=True, exist_ok=True)
        spec = IsolationSpec(
            sandbox=sandbox, network=network, readonly=readonly, world=sandbox, writable=kept
        )
        launcher = make_launcher(spec)
        launcher.caches = kept
        return launcher

    def close(self) -> None:
        if self.space is not None:
            self.space.remove()
            self.space = None


def _get(ref: Any) -> bytes:
    import ray

    return ray.get(ref)


def _missing(paths: list[str], links: Any) -> str:
    """Why a node cannot check out, and the program.md line that fixes it."""
    # A file of a mirrored folder stands for its folder: that is what the user downloaded.
    tops = list(
        dict.fromkeys(
            next((f + "/" for f in links.folders if p.startswith(f + "/")), p) for p in paths
        )
    )
    shown = ", ".join(tops[:3]) + (f" and {len(tops) - 3} more" if len(tops) > 3 else "")
    return (
        f"could not check out on {_host()}: {shown} (untracked in the driver's checkout) is "
        f"not on this node; Ray workers link the driver's untracked files from the same path "
        f"({links.source}), which works on the driver's machine or with a shared filesystem. "
        f"Put it there on every node, or write in program.md the untracked paths the metric "
        f'needs (only those must then be on every node): shared: ["{tops[0]}"] '
        "(shared: [] when it needs none)"
    )


def _host() -> str:
    import socket

    return socket.gethostname()


class RayExecutor:
    """``workers`` Ray actors measuring trials; see the module docstring."""

    def __init__(
        self,
        repo: Path | str,
        address: str = "local",
        workers: int | None = 2,
        *,
        num_cpus: float = 1,
        num_gpus: float = 0,
        gpu_optional: bool = False,
        evaluate_kwargs: Mapping[str, Any] | None = None,
        runtime_env: Mapping[str, Any] | None = None,
        retries: int = RETRIES,
        sandbox: bool | None = None,
        network: bool = True,
        shared: Sequence[str] | None = None,
        link_ignored: bool = True,
        is_editable: Callable[[str], bool] | None = None,
        caches: Sequence[str] = (),
    ) -> None:
        """``address``: "local" (a throwaway instance on this machine), "auto" (the cluster
        this machine is part of) or "ray://host:10001". An instance already initialised in
        this process is used as it is. ``evaluate_kwargs`` must pickle (no launcher object:
        isolation is set up on the worker's node).

        ``workers`` None: what the cluster holds, ``GPUs // num_gpus`` where it has GPUs,
        else one per ``num_cpus`` CPUs (at least 1). ``gpu_optional``: on a cluster without
        GPUs the actors ask for none (instead of waiting forever for one). ``sandbox``,
        ``network``: program.md's isolation, built on each node (``RayWorker``); ``sandbox``
        None: plain subprocesses.

        The driver's untracked files (``link_ignored``: what git ignores; ``shared``:
        program.md's paths; never what ``is_editable`` matches: ``worktree.plan_links``)
        are linked into each checkout from the same path on the actor's node. Missing
        there, a trial fails saying so; with ``shared`` given (not None), only those paths
        must be there and the ignored files are linked where they are.
        """
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be 1 or more, not {workers}")
        ray = import_ray()
        self.ray = ray
        self.repo = Path(repo).resolve()
        prefix = _git_prefix(self.repo)  # before ray.init: a bad repo leaves no instance
        links = _plan(self.repo, shared, link_ignored, is_editable)
        self.notes = list(links.skipped)
        self.retries = retries
        self._owns = False
        self._marker: Path | None = None
        self.reaped = reap_local_leftovers()  # a local instance of a driver killed with -9
        if not ray.is_initialized():
            self._init(address, workers, num_cpus, num_gpus, gpu_optional, runtime_env)
        workers, num_gpus = self._size(workers, num_cpus, num_gpus, gpu_optional)
        self.capacity = workers
        self.num_gpus = num_gpus
        threads = max(1, int(num_cpus))
        # No restarts by Ray: a lost actor is replaced by a fresh one (calls to an actor that
        # is being created wait for it; calls to one being restarted fail as "unavailable").
        self._actor_class = ray.remote(
            num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=0, max_task_retries=0
        )(RayWorker)
        isolation = None if sandbox is None else (sandbox, network, tuple(caches))
        self._actor_args = (prefix, threads, dict(evaluate_kwargs or {}), isolation, links)
        self.names = [f"r{i}" for i in range(workers)]
        self.actors = [self._actor_class.remote(name, *self._actor_args) for name in self.names]
        self._idle: deque[int] = deque(range(workers))
        self._queue: deque[tuple[Trial, int, list[str]]] = deque()
        self._running: dict[Any, tuple[int, Trial, int, list[str], float]] = {}
        self._bundles: dict[str, Any] = {}
        self._closed = False

    # -- the Executor protocol ------------------------------------------------------------

    def submit(self, trial: Trial) -> None:
        if self._closed:
            raise RuntimeError("the executor is shut down; make a new one")
        self._queue.append((trial, 1, []))
        self._dispatch()

    def as_completed(self, timeout: float | None = None) -> Iterator[TrialResult]:
        waited = 0.0
        while (self._running or self._queue) and not self._closed:
            self._dispatch()
            ready, _ = self.ray.wait(list(self._running), num_returns=1, timeout=POLL)
            if not ready:
                waited += POLL
                if timeout is not None and waited >= timeout:
                    return
                continue
            waited = 0.0
            result = self._collect(ready[0])
            if result is not None:
                yield result

    def shutdown(self) -> None:
        """Kill the actors (and their evaluations); stop a local instance we started."""
        if self._closed:
            return
        self._closed = True
        self._queue.clear()
        closing = [actor.close.remote() for actor in self.actors]
        with contextlib.suppress(Exception):  # a busy or dead actor is killed below anyway
            self.ray.wait(closing, num_returns=len(closing), timeout=2.0)
        for actor in self.actors:
            with contextlib.suppress(Exception):
                self.ray.kill(actor, no_restart=True)
        self._running.clear()
        self._bundles.clear()
        if self._owns:
            self.ray.shutdown()
            if self._marker is not None:
                self._marker.unlink(missing_ok=True)

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # -- internals ------------------------------------------------------------------------

    def _init(
        self,
        address: str,
        workers: int | None,
        num_cpus: float,
        num_gpus: float,
        gpu_optional: bool,
        runtime_env: Mapping[str, Any] | None,
    ) -> None:
        """Start a local instance (sized for the workers) or connect to ``address``."""
        kwargs: dict[str, Any] = {
            "include_dashboard": False,
            "logging_level": logging.WARNING,
            "log_to_driver": False,  # evaluations' output is in their log tails
        }
        if runtime_env:
            kwargs["runtime_env"] = dict(runtime_env)
        if address == "local":
            # Sized for the workers asked for; none asked for: the whole machine.
            if workers is not None:
                kwargs["num_cpus"] = max(1, int(round(workers * num_cpus)))
            if workers is not None and not gpu_optional:
                kwargs["num_gpus"] = int(round(workers * num_gpus))
            self._owns = True
        else:
            kwargs["address"] = address
        try:
            self.ray.init(**kwargs)
            if self._owns:
                self._marker = _mark_local_instance(self.ray)
        except ConnectionError as exc:
            raise ConnectionError(
                f"cannot reach the Ray cluster at {address!r} ({exc}); start it (ray start "
                "--head) or use --autoresearch-ray local"
            ) from None

    def _size(
        self, workers: int | None, num_cpus: float, num_gpus: float, gpu_optional: bool
    ) -> tuple[int, float]:
        """(workers, GPUs per worker) from what was asked and what the cluster holds."""
        ray = self.ray
        cluster_gpus = ray.cluster_resources().get("GPU", 0) if gpu_optional or not workers else 0
        if gpu_optional and not cluster_gpus:
            num_gpus = 0
        if workers is None:
            if cluster_gpus and num_gpus:
                workers = max(1, int(cluster_gpus // num_gpus))
            else:
                cpus = ray.cluster_resources().get("CPU", 1)
                workers = max(1, int(cpus // max(num_cpus, 1e-9)))
        if self._owns and cluster_gpus and workers * num_gpus > cluster_gpus:
            ray.shutdown()  # this machine will not grow: the extra actors would wait forever
            raise ValueError(
                f"{workers} workers with {num_gpus:g} GPU(s) each need {workers * num_gpus:g} "
                f"GPUs, and this machine has {cluster_gpus:g}; use --autoresearch-workers "
                f"{max(1, int(cluster_gpus // num_gpus))} or set gpus_per_worker: in program.md"
            )
        return workers, num_gpus

    def _bundle(self, commit: str) -> Any:
        ref = self._bundles.get(commit)
        if ref is None:
            from pytest_autoresearch.vcs.workspace import make_bundle

            ref = self.ray.put(make_bundle(self.repo, commit))
            self._bundles = {commit: ref}  # the newest parent only: older ones are done with
        return ref

    def _dispatch(self) -> None:
        while self._idle and self._queue:
            trial, attempt, notes = self._queue.popleft()
            i = self._idle.popleft()
            box = [self._bundle(trial.snapshot_sha or trial.parent_sha)]
            ref = self.actors[i].run.remote(trial, box)
            self._running[ref] = (i, trial, attempt, notes, time.monotonic())

    def _collect(self, ref: Any) -> TrialResult | None:
        i, trial, attempt, notes, started = self._running.pop(ref)
        self._idle.append(i)
        try:
            result: TrialResult = self.ray.get(ref)
        except self.ray.exceptions.RayActorError as exc:
            why = f"worker {self.names[i]} was lost ({_first_line(exc)})"
            with contextlib.suppress(Exception):
                self.ray.kill(self.actors[i], no_restart=True)
            self.actors[i] = self._actor_class.remote(self.names[i], *self._actor_args)
            if attempt <= self.retries:
                self._queue.appendleft((trial, attempt + 1, [*notes, why + ", retried"]))
                self._dispatch()
                return None
            return TrialResult(
                trial.id, worker=self.names[i], duration=time.monotonic() - started,
                error=f"{why} {attempt} times; giving up", attempts=attempt, notes=notes,
            )  # fmt: skip
        except self.ray.exceptions.RayError as exc:
            return TrialResult(
                trial.id, worker=self.names[i], duration=time.monotonic() - started,
                error=f"Ray failed to run it: {_first_line(exc)}", attempts=attempt, notes=notes,
            )  # fmt: skip
        result.attempts, result.notes = attempt, [*notes, *result.notes]
        self._dispatch()
        return result


def _plan(
    repo: Path,
    shared: Sequence[str] | None,
    link_ignored: bool,
    is_editable: Callable[[str], bool] | None,
) -> Any:
    from pytest_autoresearch.executors.worktree import plan_links

    links = plan_links(repo, shared=shared or (), ignored=link_ignored, is_editable=is_editable)
    return links if shared is None else links.requiring(links.shared)


def _git_prefix(repo: Path) -> str:
    out = subprocess.run(
        ["git", "rev-parse", "--show-prefix"], cwd=repo, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise ValueError(f"{repo} is not inside a git repository: {out.stderr.strip()}")
    return out.stdout.strip().rstrip("/")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
