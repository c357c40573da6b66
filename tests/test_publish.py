"""Nightly pull requests: real git (a bare repository as origin), a loopback GitHub.

The pure parts (title, body, when not to publish) use literal values; the GitHub parts
run against tests/github_server.py, which checks each call's method, path, headers and
JSON and answers as GitHub does; the end-to-end tests run the research loop for real
(tests/toyproject.py) with ``--autoresearch-pr``.
"""

from __future__ import annotations

import base64
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from github_server import REPO, TOKEN, Failure, GitHubServer, github_server
from toyproject import default_sigint, git, make_toy, read_jsonl, step

from pytest_autoresearch import publish
from pytest_autoresearch.publish import body as body_mod
from pytest_autoresearch.publish import github
from pytest_autoresearch.publish.github import GitHubClient, GitHubError, GitHubSettings

BRANCH = "autoresearch/t1"


@pytest.fixture
def gh() -> GitHubServer:
    with github_server() as server:
        yield server


def with_origin(root: Path) -> Path:
    """A bare repository next to ``root`` as its ``origin``, holding ``main``."""
    origin = root.parent / (root.name + "-origin.git")
    subprocess.run(["git", "init", "-q", "--bare", str(origin)], check=True)
    git(root, "remote", "add", "origin", str(origin))
    git(root, "push", "-q", "origin", "main")
    return origin


def research_branch(root: Path, branch: str = BRANCH, x: float = 3.0) -> str:
    """A research branch with one kept commit, as the loop leaves it; its sha."""
    git(root, "checkout", "-q", "-b", branch)
    (root / "toy" / "model.py").write_text(f"X = {x!r}\n")
    git(root, "commit", "-q", "-am", "move X")
    sha = git(root, "rev-parse", "HEAD")
    git(root, "checkout", "-q", "main")
    return sha


def loop_result(**over) -> SimpleNamespace:
    fields = dict(
        objective="val_bpb", goal="min", baseline=0.998, best=0.981, sigma=0.004, kept=5,
        done=137, ran=137, stop_reason="time budget 5h30m reached", branch=BRANCH,
        record_dir=Path("/runner/work/repo/.autoresearch/t1"), holdout="test_bpb",
        holdout_baseline=1.01, holdout_best=1.005, holdout_goal="min", cost=None,
        interrupted=False, failed=False,
    )  # fmt: skip
    fields.update(over)
    return SimpleNamespace(**fields)


def records(kept: int = 5, total: int = 137) -> list[dict]:
    out = []
    for i in range(1, total + 1):
        keep = i <= kept
        out.append(
            {
                "index": i,
                "status": "keep" if keep else "discard",
                "commit": f"{i:02d}" * 20,
                "parent": f"{i - 1:02d}" * 20,
                "description": f"try {i} | with a pipe",
                "objective": 0.99 - i * 0.001,
                "best_before": 0.998 - (i - 1) * 0.0034 if keep else 0.981,
                "best_after": 0.998 - i * 0.0034 if keep else 0.981,
                "noise": 0.004,
                "reason": "improved 0.0034 > floor 0.0016" if keep else "within noise",
                "samples": {"val_bpb": [0.99, 0.991, 0.989]},
                "guards": {"passed": True, "failed": []} if i != 7 else
                          {"passed": False, "failed": ["tests/test_guard.py::test_sane"]},
                "diff": "--- a/train.py\n+++ b/train.py\n-LR = 0.02\n+LR = 0.04\n",
                "lines_added": 1, "lines_removed": 1,
                "proposer": "anthropic",
                "cost": {"usd": 0.25, "input_tokens": 1000, "output_tokens": 200},
            }
        )  # fmt: skip
    return out


# -- the words ----------------------------------------------------------------------------


def test_title_names_the_change_and_the_counts() -> None:
    assert body_mod.title(loop_result(), records()) == (
        "autoresearch: val_bpb 0.998 → 0.981 (−1.7%), 5 kept of 137"
    )
    assert body_mod.title(loop_result(baseline=None), records(1, 3)) == (
        "autoresearch: val_bpb, 1 kept of 3"
    )


def test_body_tells_a_reviewer_what_they_need(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    recs = records()
    recs[0]["description"] = f"leaks {TOKEN} here"
    text = body_mod.body(
        loop_result(),
        recs,
        branch=BRANCH,
        base="main",
        machine={"node": "gpu-7", "platform": "Linux", "python": "3.11.7", "gpu": "H100, 80 GB"},
        record_url="https://github.example/octo/widgets/actions/runs/42",
    )
    assert text.startswith(body_mod.MARKER)
    assert TOKEN not in text and "[REDACTED]" in text
    for expected in (
        "| # | commit | val_bpb | change | noise floor (±σ) | runs | description |",
        "| 2 | `0202020` | 0.991 | −0.003 (−0.3%) | ±0.004 | 3 | try 2 \\| with a pipe |",
        "Each one is its own commit on this branch",
        "```diff\n--- a/train.py",
        "Holdout `test_bpb` (min): 1.010 → 1.005 (−0.5%).",
        "Every kept experiment passed the guard tests (5 of 5).",
        "`tests/test_guard.py::test_sane` (1×)",
        "LLM cost (proposer: anthropic): $34.25, 137,000 input and 27,400 output tokens.",
        "`gpu-7`, `Linux`, Python 3.11.7, GPU: H100, 80 GB",
        "git checkout 050505050505",
        "pytest -m metric --metrics-compare before",
        "`.autoresearch/t1`, on [the run's artifacts]"
        "(https://github.example/octo/widgets/actions/runs/42)",
        "Stopped: time budget 5h30m reached.",
    ):
        assert expected in text, expected
    assert len(text) < body_mod.MAX_BODY


def test_holdout_that_got_worse_is_a_warning() -> None:
    text = body_mod.body(loop_result(holdout_best=1.05), records(), branch=BRANCH, base="main")
    assert "**Warning: the holdout got worse" in text


def test_huge_runs_fit_githubs_limit() -> None:
    recs = records(kept=200, total=200)
    for r in recs:
        r["diff"] = "+x\n" * 5000
    text = body_mod.body(loop_result(), recs, branch=BRANCH, base="main")
    assert len(text) <= body_mod.MAX_BODY and text.endswith("see the full record)")


@pytest.mark.parametrize(
    ("result", "recs", "failed", "why"),
    [
        (None, [], False, "the run did not start"),
        (loop_result(interrupted=True), records(1, 2), False, "the run was interrupted"),
        (loop_result(failed=True), records(1, 2), False, "the run stopped on an error"),
        (loop_result(), records(1, 2), True, "the run stopped on an error"),
        (loop_result(), records(0, 2), False, "no experiment was kept"),
        (loop_result(), records(1, 2), False, None),
    ],
)
def test_when_a_run_is_not_published(result, recs, failed, why) -> None:
    assert publish.publish_reason(result, recs, failed) == why


# -- GitHub: the REST calls ---------------------------------------------------------------


def settings(gh: GitHubServer, token: str = TOKEN) -> GitHubSettings:
    return GitHubSettings.from_env(gh.env(GITHUB_TOKEN=token))


def client(gh: GitHubServer, token: str = TOKEN) -> GitHubClient:
    return GitHubClient(settings(gh, token), backoff=0.01)


def test_settings_missing_say_what_to_set() -> None:
    with pytest.raises(GitHubError, match=r"needs GITHUB_TOKEN and GITHUB_REPOSITORY in the env"):
        GitHubSettings.from_env({})
    with pytest.raises(GitHubError, match=r"GITHUB_REPOSITORY='widgets' is not owner/name"):
        GitHubSettings.from_env({"GITHUB_TOKEN": "t", "GITHUB_REPOSITORY": "widgets"})
    s = GitHubSettings.from_env({"GITHUB_TOKEN": "t", "GITHUB_REPOSITORY": "o/r"})
    assert s.api_url == "https://api.github.com" and s.owner == "o"


def test_refusals_are_one_clear_line(gh: GitHubServer) -> None:
    with pytest.raises(GitHubError) as bad:
        client(gh, token="ghs_wrongwrongwrongwrongwrong").call("GET", f"/repos/{REPO}")
    assert bad.value.status == 401
    assert str(bad.value).startswith("GitHub rejected GITHUB_TOKEN: GET /repos/octo/widgets -> 401")
    gh.fail.append(Failure("GET", f"/repos/{REPO}", 403, {"message": "Resource not accessible"}))
    with pytest.raises(GitHubError, match=r"may not do this on octo/widgets.*permissions: "):
        client(gh).call("GET", f"/repos/{REPO}")
    with pytest.raises(GitHubError, match=r"no repository octo/widgets at http://127.*404"):
        client(gh).call("GET", f"/repos/{REPO}/nothing-here")
    for err in (bad.value,):
        assert "\n" not in str(err) and "ghs_wrong" not in str(err)


def test_server_errors_are_retried(gh: GitHubServer) -> None:
    path = f"/repos/{REPO}"
    gh.fail += [
        Failure("GET", path, 502, {"message": "Bad gateway"}),
        Failure("GET", path, 503, {}),
    ]
    assert client(gh).call("GET", path)["full_name"] == REPO
    assert gh.api_calls() == [("GET", path)] * 3
    gh.fail += [Failure("GET", path, 500, {"message": "boom"})] * 4
    with pytest.raises(GitHubError, match=r"GET /repos/octo/widgets -> 500 \(boom\)"):
        client(gh).call("GET", path)


def test_publish_opens_then_updates_one_pull_request(pytester: pytest.Pytester, gh) -> None:
    root = make_toy(pytester.path, [])
    origin = with_origin(root)
    sha = research_branch(root)
    lines: list[str] = []
    url = github.publish_run(
        root, "origin", settings(gh), loop_result(), records(), BRANCH, "main", echo=lines.append
    )
    assert url == "https://github.example/octo/widgets/pull/1"
    assert lines == [f"pull request #1 opened: {url}"]
    pulls = f"/repos/{REPO}/pulls"
    assert gh.api_calls() == [("GET", pulls), ("POST", pulls), ("GET", pulls)]
    find, create, _ = gh.calls
    assert find.query == {"state": "open", "head": "octo:autoresearch/t1", "base": "main",
                          "per_page": "100"}  # fmt: skip
    assert create.json["head"] == BRANCH and create.json["base"] == "main"
    assert create.json["title"] == "autoresearch: val_bpb 0.998 → 0.981 (−1.7%), 5 kept of 137"
    assert create.json["body"].startswith(body_mod.MARKER)
    assert git(origin, "rev-parse", BRANCH) == sha
    assert git(origin, "rev-parse", "main") == git(root, "rev-parse", "main")

    # A rerun of the same branch (a resumed run): the same pull request, updated.
    git(root, "checkout", "-q", BRANCH)
    (root / "toy" / "model.py").write_text("X = 3.01\n")
    git(root, "commit", "-q", "-am", "another kept change")
    git(root, "checkout", "-q", "main")
    gh.calls.clear()
    lines.clear()
    github.publish_run(
        root, "origin", settings(gh), loop_result(best=0.97), records(6, 140), BRANCH, "main",
        echo=lines.append,
    )  # fmt: skip
    assert gh.api_calls() == [("GET", pulls), ("PATCH", pulls + "/1"), ("GET", pulls)]
    assert set(gh.calls[1].json) == {"title", "body"}
    assert lines == [f"pull request #1 updated: {url}"]
    assert len(gh.pulls) == 1 and gh.pulls[1]["title"].endswith("6 kept of 140")
    assert git(origin, "rev-parse", BRANCH) == git(root, "rev-parse", BRANCH)
    assert gh.problems == []


def test_a_new_run_supersedes_our_previous_pull_request(pytester: pytest.Pytester, gh) -> None:
    root = make_toy(pytester.path, [])
    with_origin(root)
    research_branch(root)
    old = gh.open_pull("autoresearch/nov22", body=body_mod.MARKER + "\nyesterday")
    human = gh.open_pull("autoresearch/by-hand", body="I made this myself")
    feature = gh.open_pull("feature", body=body_mod.MARKER)
    lines: list[str] = []
    github.publish_run(
        root, "origin", settings(gh), loop_result(), records(), BRANCH, "main", echo=lines.append
    )
    new = max(gh.pulls)
    assert lines[-1] == f"closed pull request #{old['number']} (superseded by #{new})"
    assert gh.pulls[old["number"]]["state"] == "closed"
    assert [c["issue"] for c in gh.comments] == [old["number"]]
    assert (
        f"Superseded by #{new} (https://github.example/octo/widgets/pull/{new})"
        in (gh.comments[0]["body"])
    )
    assert gh.pulls[human["number"]]["state"] == "open"  # not ours: left alone
    assert gh.pulls[feature["number"]]["state"] == "open"  # not a research branch
    assert ("PATCH", f"/repos/{REPO}/pulls/{old['number']}") in gh.api_calls()
    assert gh.problems == []


def test_already_exists_is_updated_instead(pytester: pytest.Pytester, gh) -> None:
    root = make_toy(pytester.path, [])
    with_origin(root)
    research_branch(root)
    gh.open_pull(BRANCH, body=body_mod.MARKER)
    gh.hide_from_list = 1  # GitHub's list lags behind: the first find sees nothing
    lines: list[str] = []
    github.publish_run(
        root, "origin", settings(gh), loop_result(), records(), BRANCH, "main", echo=lines.append
    )
    pulls = f"/repos/{REPO}/pulls"
    assert gh.api_calls() == [
        ("GET", pulls), ("POST", pulls), ("GET", pulls), ("PATCH", pulls + "/1"), ("GET", pulls)
    ]  # fmt: skip
    assert lines == ["pull request #1 updated: https://github.example/octo/widgets/pull/1"]
    assert len(gh.pulls) == 1 and gh.problems == []


def test_push_sends_the_token_only_in_a_header(pytester: pytest.Pytester, gh) -> None:
    root = make_toy(pytester.path, [])
    research_branch(root)
    git(root, "remote", "add", "web", f"{gh.url}/octo/widgets.git")
    with pytest.raises(GitHubError) as refused:
        github.push_branch(root, "web", BRANCH, "main", TOKEN)
    assert "git push web autoresearch/t1 failed" in str(refused.value)
    assert TOKEN not in str(refused.value)
    sent = gh.git_calls[0]
    expected = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    assert sent.headers["authorization"] == f"basic {expected}"
    assert TOKEN not in sent.path + str(sent.query)
    assert TOKEN not in git(root, "config", "--list", "--show-origin")
    assert git(root, "remote", "get-url", "web") == f"{gh.url}/octo/widgets.git"
    assert_token_nowhere(root / ".git")


def test_redirects_keep_the_token_on_the_same_host(gh: GitHubServer) -> None:
    path = f"/repos/{REPO}"
    here = {"Location": f"{gh.url}{path}"}
    elsewhere = {"Location": gh.url.replace("127.0.0.1", "localhost") + path}
    gh.fail.append(Failure("GET", path, 301, {"message": "Moved Permanently"}, here))
    assert client(gh).call("GET", path)["full_name"] == REPO  # followed, token and all
    assert gh.calls[1].headers["authorization"] == f"Bearer {TOKEN}"
    gh.calls.clear()
    gh.fail.append(Failure("GET", path, 301, {"message": "Moved Permanently"}, elsewhere))
    with pytest.raises(GitHubError) as refused:
        client(gh).call("GET", path)
    assert refused.value.status == 401  # the other host never got the token
    assert gh.calls[1].headers["host"].startswith("localhost")
    assert "authorization" not in gh.calls[1].headers


def test_push_runs_no_hooks(pytester: pytest.Pytester) -> None:
    root = make_toy(pytester.path, [])
    origin = with_origin(root)
    research_branch(root)
    # A hook (here the repository's own, or one a proposal planted under core.hooksPath)
    # would see the environment that carries the token.
    hooks = root / "githooks"
    hooks.mkdir()
    for folder in (hooks, root / ".git" / "hooks"):
        hook = folder / "pre-push"
        hook.write_text(f"#!/bin/sh\nenv > {root / 'leaked.txt'}\n")
        hook.chmod(0o755)
    git(root, "config", "core.hooksPath", str(hooks))
    github.push_branch(root, "origin", BRANCH, "main", TOKEN)
    assert git(origin, "rev-parse", BRANCH) == git(root, "rev-parse", BRANCH)
    assert not (root / "leaked.txt").exists()


def test_never_pushes_the_base_branch(pytester: pytest.Pytester) -> None:
    root = make_toy(pytester.path, [])
    origin = with_origin(root)
    for branch, base in (("main", "main"), ("feature", "main"), (BRANCH, BRANCH)):
        with pytest.raises(GitHubError, match="only research branches are pushed"):
            github.push_branch(root, "origin", branch, base, TOKEN)
    with pytest.raises(GitHubError, match=r"no git remote 'nope'.*--autoresearch-remote NAME"):
        github.push_branch(root, "nope", BRANCH, "main", TOKEN)
    assert git(origin, "branch", "--list") == "main"


def assert_token_nowhere(*places: Path, text: str = "") -> None:
    """The token in none of the files under ``places``, nor in ``text``."""
    assert TOKEN not in text
    needle = TOKEN.encode()
    basic = base64.b64encode(f"x-access-token:{TOKEN}".encode())
    for place in places:
        files = [place] if place.is_file() else [p for p in place.rglob("*") if p.is_file()]
        for path in files:
            data = path.read_bytes()
            assert needle not in data and basic not in data, path


# -- end to end: the research loop with --autoresearch-pr ---------------------------------


class Run:
    """A finished pytest run: exit code and output (LineMatcher, like pytester's)."""

    def __init__(self, proc: subprocess.CompletedProcess) -> None:
        self.ret = proc.returncode
        self.stdout = pytest.LineMatcher(proc.stdout.splitlines())
        self.stderr = pytest.LineMatcher(proc.stderr.splitlines())


def run_loop(pytester: pytest.Pytester, n: int, *extra: str, tag: str = "t1") -> Run:
    """The research loop in a fresh pytest process, its output kept outside the project
    (pytester's own stdout/stderr files would be new files in the research tree)."""
    cmd = [sys.executable, "-m", "pytest", "--autoresearch", "-n", str(n), "--autoresearch-tag",
           tag, "--autoresearch-proposer", "scripted", "-p", "no:randomly", *extra]  # fmt: skip
    proc = subprocess.run(cmd, cwd=pytester.path, capture_output=True, text=True, timeout=240)
    return Run(proc)


@pytest.mark.slow
def test_nightly_run_opens_then_updates_its_pull_request(
    pytester: pytest.Pytester, gh: GitHubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_toy(
        pytester.path, [step("move X to 5", 5.0), step("move X to 20", 20.0), step("X = 3", 3.0)]
    )
    origin = with_origin(root)
    summary = pytester.path.parent / "step-summary.md"
    for name, value in gh.env(GITHUB_STEP_SUMMARY=str(summary)).items():
        monkeypatch.setenv(name, value)
    result = run_loop(pytester, 3, "--autoresearch-pr")
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == 0, out
    assert git(origin, "rev-parse", BRANCH) == git(root, "rev-parse", BRANCH)
    assert git(origin, "rev-parse", "main") == git(root, "rev-parse", "main")  # untouched
    assert git(origin, "log", "--format=%s", f"main..{BRANCH}").count("\n") == 1  # 2 kept
    pr = gh.pulls[1]
    assert re.fullmatch(
        r"autoresearch: loss 7\.\d+ → 0\.\d+ \(−100(\.0)?%\), 2 kept of 3", pr["title"]
    ), pr["title"]
    assert "move X to 5" in pr["body"] and "X = 3" in pr["body"]
    assert pr["base"]["ref"] == "main" and pr["head"]["ref"] == BRANCH
    summary_text = summary.read_text()
    assert summary_text.startswith(body_mod.MARKER)
    # The job summary embeds the chart (Mermaid, rendered by GitHub): 3 experiments, 2 kept.
    chart = summary_text[summary_text.index("```mermaid") :]
    assert "xychart-beta" in chart and 'x-axis "experiment" [1, 2, 3]' in chart
    assert "report.html" in pr["body"]  # the page, in the run's artifacts
    assert gh.api_calls()[0] == ("GET", f"/repos/{REPO}")  # checked before any experiment
    assert gh.problems == []
    result.stdout.fnmatch_lines(
        [
            "publish: GitHub pull request on octo/widgets (push to origin), if an experiment*",
            "pull request #1 opened: https://github.example/octo/widgets/pull/1",
        ]
    )

    # Rerun the same tag with one more experiment: the same pull request is updated.
    result = run_loop(pytester, 4, "--autoresearch-pr")
    out += result.stdout.str() + result.stderr.str()
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["pull request #1 updated: *"])
    assert len(gh.pulls) == 1 and gh.pulls[1]["title"].endswith("2 kept of 4")
    assert_token_nowhere(root / ".git", root / ".autoresearch", origin, text=out)
    assert gh.problems == []


@pytest.mark.slow
def test_nothing_kept_or_no_flag_publishes_nothing(
    pytester: pytest.Pytester, gh: GitHubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_toy(pytester.path, [step("move X to 30", 30.0), step("move X to 3", 3.0)])
    origin = with_origin(root)
    for name, value in gh.env().items():
        monkeypatch.setenv(name, value)
    worse = run_loop(pytester, 1, "--autoresearch-pr")
    assert worse.ret == 0, worse.stdout.str()
    worse.stdout.fnmatch_lines(["no pull request: no experiment was kept"])
    assert gh.api_calls() == [("GET", f"/repos/{REPO}")]  # the check only
    # Kept this time, but without --autoresearch-pr: no call, no push.
    kept = run_loop(pytester, 2)
    assert kept.ret == 0, kept.stdout.str()
    assert "keep" in kept.stdout.str()
    assert gh.api_calls() == [("GET", f"/repos/{REPO}")]
    assert git(origin, "branch", "--list") == "main"


@pytest.mark.slow
def test_ctrl_c_publishes_nothing(pytester: pytest.Pytester, gh: GitHubServer) -> None:
    slow = "import os, time\nif os.path.exists('slow.flag'):\n    time.sleep(30)\n"
    root = make_toy(
        pytester.path, [step("move X to 5", 5.0), step("slow", 4.0, extra=slow)], timeout=60
    )
    origin = with_origin(root)
    (root / "slow.flag").write_text("")
    cmd = [sys.executable, "-m", "pytest", "--autoresearch", "-n", "2", "--autoresearch-pr",
           "--autoresearch-tag", "t1", "--autoresearch-proposer", "scripted"]  # fmt: skip
    env = {**os.environ, **gh.env()}  # only our plugin (the pytester fixture)
    proc = subprocess.Popen(
        cmd,
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=default_sigint,  # Ctrl-C reaches it even when the suite runs in the background
    )
    jsonl = root / ".autoresearch" / "t1" / "experiments.jsonl"
    deadline = time.monotonic() + 120
    while not (
        jsonl.exists() and any(e.get("index") == 2 and e["event"] == "start" for e in
                               read_jsonl(jsonl))
    ):  # fmt: skip
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail("experiment 2 never started: " + (proc.stdout.read() or ""))
        time.sleep(0.2)
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert "stopped: interrupted (Ctrl-C)" in out, out  # the loop ended, then nothing more
    assert gh.api_calls() == [("GET", f"/repos/{REPO}")]
    assert git(origin, "branch", "--list") == "main"


@pytest.mark.parametrize(
    ("env", "remote", "expected"),
    [
        ({"GITHUB_TOKEN": ""}, "origin", "*--autoresearch-pr needs GITHUB_TOKEN in the env*"),
        ({"GITHUB_TOKEN": "ghs_notTheRightOne0123456789"}, "origin",
         "*GitHub rejected GITHUB_TOKEN: GET /repos/octo/widgets -> 401 (Bad credentials)*"),
        ({"GITHUB_REPOSITORY": "octo/nothing"}, "origin",
         "*GitHub has no repository octo/nothing at http://127.0.0.1:*404*"),
        ({}, "upstream", "*no git remote 'upstream' to push the research branch to*"),
    ],
)  # fmt: skip
def test_bad_settings_stop_before_any_experiment(
    pytester: pytest.Pytester, gh, monkeypatch: pytest.MonkeyPatch, env, remote, expected
) -> None:
    root = make_toy(pytester.path, [step("move X to 5", 5.0)])
    with_origin(root)
    for name, value in {**gh.env(), **env}.items():
        monkeypatch.setenv(name, value)
    result = run_loop(pytester, 1, "--autoresearch-pr", "--autoresearch-remote", remote)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
    result.stderr.fnmatch_lines([f"ERROR: {expected}"])
    assert len([ln for ln in result.stderr.str().splitlines() if ln.strip()]) == 1
    assert git(root, "branch", "--list", "autoresearch/*") == ""  # nothing started
    assert not (root / ".autoresearch" / "t1" / "experiments.jsonl").exists()
    assert "ghs_notTheRightOne" not in result.stdout.str() + result.stderr.str()


# -- the ready-made workflows ---------------------------------------------------------------

WORKFLOWS = Path(__file__).resolve().parent.parent / "docs" / "workflows"


def pytest_commands(workflow: dict) -> list[list[str]]:
    """The arguments of every ``python -m pytest`` a workflow's steps run."""
    found = []
    for job in workflow["jobs"].values():
        for step_ in job["steps"]:
            script = step_.get("run", "").replace("\\\n", " ")
            for line in script.splitlines():
                words = shlex.split(re.sub(r"\$\{\{[^}]*\}\}", "1", line.split("|")[0]))
                if words[:3] == ["python", "-m", "pytest"]:
                    found.append(words[3:])
    return found


def test_workflows_parse_and_run_only_options_that_exist(pytester: pytest.Pytester) -> None:
    import yaml

    files = sorted(WORKFLOWS.glob("*.yml"))
    assert [f.name for f in files] == ["autoresearch-metrics.yml", "autoresearch-nightly.yml"]
    seen = {}
    for path in files:
        workflow = yaml.safe_load(path.read_text())
        assert workflow["name"] and workflow["jobs"], path
        for job in workflow["jobs"].values():
            for step_ in job["steps"]:
                assert ("uses" in step_) != ("run" in step_), (path.name, step_)
        for args in pytest_commands(workflow):
            config = pytester.parseconfig(*args)  # an unknown option is a UsageError here
            seen[path.name, args[0]] = config
    nightly = seen["autoresearch-nightly.yml", "--autoresearch"]
    assert nightly.getoption("autoresearch_experiments") == 200  # -n under --autoresearch
    assert nightly.getoption("autoresearch_time_budget") == 5.5 * 3600
    assert nightly.getoption("autoresearch_pr") is True
    nightly_yaml = yaml.safe_load((WORKFLOWS / "autoresearch-nightly.yml").read_text())
    job = nightly_yaml["jobs"]["research"]
    assert job["timeout-minutes"] * 60 > nightly.getoption("autoresearch_time_budget")
    steps = {s.get("name"): s for s in job["steps"]}
    assert steps["Upload the record"]["if"] == "always()"
    assert ".autoresearch/baselines" in steps["Restore data and baselines"]["with"]["path"]
    assert steps["Research"]["env"]["GITHUB_TOKEN"] == "${{ secrets.GITHUB_TOKEN }}"
    assert nightly_yaml["permissions"] == {"contents": "write", "pull-requests": "write"}
    gate = seen["autoresearch-metrics.yml", "-m"]
    assert gate.getoption("markexpr") == "metric"
    assert gate.getoption("metrics_compare") == "main" and gate.getoption("metrics_fail") == 5.0


def test_the_summary_chart_thins_a_long_run_and_leaves_out_crashes() -> None:
    class Result:
        objective, baseline = "val_bpb", 3.0

    records = [
        {"index": i, "objective": 3.0 - i / 1000, "best_after": 3.0 - i / 1000, "status": "keep"}
        for i in range(1, 451)
    ]
    records[9] = {"index": 10, "objective": None, "status": "crash"}
    lines = body_mod.chart(Result(), records)
    assert lines[0] == "```mermaid" and lines[-1] == "```"
    xs = lines[3].split("[", 1)[1].rstrip("]").split(", ")
    assert len(xs) == body_mod.CHART_POINTS and xs[0] == "1" and xs[-1] == "450"
    assert "10" not in xs  # the crash has no value to draw
    assert len(lines[5].split(",")) == len(lines[6].split(",")) == body_mod.CHART_POINTS
    assert body_mod.chart(Result(), records[:1]) == []  # one point is no chart
