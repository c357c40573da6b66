"""Launchers: how an evaluation's process is started, and what it can reach from there.

Experiment code is hostile (DESIGN.md, threat model). On Linux each evaluation runs in its
own PID namespace with a fresh ``/proc`` (no ancestor, so no ``/proc/<loop>/environ`` with
the proposer's key), in its own mount namespace where the ``readonly`` paths (the
repository's git dirs) are read-only and the ``hidden`` paths (the record) are covered by an
empty tmpfs, and, with ``network: off``, in its own network namespace with only loopback.
Nothing of it outlives the loop: the namespace's init dies with ``unshare`` (``--kill-child``),
``unshare`` dies with the loop (PR_SET_PDEATHSIG), and the kernel kills every process left in
a PID namespace when its init exits.

With ``world`` (what the research session asks for) everything outside the working
directory, a fresh scratch (HOME, TMPDIR) and the ``writable`` paths (program.md's ``cache:``)
is read-only as well: nothing one evaluation writes there reaches a later one.

It uses ``unshare`` from util-linux and a small bootstrap (``boot.BOOT``, run by the
namespace's init) that does the mounts, drops the capabilities that could undo them, then
runs pytest as its only child and exits with it. Where that does not work (macOS, a
container that forbids namespaces) the plain launcher runs the command as it is and
``describe()`` says so.

API::

    IsolationSpec(sandbox=True, network=True, readonly=(), hidden=(), world=False, writable=())
    IsolationError                       a requested isolation cannot be had (says what to do)
    make_launcher(spec) -> Launcher      probes once per process and spec what works here
    plain_launcher() -> Launcher         no isolation (the default of evaluate())
    Launcher.name                        "namespaces" | "plain"
    Launcher.describe() -> str           one line for the start of a session
    Launcher.popen(cmd, *, cwd, env, stdout, pass_fds=()) -> subprocess.Popen
    git_paths(root) -> tuple[Path, ...]  the repository's git dir(s): the usual ``readonly``
    for_research(root, record_dir, sandbox=, network=, checkout_readonly=, caches=,
                 world_readonly=True) -> Launcher   what the session uses

See docs/isolation.md for what is isolated, how, and what remains possible.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Protocol

from pytest_autoresearch.sandbox.boot import BOOT, PSEUDO_FS
from pytest_autoresearch.sandbox.scratch import home_links

DOCS = "docs/isolation.md"
PROBE_TIMEOUT = 10.0


@dataclass(frozen=True)
class IsolationSpec:
    """What an evaluation should be kept from."""

    sandbox: bool = True  # program.md `sandbox: off` opts out
    network: bool = True  # program.md `network: off` blocks it (loopback only)
    readonly: tuple[Path, ...] = ()  # e.g. the repository's git dir(s): read-only
    hidden: tuple[Path, ...] = ()  # e.g. the record dir .autoresearch/<tag>: not visible
    # Everything but the working directory, the scratch and ``writable`` read-only (boot.py).
    world: bool = False
    writable: tuple[Path, ...] = ()  # program.md's cache: paths, written and kept


class IsolationError(Exception):
    """A requested isolation cannot be had here; the message says what to do."""


class Launcher(Protocol):
    """Starts an evaluation's command; ``describe()`` is the line printed at session start."""

    name: str

    def describe(self) -> str: ...

    def popen(
        self,
        cmd: list[str],
        *,
        cwd: Path,
        env: dict[str, str],
        stdout: int | IO,
        pass_fds: tuple[int, ...] = (),
    ) -> subprocess.Popen: ...


# -- the launchers ----------------------------------------------------------------------------


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that has the child SIGKILLed when this process dies (Linux), else None."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def _popen(
    cmd: list[str], cwd: Path, env: dict[str, str], stdout: int | IO, pass_fds: tuple[int, ...]
) -> subprocess.Popen:
    return subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.STDOUT,
        pass_fds=pass_fds,
        start_new_session=True,  # its own process group: the timeout kill takes all of it
        preexec_fn=_die_with_parent(),
    )


class PlainLauncher:
    """The command as it is, in its own process group; isolation only by what evaluate strips."""

    name = "plain"
    world_readonly = False  # True: only the checkout, the scratch and the caches are writable

    def __init__(self, line: str = "isolation: none (plain subprocess)") -> None:
        self._line = line
        self.caches: tuple[Path, ...] = ()  # program.md's cache:, verified around evaluations

    def describe(self) -> str:
        return self._line

    def command(self, cmd: list[str]) -> list[str]:
        """What is run for ``cmd``: here, ``cmd`` itself."""
        return list(cmd)

    def popen(
        self,
        cmd: list[str],
        *,
        cwd: Path,
        env: dict[str, str],
        stdout: int | IO,
        pass_fds: tuple[int, ...] = (),
    ) -> subprocess.Popen:
        return _popen(self.command(list(cmd)), Path(cwd), env, stdout, tuple(pass_fds))


class NamespaceLauncher(PlainLauncher):
    """``unshare`` + the bootstrap: own PID/mount (and maybe network) namespace per evaluation."""

    name = "namespaces"

    def __init__(self, prefix: list[str], boot_spec: dict, line: str) -> None:
        super().__init__(line)
        self._prefix = prefix  # unshare and its flags, up to "--"
        self._boot_spec = boot_spec
        self.world_readonly = bool(boot_spec.get("world"))

    def command(self, cmd: list[str], *, probe: bool = False) -> list[str]:
        spec = dict(self._boot_spec, probe=probe)
        boot = [sys.executable, "-I", "-S", "-c", BOOT, json.dumps(spec)]
        return [*self._prefix, *boot, *cmd]


def plain_launcher() -> PlainLauncher:
    """No isolation: what ``evaluate()`` uses when it is given no launcher."""
    return PlainLauncher()


# -- choosing one -----------------------------------------------------------------------------

_CACHE: dict[IsolationSpec, PlainLauncher | NamespaceLauncher] = {}

# Capabilities that could undo the mounts or reach around them: SYS_ADMIN (umount, remount
# rw, setns), DAC_READ_SEARCH (open_by_handle_at), SYS_MODULE, SYS_RAWIO, SYS_PTRACE,
# MKNOD, SYS_BOOT, NET_ADMIN (after loopback is up), PERFMON, BPF, CHECKPOINT_RESTORE, and
# SETPCAP last (it is what lets the bounding set shrink).
DROP_CAPS = (21, 2, 16, 17, 19, 27, 22, 12, 38, 39, 40, 8)


def make_launcher(spec: IsolationSpec) -> PlainLauncher | NamespaceLauncher:
    """The strongest launcher that honours ``spec`` here; probed once per process and spec."""
    found = _CACHE.get(spec)
    if found is None:
        found = _CACHE[spec] = _choose(spec)
    return found


def _choose(spec: IsolationSpec) -> PlainLauncher | NamespaceLauncher:
    launcher = _choose_kind(spec)
    if spec.writable and launcher.name == "plain":
        shown = ", ".join(_short(p) for p in spec.writable)
        launcher._line += f"; only the caches {shown} are verified around every evaluation"
    return launcher


def _choose_kind(spec: IsolationSpec) -> PlainLauncher | NamespaceLauncher:
    if not spec.sandbox and spec.network:
        return PlainLauncher(
            "isolation: off (sandbox: off in program.md) - experiment code can read this "
            f"process's environment through /proc, write .git and the record; see {DOCS}"
        )
    why_not = _namespaces_unavailable()
    launcher, available = None, why_not is None
    if available:
        launcher, why_not = _probe(spec)
    if launcher is None and available and spec.world and spec.sandbox:
        # A mount the sweep cannot make read-only (an odd container): keep the rest.
        launcher, _ = _probe(replace(spec, world=False))
        if launcher is not None:
            launcher._line += (
                f"; NOT read-only outside the checkout ({why_not}): only the caches are "
                "verified, see " + DOCS
            )
    if launcher is not None:
        return launcher
    if not spec.network:
        raise IsolationError(
            f"program.md says network: off, but this system cannot block it ({why_not}); "
            "remove network: off, or run where user namespaces are allowed (Linux; see "
            f"{DOCS})"
        )
    return PlainLauncher(
        f"isolation: NONE on this system ({why_not}) - experiment code can read this "
        f"process's environment through /proc, write .git, the record, $HOME and /tmp "
        f"(it gets a fresh HOME/TMPDIR, but nothing stops a write elsewhere), and outlive a "
        f"killed run; see {DOCS}"
    )


def _namespaces_unavailable() -> str | None:
    if sys.platform == "darwin":
        return "macOS has no namespaces"
    if not sys.platform.startswith("linux"):
        return f"{sys.platform} has no Linux namespaces"
    if shutil.which("unshare") is None:
        return "util-linux's unshare is not installed"
    return None


def _attempts(spec: IsolationSpec) -> list[tuple[list[str], bool]]:
    """unshare command lines to try, best first: (prefix, in a user namespace)."""
    unshare = shutil.which("unshare") or "unshare"
    inner = ["--pid", "--fork", "--kill-child", "--mount", "--mount-proc"] if spec.sandbox else []
    if spec.sandbox and spec.world:
        inner.append("--ipc")  # its own SysV IPC and POSIX queues: nothing kept between runs
    if not spec.network:
        inner.append("--net")
    if not spec.sandbox:
        inner += ["--fork", "--kill-child"]
    # A user namespace first, also for root: capabilities inside it count for nothing outside
    # it (open_by_handle_at, raw devices); plain root without one is the fallback.
    out = [([unshare, "--user", "--map-root-user", *inner, "--"], True)]
    if os.geteuid() == 0:
        out.append(([unshare, *inner, "--"], False))
    return out


def _probe(spec: IsolationSpec) -> tuple[NamespaceLauncher | None, str]:
    boot_spec = {
        "readonly": [str(Path(p).absolute()) for p in spec.readonly],
        "hidden": [str(Path(p).absolute()) for p in spec.hidden],
        "lo": not spec.network,
        "pid": spec.sandbox,
        "drop": list(DROP_CAPS),
        "world": spec.world,
        "writable": [str(Path(p).resolve()) for p in spec.writable],
        "links": home_links(spec.writable),
        "pseudo": PSEUDO_FS.split(),
    }
    why_not = "unshare failed"
    for prefix, userns in _attempts(spec):
        launcher = NamespaceLauncher(prefix, boot_spec, _line(spec, userns))
        try:
            done = subprocess.run(
                launcher.command([], probe=True),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=PROBE_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            why_not = f"unshare failed: {exc}"
            continue
        if done.returncode == 0:
            return launcher, ""
        lines = [ln for ln in (done.stderr or done.stdout).strip().splitlines() if ln.strip()]
        lines = [ln for ln in lines if not ln.startswith("Try '")] or lines  # usage hint
        why_not = lines[0].strip() if lines else f"unshare exited with {done.returncode}"
    return None, why_not


def _short(path: Path) -> str:
    try:
        return str(Path(path).absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _line(spec: IsolationSpec, userns: bool) -> str:
    parts = []
    if spec.sandbox:
        how = "unshare" + (", user namespace" if userns else "")
        parts.append(f"own PID and mount namespace ({how})")
        if spec.readonly:
            parts.append(", ".join(_short(p) for p in spec.readonly) + " read-only")
        if spec.hidden:
            parts.append(", ".join(_short(p) for p in spec.hidden) + " hidden")
        if spec.world:
            caches = "".join(f", {_short(p)}" for p in spec.writable)
            parts.append(f"the rest read-only but the checkout{caches} and a fresh HOME/TMPDIR")
    else:
        parts.append("sandbox off (program.md)")
    if spec.network:
        parts.append("network allowed")
    else:
        parts.append("network blocked (own network namespace, loopback only)")
    return "isolation: " + "; ".join(parts)


def for_research(
    root: Path,
    record_dir: Path,
    *,
    sandbox: bool = True,
    network: bool = True,
    checkout_readonly: bool = False,
    caches: Sequence[Path | str] = (),
    world_readonly: bool = True,
) -> PlainLauncher | NamespaceLauncher:
    """The research session's launcher: git dirs read-only, the record hidden.

    ``checkout_readonly``: evaluations run elsewhere (workers' worktrees), so the user's
    whole work tree is read-only to them too (the record stays hidden inside it).
    ``world_readonly``: everything outside the evaluation's checkout is read-only but a
    fresh scratch (HOME, TMPDIR) and ``caches`` (program.md's ``cache:``, absolute or
    relative to ``root``), which stay writable and are verified around every evaluation
    (``caches.CacheGuard``); where there are no namespaces, only that verification is left.
    """
    Path(record_dir).mkdir(parents=True, exist_ok=True)  # hidden only if it exists
    readonly = git_paths(root)
    if checkout_readonly:
        top = _work_tree(root)
        if top is not None and top not in readonly:
            readonly = (top, *readonly)
    kept = tuple(dict.fromkeys((Path(root) / Path(p).expanduser()).resolve() for p in caches))
    for path in kept:
        if not path.exists():  # a cache filled by the first evaluation: it must be there to bind
            path.mkdir(parents=True, exist_ok=True)
    spec = IsolationSpec(
        sandbox=sandbox,
        network=network,
        readonly=readonly,
        hidden=(Path(record_dir),),
        world=world_readonly and sandbox,
        writable=kept,
    )
    launcher = make_launcher(spec)
    launcher.caches = kept
    return launcher


def _work_tree(root: Path) -> Path | None:
    done = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, text=True
    )
    return Path(done.stdout.strip()).resolve() if done.returncode == 0 else None


def git_paths(root: Path) -> tuple[Path, ...]:
    """The repository's git dir and common dir (and a worktree's ``.git`` file), absolute."""
    root = Path(root)
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--absolute-git-dir", "--git-common-dir"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return ()
    if done.returncode != 0:
        return ()
    found: list[Path] = []
    dot_git = root / ".git"
    if dot_git.is_file():  # a linked worktree: the file says where its git dir is
        found.append(dot_git.absolute())
    for line in done.stdout.splitlines():
        path = Path(line.strip())
        path = (path if path.is_absolute() else root / path).resolve()
        if line.strip() and path not in found:
            found.append(path)
    return tuple(found)
