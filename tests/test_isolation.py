"""isolation: the launchers, tried directly with real processes, mounts and sockets."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from proctree import process_tree

from pytest_autoresearch.sandbox import isolation
from pytest_autoresearch.sandbox.isolation import (
    IsolationError,
    IsolationSpec,
    git_paths,
    make_launcher,
    plain_launcher,
)

LEAK = "isolation-test-secret-8d1f0c"  # a value only the test process's environment holds


def namespaces_or_skip(spec: IsolationSpec) -> isolation.NamespaceLauncher:
    launcher = make_launcher(spec)
    if launcher.name != "namespaces":
        pytest.skip(f"no namespaces here: {launcher.describe()}")
    return launcher


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo with space ü"
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / ".autoresearch" / "t1").mkdir(parents=True)
    (root / ".autoresearch" / "t1" / "experiments.jsonl").write_text('{"event": "session"}\n')
    return root


def spec_for(root: Path, **kw: bool) -> IsolationSpec:
    return IsolationSpec(readonly=git_paths(root), hidden=(root / ".autoresearch" / "t1",), **kw)


def run(launcher, root: Path, code: str, env: dict | None = None, timeout: float = 60):
    """Run Python ``code`` through ``launcher`` in ``root``; (returncode, output)."""
    proc = launcher.popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=root,
        env=dict(os.environ if env is None else env),
        stdout=subprocess.PIPE,
    )
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out.decode()


SCAN_PROC = f"""
    import os
    needle = {LEAK[::-1]!r}[::-1].encode()  # reversed: the needle is not in this command line
    found, pids = [], sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    for pid in pids:
        for what in ("environ", "cmdline"):
            try:
                with open(f"/proc/{{pid}}/{{what}}", "rb") as fh:
                    if needle in fh.read():
                        found.append((pid, what))
            except OSError:
                pass
    print("pid", os.getpid(), "ppid", os.getppid(), "visible", pids, "found", found)
"""


@pytest.fixture
def loop_with_secret():
    """A process whose environment holds the secret, as the loop's holds the API key."""
    env = {**os.environ, "MY_SERVICE_TOKEN": LEAK}
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], env=env)
    yield proc.pid
    proc.kill()
    proc.wait()


def test_pid_1_inside_and_no_ancestor_visible(repo: Path, loop_with_secret: int) -> None:
    launcher = namespaces_or_skip(spec_for(repo))
    code, out = run(launcher, repo, SCAN_PROC)
    assert code == 0, out
    # The namespace's init is PID 1 and the command PID 2: nothing else, no ancestor.
    assert "pid 2 ppid 1 visible [1, 2] found []" in out, out


def test_the_scan_finds_the_secret_without_isolation(repo: Path, loop_with_secret: int) -> None:
    """The control: the same scan through the plain launcher finds it."""
    code, out = run(plain_launcher(), repo, SCAN_PROC)
    assert code == 0 and f"({loop_with_secret}, 'environ')" in out, out


def test_git_dir_is_read_only_and_the_record_is_hidden(repo: Path) -> None:
    launcher = namespaces_or_skip(spec_for(repo))
    code, out = run(
        launcher,
        repo,
        """
        import os
        print("record:", os.listdir(".autoresearch/t1"))
        for path in (".git/hooks/post-checkout", ".git/config"):
            try:
                with open(path, "a") as fh:
                    fh.write("#!/bin/sh\\necho pwned\\n")
                print("wrote", path)
            except OSError as exc:
                print("refused", path, exc.strerror)
        with open(".autoresearch/t1/experiments.jsonl", "w") as fh:
            fh.write("forged\\n")
        with open("ordinary.txt", "w") as fh:  # the work tree stays writable
            fh.write("ok")
        """,
    )
    assert code == 0, out
    assert "record: []" in out
    assert out.count("refused") == 2 and "Read-only file system" in out, out
    assert not (repo / ".git" / "hooks" / "post-checkout").exists()
    assert "pwned" not in (repo / ".git" / "config").read_text()
    # What it wrote "into the record" went to a tmpfs that vanished with the namespace.
    assert (repo / ".autoresearch/t1/experiments.jsonl").read_text() == '{"event": "session"}\n'
    assert (repo / "ordinary.txt").read_text() == "ok"


def test_the_mounts_cannot_be_undone_from_inside(repo: Path) -> None:
    launcher = namespaces_or_skip(spec_for(repo))
    code, out = run(
        launcher,
        repo,
        """
        import subprocess
        hidden, git = ".autoresearch/t1", ".git"
        for cmd in (["umount", hidden], ["mount", "-o", "remount,bind,rw", git],
                    ["umount", "/proc"],
                    ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                     f"umount {hidden}; mount -o remount,bind,rw {git}; touch {git}/x"]):
            done = subprocess.run(cmd, capture_output=True)
            print(cmd[0], "rc", done.returncode)
        import os
        print("record:", os.listdir(hidden))
        """,
    )
    assert code == 0, out
    assert "rc 0" not in out, out
    assert "record: []" in out
    assert not (repo / ".git" / "x").exists()


def test_network_off_blocks_the_parents_loopback_but_keeps_its_own(repo: Path) -> None:
    launcher = namespaces_or_skip(spec_for(repo, network=False))
    assert "network blocked" in launcher.describe()
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    try:
        code, out = run(
            launcher,
            repo,
            f"""
            import socket
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=3).close()
                print("reached the parent's server")
            except OSError as exc:
                print("blocked:", exc)
            own = socket.create_server(("127.0.0.1", 0))
            socket.create_connection(own.getsockname(), timeout=3).close()
            print("own loopback works")
            """,
        )
    finally:
        server.close()
    assert code == 0, out
    assert "blocked:" in out and "own loopback works" in out, out


def test_sandbox_off_with_network_off_uses_only_a_network_namespace(repo: Path) -> None:
    launcher = namespaces_or_skip(IsolationSpec(sandbox=False, network=False))
    assert launcher.describe() == (
        "isolation: sandbox off (program.md); network blocked (own network namespace, "
        "loopback only)"
    )
    server = socket.create_server(("127.0.0.1", 0))
    try:
        code, out = run(
            launcher,
            repo,
            f"""
            import os, socket
            print("pid", os.getpid() > 2)
            try:
                socket.create_connection(("127.0.0.1", {server.getsockname()[1]}), timeout=3)
            except OSError:
                print("blocked")
            """,
        )
    finally:
        server.close()
    assert code == 0 and "pid True" in out and "blocked" in out, out


def test_network_allowed_reaches_the_parents_loopback(repo: Path) -> None:
    launcher = namespaces_or_skip(spec_for(repo))
    server = socket.create_server(("127.0.0.1", 0))
    try:
        code, out = run(
            launcher,
            repo,
            f"import socket; socket.create_connection(('127.0.0.1', {server.getsockname()[1]}),"
            " timeout=3).close(); print('reached')",
        )
    finally:
        server.close()
    assert code == 0 and "reached" in out, out


LOOP = """
import subprocess, sys, time
from pathlib import Path
from pytest_autoresearch.sandbox.isolation import IsolationSpec, make_launcher
# A stand-in for the loop: starts an evaluation whose code forks a daemon, then waits.
launcher = make_launcher(IsolationSpec(sandbox=sys.argv[2] == "ns"))
code = '''
import os, subprocess, sys, time
from pathlib import Path
child = subprocess.Popen([sys.executable, "-c", "import os, time; os.setsid(); time.sleep(300)"])
Path(sys.argv[1], "pids").write_text(f"{os.getpid()} {child.pid}")
time.sleep(300)
'''
proc = launcher.popen([sys.executable, "-c", code, sys.argv[1]], cwd=Path(sys.argv[1]),
                      env=dict(__import__("os").environ), stdout=subprocess.DEVNULL)
Path(sys.argv[1], "launched").write_text(str(proc.pid))
time.sleep(300)
"""


def host_pids(folder: Path) -> list[int]:
    """The evaluation's processes as seen from here: the launched one and everything below."""
    return process_tree(int((folder / "launched").read_text()))


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.slow
def test_the_whole_tree_dies_with_the_loop(tmp_path: Path) -> None:
    namespaces_or_skip(IsolationSpec())
    proc = subprocess.Popen([sys.executable, "-c", LOOP, str(tmp_path), "ns"])
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "pids").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (tmp_path / "pids").exists(), "the evaluation never started"
        time.sleep(0.3)
        tree = host_pids(tmp_path)
        assert len(tree) >= 4, tree  # unshare, the init, the evaluation, its setsid daemon
        assert all(alive(p) for p in tree)
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # kill -9 the loop
        proc.wait()
    deadline = time.monotonic() + 5
    while any(alive(p) for p in tree) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in tree if alive(p)]


def test_probe_is_cached_and_quick(repo: Path) -> None:
    spec = spec_for(repo)
    isolation._CACHE.pop(spec, None)
    t0 = time.perf_counter()
    first = make_launcher(spec)
    elapsed = time.perf_counter() - t0
    assert make_launcher(spec) is first
    assert elapsed < 2.0  # about 25 ms on an idle machine; a loaded CI box is slower
    if first.name == "namespaces":
        line = first.describe()
        assert line.startswith("isolation: own PID and mount namespace (unshare")
        assert ".git read-only" in line and "t1 hidden" in line and "network allowed" in line


def test_plain_fallback_says_so_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isolation, "_CACHE", {})
    monkeypatch.setattr(isolation.sys, "platform", "darwin")
    launcher = make_launcher(IsolationSpec())
    assert launcher.name == "plain"
    line = launcher.describe()
    assert "\n" not in line
    assert line.startswith("isolation: NONE on this system (macOS has no namespaces)")
    assert "docs/isolation.md" in line
    with pytest.raises(IsolationError, match="network: off.*macOS has no namespaces"):
        make_launcher(IsolationSpec(network=False))


def test_sandbox_off_is_plain_and_says_so() -> None:
    launcher = make_launcher(IsolationSpec(sandbox=False))
    assert launcher.name == "plain"
    assert launcher.describe().startswith("isolation: off (sandbox: off in program.md)")


def test_a_failing_probe_falls_back_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("the probe runs only on Linux")
    monkeypatch.setattr(isolation, "_CACHE", {})
    monkeypatch.setattr(
        isolation, "_attempts", lambda spec: [(["unshare", "--bogus-flag", "--"], True)]
    )
    launcher = make_launcher(IsolationSpec())
    assert launcher.name == "plain"
    assert "isolation: NONE on this system (unshare: unrecognized option" in launcher.describe()


def test_root_without_a_user_namespace_cannot_undo_the_mounts_either(repo: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can use namespaces without a user namespace")
    spec = spec_for(repo)
    namespaces_or_skip(spec)
    prefix, userns = isolation._attempts(spec)[1]
    assert not userns
    boot = {
        "readonly": [str(p) for p in spec.readonly],
        "hidden": [str(p) for p in spec.hidden],
        "lo": False,
        "pid": True,
        "drop": list(isolation.DROP_CAPS),
    }
    launcher = isolation.NamespaceLauncher(prefix, boot, "root")
    code, out = run(
        launcher,
        repo,
        """
        import os, subprocess
        for cmd in (["umount", ".autoresearch/t1"], ["mount", "-o", "remount,bind,rw", ".git"]):
            print(cmd[0], "rc", subprocess.run(cmd, capture_output=True).returncode)
        print("pid", os.getpid(), "record:", os.listdir(".autoresearch/t1"))
        """,
    )
    assert code == 0, out
    assert "rc 0" not in out and "pid 2 record: []" in out, out


def test_exit_status_and_signals_pass_through(repo: Path) -> None:
    launcher = namespaces_or_skip(spec_for(repo))
    assert run(launcher, repo, "raise SystemExit(3)")[0] == 3
    proc = launcher.popen(
        [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"],
        cwd=repo,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
    )
    assert proc.stdout.readline() == b"up\n"
    t0 = time.monotonic()
    os.killpg(proc.pid, signal.SIGTERM)  # what the timeout kill sends first
    proc.wait(timeout=10)
    assert time.monotonic() - t0 < 5
    proc.stdout.close()
