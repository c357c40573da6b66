"""GitHub as a publisher: push the research branch, open or update one pull request.

Only the standard library (urllib) talks to the REST API, so nothing new is installed.
Settings come from the environment GitHub Actions provides:

- ``GITHUB_TOKEN`` -- sent in an ``Authorization`` header, never in a URL, the git config,
  the record, logs or output. The push passes it as an ``http.<url>.extraheader`` through
  ``GIT_CONFIG_COUNT`` in the environment of that one ``git push`` (not on its command
  line, where other processes could read it, and never written to ``.git/config``).
- ``GITHUB_REPOSITORY`` (``owner/name``) and ``GITHUB_API_URL`` (default
  ``https://api.github.com``; GitHub Enterprise sets its own).

Calls (https://docs.github.com/rest/pulls/pulls):

- check:     ``GET  /repos/{repo}`` (401, 403, 404 -> one clear line before any experiment)
- find:      ``GET  /repos/{repo}/pulls?state=open&head={owner}:{branch}&base={base}``
- update:    ``PATCH /repos/{repo}/pulls/{n}`` with ``title`` and ``body``
- create:    ``POST /repos/{repo}/pulls`` (a 422 "A pull request already exists" -> find, update)
- supersede: ``GET /repos/{repo}/pulls?state=open&base={base}``; each other open pull request
  of ours (head ``autoresearch/*``, body starting with body.MARKER) gets
  ``POST /repos/{repo}/issues/{n}/comments`` linking the new one, then
  ``PATCH /repos/{repo}/pulls/{n}`` with ``state: closed``.

5xx answers and connection errors are retried (``RETRIES`` times, backing off).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_autoresearch.publish import body as body_mod
from pytest_autoresearch.sandbox.secrets import scrub

__all__ = [
    "GitHubClient",
    "GitHubError",
    "GitHubPublisher",
    "GitHubSettings",
    "open_or_update",
    "publish_run",
    "push_branch",
    "remote_url",
    "supersede",
]

DEFAULT_API = "https://api.github.com"
RETRIES = 3
BACKOFF = 1.0  # seconds before the first retry; doubles each time
USER_AGENT = "pytest-autoresearch"
_REPO_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


class GitHubError(Exception):
    """A GitHub call that failed; the message says what to do. ``status`` is HTTP's."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class GitHubSettings:
    api_url: str
    repo: str  # owner/name
    token: str

    @property
    def owner(self) -> str:
        return self.repo.split("/", 1)[0]

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> GitHubSettings:
        """Read GITHUB_TOKEN, GITHUB_REPOSITORY, GITHUB_API_URL; GitHubError names what is
        missing and how to set it."""
        env = dict(os.environ) if env is None else env
        token = env.get("GITHUB_TOKEN", "").strip()
        repo = env.get("GITHUB_REPOSITORY", "").strip()
        missing = [n for n, v in (("GITHUB_TOKEN", token), ("GITHUB_REPOSITORY", repo)) if not v]
        if missing:
            raise GitHubError(
                f"--autoresearch-pr needs {' and '.join(missing)} in the environment (GitHub "
                "Actions sets GITHUB_REPOSITORY; pass the token with env: GITHUB_TOKEN: "
                "${{ secrets.GITHUB_TOKEN }}); see docs/ci.md"
            )
        if not _REPO_RE.match(repo):
            raise GitHubError(f"GITHUB_REPOSITORY={repo!r} is not owner/name, e.g. octo/widgets")
        api = (env.get("GITHUB_API_URL") or DEFAULT_API).strip().rstrip("/")
        if not api.startswith(("https://", "http://")):
            raise GitHubError(f"GITHUB_API_URL={api!r} is not an http(s) URL")
        return cls(api, repo, token)


class _SameHostRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects (GitHub answers 301 for a renamed repository), but never carry the
    token to another host."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        old_host = urllib.parse.urlsplit(req.full_url).netloc
        if new is not None and urllib.parse.urlsplit(newurl).netloc != old_host:
            new.remove_header("Authorization")
        return new


_OPENER = urllib.request.build_opener(_SameHostRedirects)


class GitHubClient:
    """A small REST client: JSON in and out, the token in a header, retries on 5xx."""

    def __init__(
        self,
        settings: GitHubSettings,
        *,
        retries: int = RETRIES,
        backoff: float = BACKOFF,
        timeout: float = 30.0,
    ) -> None:
        self.settings = settings
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout

    def call(
        self,
        method: str,
        path: str,
        payload: dict[str, Any] | None = None,
        query: dict[str, str] | None = None,
    ) -> Any:
        """The decoded JSON answer of a 2xx; GitHubError otherwise (after retrying 5xx)."""
        url = self.settings.api_url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if payload is None else json.dumps(payload).encode()
        headers = {
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {self.settings.token}",
            "User-Agent": USER_AGENT,
            "X-GitHub-Api-Version": "2022-11-28",
        }
        if data is not None:
            headers["Content-Type"] = "application/json"
        delay = self.backoff
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(url, data=data, headers=headers, method=method)
            try:
                with _OPENER.open(request, timeout=self.timeout) as answer:
                    raw = answer.read()
                return json.loads(raw) if raw.strip() else None
            except urllib.error.HTTPError as exc:
                status, text = exc.code, _read(exc)
                if status < 500 or attempt == self.retries:
                    raise GitHubError(self._explain(method, path, status, text), status) from None
            except (urllib.error.URLError, OSError) as exc:
                if attempt == self.retries:
                    reason = getattr(exc, "reason", exc)
                    raise GitHubError(
                        f"cannot reach GitHub at {self.settings.api_url}: {reason}"
                    ) from None
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    def _explain(self, method: str, path: str, status: int, text: str) -> str:
        said = _message(text)
        where = f"{method} {path} -> {status}" + (f" ({said})" if said else "")
        repo = self.settings.repo
        if status == 401:
            return (
                f"GitHub rejected GITHUB_TOKEN: {where}; set a valid token (in Actions: "
                "env: GITHUB_TOKEN: ${{ secrets.GITHUB_TOKEN }})"
            )
        if status == 403:
            return (
                f"GITHUB_TOKEN may not do this on {repo}: {where}; give the job "
                "'permissions: contents: write, pull-requests: write' (and allow Actions to "
                "create pull requests in the repository's settings)"
            )
        if status == 404:
            return (
                f"GitHub has no repository {repo} at {self.settings.api_url}, or GITHUB_TOKEN "
                f"cannot see it: {where}; check GITHUB_REPOSITORY and the token's access"
            )
        return f"GitHub: {where}"


def _read(exc: urllib.error.HTTPError) -> str:
    try:
        return exc.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _message(text: str) -> str:
    """GitHub's ``message`` plus its first ``errors[].message``, scrubbed, one line."""
    try:
        data = json.loads(text)
    except ValueError:
        return scrub(" ".join(text.split())[:200])
    if not isinstance(data, dict):
        return ""
    parts = [str(data.get("message") or "")]
    for err in data.get("errors") or []:
        if isinstance(err, dict) and err.get("message"):
            parts.append(str(err["message"]))
            break
    return scrub("; ".join(p for p in parts if p)[:300])


# -- git push -----------------------------------------------------------------------------


def _git(root: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Any:
    return subprocess.run(
        ["git", *args], cwd=root, env=env, capture_output=True, text=True, timeout=timeout
    )


def remote_url(root: Path, remote: str) -> str:
    """The remote's URL (as git would push to it); GitHubError when there is none."""
    out = _git(root, "remote", "get-url", "--push", remote)
    if out.returncode != 0:
        raise GitHubError(
            f"no git remote {remote!r} to push the research branch to; add one "
            f"(git remote add {remote} URL) or choose another with --autoresearch-remote NAME"
        )
    return out.stdout.strip()


def push_env(url: str, token: str, base_env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for one ``git push``: the token as an extra HTTP header for this
    remote's host only, passed through GIT_CONFIG_COUNT (never argv, never .git/config)."""
    env = dict(os.environ if base_env is None else base_env)
    env["GIT_TERMINAL_PROMPT"] = "0"  # fail rather than wait for a password nobody types
    try:
        n = int(env.get("GIT_CONFIG_COUNT", "0"))
    except ValueError:
        n = 0
    # No hooks run with the token in the environment: core.hooksPath may point into the
    # tree, which proposals edit.
    env[f"GIT_CONFIG_KEY_{n}"], env[f"GIT_CONFIG_VALUE_{n}"] = "core.hooksPath", os.devnull
    n += 1
    parts = urllib.parse.urlsplit(url)
    if parts.scheme in ("http", "https") and parts.hostname:
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        host = parts.hostname + (f":{parts.port}" if parts.port else "")
        env[f"GIT_CONFIG_KEY_{n}"] = f"http.{parts.scheme}://{host}/.extraheader"
        env[f"GIT_CONFIG_VALUE_{n}"] = f"AUTHORIZATION: basic {basic}"
        n += 1
    env["GIT_CONFIG_COUNT"] = str(n)
    return env


def push_branch(root: Path, remote: str, branch: str, base: str, token: str) -> None:
    """Push ``branch`` (only it: never the base branch) to ``remote``; GitHubError if refused."""
    if not branch.startswith("autoresearch/") or branch == base:
        raise GitHubError(f"refusing to push {branch!r}: only research branches are pushed")
    url = remote_url(root, remote)
    ref = f"refs/heads/{branch}"
    env = push_env(url, token)
    out = _git(
        root, "push", "--porcelain", "--no-verify", remote, f"{ref}:{ref}", env=env, timeout=600
    )
    if out.returncode != 0:
        said = scrub(" ".join((out.stderr or out.stdout).split())[-400:])
        raise GitHubError(f"git push {remote} {branch} failed: {said}")


# -- the publisher (hook implementations) ---------------------------------------------------


def _echo(config: pytest.Config, line: str, **markup: bool) -> None:
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr.write_line(line, **markup)
    else:
        print(line, flush=True)


def run_url(env: dict[str, str] | None = None) -> str | None:
    """This Actions run's page (its artifacts hold the record), when running in Actions."""
    env = dict(os.environ) if env is None else env
    server = env.get("GITHUB_SERVER_URL", "").rstrip("/")
    repo, run = env.get("GITHUB_REPOSITORY"), env.get("GITHUB_RUN_ID")
    return f"{server}/{repo}/actions/runs/{run}" if server and repo and run else None


class GitHubPublisher:
    """The built-in ``pytest_autoresearch_publish`` implementation (registered lazily)."""

    @pytest.hookimpl(trylast=True)
    def pytest_autoresearch_publish_check(self, config: pytest.Config) -> str:
        try:
            settings = GitHubSettings.from_env()
            remote = _remote(config)
            remote_url(Path(config.rootpath), remote)
            GitHubClient(settings).call("GET", f"/repos/{settings.repo}")
        except GitHubError as exc:
            raise pytest.UsageError(str(exc)) from None
        return f"GitHub pull request on {settings.repo} (push to {remote})"

    @pytest.hookimpl(trylast=True)
    def pytest_autoresearch_publish(
        self,
        config: pytest.Config,
        result: Any,
        records: list[dict[str, Any]],
        branch: str,
        base: str,
    ) -> str:
        return publish_run(
            Path(config.rootpath),
            _remote(config),
            GitHubSettings.from_env(),
            result,
            records,
            branch,
            base,
            echo=lambda line: _echo(config, line),
        )


def publish_run(
    root: Path,
    remote: str,
    settings: GitHubSettings,
    result: Any,
    records: list[dict[str, Any]],
    branch: str,
    base: str,
    *,
    echo: Any = print,
    client: GitHubClient | None = None,
) -> str:
    """Push ``branch``, open or update its pull request, supersede older ones; its URL."""
    client = client or GitHubClient(settings)
    push_branch(root, remote, branch, base, settings.token)
    title = body_mod.title(result, records)
    text = body_mod.body(
        result, records, branch=branch, base=base, machine=_machine(), record_url=run_url()
    )
    pr, action = open_or_update(client, settings, branch, base, title, text)
    echo(f"pull request #{pr['number']} {action}: {pr.get('html_url', '')}")
    for old in supersede(client, settings, pr, base):
        echo(f"closed pull request #{old} (superseded by #{pr['number']})")
    return str(pr.get("html_url") or f"#{pr['number']}")


def _remote(config: pytest.Config) -> str:
    from pytest_autoresearch.program.options import option

    return option(config, "remote") or "origin"


def _machine() -> dict[str, Any]:
    from pytest_autoresearch.metrics.json_file import machine_info

    info = machine_info()
    try:  # the GPU, when there is one, without importing torch
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if out.returncode == 0 and out.stdout.strip():
            info["gpu"] = "; ".join(line.strip() for line in out.stdout.splitlines()[:8])
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def _find_open(client: GitHubClient, s: GitHubSettings, branch: str, base: str) -> dict | None:
    found = client.call(
        "GET",
        f"/repos/{s.repo}/pulls",
        query={"state": "open", "head": f"{s.owner}:{branch}", "base": base, "per_page": "100"},
    )
    for pr in found or []:
        if (pr.get("head") or {}).get("ref") == branch:
            return pr
    return None


def open_or_update(
    client: GitHubClient, s: GitHubSettings, branch: str, base: str, title: str, text: str
) -> tuple[dict[str, Any], str]:
    """This branch's one open pull request, updated or newly opened: (pull, "opened"|...)."""
    existing = _find_open(client, s, branch, base)
    if existing is None:
        try:
            pr = client.call(
                "POST",
                f"/repos/{s.repo}/pulls",
                {"title": title, "head": branch, "base": base, "body": text},
            )
            return pr, "opened"
        except GitHubError as exc:
            # Opened meanwhile (or GitHub's list lagged): update that one instead.
            if exc.status != 422 or "already exists" not in str(exc):
                raise
            existing = _find_open(client, s, branch, base)
            if existing is None:
                raise
    pr = client.call(
        "PATCH", f"/repos/{s.repo}/pulls/{existing['number']}", {"title": title, "body": text}
    )
    return pr, "updated"


def supersede(client: GitHubClient, s: GitHubSettings, new: dict[str, Any], base: str) -> list[int]:
    """Close our other open research pull requests on ``base``, each with a comment linking
    the new one; returns their numbers. Pull requests people opened are left alone."""
    closed = []
    found = client.call(
        "GET", f"/repos/{s.repo}/pulls", query={"state": "open", "base": base, "per_page": "100"}
    )
    for pr in found or []:
        head = pr.get("head") or {}
        ours = str(pr.get("body") or "").startswith(body_mod.MARKER)
        same_repo = ((head.get("repo") or {}).get("full_name") or s.repo) == s.repo
        if pr.get("number") == new.get("number") or not ours or not same_repo:
            continue
        if not str(head.get("ref") or "").startswith("autoresearch/"):
            continue
        client.call(
            "POST",
            f"/repos/{s.repo}/issues/{pr['number']}/comments",
            {
                "body": f"Superseded by #{new['number']} ({new.get('html_url', '')}), a newer "
                "research run; closing this one. Its branch is kept."
            },
        )
        client.call("PATCH", f"/repos/{s.repo}/pulls/{pr['number']}", {"state": "closed"})
        closed.append(int(pr["number"]))
    return closed
