"""A loopback stand-in for GitHub's REST API: repositories, pull requests, comments.

It keeps pull requests in memory and answers the way GitHub does (201 on create, 200 on
find/update, 401 "Bad credentials" for a wrong token, 422 "A pull request already exists",
404 for anything else), and checks each call it gets -- method, path, headers (a Bearer
token, the JSON media type, the API version, a User-Agent) and the JSON's keys -- writing
what is wrong into ``problems`` (a test asserts it stays empty). ``fail`` scripts answers
for the next matching calls (e.g. two 502s before the real answer). Smart-HTTP git calls
(``.../info/refs``) are recorded with their Authorization header and refused with 403, so
a test sees what ``git push`` sent without running a git server. Nothing reaches the
network.
"""

from __future__ import annotations

import contextlib
import json
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN = "ghs_loopbackTOKEN0123456789abcdefSECRET"
REPO = "octo/widgets"


@dataclass
class Call:
    method: str
    path: str  # without the query
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    json: Any


@dataclass
class Failure:
    method: str
    path: str  # exact path (without the query)
    status: int
    body: Any
    headers: dict[str, str] | None = None  # e.g. a redirect's Location


class GitHubServer:
    """ThreadingHTTPServer on 127.0.0.1:0; ``url`` is its GITHUB_API_URL."""

    def __init__(self, token: str = TOKEN, repo: str = REPO) -> None:
        self.token = token
        self.repo = repo
        self.calls: list[Call] = []
        self.git_calls: list[Call] = []
        self.problems: list[str] = []
        self.fail: list[Failure] = []
        self.pulls: dict[int, dict[str, Any]] = {}
        self.comments: list[dict[str, Any]] = []
        self.hide_from_list = 0  # answer this many pull request lists with [] (GitHub lags)
        self._next = 1
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                parts = urllib.parse.urlsplit(self.path)
                call = Call(
                    self.command,
                    parts.path,
                    dict(urllib.parse.parse_qsl(parts.query)),
                    {k.lower(): v for k, v in self.headers.items()},
                    None,
                )
                if raw:
                    try:
                        call.json = json.loads(raw)
                    except ValueError:
                        server.problems.append(f"{call.method} {call.path}: body is not JSON")
                with server._lock:
                    status, body, *extra = server._answer(call)
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                for name, value in (extra[0] if extra else {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> GitHubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def env(self, **extra: str) -> dict[str, str]:
        """The environment GitHub Actions would give a job pointed at this server."""
        return {
            "GITHUB_TOKEN": self.token,
            "GITHUB_REPOSITORY": self.repo,
            "GITHUB_API_URL": self.url,
            **extra,
        }

    # -- what tests look at -----------------------------------------------------------

    def api_calls(self) -> list[tuple[str, str]]:
        return [(c.method, c.path) for c in self.calls]

    def open_pull(self, head: str, title: str = "old", body: str = "", base: str = "main"):
        """A pull request as if opened earlier (by us when ``body`` has our marker)."""
        with self._lock:
            return self._create({"title": title, "head": head, "base": base, "body": body})

    # -- the API ----------------------------------------------------------------------

    def _answer(self, call: Call) -> tuple[Any, ...]:  # status, JSON[, headers]
        if call.path.endswith(("/info/refs", "/git-receive-pack", "/git-upload-pack")):
            self.git_calls.append(call)
            return 403, {"message": "pushes go elsewhere in tests"}
        self.calls.append(call)
        for i, f in enumerate(self.fail):
            if f.method == call.method and f.path == call.path:
                del self.fail[i]
                return (f.status, f.body, f.headers or {})
        self._check_headers(call)
        if call.headers.get("authorization") != f"Bearer {self.token}":
            return 401, {
                "message": "Bad credentials",
                "documentation_url": "https://docs.github.com/rest",
            }
        base = f"/repos/{self.repo}"
        if call.method == "GET" and call.path == base:
            return 200, {"full_name": self.repo, "default_branch": "main"}
        if call.path == base + "/pulls":
            if call.method == "GET":
                return 200, self._list(call.query)
            if call.method == "POST":
                return self._post_pull(call)
        if call.path.startswith(base + "/pulls/") and call.method == "PATCH":
            number = int(call.path.rsplit("/", 1)[1])
            return self._patch_pull(number, call)
        comments = call.path.startswith(base + "/issues/") and call.path.endswith("/comments")
        if comments and call.method == "POST":
            return self._comment(int(call.path.split("/")[-2]), call)
        return 404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}

    def _check_headers(self, call: Call) -> None:
        h = call.headers
        where = f"{call.method} {call.path}"
        if h.get("accept") != "application/vnd.github+json":
            self.problems.append(f"{where}: Accept is {h.get('accept')!r}")
        if h.get("x-github-api-version") != "2022-11-28":
            self.problems.append(f"{where}: no X-GitHub-Api-Version")
        if not h.get("user-agent"):
            self.problems.append(f"{where}: no User-Agent (GitHub refuses those)")
        if call.json is not None and not h.get("content-type", "").startswith("application/json"):
            self.problems.append(f"{where}: JSON sent as {h.get('content-type')!r}")
        if self.token in urllib.parse.unquote(call.path + json.dumps(call.query)):
            self.problems.append(f"{where}: the token is in the URL")

    def _list(self, query: dict[str, str]) -> list[dict[str, Any]]:
        if self.hide_from_list > 0:
            self.hide_from_list -= 1
            return []
        out = []
        for pr in self.pulls.values():
            if query.get("state", "open") != "all" and pr["state"] != query.get("state", "open"):
                continue
            if (
                "head" in query
                and f"{self.repo.split('/')[0]}:{pr['head']['ref']}" != (query["head"])
            ):
                continue
            if "base" in query and pr["base"]["ref"] != query["base"]:
                continue
            out.append(pr)
        return out

    def _create(self, data: dict[str, Any]) -> dict[str, Any]:
        number = self._next
        self._next += 1
        pr = {
            "number": number,
            "state": "open",
            "title": data["title"],
            "body": data.get("body") or "",
            "head": {"ref": data["head"], "repo": {"full_name": self.repo}},
            "base": {"ref": data["base"]},
            "html_url": f"https://github.example/{self.repo}/pull/{number}",
        }
        self.pulls[number] = pr
        return pr

    def _post_pull(self, call: Call) -> tuple[int, Any]:
        data = call.json or {}
        missing = [k for k in ("title", "head", "base", "body") if not isinstance(data.get(k), str)]
        if missing:
            self.problems.append(f"POST pulls: missing {missing}")
            return 422, {"message": "Validation Failed"}
        for pr in self.pulls.values():
            if pr["state"] == "open" and pr["head"]["ref"] == data["head"]:
                owner = self.repo.split("/")[0]
                return 422, {
                    "message": "Validation Failed",
                    "errors": [
                        {
                            "resource": "PullRequest",
                            "code": "custom",
                            "message": f"A pull request already exists for {owner}:{data['head']}.",
                        }
                    ],
                }
        return 201, self._create(data)

    def _patch_pull(self, number: int, call: Call) -> tuple[int, Any]:
        pr = self.pulls.get(number)
        if pr is None:
            return 404, {"message": "Not Found"}
        data = call.json or {}
        unknown = set(data) - {"title", "body", "state", "base"}
        if unknown:
            self.problems.append(f"PATCH pulls/{number}: unknown keys {sorted(unknown)}")
        if "state" in data and data["state"] not in ("open", "closed"):
            self.problems.append(f"PATCH pulls/{number}: state {data['state']!r}")
        pr.update({k: v for k, v in data.items() if k in ("title", "body", "state")})
        return 200, pr

    def _comment(self, number: int, call: Call) -> tuple[int, Any]:
        if number not in self.pulls:
            return 404, {"message": "Not Found"}
        text = (call.json or {}).get("body")
        if not isinstance(text, str) or not text:
            self.problems.append(f"comment on #{number} without a body")
        comment = {"id": len(self.comments) + 1, "issue": number, "body": text}
        self.comments.append(comment)
        return 201, comment


@contextlib.contextmanager
def github_server(**kwargs: Any) -> Iterator[GitHubServer]:
    server = GitHubServer(**kwargs).start()
    try:
        yield server
    finally:
        server.stop()
